/**
 * @upgradeware/vhost
 *
 * Route requests by their Host header, with the surface of the `vhost` package: ordinary
 * requests, and also WebSocket upgrades (into a handler or a mounted app that supports them).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { types } from 'node:util';
import {
  isUpgradeResponse,
  supportsUpgrade,
  type Middleware,
  type NextFunction,
  type UpgradeAware,
} from '@upgradeware/upgrade-response';

/** What a matching request carries as `req.vhost`: the host, and the pattern's captures by index. */
export interface VhostData {
  /** The Host header as the client sent it (port included). */
  host: string;
  /** The Host header without its port (an IPv6 literal keeps its brackets). */
  hostname: string;
  /** How many captures the pattern has. */
  length: number;
  /** The captures: one per `*` of a string pattern, one per group of a RegExp. */
  [index: number]: string | undefined;
}

declare module 'http' {
  interface IncomingMessage {
    /** Set by `@upgradeware/vhost` on a request whose host matched. */
    vhost?: VhostData;
  }
}

/**
 * What `vhost` hands a matching request to: a middleware, a Connect or Express app, or an
 * upgradeware app. Upgrades reach it only when it has `supportsUpgrade === true`.
 */
export type VhostHandle = Middleware & { supportsUpgrade?: boolean };

const SPECIALS = /[.*+?^${}()|[\]\\]/g;

/**
 * Create a middleware that calls `handle` for requests whose Host header matches `hostname`
 * (a string where `*` stands for one label, or a RegExp), and `next()` for the others.
 */
export function vhost(hostname: string | RegExp, handle: VhostHandle): UpgradeAware<Middleware> {
  // Stock vhost's checks and wording (`argument hostname is required` …), with our prefix.
  if (hostname === undefined || hostname === null || hostname === '') {
    throw new TypeError('@upgradeware/vhost: argument hostname is required');
  }
  if (handle === undefined || handle === null) throw new TypeError('@upgradeware/vhost: argument handle is required');
  if (typeof handle !== 'function') throw new TypeError('@upgradeware/vhost: argument handle must be a function');
  const pattern = compile(hostname);

  return supportsUpgrade(function vhost(req: IncomingMessage, res: ServerResponse, next: NextFunction): unknown {
    // HTTP/2 requests carry the host as `:authority` (Node adds no `Host`).
    const data = match(req.headers.host ?? (req.headers[':authority'] as string | undefined), pattern);
    // Rule 2 of the stack: an upgrade goes into `handle` only if it opted in.
    if (data === undefined || (isUpgradeResponse(res) && handle.supportsUpgrade !== true)) return next();
    req.vhost = data;
    let ret: unknown;
    try {
      ret = handle(req, res, next);
    } catch (err) {
      return next(err ?? new Error('@upgradeware/vhost: handle threw without a value'));
    }
    if (ret !== null && typeof ret === 'object' && typeof (ret as PromiseLike<unknown>).then === 'function') {
      (ret as PromiseLike<unknown>).then(undefined, (err: unknown) => next(err ?? new Error('@upgradeware/vhost: handle rejected')));
    }
    return undefined;
  });
}

/** The pattern as an anchored, case-insensitive RegExp. */
function compile(hostname: unknown): RegExp {
  if (types.isRegExp(hostname)) {
    // Keep the flags that change what matches (s, u, v); drop the stateful ones (g, y) and m.
    const flags = hostname.flags.replace(/[^suv]/g, '');
    return new RegExp(`^(?:${hostname.source})$`, flags + 'i');
  }
  if (typeof hostname !== 'string') throw new TypeError('@upgradeware/vhost: argument hostname must be a string or a RegExp');
  const source = hostname
    .split('*')
    .map((part) => part.replace(SPECIALS, '\\$&'))
    .join('([^.]+)');
  return new RegExp(`^${source}$`, 'i');
}

/** Match the Host header against the pattern; undefined when there is no host or no match. */
function match(host: string | undefined, pattern: RegExp): VhostData | undefined {
  if (!host) return undefined;
  // The port follows the first ':' (for an IPv6 literal, the first ':' after its ']').
  const from = host[0] === '[' ? host.indexOf(']') + 1 : 0;
  const colon = host.indexOf(':', from);
  const hostname = colon === -1 ? host : host.slice(0, colon);
  if (hostname.length === 0) return undefined;
  const found = pattern.exec(hostname);
  if (found === null) return undefined;
  const data: VhostData = Object.create(null) as VhostData;
  data.host = host;
  data.hostname = hostname;
  data.length = found.length - 1;
  for (let i = 1; i < found.length; i++) data[i - 1] = found[i];
  return data;
}
