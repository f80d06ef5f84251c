/**
 * @upgradeware/session
 *
 * express-session's options, `req.session` API and Store interface, for ordinary requests and for
 * HTTP Upgrade (WebSocket) requests alike: the session is loaded before the endpoint sees the
 * upgrade, and a new or changed session is saved and its `Set-Cookie` rides on the 101.
 */
import { createHash, createHmac, createSecretKey, randomFillSync, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { parse as parseCookieHeader } from 'cookie';
import createDebug from 'debug';
import onHeaders from 'on-headers';
import { abortSwitched, enabledReader, isUpgradeResponse, supportsUpgrade, type NextFunction, type UpgradeAware } from '@upgradeware/upgrade-response';
import * as cookieModule from './cookie';
import { setCookieValue, type CookieData, type CookieOptions } from './cookie';
import * as memoryModule from './memory';
import { deprecate } from './deprecate';
import * as sessionModule from './session';
import { createSession, setHooks, type RequestHooks, type SessionData, type StoredSession } from './session';
import * as storeModule from './store';
import type { SessionStoreLike } from './store';

export type { CookieData, CookieOptions, Priority, SameSite, StoredCookie } from './cookie';
export type { MemoryStoreOptions } from './memory';
export type { SessionCallback, SessionData, SessionRequest, StoredSession } from './session';
export type { GetCallback, SessionStoreLike, StoreConstructor } from './store';
// Aliases, not `export { … } from` (whose getters would put this module's exports object in V8's
// dictionary mode): plain properties, with each class's value and type.
export import Cookie = cookieModule.Cookie;
export import MemoryStore = memoryModule.MemoryStore;
export import Session = sessionModule.Session;
export import Store = storeModule.Store;

const debug = createDebug('upgradeware:session');
/** `debug.enabled`, read through its getter (see `enabledReader`). */
const tracing = enabledReader(debug);

declare module 'http' {
  interface IncomingMessage {
    /** The session (set by `@upgradeware/session`). */
    session?: Session & Partial<SessionData>;
    /** The session id (set by `@upgradeware/session`). */
    sessionID?: string;
    /** The store the session lives in (set by `@upgradeware/session`). */
    sessionStore?: SessionStoreLike;
  }
}

export interface SessionOptions {
  /** Attributes of the session cookie, or a function of the request returning them. */
  cookie?: CookieOptions | ((req: IncomingMessage) => CookieOptions);
  /** Makes a new session id (default: 24 random bytes from `node:crypto`, base64url). */
  genid?: (req: IncomingMessage) => string;
  /** Name of the session cookie (default `'connect.sid'`). */
  name?: string;
  /** @deprecated express-session's old name for `name` (honoured, with a deprecation notice). */
  key?: string;
  /** Trust `X-Forwarded-Proto` (`true`), never (`false`), or follow `req.secure` (default). */
  proxy?: boolean;
  /** Save the session at the end of every request, even unchanged (default `true`). */
  resave?: boolean;
  /** Send the cookie, with a fresh expiry, on every response (default `false`). */
  rolling?: boolean;
  /** Save (and send the cookie of) a new session nobody changed (default `true`). */
  saveUninitialized?: boolean;
  /**
   * Signs the cookie (a string or a Buffer); an array signs with the first and accepts any.
   * Without it, each request's `req.secret` (set by cookie-parser) is used, as express-session
   * does; a request without one goes to `next(err)`.
   */
  secret?: Secret | readonly Secret[];
  /** Where sessions live (default: a new `MemoryStore`). */
  store?: SessionStoreLike;
  /** What to do when `req.session` is deleted or set to null: `'keep'` (default) or `'destroy'`. */
  unset?: 'destroy' | 'keep';
}

/** A signing key: a string or bytes (a `Buffer`), as express-session takes. */
export type Secret = string | Uint8Array;

export type SessionMiddleware = UpgradeAware<(req: IncomingMessage, res: ServerResponse, next: NextFunction) => void>;

const PACKAGE = '@upgradeware/session';
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const SAME_SITE = new Set<unknown>([true, false, 'lax', 'strict', 'none', 'auto']);
const PRIORITY = new Set<unknown>(['low', 'medium', 'high']);

function optionError(message: string): TypeError {
  return new TypeError(`${PACKAGE}: ${message}`);
}

/** express-session's options (every one it reads; anything else is a mistake). */
const KNOWN_OPTIONS = ['cookie', 'genid', 'key', 'name', 'proxy', 'resave', 'rolling', 'saveUninitialized', 'secret', 'store', 'unset'];

/** The known option closest to a misspelt one (at most two edits away), for the error message. */
function closestOption(given: string): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const known of KNOWN_OPTIONS) {
    const d = editDistance(given.toLowerCase(), known.toLowerCase());
    if (d < bestDistance) {
      best = known;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(previous[j]! + 1, row[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = row;
  }
  return previous[b.length]!;
}

/** `GET /path` for debug lines. */
function label(req: IncomingMessage): string {
  return `${req.method ?? ''} ${(req as { originalUrl?: string }).originalUrl ?? req.url ?? ''}`;
}

/** The start of a session id, enough to follow one session through a debug trace. */
function shortId(id: unknown): string {
  return typeof id === 'string' ? `${id.slice(0, 6)}…` : String(id);
}

/** A store operation's callback, emptied when the connection goes away. */
class Pending {
  done: ((err?: unknown) => void) | undefined = undefined;
}

/**
 * The callback handed to the store, bound to the box: it holds only the box, so a store that never
 * answers holds nothing of the request once the box is emptied.
 */
function relay(this: Pending, err?: unknown): void {
  const done = this.done;
  this.done = undefined;
  if (done) done(err);
}

/** The replacer of `fingerprint`'s JSON: the session's own `cookie` is left out. */
function withoutCookie(this: unknown, key: string, value: unknown): unknown {
  return key === 'cookie' && this === fingerprinted ? undefined : value;
}
/** The session `fingerprint` is serialising (for `withoutCookie`). */
let fingerprinted: object | null | undefined = null;

function ignoreSaved(): void {}

/** `endArgs` until an end() gives its own. */
const NO_ARGS: unknown[] = [];

type MakeSession = (req: IncomingMessage, options: CookieOptions) => void;

/**
 * The hooks the middleware leaves on a request: `generate()` makes a session with the request's
 * cookie options (for `regenerate()`), `saved()` hears of `session.save()`. Once the response is
 * over they hold nothing else of the chain (res, next): `saved` is then `ignoreSaved`.
 * A class, not an object literal of closures: V8 may allocate the objects of a literal site
 * straight into the old generation, and one there that points back at the request keeps its
 * whole chain alive through every young-generation GC until the next full one.
 */
class Hooks implements RequestHooks {
  constructor(
    private readonly req: IncomingMessage,
    private readonly cookieOptions: CookieOptions,
    private readonly make: MakeSession,
    /** Set to `ignoreSaved` once the response is over (the closure holds the chain). */
    public onSaved: (session: Session) => void,
  ) {}

  generate(): void {
    this.make(this.req, this.cookieOptions);
  }

  saved(session: Session): void {
    this.onSaved(session);
  }
}

const ID_BYTES = 24;
/** Random bytes drawn from the system 128 ids at a time: one syscall instead of one per request. */
const idPool = Buffer.allocUnsafe(ID_BYTES * 128);
let idOffset = idPool.length;

/** Make a new session id: 24 random bytes from node:crypto, base64url (32 characters). */
function generateId(): string {
  if (idOffset === idPool.length) {
    randomFillSync(idPool);
    idOffset = 0;
  }
  const id = idPool.toString('base64url', idOffset, idOffset + ID_BYTES);
  // Used bytes are overwritten at once, so no id can be read back out of the pool.
  idPool.fill(0, idOffset, idOffset + ID_BYTES);
  idOffset += ID_BYTES;
  return id;
}

/** A secret as the signing code takes it: as given (a request's `req.secret`), or a key made once. */
type SigningKey = Secret | KeyObject;

/** `s:` + value + `.` + HMAC-SHA256 in base64 without padding: cookie-signature's format. */
function sign(value: string, secret: SigningKey): string {
  return `s:${value}.${mac(value, secret)}`;
}

function mac(value: string, secret: SigningKey): string {
  const digest = createHmac('sha256', secret).update(value).digest('base64');
  // Without its padding (one '=' for SHA-256), as cookie-signature writes it.
  let end = digest.length;
  while (end > 0 && digest.charCodeAt(end - 1) === 61 /* = */) end--;
  return end === digest.length ? digest : digest.slice(0, end);
}

/** The session id in a signed cookie value (without its `s:`), or undefined when no secret signed it. */
function unsign(signed: string, secrets: readonly SigningKey[]): string | undefined {
  const dot = signed.lastIndexOf('.');
  if (dot < 0) return undefined;
  const value = signed.slice(0, dot);
  const given = Buffer.from(signed.slice(dot + 1));
  let found: string | undefined;
  for (const secret of secrets) {
    const expected = Buffer.from(mac(value, secret));
    // Constant time for a signature of the right length; every secret is tried.
    if (expected.length === given.length && timingSafeEqual(expected, given) && found === undefined) found = value;
  }
  return found;
}

/**
 * What is compared to tell whether a session changed: the SHA-1 of its JSON without its own
 * `cookie` (express-session's hash).
 */
function fingerprint(session: object | undefined | null): string {
  // Most sessions of a request are new and empty: skip the serialisation and the hash.
  if (session !== null && session !== undefined && serializesEmpty(session)) return EMPTY_FINGERPRINT;
  // A replacer of the module's, not a closure made per call (DESIGN.md, "Facts measured"); the
  // session it compares with is put back after, for a toJSON that fingerprints another session.
  const outer = fingerprinted;
  fingerprinted = session;
  let json: string | undefined;
  try {
    json = JSON.stringify(session, withoutCookie);
  } finally {
    fingerprinted = outer;
  }
  return createHash('sha1').update(json ?? '', 'utf8').digest('hex');
}

const EMPTY_FINGERPRINT = createHash('sha1').update('{}', 'utf8').digest('hex');

/**
 * True only when `JSON.stringify` (with the cookie left out) is certainly `'{}'`: no `toJSON`
 * anywhere on the chain (enumerable or not, own or inherited: JSON.stringify would call it), and
 * no enumerable string key but `cookie` — `for…in` sees every own and inherited enumerable key, a
 * superset of the own ones JSON.stringify writes. Anything else takes the full path.
 */
function serializesEmpty(session: object): boolean {
  if (typeof (session as { toJSON?: unknown }).toJSON === 'function') return false;
  for (const key in session) if (key !== 'cookie') return false;
  return true;
}

function isSecure(req: IncomingMessage, proxy: boolean | undefined): boolean {
  if ((req.socket as { encrypted?: boolean } | null)?.encrypted) return true;
  if (proxy === false) return false;
  if (proxy !== true) return (req as { secure?: unknown }).secure === true;
  const header = req.headers['x-forwarded-proto'];
  const value = (Array.isArray(header) ? header[0] : header) ?? '';
  const comma = value.indexOf(',');
  return (comma === -1 ? value : value.slice(0, comma)).trim().toLowerCase() === 'https';
}

function pathnameOf(url: string): string {
  let start = 0;
  if (url.charCodeAt(0) !== 47 /* / */) {
    // Absolute form: skip scheme://host.
    const scheme = url.indexOf('://');
    if (scheme !== -1) {
      const slash = url.indexOf('/', scheme + 3);
      if (slash === -1) return '/';
      start = slash;
    }
  }
  let end = url.length;
  for (let i = start; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 63 /* ? */ || c === 35 /* # */) {
      end = i;
      break;
    }
  }
  return url.slice(start, end) || '/';
}

/** The session id in a cookie value as sent (`s:` + signed id), or undefined. */
function idFromCookie(req: IncomingMessage, name: string, secrets: readonly SigningKey[], raw: string | undefined): string | undefined {
  if (!raw) return undefined;
  if (!raw.startsWith('s:')) {
    if (tracing()) debug('%s: cookie %s is not signed', label(req), name);
    return undefined;
  }
  const id = unsign(raw.slice(2), secrets);
  if (id === undefined && tracing()) debug('%s: cookie %s has a bad signature', label(req), name);
  return id;
}

/** The session id from the request's cookie (also from cookie-parser's `req.cookies`). */
function readSessionId(req: IncomingMessage, name: string, secrets: readonly SigningKey[]): string | undefined {
  let id: string | undefined;
  const header = req.headers.cookie;
  if (header) {
    let raw = parseCookieHeader(header)[name];
    if (raw !== undefined && raw.length >= 2 && raw.startsWith('"') && raw.endsWith('"')) raw = raw.slice(1, -1);
    id = idFromCookie(req, name, secrets, raw);
  }
  const parsed = req as { signedCookies?: Record<string, unknown>; cookies?: Record<string, unknown> };
  if (!id && parsed.signedCookies && typeof parsed.signedCookies[name] === 'string') {
    id = parsed.signedCookies[name] as string;
    if (id) deprecate('cookie should be available in req.headers.cookie');
  }
  if (!id && parsed.cookies && typeof parsed.cookies[name] === 'string') {
    id = idFromCookie(req, name, secrets, parsed.cookies[name] as string);
    if (id) deprecate('cookie should be available in req.headers.cookie');
  }
  return id || undefined;
}

function checkCookieOptions(cookie: CookieOptions, where: string): void {
  if (cookie === null || typeof cookie !== 'object') throw optionError(`${where} must be an object or a function`);
  const { maxAge, expires, domain, path, httpOnly, secure, sameSite, partitioned, priority } = cookie;
  if (maxAge !== undefined && maxAge !== null && (typeof maxAge !== 'number' || Number.isNaN(maxAge))) {
    throw optionError(`${where}.maxAge must be a number of milliseconds`);
  }
  if (expires !== undefined && expires !== null && !(expires instanceof Date && !Number.isNaN(expires.getTime()))) {
    throw optionError(`${where}.expires must be a valid Date`);
  }
  if (domain !== undefined && (typeof domain !== 'string' || domain.length === 0)) throw optionError(`${where}.domain must be a string`);
  if (path !== undefined && (typeof path !== 'string' || path.length === 0)) throw optionError(`${where}.path must be a string`);
  if (httpOnly !== undefined && typeof httpOnly !== 'boolean') throw optionError(`${where}.httpOnly must be a boolean`);
  if (secure !== undefined && typeof secure !== 'boolean' && secure !== 'auto') {
    throw optionError(`${where}.secure must be a boolean or 'auto'`);
  }
  if (sameSite !== undefined && !SAME_SITE.has(sameSite)) {
    throw optionError(`${where}.sameSite must be true, false, 'lax', 'strict', 'none' or 'auto'`);
  }
  if (partitioned !== undefined && typeof partitioned !== 'boolean') throw optionError(`${where}.partitioned must be a boolean`);
  if (priority !== undefined && !PRIORITY.has(priority)) throw optionError(`${where}.priority must be 'low', 'medium' or 'high'`);
}

function checkBoolean(name: string, value: unknown): void {
  if (value !== undefined && typeof value !== 'boolean') throw optionError(`option ${name} must be a boolean`);
}

/** The secret cookie-parser left on the request (`req.secret`), as a one-element list. */
function requestSecrets(req: IncomingMessage): readonly Secret[] | undefined {
  const secret = (req as { secret?: unknown }).secret;
  return typeof secret === 'string' && secret.length !== 0 ? [secret] : undefined;
}

/** express-session's middleware: loads `req.session`, saves it and sets its cookie as the response ends. */
export function session(options?: SessionOptions): SessionMiddleware {
  if (options !== undefined && options !== null && typeof options !== 'object') throw optionError('options must be an object');
  const opts = (options ?? {}) as Partial<SessionOptions>;
  for (const key of Object.keys(opts)) {
    if (KNOWN_OPTIONS.includes(key)) continue;
    const hint = closestOption(key);
    throw optionError(`unknown option ${key}${hint ? ` (did you mean ${hint}?)` : ''}`);
  }

  const secret = opts.secret;
  let configuredSecrets: readonly SigningKey[] | undefined;
  if (secret === undefined || secret === null) {
    deprecate('req.secret; provide secret option');
  } else {
    if (Array.isArray(secret) && secret.length === 0) throw optionError('secret option array must contain one or more strings');
    const list: readonly unknown[] = Array.isArray(secret) ? [...(secret as unknown[])] : [secret];
    const usable = (s: unknown): boolean => (typeof s === 'string' || s instanceof Uint8Array) && s.length !== 0;
    if (!list.every(usable)) {
      throw optionError('option secret must be a non-empty string or Buffer, or a non-empty array of them');
    }
    // Made into keys once (a string as its UTF-8 bytes, as createHmac takes it), not on every
    // signature; Buffers are copied: a caller reusing its buffer cannot change the key afterwards.
    configuredSecrets = list.map((s) => createSecretKey(typeof s === 'string' ? Buffer.from(s, 'utf8') : Buffer.from(s as Uint8Array)));
  }

  const cookieOption = opts.cookie ?? {};
  if (typeof cookieOption !== 'function') checkCookieOptions(cookieOption, 'option cookie');

  const genid = opts.genid ?? generateId;
  if (typeof genid !== 'function') throw optionError('option genid must be a function');

  if (opts.key !== undefined) deprecate('key option; use name option');
  const name = opts.name || opts.key || 'connect.sid';
  if (typeof name !== 'string' || !COOKIE_NAME.test(name)) throw optionError('option name must be a valid cookie name');

  checkBoolean('proxy', opts.proxy);
  checkBoolean('resave', opts.resave);
  checkBoolean('rolling', opts.rolling);
  checkBoolean('saveUninitialized', opts.saveUninitialized);
  const proxy = opts.proxy;
  const resave = opts.resave ?? true;
  const rolling = opts.rolling ?? false;
  const saveUninitialized = opts.saveUninitialized ?? true;
  if (opts.resave === undefined) deprecate('undefined resave option; provide resave option');
  if (opts.saveUninitialized === undefined) deprecate('undefined saveUninitialized option; provide saveUninitialized option');

  const unset = opts.unset ?? 'keep';
  if (unset !== 'destroy' && unset !== 'keep') throw optionError("option unset must be 'destroy' or 'keep'");
  const unsetDestroy = unset === 'destroy';

  const store = opts.store ?? new MemoryStore();
  for (const method of ['get', 'set', 'destroy', 'on'] as const) {
    if (typeof (store as unknown as Record<string, unknown>)[method] !== 'function') {
      throw optionError(`option store must have a ${method}() method`);
    }
  }
  const storeTouches = typeof store.touch === 'function';

  /** The cookie options for one request, with `'auto'` values settled. */
  const cookieFor = (req: IncomingMessage): CookieOptions => {
    if (typeof cookieOption !== 'function') return cookieOption;
    const resolved = cookieOption(req) ?? {};
    checkCookieOptions(resolved, 'cookie()');
    return resolved;
  };

  const newSession = (req: IncomingMessage, cookieOptions: CookieOptions): void => {
    req.sessionID = genid(req);
    const current = new Session(req);
    const { secure, sameSite } = cookieOptions;
    const cookie = new Cookie(cookieOptions);
    // `'auto'` settled for this request. Assigned after the other attributes, as a copy of the
    // options with these two replaced would give them: same values, same own keys, same order.
    const https = (secure === 'auto' || sameSite === 'auto') && isSecure(req, proxy);
    cookie.secure = secure === 'auto' ? https : secure;
    cookie.sameSite = sameSite === 'auto' ? (https ? 'none' : 'lax') : sameSite;
    current.cookie = cookie;
    req.session = current;
  };

  // What third-party code calling `store.regenerate(req, cb)` gets (express-session sets this too).
  const asStore = store as Partial<Store>;
  asStore.generate = (req) => newSession(req as IncomingMessage, cookieFor(req as IncomingMessage));

  let storeReady = true;
  const emitter = store as SessionStoreLike & { on(event: string, listener: () => void): unknown };
  emitter.on('disconnect', () => {
    debug('store disconnected: requests pass through without a session');
    storeReady = false;
  });
  emitter.on('connect', () => {
    debug('store connected');
    storeReady = true;
  });

  /**
   * One request's session: what it knows between the middleware, the response's head, its end and
   * the store's answers, with the functions that act on it. Those are this class's methods — one
   * set per middleware — and the functions handed out per request (`res.end`, the on-headers
   * listener, the store's callbacks) are methods bound to the request's instance, not closures,
   * which V8 would compile again after every full garbage collection (DESIGN.md, "Facts measured").
   */
  class Handling {
    readonly upgrade: boolean;
    readonly socket: Duplex | null;
    /**
     * What 'close' is heard on while a store operation runs. Over HTTP/2, req.socket is Node's
     * proxy: its on/once reach the stream but its removeListener reaches the TLS socket, so a
     * listener put on it could never be taken off and would hold req and res for the stream's
     * whole life (an RFC 8441 WebSocket's). The stream itself is the emitter.
     */
    readonly closeSource: Duplex | null;
    readonly cookieId: string | undefined;
    readonly hooks: Hooks;
    readonly originalEnd: (...a: unknown[]) => ServerResponse;
    originalId: string | undefined = undefined;
    originalHash: string | undefined = undefined;
    savedHash: string | undefined = undefined;
    touched = false;
    deferredNextCalled = false;
    /**
     * Set when the session cannot be judged at the end of the response (its data cannot be
     * serialised: a BigInt, a cycle; a broken cookie): it is neither saved nor given a cookie.
     */
    failed = false;
    /**
     * From the first end() until the response has ended; reset when Node's end() throws (an
     * on-headers listener threw) or when the session could not be judged, so that the error
     * handler's end() is not swallowed as a repeat.
     */
    ending = false;
    /** The session's part is done (or failed): later end() calls go straight to the response. */
    settled = false;
    /** The arguments of the end() that the session's part holds back while the store works. */
    endArgs: unknown[] = NO_ARGS;
    /** At that end(): ws has already written its own 101 (external switch). */
    external = false;
    /** At that end(): the 101 (or CONNECT's 200) is being written by `switchProtocols()`. */
    switching = false;
    /** The store operation that end() runs. */
    what: 'destroy' | 'save' | 'touch' = 'save';
    /** The store operation's callback while it runs (see Pending). */
    box: Pending | null = null;
    /** `abandon`, bound: the 'close' listener while the store works. */
    abandonBound: (() => void) | undefined = undefined;
    /** The store.get() callback has run. */
    answered = false;

    constructor(
      readonly req: IncomingMessage,
      readonly res: ServerResponse,
      readonly next: NextFunction,
      readonly cookieOptions: CookieOptions,
      readonly secrets: readonly SigningKey[],
    ) {
      this.upgrade = isUpgradeResponse(res);
      this.socket = req.socket;
      this.closeSource = (req as { stream?: Duplex }).stream ?? this.socket;
      req.sessionStore = store;
      this.cookieId = readSessionId(req, name, secrets);
      req.sessionID = this.cookieId;
      this.hooks = new Hooks(req, cookieOptions, newSession, this.saved.bind(this));
      setHooks(req, this.hooks);
      this.originalEnd = res.end as (...a: unknown[]) => ServerResponse;
    }

    /** `session.save()` was heard of: what the store holds now. */
    saved(s: Session): void {
      this.savedHash = fingerprint(s);
    }

    generate(): void {
      newSession(this.req, this.cookieOptions);
      this.originalId = this.req.sessionID;
      this.originalHash = fingerprint(this.req.session);
    }

    isModified(s: Session): boolean {
      return this.originalId !== s.id || this.originalHash !== fingerprint(s);
    }

    isSaved(s: Session): boolean {
      return this.originalId === s.id && this.savedHash === fingerprint(s);
    }

    bogusId(): boolean {
      if (typeof this.req.sessionID === 'string') return false;
      if (tracing()) debug('%s: req.sessionID is not a string: session ignored', label(this.req));
      return true;
    }

    shouldSave(s: Session): boolean {
      if (this.bogusId()) return false;
      return !saveUninitialized && this.savedHash === undefined && this.cookieId !== this.req.sessionID ? this.isModified(s) : !this.isSaved(s);
    }

    shouldSetCookie(s: Session): boolean {
      if (typeof this.req.sessionID !== 'string') return false;
      if (this.cookieId !== this.req.sessionID) return saveUninitialized || this.isModified(s);
      return rolling || (s.cookie.expires != null && this.isModified(s));
    }

    /** A failure as (or after) the response ends: the request's error handlers hear of it. */
    reportLater(err: unknown): void {
      if (tracing()) debug('%s: session error as the response ended: %o', label(this.req), err);
      if (this.deferredNextCalled) return;
      this.deferredNextCalled = true;
      setImmediate(this.next, err);
    }

    /** The on-headers listener: the session's cookie goes on the head, when it should. */
    setCookie(): void {
      if (this.failed) return;
      const { req, res } = this;
      const current = req.session;
      if (!current) return;
      try {
        if (!this.shouldSetCookie(current)) return;
        if (current.cookie.secure && !isSecure(req, proxy)) {
          if (tracing()) debug('%s: secure cookie not sent over an insecure connection', label(req));
          return;
        }
        if (!this.touched) {
          current.touch();
          this.touched = true;
        }
        // From the cookie's `data`, as express-session does: a `cookie` the application replaced
        // with a plain object is written without attributes rather than failing.
        const data = (current.cookie as { data?: unknown }).data;
        const attributes = typeof data === 'object' && data !== null ? (data as CookieData) : undefined;
        const value = setCookieValue(name, sign(req.sessionID as string, this.secrets[0]!), attributes);
        const previous = res.getHeader('Set-Cookie');
        if (previous === undefined) res.setHeader('Set-Cookie', [value]);
        else res.setHeader('Set-Cookie', [...(Array.isArray(previous) ? previous : [String(previous)]), value]);
      } catch (err) {
        // As express-session: the response goes on without the cookie; next(err) hears of it.
        this.reportLater(err);
      }
    }

    /** The session's work at the end of the response is over: drop every hold on the chain. */
    release(): void {
      this.hooks.onSaved = ignoreSaved;
    }

    /** Node's end() (or the one wrapped before ours) with `args`. */
    finish(args: unknown[]): ServerResponse {
      try {
        return this.originalEnd.apply(this.res, args);
      } catch (err) {
        // The response did not end (an on-headers listener threw as the head was written): a
        // later end() — the error handler's answer — must not be swallowed as a repeat.
        this.ending = false;
        throw err;
      }
    }

    /** After an asynchronous store operation nobody can catch a throw: it goes to the stack. */
    finishLater(): void {
      try {
        this.finish(this.endArgs);
      } catch (err) {
        this.reportLater(err);
      }
    }

    /** `res.end`, bound: the session is saved (touched, destroyed) before the response ends. */
    end(...args: unknown[]): ServerResponse {
      // As express-session: a repeated end() writes nothing and returns false.
      if (this.ending) return false as unknown as ServerResponse;
      this.ending = true;
      if (this.settled) return this.finish(args);
      this.settled = true;
      const { req, res, upgrade } = this;
      this.endArgs = args;
      // Where the response stands now: has ws already written its own 101 (external switch)?
      this.external = upgrade && res.headersSent && res.socket === null;
      this.switching = upgrade && res.headersSent && !this.external && (res.statusCode === 101 || res.statusCode === 200);

      let plan: 'destroy' | 'save' | 'touch' | undefined;
      // False when the session could not be judged (judgeError says why).
      let judged = true;
      let judgeError: unknown;
      const current = req.session;
      try {
        // Only a session that was loaded or made, then dropped by the app: a response that ends
        // before the store answered (the time limit's 503, a store.get error's 500) destroys nothing.
        if (req.sessionID && unsetDestroy && this.originalId !== undefined && (current === undefined || current === null)) plan = 'destroy';
        else if (current) {
          if (!this.touched) {
            current.touch();
            this.touched = true;
          }
          if (this.shouldSave(current)) plan = 'save';
          // Not to be saved (shouldSave has judged it, fingerprint included): a session that came
          // with the request's cookie is touched.
          else if (storeTouches && typeof req.sessionID === 'string' && this.cookieId === req.sessionID) plan = 'touch';
        }
      } catch (err) {
        judged = false;
        judgeError = err;
      }
      // Nothing for the store (the common unchanged session): end now.
      if (judged && plan === undefined) {
        this.release();
        return this.finish(args);
      }
      if (!judged) {
        this.failed = true;
        this.release();
        this.failEnd(judgeError, false);
        return res;
      }

      // Run the store operation, then end the response (see "On upgrades" in the README for errors).
      const what = plan as 'destroy' | 'save' | 'touch';
      this.what = what;
      // A class instance and on(), not an object literal and once(): V8 may decide to allocate the
      // objects of an object-literal site straight into the old generation (once()'s wrapper is
      // one, shared with every once() listener of the process), and an old object that points at
      // this request keeps the whole chain alive through every young-generation GC until the next
      // full one — measured, a quarter of the CPU of a saving handshake.
      const box = (this.box = new Pending());
      const abandon = (this.abandonBound = this.abandon.bind(this));
      box.done = this.stored.bind(this);
      const closeSource = this.closeSource;
      closeSource?.on('close', abandon);
      const done = relay.bind(box);
      try {
        if (what === 'save') current!.save(done);
        else if (what === 'touch') store.touch!(req.sessionID as string, current as unknown as StoredSession, done);
        else store.destroy(req.sessionID as string, done);
      } catch (err) {
        done(err);
      }
      // Gone before the store was asked (its 'close' has already been emitted): same as abandon.
      if ((closeSource as { closed?: boolean } | null)?.closed === true) abandon();
      // As express-session on an ordinary request while the store works: the head is made now
      // (on-headers listeners run, later header changes throw, the body goes out chunked); the
      // body and the end wait for the store. An upgrade's answer waits whole, so that a refusal
      // keeps its Content-Length and a switch can still be called off.
      if (!upgrade && box.done !== undefined && !res.headersSent) {
        try {
          res.writeHead(res.statusCode);
        } catch (err) {
          // Thrown again, and handled, when the response ends.
          if (tracing()) debug('%s: writing the head threw: %o', label(req), err);
        }
      }
      return res;
    }

    /** The session's part failed (`op`: a store operation; otherwise it could not be judged). */
    failEnd(err: unknown, op: boolean): void {
      const { req, socket } = this;
      if (this.switching) {
        // The 101 has not left yet: better no switch than a switch over a session that was not saved.
        if (tracing()) debug('%s: session failed before the switch: closing the connection', label(req));
        if (socket && !socket.destroyed) socket.destroy();
      } else if (this.external) {
        // The 101 is on the wire and the connection is open: close it as an internal error.
        if (tracing()) debug('%s: session failed after the switch: closing the WebSocket with 1011', label(req));
        // A store failure comes after ws wrote its 101; a session that could not be judged
        // fails inside ws's 'headers' event, before the 101 is written: close after it.
        if (op) abortSwitched(req, socket);
        else setImmediate(abortSwitched, req, socket);
        this.finishLater();
      } else if (op || this.res.headersSent) {
        // As express-session: the response goes out as the application made it.
        this.finishLater();
      } else {
        // Nothing was written: the error handler answers (its end() goes straight through).
        this.ending = false;
      }
      this.reportLater(err);
    }

    /**
     * The connection is gone while the store works (a store that never answers, cut off by the
     * dispatcher's time limit; a client reset): the response ends now ('finish' and 'close' fire,
     * a logger logs it) instead of waiting for the store, whose late answer then has nothing to
     * do and holds nothing of the request.
     */
    abandon(): void {
      // Only while the store works: a listener left behind (a socket proxy whose removeListener
      // misses, as HTTP/2's compatibility socket may) must not end twice.
      const box = this.box;
      if (box === null || box.done === undefined) return;
      if (tracing()) debug('%s: connection closed during the session %s', label(this.req), this.what);
      box.done = undefined;
      this.release();
      this.finishLater();
    }

    /** The store answered the operation end() ran. */
    stored(err?: unknown): void {
      this.closeSource?.removeListener('close', this.abandonBound!);
      this.release();
      if (!err) {
        if (tracing()) debug('%s: session %s done', label(this.req), this.what);
        this.finishLater();
        return;
      }
      this.failEnd(err, true);
    }

    /** The store.get() callback: the session of the request's cookie, or a new one. */
    loaded(err: unknown, data?: StoredSession | null): void {
      if (this.answered) return;
      this.answered = true;
      const { req, next } = this;
      const sid = this.cookieId;
      if (err && (err as { code?: unknown }).code !== 'ENOENT') {
        if (tracing()) debug('%s: store error while loading session %s: %o', label(req), shortId(sid), err);
        next(err);
        return;
      }
      try {
        if (err || !data) {
          this.generate();
          if (tracing()) debug('%s: no session %s in the store: new session %s', label(req), shortId(sid), shortId(req.sessionID));
        } else {
          createSession(req, data);
          this.originalId = req.sessionID;
          // The stored data, not req.session, as express-session hashes it: a stored key that a
          // session cannot take (`id`, a method's name) makes it count as modified there too.
          this.originalHash = fingerprint(data);
          if (!resave) this.savedHash = this.originalHash;
        }
      } catch (e) {
        next(e);
        return;
      }
      next();
    }
  }

  // Named as express-session names it: the dispatcher's trace shows "session".
  function session(req: IncomingMessage, res: ServerResponse, next: NextFunction): void {
    if (req.session) {
      next();
      return;
    }
    if (!storeReady) {
      if (tracing()) debug('%s: store is disconnected: no session', label(req));
      next();
      return;
    }
    let cookieOptions: CookieOptions;
    try {
      cookieOptions = cookieFor(req);
    } catch (err) {
      next(err);
      return;
    }
    const path = pathnameOf((req as { originalUrl?: string }).originalUrl ?? req.url ?? '/');
    if (!path.startsWith(cookieOptions.path ?? '/')) {
      if (tracing()) debug('%s: path %s is outside the cookie path', label(req), path);
      next();
      return;
    }

    // As express-session: without the option, cookie-parser's req.secret signs and verifies.
    const secrets = configuredSecrets ?? requestSecrets(req);
    if (secrets === undefined) {
      next(new Error(`${PACKAGE}: secret option required for sessions (or a req.secret from cookie-parser)`));
      return;
    }

    const handling = new Handling(req, res, next, cookieOptions, secrets);
    onHeaders(res, handling.setCookie.bind(handling));
    res.end = handling.end.bind(handling) as ServerResponse['end'];

    const cookieId = handling.cookieId;
    if (!cookieId) {
      try {
        handling.generate();
        if (tracing()) debug('%s: no session cookie: new session %s', label(req), shortId(req.sessionID));
      } catch (err) {
        next(err);
        return;
      }
      next();
      return;
    }

    if (tracing()) debug('%s: loading session %s', label(req), shortId(cookieId));
    const loaded = handling.loaded.bind(handling);
    try {
      store.get(cookieId, loaded);
    } catch (err) {
      loaded(err ?? new Error('store.get() threw'));
    }
  }

  return supportsUpgrade(session);
}
