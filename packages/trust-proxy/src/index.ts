/**
 * @upgradeware/trust-proxy
 *
 * Express's `trust proxy` setting as a middleware for any Connect-style stack, upgrades included:
 * `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` count only when the peer (and each
 * hop named before it) is a trusted proxy, decided by `proxy-addr` as Express decides it. Sets
 * `req.ip`, `req.ips`, `req.protocol`, `req.secure`, `req.host` and `req.hostname`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import proxyaddr from 'proxy-addr';
import { isUpgradeResponse, remoteAddressOf, supportsUpgrade, type NextFunction, type UpgradeAware, type Middleware } from '@upgradeware/upgrade-response';

const PKG = '@upgradeware/trust-proxy';

/** Decides whether address `addr`, the `i`-th hop counted from the socket (0), is a trusted proxy. */
export type TrustFunction = (addr: string, i: number) => boolean;

/**
 * Express's values: `true` (every hop), `false` (none; the default), a number of hops, a
 * comma-separated string or a list of addresses, subnets and the names `loopback`,
 * `linklocal`, `uniquelocal`, or a function.
 */
export type TrustValue = boolean | number | string | readonly string[] | TrustFunction;

declare module 'http' {
  interface IncomingMessage {
    /** The client's address: the socket's, or the nearest untrusted hop of X-Forwarded-For. */
    ip?: string;
    /** Every untrusted-to-trusted hop of X-Forwarded-For, client first (empty without trusted proxies). */
    ips?: string[];
    /** `https` or `http`: the socket's, or X-Forwarded-Proto's when the peer is trusted. */
    protocol?: string;
    /** `req.protocol === 'https'`. */
    secure?: boolean;
    /** The public host (with port): X-Forwarded-Host's when the peer is trusted, else Host. */
    host?: string;
    /** `req.host` without the port. */
    hostname?: string;
  }
}

/** Turn a trust value into a function, as Express's `compileTrust` does. */
export function compileTrust(value: TrustValue): TrustFunction {
  if (typeof value === 'function') return value;
  if (value === true) return () => true;
  if (value === false) return () => false;
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 0) throw new TypeError(`${PKG}: a number of hops must be an integer >= 0`);
    return (_addr, i) => i < value;
  }
  let list: string[];
  if (typeof value === 'string') list = value.split(',').map((v) => v.trim()).filter((v) => v.length > 0);
  else if (Array.isArray(value) && value.every((v) => typeof v === 'string')) list = [...value];
  else throw new TypeError(`${PKG}: trust must be a boolean, a number, a string, a list of strings or a function`);
  try {
    return proxyaddr.compile(list);
  } catch (err) {
    throw new TypeError(`${PKG}: trust: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function firstValue(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || value === '') return undefined;
  const comma = value.indexOf(',');
  return (comma === -1 ? value : value.slice(0, comma)).trim() || undefined;
}

function set<K extends keyof IncomingMessage>(req: IncomingMessage, name: K, value: IncomingMessage[K]): void {
  // An own property: also shadows getters that Express's request prototype defines.
  Object.defineProperty(req, name, { value, enumerable: true, configurable: true, writable: true });
}

/** The hostname of a Host value: without the port (IPv6 literals keep their brackets). */
function hostnameOf(host: string | undefined): string | undefined {
  if (host === undefined) return undefined;
  const offset = host[0] === '[' ? host.indexOf(']') + 1 : 0;
  const colon = host.indexOf(':', offset);
  return colon === -1 ? host : host.slice(0, colon);
}

/** The socket's own protocol: `https` on a TLS socket, else `http`. */
function socketProtocol(req: IncomingMessage): string {
  return (req.socket as { encrypted?: boolean } | null)?.encrypted ? 'https' : 'http';
}

/** Compute the request's client address, protocol and host under `trust` (also usable without the middleware). */
export function applyTrust(req: IncomingMessage, trust: TrustFunction): void {
  applyTrustTo(req, trust, false);
}

/**
 * On an upgrade the peer is read without leaving Node's cache of it on the socket (a WebSocket kept
 * open would carry it, as for the logger); a keep-alive connection keeps it.
 */
function applyTrustTo(req: IncomingMessage, trust: TrustFunction, upgrade: boolean): void {
  const peer = remoteAddressOf(req, upgrade);
  // A socket already gone (no peer): nothing to trust.
  const trusted = peer !== undefined && trust(peer, 0);
  if (peer === undefined) {
    set(req, 'ip', undefined);
    set(req, 'ips', []);
  } else {
    // proxy-addr reads the headers and the socket's address: on an upgrade, the address as read above.
    const source = upgrade ? ({ headers: req.headers, socket: { remoteAddress: peer } } as unknown as IncomingMessage) : req;
    const addrs = proxyaddr.all(source, trust);
    set(req, 'ip', addrs[addrs.length - 1]);
    set(req, 'ips', addrs.slice(1).reverse());
  }
  const own = socketProtocol(req);
  // As Express: the first value, as sent (`HTTPS` is not `https`).
  const protocol = trusted ? (firstValue(req.headers['x-forwarded-proto']) ?? own) : own;
  set(req, 'protocol', protocol);
  set(req, 'secure', protocol === 'https');
  const host = trusted ? (firstValue(req.headers['x-forwarded-host']) ?? req.headers.host) : req.headers.host;
  set(req, 'host', host);
  set(req, 'hostname', hostnameOf(host));
}

/** The middleware: `app.use(trustProxy('loopback'))`. */
export function trustProxy(trust: TrustValue = false): UpgradeAware<Middleware> {
  const fn = compileTrust(trust);
  return supportsUpgrade(function trustProxyMiddleware(req: IncomingMessage, res: ServerResponse, next: NextFunction) {
    try {
      applyTrustTo(req, fn, isUpgradeResponse(res));
    } catch (err) {
      return next(err);
    }
    next();
  });
}

/** The public origin of a request (`req.protocol://req.host`), after `trustProxy` ran; undefined without a Host. */
export function publicOrigin(req: IncomingMessage): string | undefined {
  const host = req.host ?? req.headers.host;
  if (host === undefined) return undefined;
  const protocol = req.protocol ?? socketProtocol(req);
  return `${protocol}://${host}`.toLowerCase();
}

/**
 * An `origins` check for `@upgradeware/websocket`: accepts a handshake whose Origin is the
 * request's public origin (as the client sees it, through trusted proxies), or that has none.
 */
export function sameOrigin(origin: string | undefined, req: IncomingMessage): boolean {
  if (origin === undefined) return true;
  const own = publicOrigin(req);
  if (own === undefined) return false;
  // URL drops a default port and lower-cases scheme and host: compare both in that form.
  // An opaque origin ("null": file:, data:, a sandboxed page, or a forwarded scheme other than
  // http/https) is never the same as anything, itself included.
  try {
    const theirs = new URL(origin).origin;
    return theirs !== 'null' && theirs === new URL(own).origin;
  } catch {
    return false;
  }
}
