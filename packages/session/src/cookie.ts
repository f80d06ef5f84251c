/**
 * The session cookie: its attributes, its expiry, and how it is written into `Set-Cookie`.
 */
import { stringifySetCookie, type SetCookie } from 'cookie';
import { deprecate } from './deprecate';

export type SameSite = boolean | 'lax' | 'strict' | 'none';
export type Priority = 'low' | 'medium' | 'high';

/** The attributes of the session cookie, as given in the `cookie` option. */
export interface CookieOptions {
  /** Milliseconds the cookie lives, from when it is (re)issued; `null` for a browser-session cookie. */
  maxAge?: number | null;
  /** A fixed expiry date (prefer `maxAge`). */
  expires?: Date | null;
  domain?: string;
  path?: string;
  httpOnly?: boolean;
  /** `'auto'`: secure when the request arrived over HTTPS (see the `proxy` option). */
  secure?: boolean | 'auto';
  /** `'auto'`: `'none'` on a secure request, `'lax'` otherwise. */
  sameSite?: SameSite | 'auto';
  partitioned?: boolean;
  priority?: Priority;
}

/** What a cookie looks like in a store, and what `Set-Cookie` is built from. */
export interface CookieData {
  originalMaxAge: number | null | undefined;
  partitioned: boolean | undefined;
  priority: Priority | undefined;
  expires: Date | null | undefined;
  secure: boolean | undefined;
  httpOnly: boolean | undefined;
  domain: string | undefined;
  path: string | undefined;
  sameSite: SameSite | undefined;
}

/**
 * The cookie of a session as a store returns it: `CookieData` after a JSON round trip (`expires`
 * an ISO string). Typed loosely so that stores typed for express-session fit.
 */
export interface StoredCookie {
  originalMaxAge?: number | null;
  expires?: Date | string | null;
}

/**
 * The session cookie. `maxAge` is computed from `expires`, so it counts down; `originalMaxAge`
 * remembers the lifetime the cookie was given, which `session.touch()` grants again.
 */
export class Cookie {
  declare path: string | undefined;
  declare httpOnly: boolean | undefined;
  declare domain: string | undefined;
  declare secure: boolean | undefined;
  declare sameSite: SameSite | undefined;
  declare partitioned: boolean | undefined;
  declare priority: Priority | undefined;
  declare originalMaxAge: number | null | undefined;
  /** @internal the expiry date behind the `expires` and `maxAge` accessors */
  declare _expires: Date | null | undefined;

  constructor(options?: CookieOptions | StoredCookie) {
    this.path = '/';
    this.maxAge = null;
    this.httpOnly = true;
    if (options !== undefined && options !== null) {
      if (typeof options !== 'object') throw new TypeError('@upgradeware/session: argument options must be an object');
      const self = this as unknown as Record<string, unknown>;
      for (const key of Object.keys(options)) {
        if (key === 'data') continue;
        self[key] = (options as Record<string, unknown>)[key];
      }
    }
    if (this.originalMaxAge === undefined || this.originalMaxAge === null) this.originalMaxAge = this.maxAge;
  }

  /** When the cookie expires; setting it also resets `originalMaxAge` to the time left. */
  get expires(): Date | null | undefined {
    return this._expires;
  }

  set expires(value: Date | string | null | undefined) {
    const date = typeof value === 'string' ? new Date(value) : value;
    this._expires = date;
    this.originalMaxAge = date instanceof Date ? date.getTime() - Date.now() : date;
  }

  /** Milliseconds until the cookie expires (`null` for a browser-session cookie). */
  get maxAge(): number | null | undefined {
    const expires = this._expires;
    return expires instanceof Date ? expires.getTime() - Date.now() : expires;
  }

  set maxAge(ms: number | Date | null | undefined) {
    if (typeof ms === 'number') {
      this._expires = new Date(Date.now() + ms);
      this.originalMaxAge = ms;
      return;
    }
    if (ms !== null && ms !== undefined && !(ms instanceof Date)) {
      throw new TypeError('@upgradeware/session: maxAge must be a number or Date');
    }
    if (ms instanceof Date) deprecate('maxAge as Date; pass number of milliseconds instead');
    this.expires = ms;
  }

  /** The attributes, as written into `Set-Cookie` and into the store. */
  get data(): CookieData {
    return {
      originalMaxAge: this.originalMaxAge,
      partitioned: this.partitioned,
      priority: this.priority,
      expires: this._expires,
      secure: this.secure,
      httpOnly: this.httpOnly,
      domain: this.domain,
      path: this.path,
      sameSite: this.sameSite,
    };
  }

  /** A `Set-Cookie` value for `name=value` with this cookie's attributes. */
  serialize(name: string, value: string): string {
    return setCookieValue(name, value, this.data);
  }

  toJSON(): CookieData {
    return this.data;
  }
}

/**
 * A `Set-Cookie` value: `name=value` (the value URI-encoded) with the attributes in `data`, or
 * none without it. Written by the `cookie` package from one object (its `stringifySetCookie(cookie)`
 * form): given a name, a value and options instead, it copies the options into a new object first,
 * which costs several times the rest of the work on every response that sets the cookie.
 */
export function setCookieValue(name: string, value: string, data: CookieData | undefined): string {
  const cookie: SetCookie = { name, value };
  if (data !== undefined) withAttributes(cookie, data);
  return stringifySetCookie(cookie);
}

/** Put the attributes of `data` on `out`, as the `cookie` package names them. */
function withAttributes(out: SetCookie, data: CookieData): void {
  if (data.expires instanceof Date) {
    // The message express-session's cookie library gives (and its own tests check).
    if (Number.isNaN(data.expires.getTime())) throw new TypeError('option expires is invalid');
    out.expires = data.expires;
  }
  if (data.domain !== undefined) out.domain = data.domain;
  if (data.path !== undefined) out.path = data.path;
  if (data.httpOnly) out.httpOnly = true;
  if (data.secure) out.secure = true;
  if (data.partitioned) out.partitioned = true;
  if (data.priority !== undefined) out.priority = data.priority;
  if (data.sameSite !== undefined) out.sameSite = data.sameSite;
}
