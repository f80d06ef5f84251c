/**
 * @upgradeware/websocket
 *
 * `websocket(onConnection, options?)`: a WebSocket endpoint on `ws` that is an ordinary
 * upgrade-aware middleware. The 101 that `ws` writes carries the headers the stack set on `res`
 * and ends `res` with status 101; a bad handshake is answered through `res` with its real status.
 */
import { errorMonitor } from 'node:events';
import { STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import createDebug from 'debug';
import * as wsModule from 'ws';
import type { ServerOptions } from 'ws';
import { acceptHttp2, asHttp1Upgrade } from './http2';
import {
  isHttp2UpgradeResponse,
  isWebSocketConnect,
  dropErrorGuard,
  isUpgradeResponse,
  supportsUpgrade,
  type Middleware,
  type NextFunction,
  type UpgradeAware,
  type UpgradeResponse,
} from '@upgradeware/upgrade-response';

// Aliases, not `export { … } from 'ws'` (whose getters would put this module's exports object in
// V8's dictionary mode): plain properties, with ws's value, type and namespace.
export import WebSocket = wsModule.WebSocket;
export import WebSocketServer = wsModule.WebSocketServer;

const debug = createDebug('upgradeware:websocket');

/**
 * How a connection of the endpoint ended: the arguments of ws's `'close'` event. The object is
 * put on `req.webSocketClose` at the switch, empty; both fields are filled when the connection
 * closes. Code that must outlive the request (a logger's close line) keeps this small object,
 * not the request.
 */
export interface WebSocketCloseInfo {
  /**
   * The code ws reports: the one in the peer's close frame (which echoes ours when we closed first:
   * 1001 after `close()`), 1005 for a close frame without one, 1006 when the connection ended
   * without a close frame read — also after ws failed it itself (1002, 1009 sent to the peer).
   * `undefined` while the connection is open.
   */
  code?: number;
  /**
   * The close reason, as UTF-8 text (often empty). Sent by the peer: treat it as untrusted.
   * `undefined` while the connection is open.
   */
  reason?: string;
}

declare module 'http' {
  interface IncomingMessage {
    /**
     * Set by `@upgradeware/websocket` when ws writes the 101 of this request, to an object whose
     * `code` and `reason` are filled when the WebSocket closes (ws's `'close'` event), for
     * loggers and other code that outlives the connection.
     */
    webSocketClose?: WebSocketCloseInfo;
  }
}
const PKG = '@upgradeware/websocket';

/** What `verifyClient` receives, as with `ws`. */
export interface VerifyClientInfo<Req extends IncomingMessage = IncomingMessage> {
  /** The `Origin` header (`Sec-WebSocket-Origin` for version 8 clients). */
  origin: string | undefined;
  /** True on a TLS connection. */
  secure: boolean;
  req: Req;
}

/** The callback of an asynchronous `verifyClient`: `(false, code?, message?, headers?)` refuses. */
export type VerifyClientCallback = (result: boolean, code?: number, message?: string, headers?: OutgoingHttpHeaders) => void;

/**
 * `ws`'s `verifyClient`, run by this package so that a refusal is a logged response: with one
 * parameter it answers synchronously (true accepts), with two it calls `callback`.
 */
export type VerifyClient<Req extends IncomingMessage = IncomingMessage> = (
  info: VerifyClientInfo<Req>,
  callback: VerifyClientCallback,
) => boolean | void;

/** Decides whether a handshake from `origin` (undefined: no Origin header) is accepted. */
export type OriginCheck<Req extends IncomingMessage = IncomingMessage> = (origin: string | undefined, req: Req) => boolean;

/** Called with an error thrown (or a promise rejected) by the connection callback. */
export type ConnectionErrorHandler<Req extends IncomingMessage = IncomingMessage> = (
  err: unknown,
  ws: WebSocket,
  req: Req,
) => void;

/** The connection callback: a new, open WebSocket and the request that went through the stack. */
export type ConnectionHandler<Req extends IncomingMessage = IncomingMessage> = (ws: WebSocket, req: Req) => unknown;

/**
 * Rooms that span instances (`@upgradeware/hub` fits; this package imports nothing of it): each
 * connection joins its rooms before the connection callback runs and leaves them when it closes.
 */
export interface WebSocketHub {
  join(ws: WebSocket, room: string): void;
  leave(ws: WebSocket, room: string): void;
}

/** The rooms a connection joins besides `session:<id>`: a room name, a list, or nothing. */
export type RoomsOf<Req extends IncomingMessage = IncomingMessage> = (req: Req) => string | readonly string[] | null | undefined;

/** `ws` server options that make sense for an endpoint in a stack. */
type PassThrough = Omit<ServerOptions, 'server' | 'port' | 'host' | 'backlog' | 'path' | 'noServer' | 'verifyClient' | 'handleProtocols'>;

export interface WebSocketOptions<Req extends IncomingMessage = IncomingMessage> extends PassThrough {
  /** Accepted origins: a list of `scheme://host[:port]`, or a function. Default: any origin. */
  origins?: readonly string[] | OriginCheck<Req>;
  /** As `ws`'s option, but a refusal is answered through the response (default 401). */
  verifyClient?: VerifyClient<Req>;
  /** As `ws`'s option: picks the subprotocol from the client's offer. */
  handleProtocols?: (protocols: Set<string>, req: Req) => string | false;
  /** Errors of the connection callback (default: the server's 'error' event, or a process warning). */
  onError?: ConnectionErrorHandler<Req>;
  /** Always true; any other value is refused. */
  noServer?: true;
  /** Rooms across instances: every connection joins `session:<req.sessionID>` when there is a session, and `rooms(req)`. */
  hub?: WebSocketHub;
  /** Rooms a connection joins (needs `hub`). */
  rooms?: RoomsOf<Req>;
}

/** The middleware returned by `websocket()`. */
export interface WebSocketEndpoint extends UpgradeAware<Middleware> {
  /** The connected clients of this endpoint (always empty with `clientTracking: false`). */
  readonly clients: ReadonlySet<WebSocket>;
  /** The `ws` server behind the endpoint (`noServer` mode). */
  readonly server: WebSocketServer;
  /** Send `data` to every open client of this endpoint; returns how many it was sent to. */
  broadcast(data: Parameters<WebSocket['send']>[0], options?: Parameters<WebSocket['send']>[1]): number;
  /** Refuse new handshakes (503), close every client with 1001 Going Away; resolves once all closed. */
  close(): Promise<void>;
}

/**
 * The handshake on its way into `ws` and the response that accounts for its 101: ws emits
 * `'headers'` or `'wsClientError'` for it within `handleUpgrade()`, synchronously. Held here for
 * that call only (and put back as it was after it), not on the request.
 */
let pendingReq: IncomingMessage | null = null;
let pendingRes: UpgradeResponse | null = null;

/** The response of `req` if ws is handling its handshake right now; it is taken only once. */
function takePending(req: IncomingMessage): UpgradeResponse | null {
  if (pendingReq !== req) return null;
  const res = pendingRes;
  pendingReq = null;
  pendingRes = null;
  return res;
}
/** An Upgrade list that names websocket among other tokens (a malformed upgrade to it). */
const LISTS_WEBSOCKET = /(^|,)\s*websocket\s*(,|$)/i;
/** A header line ws writes itself (`Sec-WebSocket-Accept` …), in any case. */
const WS_OWNED = /^sec-websocket-/i;
const DIGITS = /^[0-9]{1,3}$/;
/** A `Content-Length` that announces no body. */
const ZEROS = /^0+$/;
const VERSIONS = '13, 8';
const NO_SERVER_OPTIONS = ['server', 'port', 'host', 'backlog', 'path'] as const;
const NUMBER_OPTIONS = ['maxPayload', 'maxBufferedChunks', 'maxFragments', 'maxPendingAutoPongs', 'closeTimeout'] as const;
const BOOLEAN_OPTIONS = ['allowSynchronousEvents', 'autoPong', 'clientTracking', 'skipUTF8Validation'] as const;
const KNOWN = new Set<string>([
  ...NUMBER_OPTIONS, ...BOOLEAN_OPTIONS, 'perMessageDeflate', 'handleProtocols', 'WebSocket', 'noServer',
  'verifyClient', 'origins', 'onError', 'hub', 'rooms',
]);
const EMPTY: ReadonlySet<WebSocket> = new Set();

/** Create a WebSocket endpoint: mount it with `app.use(path, websocket(onConnection, options))`. */
export function websocket<Req extends IncomingMessage = IncomingMessage>(
  onConnection: ConnectionHandler<Req>,
  options: WebSocketOptions<Req> = {},
): WebSocketEndpoint {
  if (typeof onConnection !== 'function') throw new TypeError(`${PKG}: onConnection must be a function`);
  const { origins, verifyClient, onError, hub, rooms, ...wsOptions } = checkOptions(options);
  const allowed = originCheck(origins);
  const wss = new WebSocketServer({ ...wsOptions, WebSocket: endpointClass(wsOptions.WebSocket), noServer: true } as ServerOptions);
  let closing: Promise<void> | null = null;

  wss.on('headers', onHeaders);
  wss.on('wsClientError', onClientError);

  const reportError: ConnectionErrorHandler<Req> =
    onError ??
    ((err) => {
      if (wss.listenerCount('error') > 0) wss.emit('error', err);
      else process.emitWarning(err instanceof Error ? err : new Error(String(err)), 'WebSocketConnectionError');
    });

  function connected(ws: WebSocket, req: IncomingMessage): void {
    // The record lives as long as the connection, on the WebSocket (see endpointClass): nothing
    // of `req`, and no listener, closure or once() wrapper per connection.
    (ws as Recorded)[kCloseRecord] = req.webSocketClose ?? (req.webSocketClose = new CloseRecord());
    // ws keeps an 'error' listener of its own on the socket until it is gone: ours can go.
    if (req.httpVersionMajor === 1) dropErrorGuard(req.socket);
    if (hub !== undefined) {
      try {
        joinRooms(hub, rooms, ws, req as Req);
      } catch (err) {
        failed(err, ws, req as Req);
        return;
      }
    }
    let ret: unknown;
    try {
      ret = onConnection(ws, req as Req);
    } catch (err) {
      failed(err, ws, req as Req);
      return;
    }
    if (ret !== null && typeof ret === 'object' && typeof (ret as PromiseLike<unknown>).then === 'function') {
      (ret as PromiseLike<unknown>).then(undefined, (err: unknown) => failed(err, ws, req as Req));
    }
  }

  function failed(err: unknown, ws: WebSocket, req: Req): void {
    debug('connection callback failed: %o', err);
    if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1011, 'Internal Error');
    try {
      reportError(err, ws, req);
    } catch (e) {
      process.emitWarning(e instanceof Error ? e : new Error(String(e)), 'WebSocketConnectionError');
    }
  }

  /** Hand the socket to `ws`, once the stack and our own checks let the handshake through. */
  function accept(req: IncomingMessage, res: UpgradeResponse, next: NextFunction): void {
    const socket = res.socket;
    if (!socket || socket.destroyed || res.headersSent) return;
    if (closing !== null) {
      refuse(res, 503, 'WebSocket endpoint closed');
      return;
    }
    // Normally taken by 'headers' or 'wsClientError'; ws may also just destroy the socket.
    const outerReq = pendingReq;
    const outerRes = pendingRes;
    try {
      if (isHttp2UpgradeResponse(res)) {
        // ws's listeners hear of the request ws is given: a refusal is answered through `res`.
        const upgrade = asHttp1Upgrade(req);
        pendingReq = upgrade;
        pendingRes = res;
        acceptHttp2(wss, upgrade, req, res, connected, next);
        return;
      }
      pendingReq = req;
      pendingRes = res;
      try {
        wss.handleUpgrade(req, socket, res.upgradeHead, connected);
      } catch (err) {
        pendingReq = pendingRes = null;
        // Before the 101 (an on-headers listener or handleProtocols threw): an ordinary error.
        if (!res.headersSent) next(err);
        else socket.destroy();
      }
    } finally {
      pendingReq = outerReq;
      pendingRes = outerRes;
    }
  }

  const endpoint = supportsUpgrade(function websocket(req: IncomingMessage, res: ServerResponse, next: NextFunction) {
    if (!isUpgradeResponse(res) || res.isConnect || !(atRoot(req.url) || inRoute(req, endpoint))) return next();
    const headers = req.headers;
    // HTTP/2 (RFC 8441): an extended CONNECT with `:protocol websocket` stands for the upgrade.
    if (isHttp2UpgradeResponse(res)) {
      if (!isWebSocketConnect(res)) return next();
    } else {
      const upgrade = headers.upgrade;
      if (upgrade === undefined) return next();
      if (upgrade !== 'websocket' && (upgrade.length !== 9 || upgrade.toLowerCase() !== 'websocket')) {
        // Another protocol this app serves is somebody else's business; a malformed one is not.
        if (!LISTS_WEBSOCKET.test(upgrade)) return next();
        return refuse(res, 400, 'Invalid Upgrade header');
      }
      if (req.method !== 'GET') return refuse(res, 405, 'Invalid HTTP method', 'Allow', 'GET');
      // Node hands a request body over as the first bytes of the connection: after a 101 they
      // would be read as WebSocket frames. A handshake has no body (RFC 6455 §4.1): refuse one.
      if (hasBody(headers)) return refuse(res, 400, 'Unexpected request body');
      const key = headers['sec-websocket-key'];
      if (key === undefined || !isKey(key)) return refuse(res, 400, 'Missing or invalid Sec-WebSocket-Key header');
    }
    const version = headers['sec-websocket-version'];
    if (version !== '13' && version !== '8') {
      // RFC 6455 §4.2.2: a well-formed version we do not speak is 426; anything else is 400.
      const status = version !== undefined && DIGITS.test(version) ? 426 : 400;
      return refuse(res, status, 'Missing or invalid Sec-WebSocket-Version header', 'Sec-WebSocket-Version', VERSIONS);
    }
    if (allowed !== null) {
      const origin = version === '8' ? headers['sec-websocket-origin'] : headers.origin;
      let ok: boolean;
      try {
        ok = allowed(typeof origin === 'string' ? origin : undefined, req as Req);
      } catch (err) {
        return next(err);
      }
      if (ok !== true) return refuse(res, 403, 'Origin not allowed');
    }
    if (verifyClient === undefined) return accept(req, res, next);
    verify(verifyClient, req as Req, res, next, accept);
  }) as WebSocketEndpoint;

  Object.defineProperty(endpoint, 'clients', { enumerable: true, get: () => wss.clients ?? EMPTY });
  Object.defineProperty(endpoint, 'server', { enumerable: true, value: wss });
  endpoint.broadcast = (data, opts) => {
    let sent = 0;
    for (const ws of wss.clients ?? EMPTY) {
      if (ws.readyState !== WebSocket.OPEN) continue;
      ws.send(data, opts ?? {});
      sent++;
    }
    return sent;
  };
  endpoint.close = () => {
    if (closing === null) {
      closing = new Promise<void>((resolve) => wss.close(() => resolve()));
      for (const ws of wss.clients ?? EMPTY) ws.close(1001, 'Going Away');
    }
    return closing;
  };
  return endpoint;
}

/** Join `session:<id>` and the rooms of `rooms(req)`; leave them all on close. */
function joinRooms<Req extends IncomingMessage>(hub: WebSocketHub, rooms: RoomsOf<Req> | undefined, ws: WebSocket, req: Req): void {
  const joined: string[] = [];
  const sid = (req as { sessionID?: unknown }).sessionID;
  if (typeof sid === 'string' && sid.length > 0) joined.push(`session:${sid}`);
  if (rooms !== undefined) {
    const more = rooms(req);
    if (typeof more === 'string') joined.push(more);
    else if (Array.isArray(more)) joined.push(...(more as string[]));
    else if (more !== null && more !== undefined) throw new TypeError(`${PKG}: rooms(req) must return a room name, an array of them, or nothing`);
  }
  (ws as Joined)[kRooms] = { hub, joined };
  ws.on('close', leaveRooms);
  for (const room of joined) hub.join(ws, room);
}

/** On a connection that joined rooms: the hub and the rooms to leave when it closes. */
const kRooms = Symbol('upgradeware.websocket.rooms');
type Joined = WebSocket & { [kRooms]?: { hub: WebSocketHub; joined: readonly string[] } };

/** The `'close'` listener of a connection with rooms (ws emits it once): leaves them all. */
function leaveRooms(this: Joined): void {
  const entry = this[kRooms];
  if (entry === undefined) return;
  this[kRooms] = undefined;
  for (const room of entry.joined) entry.hub.leave(this, room);
}

/** ws's 'headers': account for the 101 on the response, add the stack's headers to ws's own. */
function onHeaders(headers: string[], req: IncomingMessage): void {
  const res = takePending(req);
  if (res === null) return;
  // Over HTTP/2 the switch is made from ws's head (acceptHttp2), and the record on the real request.
  if (isHttp2UpgradeResponse(res)) return;
  // Before the switch is accounted for, so that on-headers listeners and 'finish' see it.
  req.webSocketClose = new CloseRecord();
  const lines = res.externalSwitch();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    // ws owns the Sec-WebSocket-* headers of the handshake: its values win.
    if (line.length > 14 && WS_OWNED.test(line)) continue;
    headers.push(line);
  }
}

/** ws's 'wsClientError': ws found the handshake bad and wrote nothing; answer through `res`. */
function onClientError(err: Error, socket: Duplex, req: IncomingMessage): void {
  const res = takePending(req);
  if (res === null) {
    socket.destroy();
    return;
  }
  const message = err.message;
  if (message === 'Invalid HTTP method') refuse(res, 405, message, 'Allow', 'GET');
  else if (message.includes('Sec-WebSocket-Version')) refuse(res, 400, message, 'Sec-WebSocket-Version', VERSIONS);
  else refuse(res, 400, message);
}

/** Answer a refused handshake as an ordinary (logged) response. */
function refuse(res: ServerResponse, status: number, message: string, name?: string, value?: OutgoingHttpHeaders[string]): void {
  if (res.headersSent || !res.socket || res.socket.destroyed) return;
  debug('refused %d: %s', status, message);
  const body = message || STATUS_CODES[status] || String(status);
  res.statusCode = status;
  if (name !== undefined && value !== undefined) res.setHeader(name, value);
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

/** Run a `ws`-style verifyClient; a refusal is answered through `res`. */
function verify<Req extends IncomingMessage>(
  verifyClient: VerifyClient<Req>,
  req: Req,
  res: UpgradeResponse,
  next: NextFunction,
  accept: (req: IncomingMessage, res: UpgradeResponse, next: NextFunction) => void,
): void {
  const socket = req.socket as IncomingMessage['socket'] & { authorized?: boolean; encrypted?: boolean };
  const info: VerifyClientInfo<Req> = {
    origin: req.headers['sec-websocket-version'] === '8' ? headerOf(req, 'sec-websocket-origin') : req.headers.origin,
    secure: Boolean(socket.authorized || socket.encrypted),
    req,
  };
  try {
    if (verifyClient.length !== 2) {
      if ((verifyClient as (info: VerifyClientInfo<Req>) => boolean | void)(info)) accept(req, res, next);
      else refuse(res, 401, STATUS_CODES[401]!);
      return;
    }
    let called = false;
    verifyClient(info, (result, code, message, headers) => {
      if (called) return;
      called = true;
      if (result) return accept(req, res, next);
      if (res.headersSent) return;
      const status = code || 401;
      if (headers) for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value);
      refuse(res, status, message || STATUS_CODES[status] || String(status));
    });
  } catch (err) {
    next(err);
  }
}

/** Is `key` a `Sec-WebSocket-Key`: 16 bytes in base64, 22 characters of its alphabet and `==` (as ws checks it)? */
function isKey(key: string): boolean {
  if (key.length !== 24 || key.charCodeAt(22) !== 61 /* = */ || key.charCodeAt(23) !== 61) return false;
  for (let i = 0; i < 22; i++) {
    const c = key.charCodeAt(i);
    // A–Z, a–z, '/' and 0–9 (47–57), '+'
    if (!((c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 47 && c <= 57) || c === 43)) return false;
  }
  return true;
}

/** Does the request announce a body (a `Transfer-Encoding`, or a `Content-Length` other than 0)? */
function hasBody(headers: IncomingHttpHeaders): boolean {
  const length = headers['content-length'];
  return headers['transfer-encoding'] !== undefined || (length !== undefined && !ZEROS.test(length));
}

function headerOf(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return typeof value === 'string' ? value : undefined;
}

/**
 * A new `req.webSocketClose`: a plain object (its prototype is `Object.prototype`, as for `{}`),
 * made by a constructor so that V8 sizes it by what it holds while the connection is open — nothing
 * yet: 24 bytes per open WebSocket instead of an empty literal's 56. `code` and `reason` are added
 * at the close.
 */
const CloseRecord = function CloseRecord() {} as unknown as new () => WebSocketCloseInfo;
CloseRecord.prototype = Object.prototype;

/** ws's close reason (a Buffer) as text; `String(buffer)` would look up how to convert it first. */
function reasonText(reason: unknown): string {
  if (reason === undefined) return '';
  if (Buffer.isBuffer(reason)) return reason.length === 0 ? '' : reason.toString();
  return String(reason);
}

/** On a connection of the endpoint: where its close is recorded (`req.webSocketClose`). */
const kCloseRecord = Symbol('upgradeware.websocket.closeRecord');
type Recorded = WebSocket & { [kCloseRecord]?: WebSocketCloseInfo };

type WebSocketClass = new (...args: never[]) => WebSocket;

/**
 * The class ws makes the endpoint's connections with: ws's `WebSocket` (or the `WebSocket` option's
 * class), which fills the connection's close record before its `'close'` reaches any listener, and
 * never lets an `'error'` nobody listens to become an uncaught exception — ws closes the connection
 * itself (1002, 1007, 1009 …); the error is only worth a debug line. Done in `emit`, once per class,
 * instead of two listeners per connection: an open connection carries what a plain ws server's does.
 */
function endpointClass(Base: WebSocketClass = WebSocket): WebSocketClass {
  const Parent = Base as unknown as typeof WebSocket;
  class EndpointWebSocket extends Parent {
    [kCloseRecord]: WebSocketCloseInfo | undefined = undefined;

    override emit(event: string | symbol, a?: unknown, b?: unknown): boolean {
      if (event === 'close') {
        const record = this[kCloseRecord];
        if (record !== undefined) {
          this[kCloseRecord] = undefined;
          record.code = a as number;
          record.reason = reasonText(b);
        }
      } else if (event === 'error' && this.listenerCount('error') === 0) {
        debug('client error: %s', (a as Error | undefined)?.message);
        // What Node does before it would throw: errorMonitor listeners still hear of it.
        if (this.listenerCount(errorMonitor) !== 0) super.emit(errorMonitor, a);
        return false;
      }
      // The arguments as given (no rest array per message): listeners see the same arguments.length.
      switch (arguments.length) {
        case 1:
          return super.emit(event);
        case 2:
          return super.emit(event, a);
        case 3:
          return super.emit(event, a, b);
        default:
          return (super.emit as (...args: unknown[]) => boolean).apply(this, Array.from(arguments));
      }
    }
  }
  return EndpointWebSocket as unknown as WebSocketClass;
}

/** Is the URL left after the mount path exactly '/' (query allowed)? */
function atRoot(url: string | undefined): boolean {
  if (url === undefined) return false;
  return url === '/' || (url.charCodeAt(0) === 47 && (url.charCodeAt(1) === 63 /* ? */ || url.charCodeAt(1) === 35));
}

/**
 * A route handler of Express's router (`app.get('/chat', …, websocket(…))`): the route matched the
 * whole path and leaves `req.url` as it was; the router marks the request with `req.route`. Express
 * never clears `req.route`, so the endpoint must be one of that route's own handlers: after an
 * earlier route passed the request on, a `use`-mounted endpoint is not "in" it.
 */
function inRoute(req: IncomingMessage, endpoint: unknown): boolean {
  const route = (req as IncomingMessage & { route?: { path?: unknown; stack?: unknown } }).route;
  if (typeof route !== 'object' || route === null || route.path === undefined || !Array.isArray(route.stack)) return false;
  for (const layer of route.stack as Array<{ handle?: unknown } | null>) if (layer?.handle === endpoint) return true;
  return false;
}

function originCheck<Req extends IncomingMessage>(origins: WebSocketOptions<Req>['origins']): OriginCheck<Req> | null {
  if (origins === undefined) return null;
  if (typeof origins === 'function') return origins;
  const set = new Set<string>();
  for (const origin of origins) set.add(normalizeOrigin(origin));
  return (origin) => origin === undefined || set.has(origin) || set.has(origin.toLowerCase());
}

function normalizeOrigin(origin: unknown): string {
  let normalized = 'null';
  if (typeof origin === 'string') {
    try {
      normalized = new URL(origin).origin;
    } catch {
      normalized = 'null';
    }
  }
  if (normalized === 'null' || typeof origin !== 'string' || origin.replace(/\/$/, '').toLowerCase() !== normalized) {
    throw new TypeError(`${PKG}: option origins must list origins like "https://example.com" (got ${JSON.stringify(origin)})`);
  }
  return normalized;
}

function checkOptions<Req extends IncomingMessage>(options: WebSocketOptions<Req>): WebSocketOptions<Req> {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new TypeError(`${PKG}: options must be an object`);
  }
  const o = options as Record<string, unknown>;
  for (const name of NO_SERVER_OPTIONS) {
    if (o[name] !== undefined) {
      throw new TypeError(`${PKG}: option ${name} is not supported: mount the endpoint with app.use(path, websocket(...)) on the app's server`);
    }
  }
  if (o.noServer !== undefined && o.noServer !== true) throw new TypeError(`${PKG}: option noServer must be true (or left out)`);
  for (const name of Object.keys(o)) {
    if (!KNOWN.has(name) && o[name] !== undefined) throw new TypeError(`${PKG}: unknown option ${name}`);
  }
  for (const name of NUMBER_OPTIONS) {
    const v = o[name];
    if (v !== undefined && (typeof v !== 'number' || !(v >= 0))) throw new TypeError(`${PKG}: option ${name} must be a number >= 0`);
  }
  for (const name of BOOLEAN_OPTIONS) {
    if (o[name] !== undefined && typeof o[name] !== 'boolean') throw new TypeError(`${PKG}: option ${name} must be a boolean`);
  }
  for (const name of ['handleProtocols', 'verifyClient', 'onError', 'WebSocket'] as const) {
    if (o[name] !== undefined && typeof o[name] !== 'function') throw new TypeError(`${PKG}: option ${name} must be a function`);
  }
  const pmd = o.perMessageDeflate;
  if (pmd !== undefined && typeof pmd !== 'boolean' && (pmd === null || typeof pmd !== 'object')) {
    throw new TypeError(`${PKG}: option perMessageDeflate must be a boolean or an object`);
  }
  const hub = o.hub as Partial<WebSocketHub> | undefined;
  if (hub !== undefined && (hub === null || typeof hub !== 'object' || typeof hub.join !== 'function' || typeof hub.leave !== 'function')) {
    throw new TypeError(`${PKG}: option hub must have join(ws, room) and leave(ws, room)`);
  }
  if (o.rooms !== undefined && typeof o.rooms !== 'function') throw new TypeError(`${PKG}: option rooms must be a function`);
  if (o.rooms !== undefined && hub === undefined) throw new TypeError(`${PKG}: option rooms needs option hub`);
  const origins = o.origins;
  if (origins !== undefined && typeof origins !== 'function') {
    if (!Array.isArray(origins)) throw new TypeError(`${PKG}: option origins must be an array of origins or a function`);
    for (const origin of origins) normalizeOrigin(origin);
  }
  return options;
}
