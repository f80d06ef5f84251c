/**
 * The upgrade response of an HTTP/2 stream: an extended CONNECT (RFC 8441, `:protocol websocket`)
 * or a plain CONNECT tunnel that Node's `http2` compat layer emitted as `'connect'`.
 *
 * Node's own `Http2ServerResponse` cannot end in a switch: `writeHead` sends HEADERS at once (no
 * window for a session save), `end()` sends END_STREAM, and `'finish'`/`'close'` wait for the
 * stream to close. This response keeps everything the stack sets until the response is let go
 * (`end()` wrappers such as a session save run first), then sends it in one HEADERS frame:
 * `:status 200` without END_STREAM for a switch, or a complete response for a refusal.
 */
import { EventEmitter } from 'node:events';
import * as http2 from 'node:http2';
import { validateHeaderName, validateHeaderValue } from 'node:http';
import type { IncomingHttpHeaders, OutgoingHttpHeader, OutgoingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import { ABORT_GRACE_MS, EMPTY, EXTERNAL, LINGER_MS, OPEN, RELEASED, SWITCHING, WS_CLOSE_1011, debug, kBrand, tracing } from './shared';

const kHttp2 = Symbol.for('upgradeware.Http2UpgradeResponse');
/** Headers that HTTP/2 forbids (RFC 9113 §8.2.2) or that describe HTTP/1.1 framing. */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te']);
/** Headers a switch never carries: the stream that follows has no length. */
const SWITCH_DROPPED = new Set([...CONNECTION_SPECIFIC, 'content-length']);
const { NGHTTP2_NO_ERROR, NGHTTP2_INTERNAL_ERROR } = http2.constants;

/** The callback of a switch on HTTP/2: the stream itself, and no head (HTTP/2 has none). */
export type Http2SwitchCallback = (stream: Duplex, head: Buffer) => void;

/** What an HTTP/2 `'connect'` request looks like to us (Node's `Http2ServerRequest`). */
export interface Http2ConnectRequest {
  readonly stream: http2.ServerHttp2Stream;
  readonly httpVersionMajor: number;
  readonly method: string;
  readonly headers: IncomingHttpHeaders;
  url?: string;
  originalUrl?: string;
}

/** True when `req` arrived over HTTP/2 (Node's compat `Http2ServerRequest`). */
export function isHttp2Request(req: unknown): req is Http2ConnectRequest {
  if (typeof req !== 'object' || req === null) return false;
  const r = req as { httpVersionMajor?: unknown; stream?: unknown };
  return r.httpVersionMajor === 2 && r.stream instanceof EventEmitter;
}

/** True when `res` is an `Http2UpgradeResponse`. */
export function isHttp2UpgradeResponse(res: unknown): res is Http2UpgradeResponse {
  return typeof res === 'object' && res !== null && (res as Record<symbol, unknown>)[kHttp2] === true;
}

interface StoredHeader {
  name: string;
  value: number | string | string[];
}

/**
 * The response to an HTTP/2 CONNECT that goes through the stack: the same brand and API as
 * `UpgradeResponse` (`setHeader`, `statusCode`, `writeHead`, `write`, `end`, on-headers hooks,
 * `'finish'` once and `'close'` after it, `switchProtocols(cb)`, `externalSwitch()`).
 *
 * - A switch is `:status 200` without END_STREAM (101 does not exist in HTTP/2), carrying every
 *   header set on the response; `cb(stream, head)` then owns the stream.
 * - Anything else is an ordinary HTTP/2 response (401 with its body and `WWW-Authenticate` …);
 *   once it is written the stream is closed (RST_STREAM NO_ERROR after END_STREAM), as an
 *   HTTP/1.1 refusal closes its connection.
 * - `res.socket` is the stream while the response owns it, `null` once it was handed over.
 */
export class Http2UpgradeResponse extends EventEmitter {
  readonly req: Http2ConnectRequest;
  /** The stream while this response owns it; null once handed over or done. */
  socket: http2.ServerHttp2Stream | null;
  /** HTTP/2 has no bytes after the request head: always empty. */
  upgradeHead: Buffer = EMPTY;
  statusCode = 200;
  /** Kept for middleware that set it; HTTP/2 has no reason phrase, nothing is sent. */
  statusMessage = '';
  headersSent = false;
  /** Like `ServerResponse#_header`: non-null once the head is composed (morgan reads it). */
  _header: string | null = null;
  finished = false;
  writableEnded = false;
  writableFinished = false;
  /** True once `'close'` was emitted. */
  destroyed = false;
  /** @internal */
  _upgradeState = OPEN;
  private readonly stream: http2.ServerHttp2Stream;
  private readonly store = new Map<string, StoredHeader>();
  private body: Buffer[] = [];
  private onSwitch: Http2SwitchCallback | null = null;

  constructor(req: Http2ConnectRequest) {
    super();
    this.req = req;
    this.stream = req.stream;
    this.socket = req.stream;
    // A reset arriving while asynchronous middleware runs must not become an uncaught 'error'.
    this.stream.on('error', onStreamError);
    this.onStreamClose = () => {
      this.socket = null;
      // The client went away before the response was written: 'close' without 'finish'.
      if (!this.writableFinished) this.emitClose();
    };
    this.stream.once('close', this.onStreamClose);
  }

  /** The stream's 'close' listener while the response is ours (removed at the switch). */
  private readonly onStreamClose: () => void;

  /** True for a plain CONNECT (a tunnel); false for an extended CONNECT (`:protocol`). */
  get isConnect(): boolean {
    return this.req.method === 'CONNECT' && this.protocol === undefined;
  }

  /** The `:protocol` of an extended CONNECT (`websocket`), or undefined for a tunnel. */
  get protocol(): string | undefined {
    const p = this.req.headers[':protocol'];
    return typeof p === 'string' ? p : undefined;
  }

  /** Always `'2.0'`. */
  get httpVersion(): string {
    return '2.0';
  }

  get writable(): boolean {
    return !this.writableEnded && !this.stream.destroyed;
  }

  // ---- headers ------------------------------------------------------------------------------

  setHeader(name: string, value: OutgoingHttpHeader): this {
    if (this.headersSent) throw headersSentError('set');
    // Node's own checks, as `ServerResponse#setHeader` makes them (same errors, codes included);
    // Node checks numbers and arrays too, its typings take strings only.
    validateHeaderName(name);
    validateHeaderValue(name, value as string);
    const stored = Array.isArray(value) ? value.map(String) : typeof value === 'number' ? value : String(value);
    this.store.set(name.toLowerCase(), { name, value: stored });
    return this;
  }

  appendHeader(name: string, value: OutgoingHttpHeader): this {
    const previous = this.getHeader(name);
    if (previous === undefined) return this.setHeader(name, value);
    const list = Array.isArray(previous) ? previous : [String(previous)];
    return this.setHeader(name, [...list, ...(Array.isArray(value) ? value : [String(value)])]);
  }

  getHeader(name: string): number | string | string[] | undefined {
    return this.store.get(String(name).toLowerCase())?.value;
  }

  hasHeader(name: string): boolean {
    return this.store.has(String(name).toLowerCase());
  }

  removeHeader(name: string): void {
    if (this.headersSent) throw headersSentError('remove');
    this.store.delete(String(name).toLowerCase());
  }

  getHeaderNames(): string[] {
    return [...this.store.keys()];
  }

  getRawHeaderNames(): string[] {
    return [...this.store.values()].map((h) => h.name);
  }

  getHeaders(): OutgoingHttpHeaders {
    const out: OutgoingHttpHeaders = Object.create(null) as OutgoingHttpHeaders;
    for (const [key, { value }] of this.store) out[key] = value;
    return out;
  }

  // ---- the head and the body ------------------------------------------------------------------

  /**
   * Compose the head: status and headers are fixed (on-headers hooks have run), nothing is sent
   * yet. It leaves with `end()`, once every `end()` wrapper let it go.
   */
  writeHead(statusCode: number, reason?: string | OutgoingHttpHeaders | OutgoingHttpHeader[], headers?: OutgoingHttpHeaders | OutgoingHttpHeader[]): this {
    if (this.headersSent) throw headersSentError('set');
    const status = Number(statusCode);
    if (!Number.isInteger(status) || status < 100 || status > 999) {
      const err = new RangeError(`Invalid status code: ${String(statusCode)}`) as RangeError & { code: string };
      err.code = 'ERR_HTTP_INVALID_STATUS_CODE';
      throw err;
    }
    let extra = headers;
    if (typeof reason === 'string') this.statusMessage = reason;
    else if (reason !== undefined) extra = reason;
    if (Array.isArray(extra)) {
      for (let i = 0; i + 1 < extra.length; i += 2) this.appendHeader(String(extra[i]), extra[i + 1] as OutgoingHttpHeader);
    } else if (extra) {
      for (const [name, value] of Object.entries(extra)) if (value !== undefined) this.setHeader(name, value);
    }
    this.statusCode = status;
    this.headersSent = true;
    this._header = `:status ${status}`;
    return this;
  }

  /** Node's hook for "compose the head with what is set now" (express-session calls it). */
  _implicitHeader(): void {
    this.writeHead(this.statusCode);
  }

  /** Like `ServerResponse#flushHeaders`: composes the head; it still leaves with `end()`. */
  flushHeaders(): void {
    if (!this.headersSent) this._implicitHeader();
  }

  write(chunk: string | Uint8Array, encoding?: BufferEncoding | ((err?: Error | null) => void), cb?: (err?: Error | null) => void): boolean {
    if (this.writableEnded) return false;
    if (!this.headersSent) this._implicitHeader();
    const callback = typeof encoding === 'function' ? encoding : cb;
    if (chunk !== undefined && chunk !== null) {
      this.body.push(typeof chunk === 'string' ? Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8') : Buffer.from(chunk));
    }
    if (callback) process.nextTick(callback);
    return true;
  }

  end(cb?: () => void): this;
  end(chunk: unknown, cb?: () => void): this;
  end(chunk: unknown, encoding: BufferEncoding, cb?: () => void): this;
  end(chunk?: unknown, encoding?: unknown, cb?: unknown): this {
    const callback = typeof chunk === 'function' ? chunk : typeof encoding === 'function' ? encoding : cb;
    if (this.writableEnded) return this;
    if (typeof chunk === 'string' || chunk instanceof Uint8Array) {
      this.write(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : undefined);
    }
    if (!this.headersSent) this._implicitHeader();
    this.writableEnded = true;
    this.finished = true;
    if (typeof callback === 'function') this.once('finish', callback as () => void);
    if (this._upgradeState === EXTERNAL) {
      process.nextTick(finishNow, this);
      return this;
    }
    const stream = this.stream;
    if (stream.destroyed || stream.closed) {
      // The client went away: nothing can be sent, and 'close' has been (or will be) emitted.
      this._upgradeState = RELEASED;
      this.socket = null;
      return this;
    }
    if (this._upgradeState === SWITCHING) this.sendSwitch(stream);
    else this.sendResponse(stream);
    return this;
  }

  // ---- switching ------------------------------------------------------------------------------

  /**
   * End the response by switching: `:status 200` without END_STREAM, with every header set on the
   * response (framing and connection headers dropped), once `end()` wrappers let it go; then
   * `'finish'`, then `cb(stream, head)`. Returns false when the stream is already gone; throws when
   * the response has already started.
   */
  switchProtocols(cb: Http2SwitchCallback): boolean {
    if (typeof cb !== 'function') throw new TypeError('upgradeware: switchProtocols(cb) needs a callback');
    this.assertSwitchable('switchProtocols');
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return false;
    for (const name of SWITCH_DROPPED) this.store.delete(name);
    // Hooks run here (they may still set headers): on a throw the response is still open.
    this.writeHead(200);
    this._upgradeState = SWITCHING;
    this.onSwitch = cb;
    this.end();
    return true;
  }

  /**
   * For a library that answers the stream itself (`stream.respond()`): composes the head (hooks
   * fire), returns the headers as `Name: value` lines for the library's own response, and ends
   * this response with `'finish'` — nothing of it reaches the stream.
   */
  externalSwitch(statusCode = 200): string[] {
    this.assertSwitchable('externalSwitch');
    this.writeHead(statusCode);
    this._upgradeState = EXTERNAL;
    const lines: string[] = [];
    for (const [key, { name, value }] of this.store) {
      if (SWITCH_DROPPED.has(key)) continue;
      for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
    }
    this.socket = null;
    this.end();
    return lines;
  }

  /**
   * For a library that writes an HTTP/1.1 switching head (`HTTP/1.1 101 …`) on the stream it was
   * handed, in one `write()` (`ws` does): that write is taken off the stream, the head's header
   * fields go onto this response — except those whose lower-case names are in `skip`, and what a
   * switch always drops (`Upgrade`, `Connection` …) — and the response switches with `:status 200`.
   * Writes after the head wait until the 200 has left. Returns the function that gives the stream
   * its own `write()` back if no head came: call it once the library has returned.
   */
  switchOnHttp1Head(skip: ReadonlySet<string>): () => void {
    const stream = this.stream;
    const intercept = (chunk: unknown): boolean => {
      // Only the first write is the head; every later write goes to the stream as it is.
      restoreWrite(stream);
      this.switchWithHead(String(chunk), skip);
      return true;
    };
    Object.defineProperty(stream, 'write', { value: intercept, writable: true, configurable: true });
    return () => restoreWrite(stream);
  }

  private switchWithHead(head: string, skip: ReadonlySet<string>): void {
    const lines = head.split('\r\n');
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      if (line.length === 0) break;
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim();
      if (skip.has(name.toLowerCase())) continue;
      this.appendHeader(name, line.slice(colon + 1).trim());
    }
    // Frames written before the 200 leaves wait here: nothing may precede the HEADERS frame.
    const stream = this.stream;
    stream.cork();
    if (!this.switchProtocols(() => stream.uncork())) debug('h2 stream gone before the switch');
  }

  /** Never releasable: there is no other listener for an HTTP/2 CONNECT. */
  release(): boolean {
    return false;
  }

  private assertSwitchable(method: string): void {
    if (this._upgradeState !== OPEN || this.headersSent) {
      throw new Error(`upgradeware: ${method}() called after the response started`);
    }
  }

  private headerBlock(status: number, dropped: ReadonlySet<string>): http2.OutgoingHttpHeaders {
    const block: http2.OutgoingHttpHeaders = { ':status': status };
    for (const [key, { value }] of this.store) {
      if (dropped.has(key) || key.startsWith(':')) continue;
      block[key] = value;
    }
    return block;
  }

  private sendSwitch(stream: http2.ServerHttp2Stream): void {
    const cb = this.onSwitch;
    this.onSwitch = null;
    this.body = [];
    try {
      stream.respond(this.headerBlock(200, SWITCH_DROPPED), { endStream: false });
    } catch (err) {
      debug('h2 switch could not be sent: %o', err);
      this._upgradeState = RELEASED;
      this.socket = null;
      stream.close(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    this._upgradeState = RELEASED;
    this.socket = null;
    // After the switch the stream is the new owner's: nothing of ours stays reachable from it.
    stream.removeListener('close', this.onStreamClose);
    if (tracing()) debug('switched %s %s over HTTP/2 (200)', this.req.method, this.req.originalUrl ?? this.req.url);
    this.writableFinished = true;
    this.emit('finish');
    process.nextTick(emitCloseOf, this);
    if (cb === null) return;
    try {
      cb(stream, EMPTY);
    } catch (err) {
      debug('switch callback threw: %o', err);
      stream.close(NGHTTP2_INTERNAL_ERROR);
      process.emitWarning(err instanceof Error ? err : new Error(String(err)), 'UpgradewareSwitchError');
    }
  }

  private sendResponse(stream: http2.ServerHttp2Stream): void {
    this._upgradeState = RELEASED;
    const body = this.body.length === 0 ? EMPTY : Buffer.concat(this.body);
    this.body = [];
    // 1xx cannot end a response; 101 does not exist in HTTP/2 (RFC 9113 §8.6).
    const status = this.statusCode >= 200 ? this.statusCode : 500;
    const noBody = body.length === 0 || status === 204 || status === 304;
    try {
      stream.respond(this.headerBlock(status, CONNECTION_SPECIFIC), { endStream: noBody });
    } catch (err) {
      debug('h2 response could not be sent: %o', err);
      this.socket = null;
      stream.close(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    if (tracing()) debug('answered %d to %s %s over HTTP/2; closing the stream', status, this.req.method, this.req.originalUrl ?? this.req.url);
    const done = (): void => {
      this.socket = null;
      // Node closes the stream itself once the answer has left (RST_STREAM NO_ERROR, RFC 9113
      // §8.1); a reset at once could drop the body still queued. A client that neither reads nor
      // closes is cut off after a grace.
      if (!stream.closed && !stream.destroyed) {
        const timer = setTimeout(closeStream, LINGER_MS, stream);
        timer.unref();
        stream.once('close', () => clearTimeout(timer));
      }
      finishNow(this);
    };
    if (noBody) process.nextTick(done);
    else stream.end(body, done);
  }

  /** @internal */
  emitClose(): void {
    // `destroyed` is set here only: it tells whether 'close' was emitted.
    if (this.destroyed) return;
    this.destroyed = true;
    this.emit('close');
  }
}

Object.defineProperty(Http2UpgradeResponse.prototype, kBrand, { value: true });
Object.defineProperty(Http2UpgradeResponse.prototype, kHttp2, { value: true });

/** Drop the stream's own `write` (the interceptor), if there is one: its prototype's is used again. */
function restoreWrite(stream: http2.ServerHttp2Stream): void {
  delete (stream as { write?: unknown }).write;
}

function finishNow(res: Http2UpgradeResponse): void {
  // Already closed (the client reset the stream while the answer was being written): no 'finish'.
  if (res.writableFinished || res.destroyed) return;
  res.writableFinished = true;
  res._upgradeState = RELEASED;
  res.socket = null;
  res.emit('finish');
  res.emitClose();
}

function closeStream(stream: http2.ServerHttp2Stream): void {
  if (!stream.closed && !stream.destroyed) stream.close(NGHTTP2_NO_ERROR);
}

function emitCloseOf(res: Http2UpgradeResponse): void {
  res.emitClose();
}

function onStreamError(err: Error): void {
  debug('h2 stream error: %s', err.message);
}

function headersSentError(what: string): Error {
  const err = new Error(`Cannot ${what} headers after they are sent to the client`) as Error & { code: string };
  err.code = 'ERR_HTTP_HEADERS_SENT';
  return err;
}

/** Is this an extended CONNECT for a WebSocket (`:protocol websocket`, in any case)? */
export function isWebSocketConnect(reqOrRes: Http2ConnectRequest | Http2UpgradeResponse): boolean {
  const protocol = (reqOrRes instanceof Http2UpgradeResponse ? reqOrRes.req : reqOrRes).headers[':protocol'];
  return typeof protocol === 'string' && protocol.toLowerCase() === 'websocket';
}

/**
 * `abortSwitched` for a request that arrived over HTTP/2: acts on the stream (the request's
 * `socket` is a proxy that refuses writes). A WebSocket gets a 1011 close frame, then the stream
 * ends, and is reset after a short grace; a stream whose switch never left is reset at once.
 */
export function abortSwitchedHttp2(req: Http2ConnectRequest): void {
  const stream = req.stream;
  if (stream.destroyed || stream.closed) return;
  if (!stream.headersSent) {
    stream.close(NGHTTP2_INTERNAL_ERROR);
    return;
  }
  if (isWebSocketConnect(req) && stream.writable) stream.write(WS_CLOSE_1011);
  stream.end();
  setTimeout(() => {
    if (!stream.destroyed) stream.close(NGHTTP2_INTERNAL_ERROR);
  }, ABORT_GRACE_MS).unref();
}

// ---- shutdown ----------------------------------------------------------------------------------

const shutdownHooks = new WeakMap<http2.Http2Session, Set<() => void>>();

/**
 * Run `fn` when the server shuts the stream's session down with `closeHttp2Session()` (a switched
 * stream, e.g. a WebSocket, can then say goodbye: GOAWAY alone never ends an open stream). Returns
 * a function that unregisters `fn`; it is unregistered when the stream closes.
 */
export function onHttp2Shutdown(stream: http2.Http2Stream, fn: () => void): () => void {
  const session = stream.session;
  if (!session) return () => undefined;
  let hooks = shutdownHooks.get(session);
  if (hooks === undefined) shutdownHooks.set(session, (hooks = new Set()));
  const set = hooks;
  const off = (): void => {
    set.delete(fn);
    stream.removeListener('close', off);
  };
  set.add(fn);
  stream.once('close', off);
  return off;
}

/**
 * Shut a server session down: GOAWAY (no new streams; the session closes once its last stream
 * has), and every hook registered with `onHttp2Shutdown()` for its streams runs.
 */
export function closeHttp2Session(session: http2.Http2Session): void {
  if (!session.closed && !session.destroyed) session.close();
  const hooks = shutdownHooks.get(session);
  if (hooks === undefined) return;
  shutdownHooks.delete(session);
  for (const fn of [...hooks]) {
    try {
      fn();
    } catch (err) {
      debug('h2 shutdown hook threw: %o', err);
    }
  }
}
