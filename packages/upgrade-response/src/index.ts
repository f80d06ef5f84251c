/**
 * @upgradeware/upgrade-response
 *
 * A real `http.ServerResponse` for a socket that Node handed over through the `'upgrade'` or
 * `'connect'` event, and the one place in upgradeware that touches such sockets.
 *
 * - Every response that is not a switch (401, 404, 503 …) goes out as a well-formed HTTP/1.1
 *   response with `Connection: close`; the socket is closed once the response is flushed.
 * - `res.switchProtocols(cb)` ends the response with `101 Switching Protocols` (for CONNECT:
 *   `200 Connection Established`) and hands `(socket, head)` to `cb`.
 * - `res.externalSwitch()` lets a library that writes its own 101 (ws) account for it.
 */
import { EventEmitter } from 'node:events';
import * as http from 'node:http';
import { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import * as deprecationModule from './deprecation';
import * as http2Module from './http2';
import * as sharedModule from './shared';
import { ABORT_GRACE_MS, EMPTY, EXTERNAL, LINGER_MS, OPEN, RELEASED, SWITCHING, WS_CLOSE_1011, debug, kBrand, tracing } from './shared';

export type { Http2ConnectRequest, Http2SwitchCallback } from './http2';
// Re-exported as aliases, not with `export { … } from`: for those TypeScript emits getters that
// replace the data properties it declared first, which puts this module's exports object in V8's
// dictionary mode — and every call another package makes through it (`isUpgradeResponse(res)` …)
// becomes a dictionary lookup. An alias is a plain property, and keeps the value, type and namespace.
export import deprecation = deprecationModule.deprecation;
export import Http2UpgradeResponse = http2Module.Http2UpgradeResponse;
export import abortSwitchedHttp2 = http2Module.abortSwitchedHttp2;
export import closeHttp2Session = http2Module.closeHttp2Session;
export import isHttp2Request = http2Module.isHttp2Request;
export import isHttp2UpgradeResponse = http2Module.isHttp2UpgradeResponse;
export import isWebSocketConnect = http2Module.isWebSocketConnect;
export import onHttp2Shutdown = http2Module.onHttp2Shutdown;
/** @internal `d.enabled` as a call, for the packages' own traces (see shared.ts). */
export import enabledReader = sharedModule.enabledReader;

declare module 'http' {
  interface IncomingMessage {
    /** The request URL before any mount path was stripped (set by the first app it reaches). */
    originalUrl?: string;
  }
}

/** Called by a middleware chain to go on, or with an error to skip to the error layers. */
export type NextFunction = (err?: unknown) => void;

/**
 * A Connect-style middleware. A returned promise that rejects is treated as `next(err)`.
 * (Declared through a method so that handlers typed for Express's `Request`/`Response`, which
 * extend Node's, are accepted too.)
 */
export type Middleware<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse> = {
  handler(req: Req, res: Res, next: NextFunction): unknown;
}['handler'];

/** A Connect-style error middleware: four arguments, called when an earlier layer failed. */
export type ErrorMiddleware<
  Req extends IncomingMessage = IncomingMessage,
  Res extends ServerResponse = ServerResponse,
> = {
  handler(err: unknown, req: Req, res: Res, next: NextFunction): unknown;
}['handler'];

/** A middleware that has declared it can run for upgrade and CONNECT requests. */
export type UpgradeAware<F> = F & { supportsUpgrade: true };

/** Receives the raw socket and the bytes the client sent after the request head. */
export type SwitchCallback = (socket: Duplex, head: Buffer) => void;

/** What `res.switchProtocols()` writes: the status line of a switch. */
const SWITCHING_PROTOCOLS = 101;
const CONNECT_ESTABLISHED = 200;
/** How many unread bytes are drained from a rejected socket before it is cut. */
const LINGER_MAX_BYTES = 64 * 1024;
/** Headers that describe a body or a connection: meaningless, or harmful, on a switch. */
const FRAMING = ['content-length', 'transfer-encoding'];
/** Headers that the library writing its own 101 owns (see `externalSwitch`). */
const SWITCH_OWNED = new Set(['upgrade', 'connection', 'content-length', 'transfer-encoding']);

/** `#onSwitch in value`, set by UpgradeResponse's static block. */
let hasOwnBrand: (value: object) => boolean;
/** On a socket being closed after a refusal: the hard deadline, and the bytes drained so far. */
const kLinger = Symbol('upgradeware.linger');
type GuardedSocket = Duplex & { [kLinger]?: { timer: NodeJS.Timeout; bytes: number } };
/** A socket and the response Node's server (or ours) has it write for. */
type OwnedSocket = Duplex & { _httpMessage?: ServerResponse | null };
/** Set by `createBoundLater()` for the one constructor call it makes. */
let deferBinding = false;
/** `SocketResponse._binding`: by Node's `assignSocket`; late, not yet; late, done (`bindSocket`). */
const BOUND_BY_NODE = 0;
const BIND_PENDING = 1;
const BOUND_LATE = 2;
/**
 * Node's own `writeHead()`, or null when something (an APM agent) had replaced it on the prototype
 * before this module was loaded: then `externalSwitch()` always calls it. Told by its source, once.
 */
const nodeWriteHead = Function.prototype.toString.call(ServerResponse.prototype.writeHead).includes('ERR_HTTP_INVALID_STATUS_CODE')
  ? ServerResponse.prototype.writeHead
  : null;
/** The head an external switch with Node's default status message records (`headersSent` reads it). */
const SWITCH_HEAD = 'HTTP/1.1 101 Switching Protocols\r\n\r\n';
/** Node's own `end()`, called with the arguments as given (no array per call). */
const nodeEnd = ServerResponse.prototype.end as (this: ServerResponse, chunk?: unknown, encoding?: unknown, cb?: unknown) => ServerResponse;

/** Node's fields and method behind `writeHead()`: where the headers set are, and what writes them out. */
interface HeadInternals {
  _header: string | null;
  _headerSent: boolean;
  _storeHeader(firstLine: string, headers: unknown): void;
}
/** Node's own header block builder (the method `writeHead()` ends with). */
const nodeStoreHeader = (ServerResponse.prototype as unknown as Partial<HeadInternals>)._storeHeader;
/** The key under which Node keeps a message's headers (`undefined` if this Node has none such). */
const kOutHeaders = Object.getOwnPropertySymbols(new http.OutgoingMessage()).find((key) => key.description === 'kOutHeaders');

/**
 * A `ServerResponse` bound to a socket that Node's HTTP parser let go of. It never keeps the
 * connection alive: the response goes out with `Connection: close` and the socket is closed
 * once the response is flushed. It is the base of `UpgradeResponse`; on its own, the dispatcher
 * uses it to serve an upgrade to a protocol the app does not speak as an ordinary request when no
 * HTTP server can take the request back (`replayAsRequest`, DESIGN.md rule 7).
 */
export class SocketResponse extends ServerResponse {
  /** Bytes the client sent after the request head (Node's `head` argument). */
  upgradeHead: Buffer;
  /** @internal Where the response is in its life: open, switching, external, released. */
  _upgradeState = OPEN;

  /** @internal How the socket's listeners were put in place: `assignSocket`, or late (`bindSocket`). */
  _binding: number;

  constructor(req: IncomingMessage, socket: Duplex, head: Buffer = EMPTY) {
    super(req);
    this.upgradeHead = head;
    this.shouldKeepAlive = false;
    if (deferBinding) {
      // `createBoundLater()`: what `assignSocket` does for writes (they go to the socket), and the
      // rest — the listeners — once the stack's synchronous part has run (`bindSocket`).
      deferBinding = false;
      this._binding = BIND_PENDING;
      (socket as OwnedSocket)._httpMessage = this;
      (this as { socket: Socket | null }).socket = socket as Socket;
      return;
    }
    this._binding = BOUND_BY_NODE;
    // Node removed its own 'error' listener before it emitted the socket: without one, a
    // client reset during asynchronous middleware would kill the process. It stays for the
    // socket's whole life, also after a switch, unless the new owner keeps one of its own (`guard`,
    // `dropErrorGuard`).
    guard(socket);
    this.on('finish', onResponseFinish);
    // `assignSocket` is what Node's own server does for every response: writes go to the
    // socket, and the socket's 'close' becomes the response's 'close'.
    this.assignSocket(socket as Socket);
  }

  /**
   * Stop managing the socket without answering: it is left exactly as Node gave it (paused,
   * with its unread bytes), for another `'upgrade'` listener. Returns false when the response
   * has already started or the socket is gone.
   */
  release(): boolean {
    const socket = this.socket;
    if (this._upgradeState !== OPEN || this.headersSent || !socket || socket.destroyed) return false;
    this._upgradeState = RELEASED;
    detach(this, socket);
    unguard(socket);
    this.upgradeHead = EMPTY;
    debug('released %s %s', this.req.method, urlOf(this.req));
    return true;
  }
}

/**
 * A `ServerResponse` for an HTTP Upgrade or CONNECT request, bound to its socket.
 *
 * Everything that works on a response works here: `setHeader`, `statusCode`, `writeHead`,
 * `write`, `end`, on-headers hooks, `'finish'` and `'close'`. A response that is not a switch goes
 * out as an ordinary HTTP/1.1 response with `Connection: close`. The response ends as a switch
 * with `switchProtocols(cb)`, or with `externalSwitch()` when a library writes the 101 itself.
 */
export class UpgradeResponse extends SocketResponse {
  // A private field lives on the instance: `#onSwitch in res` is the brand that survives a
  // prototype swap (Express's `Object.setPrototypeOf(res, app.response)`), at no extra cost.
  #onSwitch: SwitchCallback | null = null;
  /** True while `externalSwitch()` runs `writeHead()`: the head is accounted for, never written. */
  #headOnly = false;

  static {
    hasOwnBrand = (value) => #onSwitch in value;
  }

  constructor(req: IncomingMessage, socket: Duplex, head?: Buffer) {
    super(req, socket, head);
    // Own, so that it survives a prototype swap: middleware that run after Express's swap and
    // before anything restores our methods (express-session, compression) keep `res.end` and
    // call it from their wrappers — it must still be the one that knows about external switches.
    (this as UpgradeResponse).end = UpgradeResponse.prototype.end;
  }

  /** True for a CONNECT request: a switch answers `200 Connection Established`. */
  get isConnect(): boolean {
    return this.req.method === 'CONNECT';
  }

  /**
   * End the response by switching protocols: writes `101 Switching Protocols` (for CONNECT,
   * `200 Connection Established` with no framing headers) with every header set on the response,
   * fires on-headers listeners and `'finish'` once, then calls `cb(socket, head)`.
   *
   * For a 101 without an `Upgrade` header, the first protocol the client asked for is named.
   * `end()` is wrapped by middleware such as express-session: the 101 is written once they let
   * the response end (after a session save), so `cb` may run asynchronously.
   *
   * Returns false, without calling `cb`, when the client has already gone away. Throws when the
   * response has already started.
   */
  switchProtocols(cb: SwitchCallback): boolean {
    if (typeof cb !== 'function') throw new TypeError('upgradeware: switchProtocols(cb) needs a callback');
    this.assertSwitchable('switchProtocols');
    const socket = this.socket;
    if (!socket || socket.destroyed) return false;
    const before = saveHeaders(this);
    try {
      for (const name of FRAMING) this.removeHeader(name);
      if (this.isConnect) {
        this.removeHeader('connection');
        this.writeHead(CONNECT_ESTABLISHED, 'Connection Established');
      } else {
        if (!this.hasHeader('upgrade')) this.setHeader('Upgrade', firstToken(this.req.headers.upgrade));
        this.setHeader('Connection', 'Upgrade');
        this.writeHead(SWITCHING_PROTOCOLS, 'Switching Protocols');
      }
    } catch (err) {
      // An on-headers listener threw: the response is still open and will be answered as an
      // error — with the headers it had, so it goes out as an ordinary `Connection: close` one.
      restoreHeaders(this, before);
      throw err;
    }
    this._upgradeState = SWITCHING;
    this.#onSwitch = cb;
    this.on('finish', handOver);
    this.end();
    return true;
  }

  /**
   * For a library that writes the switching response itself (`ws` writes its own 101). Call it
   * just before the library writes — from ws's `'headers'` event. It runs `writeHead(101)`, so
   * on-headers listeners fire and may still set headers, and returns the response's headers as
   * `Name: value` lines for the library to add to its own (`Upgrade`, `Connection` and framing
   * headers are left to the library). The socket is released to the library, the response ends
   * with status 101 and `'finish'` fires once, and nothing of the response reaches the socket.
   */
  externalSwitch(statusCode: number = SWITCHING_PROTOCOLS): string[] {
    this.assertSwitchable('externalSwitch');
    if (!recordSwitchHead(this, statusCode)) {
      this.#headOnly = true;
      try {
        this.writeHead(statusCode);
      } finally {
        this.#headOnly = false;
      }
    }
    this._upgradeState = EXTERNAL;
    const lines = headerLines(this, SWITCH_OWNED);
    const socket = this.socket;
    if (socket) {
      detach(this, socket);
      this.upgradeHead = EMPTY;
    }
    if (tracing()) debug('switched %s %s (%d, written by another library)', this.req.method, urlOf(this.req), statusCode);
    this.end();
    return lines;
  }

  override end(cb?: () => void): this;
  override end(chunk: unknown, cb?: () => void): this;
  override end(chunk: unknown, encoding: BufferEncoding, cb?: () => void): this;
  override end(chunk?: unknown, encoding?: unknown, cb?: unknown): this {
    if (this._upgradeState !== EXTERNAL) return nodeEnd.call(this, chunk, encoding, cb) as this;
    // The 101 was written by someone else: account for it without touching the socket.
    const callback = typeof chunk === 'function' ? chunk : typeof encoding === 'function' ? encoding : cb;
    if (typeof callback === 'function') this.once('finish', callback as () => void);
    if (!this.finished) {
      this.finished = true;
      process.nextTick(finishExternal, this);
    }
    return this;
  }

  /**
   * @internal Node's `writeHead()` ends here, building the header block that would go out with the
   * first write. For an external switch nothing of ours is written (the library writes its own
   * 101 from `headerLines`), so the block is not built: the response is only marked as having
   * sent its head. Anything unusual (headers given to `writeHead()` itself, a `Trailer` or
   * `Expect` header, whose handling Node's builder owns) goes through Node's builder as before.
   */
  _storeHeader(firstLine: string, headers: unknown): void {
    if (
      this.#headOnly &&
      kOutHeaders !== undefined &&
      (headers === undefined || headers === null || headers === (this as unknown as Record<symbol, unknown>)[kOutHeaders]) &&
      recordHeadOnly(this, firstLine + '\r\n')
    ) {
      return;
    }
    nodeStoreHeader!.call(this, firstLine, headers);
  }

  private assertSwitchable(method: string): void {
    if (this._upgradeState !== OPEN || this.headersSent) {
      throw new Error(`upgradeware: ${method}() called after the response started`);
    }
  }

  /** @internal: the response's 'finish' listener, once the switch is flushed. */
  static handOver(res: UpgradeResponse): void {
    const socket = res.socket;
    const cb = res.#onSwitch;
    const head = res.upgradeHead;
    res.#onSwitch = null;
    res.upgradeHead = EMPTY;
    res._upgradeState = RELEASED;
    if (!socket || !cb) return;
    // The client went away while the switch was being flushed: nothing to hand over. The socket's
    // own 'close' (still ours) ends the response.
    if (socket.destroyed) return;
    detach(res, socket);
    if (tracing()) debug('switched %s %s (%d)', res.req.method, urlOf(res.req), res.statusCode);
    process.nextTick(emitClose, res);
    try {
      cb(socket, head);
    } catch (err) {
      // The switch is done; nobody up the chain can answer any more. Close the connection and
      // report it, rather than let it become an uncaught exception.
      debug('switch callback threw: %o', err);
      socket.destroy();
      process.emitWarning(err instanceof Error ? err : new Error(String(err)), 'UpgradewareSwitchError');
    }
  }
}

Object.defineProperty(UpgradeResponse.prototype, kBrand, { value: true });

/**
 * Serve an upgrade request as an ordinary one, through the HTTP server's own request handling:
 * the request head is written back in front of the socket's unread bytes, without the `upgrade`
 * token of its `Connection` header, and the socket is given back to the server's own connection
 * handling. Node parses it again — body included, however slowly it arrives — and emits
 * `'request'`; requests the client pipelined behind it are served after it, as on any
 * connection. This is how an upgrade to a protocol the app does not speak (`h2c` …) still gets
 * its page (RFC 9110 §7.8 lets a server ignore Upgrade).
 *
 * The socket is given to Node's own connection listener, not announced again with a second
 * `'connection'` event (listeners counting connections see one per TCP connection); on a server
 * without it, `'connection'` (`'secureConnection'` for TLS) is emitted, the documented way.
 *
 * `server` defaults to the server that accepted the socket. Returns false, touching nothing, when
 * there is no such server with a `'request'` listener.
 */
export function replayAsRequest(req: IncomingMessage, socket: Duplex, head: Buffer, server?: EventEmitter): boolean {
  const target = serverOf(socket, server);
  if (!(target instanceof EventEmitter) || target.listenerCount('request') === 0) return false;
  let text = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    let value = raw[i + 1]!;
    if (name.length === 10 && name.toLowerCase() === 'connection') {
      // Without its `upgrade` token the request is an ordinary one to the parser; `close` or
      // `keep-alive` keep their meaning.
      value = value
        .split(',')
        .map((token) => token.trim())
        .filter((token) => token.length !== 0 && token.toLowerCase() !== 'upgrade')
        .join(', ');
      if (value.length === 0) continue;
    }
    text += `${name}: ${value}\r\n`;
  }
  text += '\r\n';
  const bytes = Buffer.from(text, 'latin1');
  socket.unshift(head.length === 0 ? bytes : Buffer.concat([bytes, head]));
  debug('replaying %s %s as an ordinary request', req.method, req.url);
  const event = (socket as Duplex & { encrypted?: boolean }).encrypted ? 'secureConnection' : 'connection';
  const own = (http as unknown as { _connectionListener?: (this: EventEmitter, socket: Duplex) => void })._connectionListener;
  if (own !== undefined && target.listeners(event).includes(own)) own.call(target, socket);
  else target.emit(event, socket);
  return true;
}

/**
 * Wait until no response of an earlier, pipelined request owns `socket`, then call `then()`.
 *
 * A client may send an ordinary request and an upgrade (or CONNECT) in one packet: Node emits
 * `'upgrade'` while the first request's response still owns the socket, and a response bound to
 * the socket now would interleave with it (Node refuses: `ERR_HTTP_SOCKET_ASSIGNED`). Like a plain
 * `ws` server, the upgrade is answered after the earlier responses: `then()` runs synchronously
 * when the socket is free, otherwise once the earlier responses have finished. Meanwhile our
 * 'error' listener is on the socket. If the socket closes first, or the earlier responses take
 * longer than `limitMs` (0: no limit), `then()` is never called and the socket is destroyed.
 */
export function whenSocketFree(socket: Duplex, then: () => void, limitMs = 0): void {
  if (isSocketFree(socket)) {
    then();
    return;
  }
  guard(socket);
  debug('an earlier response owns the socket: waiting for it to finish');
  let timer: NodeJS.Timeout | undefined;
  const done = (): void => {
    clearTimeout(timer);
    socket.removeListener('close', done);
  };
  const check = (): void => {
    if (socket.destroyed) return done();
    const owner = ownerOf(socket);
    if (owner !== null) {
      owner.once('finish', check);
      return;
    }
    done();
    // A response that asked to close the connection (HTTP/1.0, `Connection: close`) ends it.
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    // Node armed its keep-alive timer when the earlier response finished; the socket is ours now.
    (socket as Duplex & { setTimeout?: (ms: number) => void }).setTimeout?.(0);
    then();
  };
  socket.once('close', done);
  if (limitMs > 0) {
    timer = setTimeout(() => {
      debug('time limit: an earlier response never finished; closing');
      done();
      socket.destroy();
    }, limitMs);
  }
  ownerOf(socket)!.once('finish', check);
}

function ownerOf(socket: Duplex): ServerResponse | null {
  return (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage ?? null;
}

/**
 * Is `res` still the response its connection serves: not switched, released or handed over, not
 * replaced by another response (HTTP/1.1), its stream still attached (HTTP/2)? Only then may the
 * connection be closed on its behalf.
 */
export function ownsSocket(res: ServerResponse): boolean {
  if (isHttp2UpgradeResponse(res)) return res.socket !== null;
  const socket = res.socket;
  return socket !== null && ownerOf(socket) === res;
}

/**
 * @internal For the dispatcher: `new Kind(req, socket, head)`, except that the socket's listeners — our
 * `'error'` guard, its `'close'` as the response's `'close'` — and the response's own `'finish'`
 * handling wait for `bindSocket(res)`, which the dispatcher calls as soon as the stack's synchronous
 * part has run. Nothing can reach them before: Node emits a socket's events from the event loop, never
 * inside the synchronous call that handed it over. A handshake switched within that part (ws's
 * listeners already on the socket) never needs them.
 */
export function createBoundLater<T extends SocketResponse>(
  Kind: new (req: IncomingMessage, socket: Duplex, head: Buffer) => T,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
): T {
  deferBinding = true;
  try {
    return new Kind(req, socket, head);
  } finally {
    deferBinding = false;
  }
}

/**
 * @internal Put in place what `createBoundLater()` left out, if `res` still owns its socket: from
 * here on it is bound as `new UpgradeResponse()` binds (ours first, as there). Once only.
 */
export function bindSocket(res: ServerResponse): void {
  // Read on the response itself: a framework may have replaced its prototype already (Express).
  const late = res as ServerResponse & { _binding?: number };
  if (late._binding !== BIND_PENDING) return;
  const socket = res.socket;
  if (socket === null || ownerOf(socket) !== res) return;
  late._binding = BOUND_LATE;
  guard(socket);
  res.prependListener('finish', onResponseFinish);
  socket.prependListener('close', onOwnedSocketClose);
}

/**
 * Let go of the socket, as Node's `detachSocket()` does for a response bound by `assignSocket`
 * (called here rather than through the response, whose prototype a framework may have replaced).
 */
function detach(res: SocketResponse, socket: Duplex): void {
  if (res._binding === BOUND_BY_NODE) {
    res.detachSocket(socket as Socket);
    return;
  }
  if (res._binding === BOUND_LATE) socket.removeListener('close', onOwnedSocketClose);
  (socket as OwnedSocket)._httpMessage = null;
  (res as { socket: Socket | null }).socket = null;
}

/** The socket of a response bound late closed: the response closes, as Node's own do. */
function onOwnedSocketClose(this: OwnedSocket): void {
  const res = this._httpMessage as (ServerResponse & { _closed?: boolean }) | null | undefined;
  if (res === null || res === undefined || res._closed === true) return;
  res.destroyed = true;
  res._closed = true;
  res.emit('close');
}

/**
 * What `writeHead(101)` records for an external switch, set directly when that is all Node's own
 * `writeHead()` would do: nobody wrapped it (an on-headers hook does), no status message of the
 * stack's to check, no header that Node's builder treats apart. Nothing is written either way.
 */
function recordSwitchHead(res: ServerResponse, statusCode: number): boolean {
  if (statusCode !== SWITCHING_PROTOCOLS || nodeWriteHead === null || res.writeHead !== nodeWriteHead || res.statusMessage || kOutHeaders === undefined) return false;
  if (!recordHeadOnly(res, SWITCH_HEAD)) return false;
  res.statusMessage = 'Switching Protocols';
  res.statusCode = SWITCHING_PROTOCOLS;
  (res as unknown as { _hasBody: boolean })._hasBody = false;
  return true;
}

/**
 * Mark `res` as having sent `head` without building Node's header block (nothing of it is written),
 * unless a header that Node's builder treats apart (`Trailer`, `Expect`) is set: what `headersSent`
 * and code reading `_header` need to see.
 */
function recordHeadOnly(res: ServerResponse, head: string): boolean {
  if (res.hasHeader('trailer') || res.hasHeader('expect')) return false;
  const internals = res as unknown as HeadInternals;
  internals._header = head;
  internals._headerSent = false;
  return true;
}

/**
 * Close `res`'s connection (its stream, over HTTP/2) when `res` still owns it (`ownsSocket`) and it
 * is not closed yet: what a time limit or a failure that can no longer be answered does. Returns
 * true when it closed it.
 */
export function destroyOwnedSocket(res: ServerResponse): boolean {
  const socket = res.socket;
  if (!socket || socket.destroyed || !ownsSocket(res)) return false;
  socket.destroy();
  return true;
}

/** Is nothing else answering on `socket` (no earlier pipelined response still owns it)? */
export function isSocketFree(socket: Duplex): boolean {
  return ownerOf(socket) === null;
}

/** Node's parser keeps this many `rawHeaders` entries (1,000 lines) when maxHeadersCount is unset. */
const DEFAULT_MAX_HEADER_ENTRIES = 2000;

/**
 * Did Node keep every header line of the request? Past the server's `maxHeadersCount` it drops the
 * rest, so a request rebuilt from `rawHeaders` (`replayAsRequest`) could lose its framing
 * (`Content-Length`). `server` defaults, as for `replayAsRequest`, to the one that accepted `socket`.
 */
export function headersComplete(req: IncomingMessage, socket: Duplex, server?: EventEmitter): boolean {
  const count = (serverOf(socket, server) as { maxHeadersCount?: unknown } | undefined)?.maxHeadersCount;
  const limit = typeof count === 'number' ? count * 2 : DEFAULT_MAX_HEADER_ENTRIES;
  return limit <= 0 || req.rawHeaders.length < limit;
}

/** The server given, or the one that accepted the socket (Node sets `socket.server`). */
function serverOf(socket: Duplex, server: EventEmitter | undefined): unknown {
  return server ?? (socket as Duplex & { server?: unknown }).server;
}

/**
 * End a connection after its switch, because the server failed (e.g. a session that could not be
 * saved once ws had written its 101): a WebSocket gets a close frame with code 1011 (internal
 * error) first, then the connection is ended and, after a short grace, destroyed.
 */
export function abortSwitched(req: IncomingMessage, socket: Duplex | null | undefined): void {
  // HTTP/2: the request's socket is a proxy that refuses writes; act on the stream.
  if (isHttp2Request(req)) return abortSwitchedHttp2(req);
  if (!socket || socket.destroyed) return;
  if (isWebSocketUpgrade(req.headers.upgrade)) socket.write(WS_CLOSE_1011);
  socket.end();
  setTimeout(destroySocket, ABORT_GRACE_MS, socket).unref();
}

function isWebSocketUpgrade(header: string | undefined): boolean {
  if (header === undefined) return false;
  for (const token of header.split(',')) if (token.trim().toLowerCase() === 'websocket') return true;
  return false;
}

function destroySocket(socket: Duplex): void {
  socket.destroy();
}

/**
 * True when `res` is an `UpgradeResponse`: the request is an upgrade or CONNECT being dispatched.
 * Also after a framework replaced the response's prototype (Express does, with its own response
 * object): the switch methods are then put back on the chain, above the framework's, so
 * `res.switchProtocols()`, `res.externalSwitch()` and the framework's `res.status()` all work.
 */
export function isUpgradeResponse(res: unknown): res is UpgradeResponse {
  if (typeof res !== 'object' || res === null) return false;
  if ((res as Record<symbol, unknown>)[kBrand] === true) return true;
  if (!hasOwnBrand(res)) return false;
  restoreMethods(res);
  return true;
}

/** For each foreign prototype seen on an UpgradeResponse: that prototype plus our methods. */
const blended = new WeakMap<object, object>();

/**
 * An UpgradeResponse whose prototype was replaced: give it a prototype that inherits from the
 * replacement and carries UpgradeResponse's (and SocketResponse's) methods, accessors and brand.
 * One such prototype per replacement, made once: per request this is a lookup and a swap.
 */
function restoreMethods(res: object): void {
  const proto = Object.getPrototypeOf(res) as object | null;
  let blend = proto === null ? UpgradeResponse.prototype : blended.get(proto);
  if (blend === undefined) {
    const methods: Record<PropertyKey, PropertyDescriptor> = {};
    for (const source of [SocketResponse.prototype, UpgradeResponse.prototype]) {
      for (const key of Reflect.ownKeys(source)) {
        if (key !== 'constructor') methods[key] = Object.getOwnPropertyDescriptor(source, key)!;
      }
    }
    blend = Object.create(proto, methods) as object;
    blended.set(proto!, blend);
  }
  Object.setPrototypeOf(res, blend);
  debug('restored the upgrade methods after a prototype swap');
}

/**
 * Mark a middleware as able to run for upgrade and CONNECT requests. Third-party middleware that
 * only use the `ServerResponse` API (morgan, express-session, helmet …) work unchanged.
 */
export function supportsUpgrade<F extends Middleware>(fn: F): UpgradeAware<F>;
export function supportsUpgrade<F extends ErrorMiddleware>(fn: F): UpgradeAware<F>;
export function supportsUpgrade<F extends (...args: never[]) => unknown>(fn: F): UpgradeAware<F>;
export function supportsUpgrade<F extends (...args: never[]) => unknown>(fn: F): UpgradeAware<F> {
  if (typeof fn !== 'function') throw new TypeError('upgradeware: supportsUpgrade(fn) needs a function');
  const marked = fn as UpgradeAware<F>;
  marked.supportsUpgrade = true;
  return marked;
}

/** The headers `switchProtocols()` changes, with Node's "removed on purpose" flags. */
const SWITCH_TOUCHED = ['content-length', 'transfer-encoding', 'connection', 'upgrade'] as const;
interface RemovalFlags {
  _removedConnection: boolean;
  _removedContLen: boolean;
  _removedTE: boolean;
}
interface SavedHeaders {
  values: Array<ReturnType<ServerResponse['getHeader']>>;
  flags: RemovalFlags;
}

function saveHeaders(res: ServerResponse): SavedHeaders {
  const f = res as unknown as RemovalFlags;
  return {
    values: SWITCH_TOUCHED.map((name) => res.getHeader(name)),
    flags: { _removedConnection: f._removedConnection, _removedContLen: f._removedContLen, _removedTE: f._removedTE },
  };
}

function restoreHeaders(res: ServerResponse, saved: SavedHeaders): void {
  if (res.headersSent) return;
  SWITCH_TOUCHED.forEach((name, i) => {
    const value = saved.values[i];
    if (value === undefined) res.removeHeader(name);
    else res.setHeader(name, value);
  });
  // removeHeader() of a framing header also tells Node not to generate one: undo that too.
  Object.assign(res as unknown as RemovalFlags, saved.flags);
}

/** The response's headers as `Name: value` lines, names as they were set, one line per value. */
function headerLines(res: ServerResponse, skip: ReadonlySet<string>): string[] {
  const lines: string[] = [];
  // Node keeps each header as [name as set, value] under its lower-case name: read there, there is
  // no list of names to make and no name to lower-case (where this Node keeps them elsewhere,
  // getRawHeaderNames(), Node ≥ 15.13, gives the names as set).
  const map = kOutHeaders === undefined ? undefined : (res as unknown as Record<symbol, unknown>)[kOutHeaders];
  if (map !== null && typeof map === 'object') {
    const entries = map as Record<string, [string, ReturnType<ServerResponse['getHeader']>]>;
    for (const lower in entries) {
      const entry = entries[lower]!;
      if (skip.has(lower)) continue;
      pushLines(lines, entry[0], entry[1]);
    }
    return lines;
  }
  if (map === null) return lines;
  const names = (res as ServerResponse & { getRawHeaderNames(): string[] }).getRawHeaderNames();
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    const lower = name.toLowerCase();
    if (!skip.has(lower)) pushLines(lines, name, res.getHeader(lower));
  }
  return lines;
}

/** `Name: value` lines of one header: one line per value. */
function pushLines(lines: string[], name: string, value: ReturnType<ServerResponse['getHeader']>): void {
  if (value === undefined) return;
  if (Array.isArray(value)) for (const v of value) lines.push(`${name}: ${v}`);
  else lines.push(`${name}: ${value}`);
}

function urlOf(req: IncomingMessage): string | undefined {
  return req.originalUrl ?? req.url;
}

function firstToken(value: string | undefined): string {
  if (!value) return 'websocket';
  const comma = value.indexOf(',');
  return (comma === -1 ? value : value.slice(0, comma)).trim();
}

function handOver(this: UpgradeResponse): void {
  UpgradeResponse.handOver(this);
}

/**
 * Put our 'error' listener on a socket, once. It stays for the socket's whole life, a switch
 * included — unless a new owner that keeps its own takes it off (`dropErrorGuard`): whatever the
 * new owner does (`socket.pipe(socket)` adds an 'error' listener that
 * re-emits the error when it finds itself alone), a reset can never become an uncaught
 * exception. The listener is a plain function: it holds nothing of the request or response.
 */
function guard(socket: GuardedSocket): void {
  // Told by the listener itself, not by a mark on the socket: a socket kept open for hours by its
  // new owner carries nothing more of ours than the listener.
  if (isGuarded(socket)) return;
  socket.on('error', onSocketError);
}

function isGuarded(socket: Duplex): boolean {
  // listenerCount(name, listener) counts in place: no copy of the listener array per response.
  return socket.listenerCount('error', onSocketError) !== 0;
}

function unguard(socket: GuardedSocket): void {
  socket.removeListener('error', onSocketError);
}

/**
 * For the new owner of a switched socket that keeps an `'error'` listener of its own on it until
 * it is gone (ws does, from the moment it takes the socket): take ours off, so that a long-lived
 * connection carries nothing of this package. Ours stays, and the answer is false, when no other
 * listener is there.
 */
export function dropErrorGuard(socket: Duplex): boolean {
  if (socket.listenerCount('error') < 2 || !isGuarded(socket)) return false;
  unguard(socket);
  return true;
}

/** The peer of a socket, as `socket.remoteAddress`, `remoteFamily` and `remotePort` give it. */
export interface PeerName {
  address?: string;
  family?: string;
  port?: number;
}

type PeerSocket = Duplex & {
  _peername?: PeerName;
  _handle?: { getpeername?: (out: PeerName) => number } | null;
  connecting?: boolean;
  remoteAddress?: string;
  remoteFamily?: string;
  remotePort?: number;
};

const NO_PEER: PeerName = Object.freeze({});

/**
 * The peer's address, family and port, as `socket.remoteAddress` & co. give them — read without
 * leaving Node's cache of them on a socket that had none. Node keeps the answer of its first read on
 * the socket for the socket's life (≈ 90 bytes): a logger reading the address of every upgrade would
 * add that to every WebSocket left open. A later `socket.remoteAddress` still answers while the
 * socket is open (Node reads it then); after the socket closed it is `undefined` unless something
 * read it while it was open — as on a server that never read it.
 */
export function peerOf(socket: Duplex | null | undefined): PeerName {
  if (!socket) return NO_PEER;
  const s = socket as PeerSocket;
  const cached = s._peername;
  if (cached !== undefined && cached !== null) return cached;
  const handle = s._handle;
  if (handle && typeof handle.getpeername === 'function' && s.connecting !== true) {
    const out: PeerName = {};
    // What Node's own read does, minus keeping the answer.
    return handle.getpeername(out) === 0 ? out : NO_PEER;
  }
  // Not a socket of net's (an HTTP/2 stream's proxy, a test double …): its own getters.
  const address = s.remoteAddress;
  return address === undefined ? NO_PEER : { address, family: s.remoteFamily, port: s.remotePort };
}

/**
 * The address of `req`'s peer, as `req.socket.remoteAddress` gives it. For an upgrade (`upgrade`
 * true) it is read with `peerOf`, without leaving Node's cache on a socket that may stay open for
 * hours; an ordinary request reads it as Node does (its keep-alive connection reuses the cache).
 */
export function remoteAddressOf(req: IncomingMessage, upgrade: boolean): string | undefined {
  return upgrade ? peerOf(req.socket).address : req.socket?.remoteAddress;
}

function onSocketError(this: Duplex, err: Error): void {
  debug('socket error: %s', err.message);
  this.destroy();
}

/**
 * Every response of ours ends in 'close', after 'finish', as on Node's own server. Like Node's,
 * it is then `destroyed`: a late `write()`/`end()` is dropped instead of emitting an 'error'
 * that nobody listens to.
 */
function emitClose(res: ServerResponse): void {
  res.destroyed = true;
  res.emit('close');
}

function finishExternal(res: UpgradeResponse): void {
  res.emit('finish');
  emitClose(res);
}

function lingerTimeout(socket: GuardedSocket): void {
  debug('closing a refused connection that was not closed by its client in time');
  socket.destroy();
}

/** Unread bytes of a refused connection are counted and dropped; past the limit, it is cut. */
function onLingerData(this: GuardedSocket, chunk: Buffer | string): void {
  const linger = this[kLinger];
  if (linger === undefined) return;
  linger.bytes += chunk.length;
  if (linger.bytes > LINGER_MAX_BYTES) {
    debug('closing a refused connection that sent more than %d bytes', LINGER_MAX_BYTES);
    this.destroy();
  }
}

function onLingerClose(this: GuardedSocket): void {
  const linger = this[kLinger];
  if (linger !== undefined) clearTimeout(linger.timer);
  this[kLinger] = undefined;
  this.removeListener('data', onLingerData);
}

/**
 * After a response that is not a switch: let go of the socket and close it once flushed. The
 * client's unread bytes are drained rather than answered with a reset, which could make the
 * client drop the response it has not read yet.
 */
function onResponseFinish(this: SocketResponse): void {
  if (this._upgradeState !== OPEN) return;
  const socket = this.socket;
  this._upgradeState = RELEASED;
  this.upgradeHead = EMPTY;
  if (!socket) return;
  detach(this, socket);
  process.nextTick(emitClose, this);
  if (tracing()) debug('answered %d to %s %s; closing', this.statusCode, this.req.method, urlOf(this.req));
  if (socket.destroyed) return;
  linger(socket);
}

/**
 * Close a socket after a refusal. The client's unread bytes are drained rather than answered with
 * a reset, which could make the client drop the response it has not read yet — but only up to
 * `LINGER_MAX_BYTES` and until a hard deadline (`LINGER_MS` after the refusal, however the client
 * trickles its bytes), then the socket is destroyed.
 */
function linger(socket: GuardedSocket): void {
  socket.end();
  if (socket[kLinger] === undefined) {
    const timer = setTimeout(lingerTimeout, LINGER_MS, socket);
    timer.unref();
    socket[kLinger] = { timer, bytes: 0 };
    socket.on('data', onLingerData);
    socket.once('close', onLingerClose);
  }
  socket.resume();
}
