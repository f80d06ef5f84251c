/**
 * @upgradeware/basic-auth
 *
 * HTTP Basic authentication with basic-auth-connect's three forms, for ordinary requests,
 * WebSocket upgrades and CONNECT alike. In proxy mode it guards a forward proxy with
 * `Proxy-Authorization` / `407` / `Proxy-Authenticate`.
 */
import { createHmac, createSecretKey, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parse } from 'basic-auth';
import { supportsUpgrade, type Middleware, type NextFunction, type UpgradeAware } from '@upgradeware/upgrade-response';

declare module 'http' {
  interface IncomingMessage {
    /** The authenticated user, set by `@upgradeware/basic-auth` (and other auth middleware). */
    user?: unknown;
    /** Same as `user`, as basic-auth-connect sets it. */
    remoteUser?: unknown;
  }
}

/** Synchronous check: return true (or a promise of true) to let the request in. */
export type BasicAuthCheck = (user: string, pass: string) => boolean | PromiseLike<boolean>;

/**
 * Asynchronous check: call `done(null, user)` to let the request in with `req.user = user`.
 * What it returns is ignored (so `(u, p, done) => users.check(u, p, done)` type-checks).
 */
export type BasicAuthAsyncCheck = (user: string, pass: string, done: BasicAuthDone) => unknown;

/**
 * Either form of check, as `basicAuth(check)` accepts it (the form is told by `check.length`):
 * with two parameters a truthy result (or a promise of one) lets the request in; with three,
 * the result is ignored and `done` decides.
 */
export type BasicAuthVerify = (user: string, pass: string, done: BasicAuthDone) => unknown;

/** `err` goes to `next(err)`; a falsy `user` is answered 401 (407 in proxy mode). */
export type BasicAuthDone = (err: unknown, user?: unknown) => void;

export interface BasicAuthOptions {
  /** The realm named in the challenge (default `'Authorization Required'`). */
  realm?: string;
  /**
   * Guard a forward proxy: read `Proxy-Authorization`, answer `407` with `Proxy-Authenticate`
   * (default `false`).
   */
  proxy?: boolean;
}

const PKG = '@upgradeware/basic-auth';
/**
 * Who let the request in: the mode and realm of the basic-auth layer that set `req.user`, and the
 * value it set (so a `req.user` changed since by someone else is not taken for ours). Registered
 * with `Symbol.for` so that two copies of the package in one app agree.
 */
const kSignedIn = Symbol.for('upgradeware.basic-auth.signed-in');
interface SignIn {
  proxy: boolean;
  realm: string;
  user: unknown;
}
type Marked = IncomingMessage & { [kSignedIn]?: SignIn };
const DEFAULT_REALM = 'Authorization Required';
/**
 * Per-process key: both sides of a comparison are HMAC'd to fixed-length digests first. A key
 * object, made once, so that no request pays for turning the bytes into a key again.
 */
const COMPARE_KEY = createSecretKey(randomBytes(32));

/** Require `user:pass` credentials matching these strings. */
export function basicAuth(user: string, pass: string, realm?: string | BasicAuthOptions): UpgradeAware<Middleware>;
/**
 * Let `check` decide. With two parameters, `check(user, pass)` returns true (or a promise of true)
 * to let the request in; with three, `check(user, pass, done)` calls `done(null, user)`.
 */
export function basicAuth(check: BasicAuthVerify, realm?: string | BasicAuthOptions): UpgradeAware<Middleware>;
export function basicAuth(
  first: string | BasicAuthVerify,
  second?: string | BasicAuthOptions,
  third?: string | BasicAuthOptions,
): UpgradeAware<Middleware> {
  let check: BasicAuthVerify;
  let settings: string | BasicAuthOptions | undefined;
  if (typeof first === 'string') {
    // RFC 7617: a user-id cannot hold a colon, so such a user could never sign in.
    if (first.includes(':')) throw new TypeError(`${PKG}: argument user must not contain ':'`);
    // basic-auth-connect's wording, then ours.
    if (typeof second !== 'string') throw new TypeError(`${PKG}: password argument required (argument pass must be a string)`);
    check = credentialsCheck(first, second);
    settings = third;
  } else if (typeof first === 'function') {
    check = first;
    settings = second;
  } else {
    throw new TypeError(`${PKG}: argument user must be a string or a check function`);
  }
  const { realm, proxy } = optionsOf(settings);
  const header = proxy ? 'proxy-authorization' : 'authorization';
  const challengeHeader = proxy ? 'Proxy-Authenticate' : 'WWW-Authenticate';
  const challenge = `Basic realm="${realm.replace(/["\\]/g, '\\$&')}"`;
  const refusal = proxy ? 407 : 401;
  const isAsync = check.length >= 3;

  const body = Buffer.from(proxy ? 'Proxy Authentication Required' : 'Unauthorized', 'latin1');

  function refuse(res: ServerResponse): void {
    // A check that answered after the response started (the dispatcher's upgradeTimeout 503, a
    // client that went away): nobody is left to tell, and setHeader would throw.
    if (res.headersSent || res.writableEnded || res.destroyed) return;
    res.statusCode = refusal;
    res.setHeader(challengeHeader, challenge);
    res.setHeader('Content-Length', body.length);
    res.end(body);
  }

  /**
   * Does an earlier sign-in let this request through untouched? In site mode, as in
   * basic-auth-connect, any `req.user` does — unless a basic-auth layer set it in the other mode
   * or for another realm. In proxy mode only a proxy-mode layer of the same realm does: a site
   * login (basic-auth, a session, passport …) never opens a tunnel.
   */
  function signedIn(req: Marked): boolean {
    const mark = req[kSignedIn];
    const ours = mark !== undefined && mark.user === req.user;
    if (ours) return Boolean(req.user) && mark.proxy === proxy && mark.realm === realm;
    return !proxy && Boolean(req.user);
  }

  /** The one outcome of an attempt's check: an error, a refusal, or `user` let in (even `''`). */
  function settle(attempt: Attempt, err: unknown, ok: boolean, user: unknown): void {
    if (attempt.settled) return;
    attempt.settled = true;
    if (err) return attempt.next(err);
    if (!ok) return refuse(attempt.res);
    const req = attempt.req;
    req.user = req.remoteUser = user;
    (req as Marked)[kSignedIn] = { proxy, realm, user };
    attempt.next();
  }
  /** The callback of an asynchronous check (bound to its attempt): a falsy user is refused. */
  function answered(this: Attempt, err: unknown, user?: unknown): void {
    settle(this, err, Boolean(user), user);
  }
  /** A promise-returning check resolved (bound to its attempt): the name gets in when it is truthy. */
  function resolved(this: Attempt, ok: unknown): void {
    settle(this, null, Boolean(ok), this.name);
  }
  function rejected(this: Attempt, err: unknown): void {
    settle(this, err ?? new Error('Rejected'), false, undefined);
  }

  return supportsUpgrade(function basicAuth(req: IncomingMessage, res: ServerResponse, next: NextFunction): void {
    if (signedIn(req)) return next();
    const value = req.headers[header];
    if (!value) return refuse(res);
    const credentials = parse(value);
    if (!credentials) return next(badRequest());
    const { name, pass } = credentials;
    const attempt = new Attempt(req, res, next, name);
    try {
      if (isAsync) {
        // As basic-auth-connect: the callback's user is what gets in, and a falsy one is refused.
        (check as BasicAuthAsyncCheck)(name, pass, answered.bind(attempt));
        return;
      }
      // The sync forms let the name in, whatever it is: `''` too (`curl -u :token`).
      const result = (check as BasicAuthCheck)(name, pass);
      if (isThenable(result)) result.then(resolved.bind(attempt), rejected.bind(attempt));
      else settle(attempt, null, Boolean(result), name);
    } catch (err) {
      settle(attempt, err ?? new Error('Thrown'), false, undefined);
    }
  });
}

/**
 * One request's check, until it settles. What is handed to an asynchronous check is a function
 * bound to it, not a closure made per request, which V8 would compile again after every full
 * garbage collection (DESIGN.md, "Facts measured").
 */
class Attempt {
  settled = false;
  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly next: NextFunction,
    readonly name: string,
  ) {}
}

function optionsOf(settings: string | BasicAuthOptions | undefined): { realm: string; proxy: boolean } {
  if (settings === undefined) return { realm: DEFAULT_REALM, proxy: false };
  const options: BasicAuthOptions = typeof settings === 'string' ? { realm: settings } : settings;
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`${PKG}: option realm must be a string (or the options an object)`);
  }
  for (const name of Object.keys(options)) {
    if (name !== 'realm' && name !== 'proxy') throw new TypeError(`${PKG}: unknown option ${name}`);
  }
  const { realm = DEFAULT_REALM, proxy = false } = options;
  // What setHeader would refuse on every request (control characters, anything beyond
  // Latin-1, which an HTTP header cannot carry) is refused now.
  if (typeof realm !== 'string' || /[^\t\x20-\x7e\x80-\xff]/.test(realm)) {
    throw new TypeError(`${PKG}: option realm must be a string of Latin-1 text without control characters`);
  }
  if (typeof proxy !== 'boolean') throw new TypeError(`${PKG}: option proxy must be a boolean`);
  // As basic-auth-connect: an empty realm means the default one.
  return { realm: realm || DEFAULT_REALM, proxy };
}

/**
 * A check against fixed credentials, in constant time for the name and the password together:
 * one HMAC of `name:password`, compared with `timingSafeEqual`, so a wrong name costs the same
 * as a wrong password and nothing exits early on length.
 *
 * The joined string stands for exactly one pair: the parser splits the header at its first ':'
 * (so a received name never holds one) and the factory refuses a configured name holding one.
 */
function credentialsCheck(user: string, pass: string): BasicAuthCheck {
  const expected = digest(`${user}:${pass}`);
  return (name, password) => timingSafeEqual(digest(`${name}:${password}`), expected);
}

/**
 * HMAC of the string's UTF-16 code units. Not UTF-8: that encoding turns every lone surrogate
 * into U+FFFD, so a configured `'x\uD800'` would accept a client sending `'x\uFFFD'`. Code units
 * are one-to-one with the string.
 */
function digest(text: string): Buffer {
  return createHmac('sha256', COMPARE_KEY).update(text, 'utf16le').digest();
}

function badRequest(): Error {
  return Object.assign(new Error('Bad Request'), { status: 400, statusCode: 400, expose: true });
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as PromiseLike<unknown>).then === 'function';
}
