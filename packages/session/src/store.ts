/**
 * `Store`: the base of session stores. It is a function constructor (not an ES class) so that both
 * ways third-party stores are written work: `class RedisStore extends Store` and the older
 * `function PgStore(opts) { Store.call(this, opts) }` + `util.inherits(PgStore, Store)`.
 */
import { EventEmitter } from 'node:events';
import { createSession as buildSession, type Session, type SessionData, type SessionCallback, type SessionRequest, type StoredSession } from './session';

/** Callback of `store.get()`: an error, or the stored session (`null`/`undefined` when there is none). */
export type GetCallback = (err: unknown, session?: StoredSession | null) => void;

/**
 * What the middleware needs from a store: `get`, `set` and `destroy`; `touch`, `all`, `length` and
 * `clear` when it has them; an EventEmitter's `on()` for its `'disconnect'` and `'connect'` events. Stores written for
 * express-session (connect-redis, connect-pg-simple, memorystore …) fit this shape.
 */
export interface SessionStoreLike {
  get(sid: string, callback: GetCallback): unknown;
  set(sid: string, session: StoredSession, callback?: SessionCallback): unknown;
  destroy(sid: string, callback?: SessionCallback): unknown;
  touch?(sid: string, session: StoredSession, callback?: SessionCallback): unknown;
  all?(callback: (err: unknown, sessions?: Record<string, StoredSession> | StoredSession[] | null) => void): unknown;
  length?(callback: (err: unknown, length?: number) => void): unknown;
  clear?(callback?: SessionCallback): unknown;
}

/** A store built on `Store`: an EventEmitter with `regenerate`, `load` and `createSession`. */
export interface Store extends EventEmitter, SessionStoreLike {
  /** Destroy `req`'s session and generate a new one on `req`. */
  regenerate(req: SessionRequest, callback: SessionCallback): void;
  /** Get the session `sid` as a `Session` (with its methods), or nothing when there is none. */
  load(sid: string, callback: (err: unknown, session?: Session & Partial<SessionData>) => void): void;
  /** Turn stored data into `req.session`. */
  createSession(req: SessionRequest, data: StoredSession): Session;
  /** Set by the session middleware: put a new session on `req`. */
  generate?: (req: SessionRequest) => void;
}

export interface StoreConstructor {
  new (...args: unknown[]): Store;
  /** `Store.call(this)` from the constructor of a store written in the older style. */
  call(self: object, ...args: unknown[]): void;
  readonly prototype: Store;
}

/** The base of session stores (abstract: `get`, `set` and `destroy` are the store's). */
export const Store = function Store(this: EventEmitter): void {
  EventEmitter.call(this);
} as unknown as StoreConstructor;

Object.setPrototypeOf(Store.prototype, EventEmitter.prototype);
Object.setPrototypeOf(Store, EventEmitter);

function defineMethod<K extends 'regenerate' | 'load' | 'createSession'>(name: K, fn: Store[K]): void {
  Object.defineProperty(Store.prototype, name, { value: fn, configurable: true, writable: true, enumerable: false });
}

defineMethod('regenerate', function regenerate(this: Store, req, callback) {
  this.destroy(req.sessionID ?? '', (err?: unknown) => {
    try {
      if (typeof this.generate !== 'function') throw new Error('@upgradeware/session: store is not used by a session middleware');
      this.generate(req);
    } catch (e) {
      callback(e);
      return;
    }
    callback(err);
  });
});

defineMethod('load', function load(this: Store, sid, callback) {
  this.get(sid, (err, data) => {
    if (err) return callback(err);
    if (!data) return callback(null);
    let session: Session & Partial<SessionData>;
    try {
      session = this.createSession({ sessionID: sid, sessionStore: this }, data);
    } catch (e) {
      return callback(e);
    }
    callback(null, session);
  });
});

defineMethod('createSession', function createSession(this: Store, req, data) {
  return buildSession(req, data);
});
