/**
 * `req.session`: the session's data as plain properties, plus methods to save, reload, destroy
 * and regenerate it. Methods live on the prototype (not enumerable), so only data reaches a store.
 */
import { Cookie, type StoredCookie } from './cookie';
import type { SessionStoreLike } from './store';

/**
 * The data a session carries. Add your own fields by declaration merging:
 * `declare module '@upgradeware/session' { interface SessionData { user: string } }`.
 */
export interface SessionData {
  cookie: Cookie;
}

/**
 * A session as a store holds it: plain data (your `SessionData` fields), the cookie as its
 * attributes. Declared without an index signature so that stores typed for express-session fit.
 */
export interface StoredSession {
  cookie: StoredCookie;
}

/** What a session needs from its request (an `http.IncomingMessage` with the middleware's fields). */
export interface SessionRequest {
  sessionID?: string;
  sessionStore?: SessionStoreLike;
  session?: Session & Partial<SessionData>;
}

export type SessionCallback = (err?: unknown) => void;

/** Hooks the middleware leaves on a request it serves (see index.ts). */
export interface RequestHooks {
  /** A new session on the request, with the middleware's cookie options (for `regenerate`). */
  generate(): void;
  /** `session.save()` was called for this session's current content. */
  saved(session: Session): void;
}

const kHooks = Symbol.for('upgradeware.session.hooks');

/** @internal */
export function setHooks(req: object, hooks: RequestHooks): void {
  // Once per request, not enumerable.
  Object.defineProperty(req, kHooks, { value: hooks, configurable: true, enumerable: false, writable: true });
}

function hooksOf(req: object): RequestHooks | undefined {
  return (req as { [kHooks]?: RequestHooks })[kHooks];
}

/**
 * Without a callback, the asynchronous methods return a promise. It never becomes an unhandled
 * rejection when ignored (the fire-and-forget `req.session.save()` of express-session code).
 */
function settle(fn: SessionCallback | undefined, run: (done: SessionCallback) => void): Promise<void> | undefined {
  if (typeof fn === 'function') {
    run(fn);
    return undefined;
  }
  const promise = new Promise<void>((resolve, reject) => {
    run((err?: unknown) => (err ? reject(err) : resolve()));
  });
  promise.catch(ignore);
  return promise;
}

function ignore(): void {}

function storeOf(session: Session): SessionStoreLike {
  const store = session.req.sessionStore;
  if (!store) throw new Error('@upgradeware/session: the request has no session store');
  return store;
}

export class Session {
  /** The session id (also `req.sessionID`). */
  declare readonly id: string;
  /** The request the session belongs to (not enumerable). */
  declare readonly req: SessionRequest;
  declare cookie: Cookie;

  constructor(req: SessionRequest, data?: object | null) {
    Object.defineProperty(this, 'req', { value: req });
    Object.defineProperty(this, 'id', { value: req.sessionID });
    if (typeof data === 'object' && data !== null) {
      const self = this as unknown as Record<string, unknown>;
      for (const key of Object.keys(data)) {
        // Never let stored data shadow `id`, `req` or a method.
        if (!(key in this)) self[key] = (data as Record<string, unknown>)[key];
      }
    }
  }

  /** Grant the cookie its original lifetime again (done on every response that has a session). */
  touch(): this {
    return this.resetMaxAge();
  }

  resetMaxAge(): this {
    this.cookie.maxAge = this.cookie.originalMaxAge;
    return this;
  }

  /** Write the session to the store now (the middleware also saves it when the response ends). */
  save(fn: SessionCallback): this;
  save(): Promise<void>;
  save(fn?: SessionCallback): this | Promise<void> {
    const hooks = hooksOf(this.req);
    if (hooks) hooks.saved(this);
    const store = storeOf(this);
    if (typeof fn === 'function') {
      // The middleware's save at the end of every response: no closure for the callback form.
      store.set(this.id, this as unknown as StoredSession, fn);
      return this;
    }
    return settle(undefined, (done) => store.set(this.id, this as unknown as StoredSession, done))!;
  }

  /** Replace `req.session` with what the store holds now. */
  reload(fn: SessionCallback): this;
  reload(): Promise<void>;
  reload(fn?: SessionCallback): this | Promise<void> {
    const req = this.req;
    const store = storeOf(this);
    return (
      settle(fn, (done) => {
        store.get(this.id, (err, data) => {
          if (err) return done(err);
          if (!data) return done(new Error('failed to load session'));
          try {
            createSession(req, data);
          } catch (e) {
            return done(e);
          }
          done();
        });
      }) ?? this
    );
  }

  /** Remove the session from the store and from the request. */
  destroy(fn: SessionCallback): this;
  destroy(): Promise<void>;
  destroy(fn?: SessionCallback): this | Promise<void> {
    const req = this.req;
    const store = storeOf(this);
    delete req.session;
    return settle(fn, (done) => store.destroy(this.id, done)) ?? this;
  }

  /** Destroy the session and put a new one, with a new id, on the request. */
  regenerate(fn: SessionCallback): this;
  regenerate(): Promise<void>;
  regenerate(fn?: SessionCallback): this | Promise<void> {
    const req = this.req;
    const store = storeOf(this);
    const hooks = hooksOf(req);
    return (
      settle(fn, (done) => {
        if (!hooks && typeof (store as { regenerate?: unknown }).regenerate === 'function') {
          (store as unknown as { regenerate(r: SessionRequest, cb: SessionCallback): void }).regenerate(req, done);
          return;
        }
        store.destroy(this.id, (err?: unknown) => {
          try {
            if (hooks) hooks.generate();
          } catch (e) {
            return done(e);
          }
          done(err);
        });
      }) ?? this
    );
  }
}

/**
 * Build `req.session` from what a store returned: the cookie becomes a `Cookie` again (its
 * `expires` a `Date`), everything else is copied.
 */
export function createSession(req: SessionRequest, data: StoredSession): Session {
  const stored = data.cookie;
  if (typeof stored !== 'object' || stored === null) {
    throw new TypeError('@upgradeware/session: stored session has no cookie');
  }
  const originalMaxAge = stored.originalMaxAge;
  const cookie = new Cookie(stored);
  // The `expires` setter counted the time left; keep the lifetime the cookie was given.
  cookie.originalMaxAge = originalMaxAge;
  const session = new Session(req, { ...data, cookie });
  req.session = session;
  return session;
}
