/**
 * @upgradeware/dispatcher
 *
 * `createApp()`: a Connect-style app whose one middleware stack serves ordinary requests, HTTP
 * Upgrade requests (WebSocket) and CONNECT. See DESIGN.md, "Rules of the stack".
 */
import * as http from 'node:http';
import type * as http2 from 'node:http2';
import type * as net from 'node:net';
import type { Duplex } from 'node:stream';
import createDebug from 'debug';
import { closeSessionsOnClose, createHttp2Server, isHttp2Server, type AttachableServer } from './http2';
import {
  Http2UpgradeResponse,
  SocketResponse,
  UpgradeResponse,
  bindSocket,
  createBoundLater,
  isHttp2Request,
  headersComplete,
  isUpgradeResponse,
  destroyOwnedSocket,
  enabledReader,
  isSocketFree,
  ownsSocket,
  replayAsRequest,
  whenSocketFree,
  type ErrorMiddleware,
  type Middleware,
  type NextFunction,
} from '@upgradeware/upgrade-response';

export type { ErrorMiddleware, Middleware, NextFunction } from '@upgradeware/upgrade-response';
export type { AttachableServer } from './http2';

const debug = createDebug('upgradeware:dispatcher');
/** `debug.enabled`, read through its getter (see `enabledReader`). */
const tracingOn = enabledReader(debug);

/** A layer's function: a middleware, an error middleware, or a mounted app. */
export type Handler = (Middleware | ErrorMiddleware) & { supportsUpgrade?: boolean };

export interface Layer {
  /** The mount path, without a trailing slash ('' for the root). */
  readonly route: string;
  readonly handle: Handler;
}

/**
 * A layer as `app.use()` adds it: with its function's arity and opt-in read once, then. Layers of
 * many different functions make those reads, per request, lookups V8 cannot inline. (A layer pushed
 * onto `app.stack` by hand has neither: its function is asked each time.)
 */
interface AddedLayer extends Layer {
  readonly arity?: number;
  readonly optedIn?: boolean;
}

export interface AppOptions {
  /**
   * The protocols this app serves on an `Upgrade` request, compared case-insensitively
   * (default `['websocket']`). An upgrade to any other protocol (h2c …) is served as an ordinary
   * request with `Connection: close`, as RFC 9110 §7.8 allows.
   */
  upgradeProtocols?: readonly string[];
  /**
   * Milliseconds an upgrade or CONNECT request may spend in the stack before it is answered
   * `503` and closed (default 30 000; `0` or `Infinity` for no limit).
   */
  upgradeTimeout?: number;
  /**
   * Receives every error that reaches the end of the stack (ordinary requests, upgrades and
   * CONNECT), instead of stderr. Default: print its stack to stderr unless `NODE_ENV=test`, as
   * Connect's finalhandler does. The error is still answered with its status.
   */
  onError?: (err: unknown, req: http.IncomingMessage) => void;
}

/** The options `createApp()` knows: any other is a mistake, reported at once. */
const KNOWN_OPTIONS: ReadonlySet<string> = new Set(['upgradeProtocols', 'upgradeTimeout', 'onError']);

/** A request handler usable with `http.createServer()` and as a layer of another app. */
export interface App {
  (req: http.IncomingMessage, res: http.ServerResponse, next?: NextFunction): void;
  /** A mounted app supports upgrades: its own layers decide, one by one (rule 2). */
  readonly supportsUpgrade: true;
  /** The path this app is mounted at by its parent ('/' when not mounted). */
  route: string;
  /** The layers, in order. */
  readonly stack: Layer[];
  use(fn: Middleware): App;
  use(fn: ErrorMiddleware): App;
  use(fn: App | http.Server): App;
  use(path: string, fn: Middleware): App;
  use(path: string, fn: ErrorMiddleware): App;
  use(path: string, fn: App | http.Server): App;
  /** Run a request through the stack; with `out`, an unanswered request goes on to `out`. */
  handle(req: http.IncomingMessage, res: http.ServerResponse, out?: NextFunction): void;
  /** Serve an `'upgrade'` event through the stack. */
  handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Serve a `'connect'` event (a CONNECT request) through the stack. */
  handleConnect(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Serve an HTTP/2 server's `'connect'` event (Node's compat request and response). */
  handleConnect(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): void;
  /**
   * Serve `server`'s upgrades and CONNECT requests. `'upgrade'` and `'connect'` listeners it
   * already had keep working: a request that no layer answers is handed to them untouched.
   * Returns the server.
   */
  attach<S extends AttachableServer>(server: S): S;
  /** `http.createServer(app)`, attached, listening: every form of `server.listen()`. */
  listen(port?: number, hostname?: string, backlog?: number, listeningListener?: () => void): http.Server;
  listen(port?: number, hostname?: string, listeningListener?: () => void): http.Server;
  listen(port?: number, backlog?: number, listeningListener?: () => void): http.Server;
  listen(port?: number, listeningListener?: () => void): http.Server;
  listen(path: string, backlog?: number, listeningListener?: () => void): http.Server;
  listen(path: string, listeningListener?: () => void): http.Server;
  listen(options: net.ListenOptions, listeningListener?: () => void): http.Server;
  listen(handle: ListenHandle, backlog?: number, listeningListener?: () => void): http.Server;
  listen(handle: ListenHandle, listeningListener?: () => void): http.Server;
  /**
   * `http2.createSecureServer(options, app)` with `allowHTTP1: true` and
   * `settings.enableConnectProtocol: true` (RFC 8441 WebSockets), attached, listening: then the
   * arguments of `server.listen()`.
   */
  listenHttp2(options: http2.SecureServerOptions, port?: number, hostname?: string, listeningListener?: () => void): http2.Http2SecureServer;
  listenHttp2(options: http2.SecureServerOptions, listenOptions: net.ListenOptions, listeningListener?: () => void): http2.Http2SecureServer;
}

/** What `server.listen(handle)` accepts: a server, a socket, or `{ fd }`. */
export type ListenHandle = net.Server | net.Socket | { fd: number };

type ErrorReporter = (err: unknown, req: http.IncomingMessage) => void;

type SocketListener = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void;

interface Fallback {
  readonly server: http.Server;
  readonly listeners: SocketListener[];
}

const DEFAULT_TIMEOUT = 30_000;
const EMPTY = Buffer.alloc(0);
const kDeadline = Symbol('upgradeware.deadline');
/** Set on a response once the time limit acted on it (answered 503 or closed the connection). */
const kTimedOut = Symbol('upgradeware.timedOut');

/** Create an app. */
export function createApp(options: AppOptions = {}): App {
  if (options === null || typeof options !== 'object') {
    throw new TypeError('@upgradeware/dispatcher: options must be an object');
  }
  for (const name of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(name)) {
      throw new TypeError(`@upgradeware/dispatcher: unknown option ${name} (known: ${[...KNOWN_OPTIONS].join(', ')})`);
    }
  }
  const protocols = protocolSet(options.upgradeProtocols);
  const timeout = timeoutOf(options.upgradeTimeout);
  if (options.onError !== undefined && typeof options.onError !== 'function') {
    throw new TypeError('@upgradeware/dispatcher: option onError must be a function (err, req)');
  }
  const report: ErrorReporter = options.onError ?? printError;
  const stack: Layer[] = [];

  const app = function app(req: http.IncomingMessage, res: http.ServerResponse, next?: NextFunction): void {
    handle(req, res, next);
  } as App;

  function handle(req: http.IncomingMessage, res: http.ServerResponse, out?: NextFunction): void {
    const tracing = tracingOn();
    if (out === undefined && tracing && !isUpgradeResponse(res)) traceRequest('request', req, res);
    new Walk(stack, req, res, out ?? null, null, report, tracing).next();
  }

  function dispatchSocket(
    req: http.IncomingMessage,
    socket: Duplex,
    head: Buffer,
    fallback: Fallback | null,
    connect: boolean,
  ): void {
    // A pipelined request's response may still own the socket: answer after it, in order.
    if (isSocketFree(socket)) serveSocket(req, socket, head, fallback, connect);
    else whenSocketFree(socket, () => serveSocket(req, socket, head, fallback, connect), timeout);
  }

  function serveSocket(
    req: http.IncomingMessage,
    socket: Duplex,
    head: Buffer,
    fallback: Fallback | null,
    connect: boolean,
  ): void {
    const headers = req.headers;
    const served = connect || servesProtocol(protocols, headers.upgrade);
    // Rule 7: another protocol is an ordinary request. Node's server parses it again, body and
    // all, and its request handler (this app, or Express …) answers it — unless Node dropped
    // some of its header lines (past `maxHeadersCount`): a request rebuilt without them could
    // lose its framing, so it is refused with 431 instead.
    const complete = served || headersComplete(req, socket, fallback?.server);
    if (!served && complete && replayAsRequest(req, socket, head, fallback?.server)) return;
    // The response's socket listeners (our 'error' guard among them) are put in place by
    // `bindSocket` right after the stack's synchronous part, before any socket event can be
    // emitted; a handshake switched within that part never needs them (rule 8).
    const res = createBoundLater(served ? UpgradeResponse : SocketResponse, req, socket, head);
    try {
      const tracing = tracingOn();
      if (tracing) traceRequest(served ? (connect ? 'connect' : 'upgrade') : 'ordinary', req, res);
      if (!complete) {
        req.originalUrl = req.url;
        sendError(req, res, 431, null);
        return;
      }
      if (headers.host === undefined && req.httpVersion === '1.1') {
        // Node answers 400 to an ordinary HTTP/1.1 request without Host (RFC 9112 §3.2) but lets
        // an upgrade through: answer it the same way.
        req.originalUrl = req.url;
        sendError(req, res, 400, null);
        return;
      }
      new Walk(stack, req, res, null, fallback, report, tracing).next();
    } finally {
      bindSocket(res);
    }
    // Rule 8 bounds what is still pending once the stack's synchronous part has run: a handshake
    // that already switched (an endpoint with nothing asynchronous before it) has no timer to carry.
    if (timeout > 0 && ownsSocket(res)) armDeadline(req, res, timeout);
  }

  Object.defineProperty(app, 'supportsUpgrade', { value: true, enumerable: true });
  Object.defineProperty(app, 'stack', { value: stack, enumerable: true });
  app.route = '/';
  app.handle = handle;

  app.use = function use(path: string | Handler | App | http.Server, fn?: Handler | App | http.Server): App {
    let route = '/';
    let layer = fn;
    if (typeof path === 'string') route = path;
    else layer = path;
    if (layer instanceof http.Server) layer = layer.listeners('request')[0] as Handler | undefined;
    if (typeof layer !== 'function') {
      throw new TypeError('@upgradeware/dispatcher: app.use() requires a middleware function');
    }
    if (route.endsWith('/')) route = route.slice(0, -1);
    if (isApp(layer)) layer.route = route || '/';
    const handler = layer as Handler;
    const added: AddedLayer = { route, handle: handler, arity: handler.length, optedIn: handler.supportsUpgrade === true };
    stack.push(added);
    return app;
  } as App['use'];

  app.handleUpgrade = (req, socket, head) => dispatchSocket(req, socket, head, null, false);
  app.handleConnect = function handleConnect(req: http.IncomingMessage | http2.Http2ServerRequest, socket: Duplex | http2.Http2ServerResponse, head?: Buffer): void {
    if (isHttp2Request(req)) dispatchHttp2(req as http2.Http2ServerRequest);
    else dispatchSocket(req as http.IncomingMessage, socket as Duplex, head ?? EMPTY, null, true);
  } as App['handleConnect'];

  /** An HTTP/2 CONNECT (`'connect'` with Node's compat request and response). */
  function dispatchHttp2(req: http2.Http2ServerRequest): void {
    const res = new Http2UpgradeResponse(req);
    const request = req as unknown as http.IncomingMessage;
    const response = res as unknown as http.ServerResponse;
    // A plain CONNECT has no :path: its target is :authority, as an HTTP/1.1 CONNECT's URL is.
    if (req.headers[':path'] === undefined) req.url = req.headers[':authority'] ?? '';
    const protocol = res.protocol;
    const tracing = tracingOn();
    if (tracing) debug('h2 %s %s %s', protocol === undefined ? 'connect' : `connect (${protocol})`, req.method, req.url);
    if (protocol !== undefined && !protocols.has(protocol.toLowerCase())) {
      // An extended CONNECT to a protocol the app does not serve: nothing to fall back to.
      request.originalUrl = req.url;
      sendError(request, response, 501, null);
      return;
    }
    new Walk(stack, request, response, null, null, report, tracing).next();
    if (timeout > 0 && ownsSocket(response)) armDeadline(request, response, timeout);
  }

  const attached = new WeakSet<AttachableServer>();
  app.attach = function attach<S extends AttachableServer>(server: S): S {
    // Twice would make the first attachment a "listener the server already had".
    if (attached.has(server)) return server;
    attached.add(server);
    if (isHttp2Server(server)) closeSessionsOnClose(server);
    for (const event of ['upgrade', 'connect'] as const) {
      const fallback: Fallback = { server: server as http.Server, listeners: server.listeners(event) as SocketListener[] };
      server.removeAllListeners(event);
      const connect = event === 'connect';
      server.on(event, (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
        // An HTTP/2 server (allowHTTP1) emits 'connect' as (req, res) for HTTP/2 streams.
        if (connect && isHttp2Request(req)) dispatchHttp2(req as unknown as http2.Http2ServerRequest);
        else dispatchSocket(req, socket, head, fallback, connect);
      });
    }
    return server;
  };

  app.listen = function listen(...args: unknown[]): http.Server {
    const server = app.attach(http.createServer(app));
    return (server.listen as (...a: unknown[]) => http.Server)(...args);
  } as App['listen'];

  app.listenHttp2 = function listenHttp2(options: http2.SecureServerOptions, ...args: unknown[]): http2.Http2SecureServer {
    const server = app.attach(createHttp2Server(options, app as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void));
    return (server.listen as (...a: unknown[]) => http2.Http2SecureServer)(...args);
  } as App['listenHttp2'];

  return app;
}

/**
 * One request on its way down a stack: where it is, and what the previous layer's mount path took
 * off its URL. Its `next` is `advance` bound to it, not a closure made per request: a `next` made
 * per request was compiled again after every full garbage collection, with the layers it calls
 * inlined into it (DESIGN.md, "Facts measured"). A bound function has no code of its own;
 * `advance` keeps its code for the life of the process.
 */
class Walk {
  readonly upgrade: boolean;
  /** `http://host` of an absolute-form URL (kept in front when a mount path is taken off), or ''. */
  readonly protohost: string;
  index = 0;
  /** The mount path the layer being run took off `req.url`, to put back on its `next()`. */
  removed = '';
  /** True when a '/' was put in front of `req.url` after the mount path was taken off. */
  slashAdded = false;
  readonly next: NextFunction;

  /**
   * Run `req` through `stack` from the top with `walk.next()`. A request nobody answered goes on
   * to `out` (a parent's next) or, at the top, to the final handler (made only then: most requests
   * never need it). `tracing` is `debug.enabled` as the caller read it, once per request (its
   * getter reads an object V8 keeps in dictionary mode).
   */
  constructor(
    readonly stack: Layer[],
    readonly req: http.IncomingMessage,
    readonly res: http.ServerResponse,
    readonly out: NextFunction | null,
    readonly fallback: Fallback | null,
    readonly report: ErrorReporter,
    readonly tracing: boolean,
  ) {
    if (req.originalUrl === undefined) req.originalUrl = req.url;
    this.upgrade = isUpgradeResponse(res);
    this.protohost = protohostOf(req.url ?? '/');
    this.next = advance.bind(this) as NextFunction;
  }
}

/** A request's `next` (bound to its Walk): run the next layer that takes it, or leave the stack. */
function advance(this: Walk, err?: unknown): void {
  const { req, res, protohost, stack } = this;
  if (this.upgrade && (res as Deadlined)[kTimedOut] === true) {
    if (tracingOn()) debug('%s %s: next() after the time limit answered: nothing more runs (%s)', req.method, req.originalUrl, err ?? 'no error');
    return;
  }
  // Put back what the previous layer's mount path took off.
  if (this.slashAdded) {
    req.url = req.url!.slice(1);
    this.slashAdded = false;
  }
  if (this.removed.length !== 0) {
    req.url = protohost + this.removed + req.url!.slice(protohost.length);
    this.removed = '';
  }
  const hasError = err !== undefined && err !== null && err !== false;
  // The layers passed over on the way to the next one run, for one summary line of the trace.
  const skipped: string[] | null = this.tracing ? [] : null;
  for (;;) {
    const layer = stack[this.index++] as AddedLayer | undefined;
    if (layer === undefined) {
      if (skipped !== null) traceSkipped(req, skipped);
      if (this.out !== null) this.out(err);
      else finalHandler(req, res, this.fallback, err, this.report);
      return;
    }
    // Rule 2: on an upgrade or CONNECT, a layer runs only if it opted in (a layer that had not
    // when it was added is asked again: a mark put on later counts).
    if (this.upgrade && layer.optedIn !== true && layer.handle.supportsUpgrade !== true) {
      skipped?.push(`${nameOf(layer)} (no supportsUpgrade)`);
      continue;
    }
    // As in Connect, by arity: an error goes to error layers (4 arguments) only, and a request
    // without one to layers of fewer than 4.
    const arity = layer.arity ?? layer.handle.length;
    if (hasError ? arity !== 4 : arity >= 4) {
      skipped?.push(`${nameOf(layer)} (${hasError ? 'not an error layer' : 'error layer'})`);
      continue;
    }
    const route = layer.route;
    if (route.length !== 0) {
      const url = req.url!;
      const path = pathnameOf(url, protohost.length);
      if (!matchesRoute(path, route)) {
        skipped?.push(`${nameOf(layer)} (path)`);
        continue;
      }
      this.removed = route;
      req.url = protohost + url.slice(protohost.length + route.length);
      if (protohost.length === 0 && req.url[0] !== '/') {
        req.url = '/' + req.url;
        this.slashAdded = true;
      }
    }
    if (skipped !== null) {
      traceSkipped(req, skipped);
      debug('%s %s: %s %s', req.method, req.originalUrl, hasError ? 'error to' : 'run', nameOf(layer));
    }
    call(layer.handle, hasError, err, req, res, this.next);
    return;
  }
}

/** Layers passed over in a row, as one trace line: named when few, counted by reason when many. */
function traceSkipped(req: http.IncomingMessage, skipped: string[]): void {
  if (skipped.length === 0) return;
  if (skipped.length <= 3) {
    debug('%s %s: passed over %s', req.method, req.originalUrl, skipped.join(', '));
    return;
  }
  const reasons = new Map<string, number>();
  for (const entry of skipped) {
    const reason = entry.slice(entry.lastIndexOf('(') + 1, -1);
    reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
  }
  const counts = [...reasons].map(([reason, n]) => `${n}× ${reason}`).join(', ');
  debug('%s %s: passed over %d layers (%s)', req.method, req.originalUrl, skipped.length, counts);
}

/** The trace's first line of a request, and its last one, with the status it ended with. */
function traceRequest(kind: string, req: http.IncomingMessage, res: http.ServerResponse): void {
  debug('%s %s %s', kind, req.method, req.url);
  const method = req.method;
  const url = req.url;
  res.once('close', function traceEnd(this: http.ServerResponse) {
    if (this.writableFinished) debug('end %s %s: %d', method, url, this.statusCode);
    else debug('end %s %s: closed before the response finished', method, url);
  });
}

function nameOf(layer: Layer): string {
  return `${layer.handle.name || 'anonymous'}${layer.route ? ` at ${layer.route}` : ''}`;
}

/**
 * Call one layer, which `next` picked by arity (an error layer when there is an error), with
 * throws and rejections becoming `next(err)`.
 */
function call(
  handle: Handler,
  hasError: boolean,
  err: unknown,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  next: NextFunction,
): void {
  let error: unknown;
  try {
    const ret: unknown = hasError ? (handle as ErrorMiddleware)(err, req, res, next) : (handle as Middleware)(req, res, next);
    if (ret !== undefined && ret !== null && typeof (ret as PromiseLike<unknown>).then === 'function') {
      (ret as PromiseLike<unknown>).then(undefined, (e: unknown) => next(e ?? new Error('Rejected without a reason')));
    }
    return;
  } catch (e) {
    error = e ?? new Error('Thrown without a value');
  }
  next(error);
}

function matchesRoute(path: string, route: string): boolean {
  if (path.length < route.length) return false;
  // Connect compares mount paths case-insensitively (the exact case first: no allocation).
  if (!path.startsWith(route) && path.slice(0, route.length).toLowerCase() !== route.toLowerCase()) return false;
  // Rule 1: a mount path matches on a '/' boundary only.
  return path.length === route.length || path.charCodeAt(route.length) === 47 /* / */;
}

/** `http://host` of an absolute-form request URL, or ''. */
function protohostOf(url: string): string {
  if (url.length === 0 || url.charCodeAt(0) === 47 /* / */) return '';
  const query = url.indexOf('?');
  const end = query === -1 ? url.length : query;
  const scheme = url.indexOf('://');
  if (scheme === -1 || scheme >= end) return '';
  const slash = url.indexOf('/', scheme + 3);
  return url.slice(0, slash === -1 || slash > end ? end : slash);
}

/** The path of a request URL (after `skip` characters of protohost), without query or fragment. */
function pathnameOf(url: string, skip: number): string {
  let end = url.length;
  for (let i = skip; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 63 /* ? */ || c === 35 /* # */) {
      end = i;
      break;
    }
  }
  const path = url.slice(skip, end);
  return path.length === 0 ? '/' : path;
}

function isApp(fn: unknown): fn is App {
  return typeof fn === 'function' && typeof (fn as Partial<App>).handleUpgrade === 'function';
}

function protocolSet(list: AppOptions['upgradeProtocols']): ReadonlySet<string> {
  if (list === undefined) return new Set(['websocket']);
  if (!Array.isArray(list) || list.some((p) => typeof p !== 'string' || p.length === 0)) {
    throw new TypeError('@upgradeware/dispatcher: option upgradeProtocols must be an array of protocol names');
  }
  return new Set(list.map((p) => p.toLowerCase()));
}

function timeoutOf(value: unknown): number {
  if (value === undefined) return DEFAULT_TIMEOUT;
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw new TypeError('@upgradeware/dispatcher: option upgradeTimeout must be a number of milliseconds >= 0');
  }
  return value === Infinity ? 0 : value;
}

/** Does the app serve one of the protocols named by an `Upgrade` header? */
function servesProtocol(protocols: ReadonlySet<string>, header: string | undefined): boolean {
  if (header === undefined) return false;
  // The usual header first, compared as text: a set lookup hashes the parser's fresh string.
  if (header === 'websocket') return protocols.has('websocket');
  if (protocols.has(header) || protocols.has(header.toLowerCase())) return true;
  for (const token of header.split(',')) {
    const name = token.trim().toLowerCase();
    const slash = name.indexOf('/');
    if (protocols.has(slash === -1 ? name : name.slice(0, slash))) return true;
  }
  return false;
}

// ---- Rule 8: the time limit ----------------------------------------------------------------

type Deadlined = http.ServerResponse & { [kDeadline]?: NodeJS.Timeout; [kTimedOut]?: true };

function armDeadline(req: http.IncomingMessage, res: Deadlined, ms: number): void {
  res[kDeadline] = setTimeout(onDeadline, ms, req, res);
  res.on('close', clearDeadline);
}

function clearDeadline(this: Deadlined): void {
  clearTimeout(this[kDeadline]);
  this[kDeadline] = undefined;
}

/** How long the 503 of the time limit is given to go out before the connection is cut. */
const DEADLINE_GRACE_MS = 1000;

/**
 * The time limit ran out. The response is answered 503 if it has not started; whatever `end()`
 * does then (a wrapper that throws, or holds the response for a store that never answers), the
 * connection is closed: at once if the 503 could not be sent, else after a short grace.
 */
function onDeadline(req: http.IncomingMessage, res: Deadlined): void {
  res[kDeadline] = undefined;
  const socket = res.socket;
  if (!socket || !ownsSocket(res)) return;
  // From now on the request is over: a layer that calls next() late (a store answering after
  // the limit) does not run the rest of the stack for it.
  res[kTimedOut] = true;
  if (res.headersSent) {
    // Started but never finished (a switch waiting on a session save that never comes): no
    // status can be sent any more, so the connection is closed.
    if (!res.writableEnded || !res.writableFinished) {
      debug('time limit: closing %s %s, its response started but never finished', req.method, req.originalUrl);
      destroyOwnedSocket(res);
    }
    return;
  }
  debug('time limit: 503 for %s %s', req.method, req.originalUrl);
  try {
    sendError(req, res, 503, null);
  } catch (err) {
    debug('time limit: the 503 failed (%s); closing', err instanceof Error ? err.message : String(err));
    destroyOwnedSocket(res);
    return;
  }
  if (!res.writableFinished && !socket.destroyed) setTimeout(closeUnfinished, DEADLINE_GRACE_MS, req, res).unref();
}

function closeUnfinished(req: http.IncomingMessage, res: http.ServerResponse): void {
  if (!res.writableFinished && destroyOwnedSocket(res)) debug('time limit: the 503 to %s %s never went out; closed', req.method, req.originalUrl);
}

// ---- Final handler -------------------------------------------------------------------------

/** What happens to a request that went through the whole stack (Connect's finalhandler). */
function finalHandler(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  fallback: Fallback | null,
  err: unknown,
  report: ErrorReporter,
): void {
  const hasError = err !== undefined && err !== null && err !== false;
  if (hasError) {
    debug('error on %s %s: %o', req.method, req.originalUrl, err);
    try {
      report(err, req);
    } catch (e) {
      debug('onError threw: %o', e);
    }
  }
  if (res.headersSent) {
    // Too late for a status: close the connection, if it is still ours.
    destroyOwnedSocket(res);
    return;
  }
  if (!hasError && fallback !== null && fallback.listeners.length > 0 && res instanceof SocketResponse) {
    // Rule 6: nobody here answered; the server's own 'upgrade'/'connect' listeners may.
    const socket = res.socket;
    const head = res.upgradeHead;
    if (socket && res.release()) {
      clearDeadline.call(res);
      debug('handing %s %s to the server\'s own listeners', req.method, req.originalUrl);
      for (const listener of fallback.listeners) listener.call(fallback.server, req, socket, head);
      return;
    }
  }
  try {
    sendError(req, res, hasError ? statusOf(err) : 404, hasError ? err : null);
  } catch (e) {
    // A hook or an end() wrapper threw while the error was answered: nobody is left to answer,
    // so the connection is closed rather than left hanging.
    debug('answering %s %s failed: %o', req.method, req.originalUrl, e);
    destroyOwnedSocket(res);
  }
}

/**
 * Where errors that reach the end of the stack go by default: their stack on stderr, unless
 * `NODE_ENV=test` (Connect's finalhandler does the same). Replaced by the `onError` option.
 */
function printError(err: unknown): void {
  if (process.env.NODE_ENV === 'test') return;
  const text = err instanceof Error ? (err.stack ?? String(err)) : String(err);
  process.stderr.write(`${text}\n`);
}

function statusOf(err: unknown): number {
  if (typeof err === 'object' && err !== null) {
    const e = err as { status?: unknown; statusCode?: unknown };
    const status = typeof e.status === 'number' ? e.status : e.statusCode;
    if (typeof status === 'number' && Number.isInteger(status) && status >= 400 && status <= 599) return status;
  }
  return 500;
}

function sendError(req: http.IncomingMessage, res: http.ServerResponse, status: number, err: unknown): void {
  let message: string;
  if (err !== null && err !== undefined) {
    // Rule 6: no stack trace in production.
    message = process.env.NODE_ENV === 'production' ? '' : err instanceof Error ? (err.stack ?? String(err)) : String(err);
    if (!message) message = http.STATUS_CODES[status] ?? String(status);
    const headers = (err as { headers?: unknown }).headers;
    if (typeof headers === 'object' && headers !== null) {
      for (const [name, value] of Object.entries(headers)) {
        if (typeof value === 'string' || typeof value === 'number' || Array.isArray(value)) {
          try {
            res.setHeader(name, value as string | number | string[]);
          } catch {
            // An invalid header from an error object is dropped, not thrown.
          }
        }
      }
    }
  } else if (status === 404) {
    const url = req.originalUrl ?? req.url ?? '/';
    message = `Cannot ${req.method} ${encodeUrl(pathnameOf(url, protohostOf(url).length))}`;
  } else {
    message = http.STATUS_CODES[status] ?? String(status);
  }
  const body = `<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n</head>\n<body>\n<pre>${escapeHtml(message).replace(/\n/g, '<br>').replace(/ {2}/g, ' &nbsp;')}</pre>\n</body>\n</html>\n`;
  res.statusCode = status;
  // HTTP/2 has no reason phrase (Node warns when one is set on its HTTP/2 responses).
  if (req.httpVersionMajor !== 2) res.statusMessage = http.STATUS_CODES[status] ?? 'Error';
  res.removeHeader('Content-Encoding');
  res.removeHeader('Content-Language');
  res.removeHeader('Content-Range');
  res.setHeader('Content-Security-Policy', "default-src 'none'");
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  if (!isUpgradeResponse(res) && !(res instanceof SocketResponse)) req.resume();
  if (req.method === 'HEAD') res.end();
  else res.end(body);
}

/**
 * Percent-encode what may not stand in a URL, leaving valid `%XX` escapes as they are (a path
 * is shown as the client sent it, neither decoded nor encoded twice).
 */
function encodeUrl(url: string): string {
  return url.replace(/%(?![0-9A-Fa-f]{2})|[^\x21\x23-\x3B\x3D\x3F-\x5B\x5D\x5F\x61-\x7A\x7E%]+/g, (part) =>
    part === '%' ? '%25' : encodeURI(part.replace(/[\uD800-\uDFFF]/g, '\uFFFD')),
  );
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}
