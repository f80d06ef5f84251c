/**
 * @upgradeware/cookie-parser
 *
 * cookie-parser's surface — `req.cookies`, `req.signedCookies`, `req.secret`, signed (`s:`) and
 * JSON (`j:`) cookies — for ordinary requests and WebSocket upgrades alike. Parsing with `cookie`,
 * signature checks with `node:crypto` in cookie-signature's format, compared in constant time.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parse } from 'cookie';
import { supportsUpgrade, type Middleware, type NextFunction, type UpgradeAware } from '@upgradeware/upgrade-response';

declare module 'http' {
  interface IncomingMessage {
    /** Cookies of the request (JSON cookies parsed), set by `@upgradeware/cookie-parser`. */
    cookies?: Record<string, unknown>;
    /** Signed cookies whose signature checked out; `false` for a bad signature. */
    signedCookies?: Record<string, unknown>;
    /** The first secret given to `cookieParser()`, for middleware that signs cookies. */
    secret?: string;
  }
}

/** One secret, or several: the first signs, every one verifies (rotation). */
export type CookieSecret = string | readonly string[];

export interface CookieParserOptions {
  /** Decodes each cookie value (default: `decodeURIComponent` when the value holds a `%`). */
  decode?: (value: string) => string;
}

const PKG = '@upgradeware/cookie-parser';
const UNSAFE_NAME = '__proto__';

/** Parse the `Cookie` header into `req.cookies`, and verified signed cookies into `req.signedCookies`. */
export function cookieParser(secret?: CookieSecret | null, options?: CookieParserOptions | null): UpgradeAware<Middleware> {
  const secrets = secretsOf(secret);
  const decode = decoderOf(options);
  const parseOptions = { decode };

  return supportsUpgrade(function cookieParser(req: IncomingMessage, _res: ServerResponse, next: NextFunction): void {
    if (req.cookies) return next();
    req.secret = secrets[0];
    req.cookies = Object.create(null) as Record<string, unknown>;
    req.signedCookies = Object.create(null) as Record<string, unknown>;
    const header = req.headers.cookie;
    if (!header) return next();
    let cookies: Record<string, unknown>;
    try {
      cookies = parse(header, parseOptions);
    } catch (err) {
      return next(err);
    }
    // As with the stock package (whose parser drops it), no cookie is named `__proto__`.
    delete cookies[UNSAFE_NAME];
    if (secrets.length !== 0) req.signedCookies = JSONCookies(signedCookies(cookies, secrets));
    req.cookies = JSONCookies(cookies);
    next();
  });
}

/** The value of a `j:` JSON cookie, or `undefined` when `str` is not one. */
export function JSONCookie(str: unknown): unknown {
  if (typeof str !== 'string' || !str.startsWith('j:')) return undefined;
  try {
    return JSON.parse(str.slice(2)) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * Replace, in `obj`, every JSON cookie by its (truthy) value. Returns `obj`, whose values are then
 * `unknown`: a JSON cookie may hold any JSON value (`@types/cookie-parser` says `object`, which
 * `j:42` is not).
 */
export function JSONCookies<T extends Record<string, unknown>>(obj: T): { [K in keyof T]: unknown } {
  for (const key of Object.keys(obj)) {
    const value = JSONCookie(obj[key]);
    if (value) setOwn(obj, key, value);
  }
  return obj;
}

/**
 * The value of a signed cookie (`s:value.signature`): the value if a secret verifies it, `false`
 * if none does, `str` itself when it is not signed, `undefined` when it is not a string.
 *
 * For a string the result is `string | false`, as `@types/cookie-parser` declares it (code typed
 * against the stock package compiles unchanged); for anything else it may be `undefined`.
 */
export function signedCookie(str: string, secret: CookieSecret | null | undefined): string | false;
export function signedCookie(str: unknown, secret: CookieSecret | null | undefined): string | false | undefined;
export function signedCookie(str: unknown, secret: CookieSecret | null | undefined): string | false | undefined {
  if (typeof str !== 'string') return undefined;
  if (!str.startsWith('s:')) return str;
  for (const key of secretsOf(secret)) {
    const value = unsign(str.slice(2), key);
    if (value !== false) return value;
  }
  return false;
}

/**
 * Move the signed cookies out of `obj` into a new object, verified (`false` for a bad signature).
 * Unsigned cookies stay in `obj`. As with the stock package, a value that is not a string is
 * moved too, as `undefined`.
 */
export function signedCookies(
  obj: Record<string, unknown>,
  secret: CookieSecret | null | undefined,
): Record<string, string | false | undefined> {
  const secrets = secretsOf(secret);
  const signed = Object.create(null) as Record<string, string | false | undefined>;
  for (const key of Object.keys(obj)) {
    const value = obj[key];
    const verified = signedCookie(value, secrets);
    if (verified !== value) {
      setOwn(signed, key, verified);
      delete obj[key];
    }
  }
  return signed;
}

/** `value` if `signed` is `value.signature` for `secret`, else false. Constant time. */
function unsign(signed: string, secret: string): string | false {
  const dot = signed.lastIndexOf('.');
  if (dot === -1) return false;
  const value = signed.slice(0, dot);
  const mac = createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '');
  // Digests of both whole strings: equal lengths for timingSafeEqual, whatever was sent.
  const expected = createHash('sha256').update(`${value}.${mac}`).digest();
  const actual = createHash('sha256').update(signed).digest();
  return timingSafeEqual(expected, actual) ? value : false;
}

function secretsOf(secret: unknown): readonly string[] {
  // As the stock package: no secret (or an empty one) means no signed cookies.
  if (secret === undefined || secret === null || secret === '') return [];
  if (typeof secret === 'string') return [secret];
  if (Array.isArray(secret) && secret.every((s) => typeof s === 'string' && s.length !== 0)) return secret as string[];
  throw new TypeError(`${PKG}: option secret must be a string or an array of non-empty strings`);
}

function decoderOf(options: unknown): (value: string) => string {
  if (options !== undefined && options !== null && typeof options !== 'object') {
    throw new TypeError(`${PKG}: options must be an object`);
  }
  for (const key of Object.keys(options ?? {})) {
    // The stock package hands its options to cookie.parse, whose only option is decode.
    if (key !== 'decode') throw new TypeError(`${PKG}: unknown option ${JSON.stringify(key)}`);
  }
  const decode = (options as CookieParserOptions | null | undefined)?.decode;
  if (decode !== undefined && typeof decode !== 'function') {
    throw new TypeError(`${PKG}: option decode must be a function`);
  }
  const fn = decode ?? decodeValue;
  // As the stock package's parser: surrounding quotes go, and a value that fails to decode stays raw.
  return (raw) => {
    const value = raw.length !== 0 && raw.startsWith('"') && raw.endsWith('"') ? raw.slice(1, -1) : raw;
    try {
      return fn(value);
    } catch {
      return value;
    }
  };
}

function decodeValue(value: string): string {
  return value.includes('%') ? decodeURIComponent(value) : value;
}

/** Assign an own property, even one named `__proto__`, without touching the prototype. */
function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}
