/**
 * @upgradeware/query
 *
 * Parse the query string of `req.url` into `req.query`, for ordinary requests and for upgrades
 * (a WebSocket URL's query string often carries a room name or a token).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { supportsUpgrade, type Middleware, type NextFunction, type UpgradeAware } from '@upgradeware/upgrade-response';

/** A parsed query: the default parser gives strings and arrays of strings; `qs` may nest. */
export interface ParsedQuery {
  [key: string]: undefined | string | ParsedQuery | (string | ParsedQuery)[];
}

/** Turns the query string (what follows `?`, without it; '' when there is none) into an object. */
export type QueryParser = (queryString: string, req: IncomingMessage) => ParsedQuery;

export interface QueryOptions {
  /** Replaces the default parser, e.g. `(s) => qs.parse(s)`. */
  parser?: QueryParser;
}

declare module 'http' {
  interface IncomingMessage {
    /** Set by `@upgradeware/query` unless something set it before. */
    query?: ParsedQuery;
  }
}

/**
 * The default parser: `application/x-www-form-urlencoded` parsing (as `URLSearchParams` does),
 * a key given more than once becomes an array in order, and the result has no prototype, so
 * keys such as `__proto__` or `constructor` are plain data.
 */
export function parseQuery(queryString: string): ParsedQuery {
  const result = Object.create(null) as Record<string, string | string[]>;
  // The leading '&' keeps a leading '?' of the query itself as part of the first key.
  for (const [key, value] of new URLSearchParams('&' + queryString)) {
    const seen = result[key];
    if (seen === undefined) result[key] = value;
    else if (typeof seen === 'string') result[key] = [seen, value];
    else seen.push(value);
  }
  return result;
}

/** Create the middleware; `options` may also be the parser itself. */
export function query(options?: QueryOptions | QueryParser): UpgradeAware<Middleware> {
  const parser = parserOf(options);
  return supportsUpgrade(function query(req: IncomingMessage, _res: ServerResponse, next: NextFunction): void {
    if (req.query) return next();
    let parsed: unknown;
    try {
      parsed = parser(queryStringOf(req.url ?? ''), req);
    } catch (err) {
      return next(err ?? new Error('@upgradeware/query: parser threw without a value'));
    }
    if (parsed === null || typeof parsed !== 'object') {
      return next(new TypeError('@upgradeware/query: parser must return an object'));
    }
    req.query = parsed as ParsedQuery;
    next();
  });
}

function parserOf(options: unknown): QueryParser {
  if (options === undefined) return parseQuery;
  if (typeof options === 'function') return options as QueryParser;
  if (options === null || typeof options !== 'object') {
    throw new TypeError('@upgradeware/query: options must be an object or a parser function');
  }
  for (const key of Object.keys(options)) {
    if (key !== 'parser') {
      // Express 4's query() took qs options here; this one has no qs inside to give them to.
      throw new TypeError(
        `@upgradeware/query: unknown option ${JSON.stringify(key)} (for qs options, pass your own parser: query((s) => qs.parse(s, options)))`,
      );
    }
  }
  const { parser } = options as QueryOptions;
  if (parser === undefined) return parseQuery;
  if (typeof parser !== 'function') throw new TypeError('@upgradeware/query: parser must be a function');
  return parser;
}

/** What follows the first '?' of the URL, up to a fragment; '' when there is no query. */
function queryStringOf(url: string): string {
  for (let i = 0; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 35 /* # */) return '';
    if (c === 63 /* ? */) {
      const hash = url.indexOf('#', i + 1);
      return url.slice(i + 1, hash === -1 ? url.length : hash);
    }
  }
  return '';
}
