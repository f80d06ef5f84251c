/**
 * @upgradeware/logger
 *
 * An HTTP request logger with morgan's formats, tokens and options, that also logs upgrades:
 * a switch is logged as 101, a rejected upgrade with its real status, a client that went away
 * before an answer with `-`. Every token value is escaped so that no request can break a line.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import basicAuth from 'basic-auth';
import onHeaders from 'on-headers';
import { deprecation, isUpgradeResponse, peerOf, remoteAddressOf, supportsUpgrade, type NextFunction, type UpgradeAware } from '@upgradeware/upgrade-response';

/** A token's value: a string, or nothing (printed `-`). */
export type TokenValue = string | undefined;

/** What a token function may return; `null`, `undefined`, `''`, `0` and `false` print as `-`. */
export type TokenResult = string | number | boolean | null | undefined;

/** A token: `(req, res, arg)`, where `arg` is the text in brackets (`:req[host]` → `'host'`). */
export type TokenCallback<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse> = {
  token(req: Req, res: Res, arg?: string): TokenResult;
}['token'];

/** The registered tokens, as a format function receives them; values come back escaped. */
export interface TokenIndexer<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse> {
  [name: string]: (req: Req, res: Res, arg?: string) => TokenValue;
}

/**
 * A format function: returns the line to log, or `null`/`undefined` to log nothing. An object is
 * written as it is to a stream in object mode (`writableObjectMode: true`), as morgan 1.12 does.
 */
export type FormatFn<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse> = {
  format(tokens: TokenIndexer<Req, Res>, req: Req, res: Res): string | object | null | undefined;
}['format'];

/** What `logger.compile()` returns: a format function that always returns a string. */
export type CompiledFormat<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse> = {
  format(tokens: TokenIndexer<Req, Res>, req: Req, res: Res): string;
}['format'];

/**
 * Where lines go: anything with a `write()` method. It gets each line followed by `\n`; a stream
 * with `writableObjectMode: true` gets the objects a format function returns as they are.
 */
export interface LoggerStream {
  write(line: string | object): unknown;
  readonly writableObjectMode?: boolean;
}

export interface LoggerOptions<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse> {
  /** Log when the request arrives instead of when the response ends (default false). */
  immediate?: boolean;
  /** Return true to log nothing for this request (default: log every request). */
  skip?: (req: Req, res: Res) => boolean;
  /** Where to write lines (default `process.stdout`). */
  stream?: LoggerStream;
  /**
   * A second line when a switched connection (a WebSocket, a CONNECT tunnel) closes: a format
   * name, a format string or a format function (default: none, one line per request).
   */
  closeFormat?: string | FormatFn<Req, Res>;
  /**
   * Deprecated (as in morgan): collect lines and write them together, `true` every second, a
   * number every that many ms. The timer never keeps the process alive; pending lines are
   * written when the process is about to exit.
   */
  buffer?: boolean | number;
  /**
   * Deprecated (as in morgan): the format, for the `logger(options)` form only. Without it that
   * form uses the `default` format.
   */
  format?: string | FormatFn<Req, Res>;
}

export type LoggerMiddleware<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse> =
  UpgradeAware<(req: Req, res: Res, next: NextFunction) => void>;

export interface Logger {
  <Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse>(
    format?: string | FormatFn<Req, Res>,
    options?: LoggerOptions<Req, Res> | null,
  ): LoggerMiddleware<Req, Res>;
  /** Deprecated (as in morgan): the options alone, the format in `options.format` (default `'default'`). */
  <Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse>(
    options: LoggerOptions<Req, Res>,
  ): LoggerMiddleware<Req, Res>;
  /** Register (or replace) the token `:name`, for every logger of this module. Returns `logger`. */
  token<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse>(
    name: string,
    fn: TokenCallback<Req, Res>,
  ): Logger;
  /** Register (or replace) a named format: a format string or a format function. Returns `logger`. */
  format<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse>(
    name: string,
    fmt: string | FormatFn<Req, Res>,
  ): Logger;
  /** Turn a format string into a format function. */
  compile<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse>(
    format: string,
  ): CompiledFormat<Req, Res>;
}

const NAME = '@upgradeware/logger';

/** The times and the address morgan keeps on req and res; tokens written for morgan read them. */
interface Marks {
  _startAt?: [number, number];
  _startTime?: Date;
  _remoteAddress?: string;
  /** On `res`, with `closeFormat`: when the connection switched, and when it closed. */
  _switchAt?: [number, number];
  _closeAt?: [number, number];
}

type AnyTokenFn = (req: IncomingMessage, res: ServerResponse, arg?: string) => TokenValue;
type AnyFormatFn = (tokens: TokenIndexer, req: IncomingMessage, res: ServerResponse) => string | object | null | undefined;

const tokens: Record<string, AnyTokenFn> = Object.create(null) as Record<string, AnyTokenFn>;
const formats = new Map<string, string | AnyFormatFn>();

// ---- escaping ------------------------------------------------------------------------------

const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029"\\]/g;
const SHORT_ESCAPES: Record<string, string> = { '\\': '\\\\', '"': '\\"', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * Escape a value the way a JSON string would: control characters (C0, DEL, C1), the Unicode line
 * separators, quotes and backslashes. Ordinary values pass unchanged; the escapes are morgan 1.12's.
 */
function escapeValue(text: string): string {
  UNSAFE.lastIndex = 0;
  if (!UNSAFE.test(text)) return text;
  return text.replace(UNSAFE, (c) => SHORT_ESCAPES[c] ?? '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}

// ---- deprecations -------------------------------------------------------------------------

/**
 * A deprecation warning, once per message and process, as depd prints morgan's: silenced by
 * `--no-deprecation` and by `NO_DEPRECATION` naming `morgan`, `@upgradeware/logger` or `*`.
 */
const deprecate = deprecation(NAME, 'morgan', ': ');

// ---- buffering (the deprecated `buffer` option) -------------------------------------------

const DEFAULT_BUFFER_MS = 1000;
/** Buffers holding lines not written yet; written at exit if their timer has not fired. */
const pending = new Set<LineBuffer>();
let exitHooked = false;

function flushAll(): void {
  for (const b of [...pending]) b.flush();
}

/** morgan's buffer stream: lines collected, then written together in one `write`. */
class LineBuffer {
  private lines: string[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly stream: LoggerStream,
    private readonly interval: number,
  ) {}

  write(line: string): void {
    this.lines.push(line);
    if (this.timer !== null) return;
    // unref(): a pending flush never keeps the process alive; 'beforeExit' and 'exit' write it.
    this.timer = setTimeout(() => this.flushSafely(), this.interval).unref();
    pending.add(this);
    if (!exitHooked) {
      exitHooked = true;
      process.on('beforeExit', flushAll);
      process.on('exit', flushAll);
    }
  }

  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    pending.delete(this);
    if (this.lines.length === 0) return;
    const text = this.lines.join('');
    this.lines = [];
    this.stream.write(text);
  }

  private flushSafely(): void {
    try {
      this.flush();
    } catch {
      // A stream that throws from a timer would crash the process; these lines are lost.
    }
  }
}

// ---- the middleware ------------------------------------------------------------------------

const OPTIONS = new Set(['immediate', 'skip', 'stream', 'closeFormat', 'buffer', 'format']);
const MAX_TIMER_MS = 2 ** 31 - 1;

function isFormat(value: unknown): value is string | AnyFormatFn {
  return typeof value === 'string' || typeof value === 'function';
}

function createLogger<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse>(
  format?: string | FormatFn<Req, Res> | LoggerOptions<Req, Res>,
  options?: LoggerOptions<Req, Res> | null,
): LoggerMiddleware<Req, Res> {
  let fmt: unknown = format;
  let opts: unknown = options ?? {};
  // morgan's deprecated form: logger(options), the format in options.format.
  const optionsForm = format !== null && typeof format === 'object';
  if (optionsForm) {
    opts = format;
    fmt = (format as { format?: unknown }).format || 'default';
    deprecate(`logger(options): use logger(${typeof fmt === 'string' ? JSON.stringify(fmt) : 'format'}, options) instead`);
  } else if (fmt === undefined) {
    deprecate('undefined format: specify a format');
  } else if (!isFormat(fmt)) {
    throw new TypeError(`${NAME}: argument format must be a format name, a format string or a function`);
  }
  if (opts === null || typeof opts !== 'object') throw new TypeError(`${NAME}: options must be an object`);
  for (const key of Object.keys(opts)) {
    if (!OPTIONS.has(key)) throw new TypeError(`${NAME}: unknown option ${JSON.stringify(key)}`);
  }
  const given = opts as LoggerOptions<Req, Res>;
  // As morgan, options.format is read by the logger(options) form only (ignored after a format).
  if (optionsForm && !isFormat(fmt)) {
    throw new TypeError(`${NAME}: option format must be a format name, a format string or a function (argument format)`);
  }
  const { immediate = false, closeFormat, buffer } = given;
  // As morgan: skip false/null and stream null mean their defaults.
  const rawSkip: unknown = given.skip;
  const skip = rawSkip === null || rawSkip === false ? undefined : given.skip;
  const stream: LoggerStream = given.stream === null || given.stream === undefined ? (process.stdout as LoggerStream) : given.stream;
  if (typeof immediate !== 'boolean') throw new TypeError(`${NAME}: option immediate must be a boolean`);
  if (skip !== undefined && typeof skip !== 'function') throw new TypeError(`${NAME}: option skip must be a function`);
  if (typeof stream !== 'object' || typeof stream.write !== 'function') {
    throw new TypeError(`${NAME}: option stream must have a write() method`);
  }
  if (closeFormat !== undefined && !isFormat(closeFormat)) {
    throw new TypeError(`${NAME}: option closeFormat must be a format name, a format string or a function`);
  }
  let out: { write(line: string | object): unknown } = stream;
  if (buffer !== undefined && buffer !== null && buffer !== false && buffer !== 0) {
    if (buffer !== true && (typeof buffer !== 'number' || !(buffer > 0 && buffer <= MAX_TIMER_MS))) {
      throw new TypeError(`${NAME}: option buffer must be true or a number of milliseconds from 1 to ${MAX_TIMER_MS}`);
    }
    deprecate('buffer option');
    const lines = new LineBuffer(stream, buffer === true ? DEFAULT_BUFFER_MS : buffer);
    out = { write: (line) => (typeof line === 'string' ? lines.write(line) : (lines.flush(), stream.write(line))) };
  }
  const objectMode = stream.writableObjectMode === true;
  const formatLine = typeof fmt === 'function' ? (fmt as AnyFormatFn) : formatFunction(fmt as string);
  const formatClose = closeFormat === undefined ? null : typeof closeFormat === 'function' ? (closeFormat as AnyFormatFn) : formatFunction(closeFormat);

  function log(req: IncomingMessage, res: ServerResponse, fmt: AnyFormatFn = formatLine): void {
    if (skip && skip(req as Req, res as Res)) return;
    const line = fmt(tokens, req, res);
    if (line === null || line === undefined) return;
    if (objectMode && typeof line === 'object') out.write(line);
    else out.write(String(line) + '\n');
  }

  /** With `closeFormat`: once the response ended as a switch, wait for its connection to close. */
  function watchClose(req: IncomingMessage, res: ServerResponse): void {
    // Only a switch has a connection that outlives the response: a 101, or the 200 that opens a
    // CONNECT tunnel (what `switchProtocols()` answers a CONNECT with), the responses `:switched` names.
    const switchedAs = switchedTo(req, res);
    if (switchedAs === undefined) return;
    // Only copies are kept for the close line: nothing of the request or the response (nor of
    // the chain they reach) stays referenced for the life of the connection.
    let view: CloseView;
    try {
      view = closeView(req, res, switchedAs);
    } catch {
      // Odd objects (a getter that throws): no close line rather than a throw from 'finish'.
      return;
    }
    const socket = req.socket;
    if (!socket || socket.closed || socket.destroyed) closed(view);
    else socket.once('close', closed.bind(null, view));
  }

  /** The switched connection closed: its close line is written (bound per connection, see Line). */
  function closed(view: CloseView): void {
    view.res._closeAt = process.hrtime();
    // ws reports a WebSocket's close (req.webSocketClose) a tick after its socket closed.
    setImmediate(logClose, view);
  }

  function logClose(view: CloseView): void {
    try {
      log(view.req, view.res, formatClose!);
    } catch {
      // As for a line written after the response: nobody is left to answer.
    }
  }

  return supportsUpgrade(function logger(req: Req, res: Res, next: NextFunction): void {
    const reqMarks = req as Req & Marks;
    const resMarks = res as Res & Marks;
    reqMarks._startAt = process.hrtime();
    reqMarks._startTime = new Date();
    const upgrade = isUpgradeResponse(res);
    reqMarks._remoteAddress = remoteAddress(req, upgrade);
    resMarks._startAt = undefined;
    resMarks._startTime = undefined;
    if (formatClose !== null && upgrade) res.once('finish', watchClose.bind(null, req, res));

    if (immediate) {
      try {
        log(req, res);
      } catch (err) {
        next(err);
        return;
      }
    } else {
      const line = new Line(req, res);
      const done = (line.done = logLine.bind(line));
      onHeaders(res, markResponseStart);
      // A switch and an answer end in 'finish' (then 'close'); a client gone before the
      // answer ends in 'close' alone. Whichever comes first writes the line, once.
      if (res.writableFinished || res.destroyed) setImmediate(done);
      else {
        res.on('finish', done);
        res.on('close', done);
      }
    }
    next();
  });

  /** The line's 'finish' and 'close' listener (bound to its Line): writes it, once. */
  function logLine(this: Line): void {
    if (this.logged) return;
    this.logged = true;
    const { req, res, done } = this;
    res.removeListener('finish', done!);
    res.removeListener('close', done!);
    try {
      log(req, res);
    } catch {
      // The response is over and next() was called long ago: losing one line beats
      // crashing the process, which is what a throw from here would do.
    }
  }
}

/**
 * A request's line, until it is written. Its listener is `logLine` bound to it, not a closure made
 * per request, which V8 would compile again after every full garbage collection (DESIGN.md,
 * "Facts measured").
 */
class Line {
  logged = false;
  done: (() => void) | undefined = undefined;
  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
  ) {}
}

// ---- the close line's request and response ------------------------------------------------

interface CloseView {
  req: IncomingMessage;
  res: ServerResponse & Marks;
}

type Primitive = string | number | boolean | bigint | undefined | null;
const isPrimitive = (v: unknown): v is Primitive => v === null || (typeof v !== 'object' && typeof v !== 'function');

const kCopiedHeaders = Symbol('upgradeware.logger.copiedHeaders');
type CopiedHeaders = { [kCopiedHeaders]: OutgoingHttpHeaders };

/**
 * The header methods of the close line's stand-in response, reading the headers copied at the
 * switch: shared by every stand-in (no four closures per open connection), on a prototype that
 * has nothing else (as the stand-in had no prototype).
 */
const closeResponseMethods: object = Object.assign(Object.create(null) as object, {
  getHeader(this: CopiedHeaders, name: string) {
    return this[kCopiedHeaders][name.toLowerCase()];
  },
  getHeaders(this: CopiedHeaders) {
    return { ...this[kCopiedHeaders] };
  },
  hasHeader(this: CopiedHeaders, name: string) {
    return Object.prototype.hasOwnProperty.call(this[kCopiedHeaders], name.toLowerCase());
  },
  getHeaderNames(this: CopiedHeaders) {
    return Object.keys(this[kCopiedHeaders]);
  },
});

/**
 * Stand-ins for `req` and `res`, made at the switch, that the close line's tokens, format and
 * `skip` read: the request line, headers, version, address, the marks, every own property that
 * holds a plain value (`req.user` …), the status and the response headers. The WebSocket close
 * info (`req.webSocketClose`) is followed: whatever is assigned to it later lands here.
 */
function closeView(req: IncomingMessage, res: ServerResponse, switchedAs: string): CloseView {
  const vReq = Object.create(null) as Record<string, unknown>;
  for (const key of Object.keys(req)) {
    const value = (req as unknown as Record<string, unknown>)[key];
    if (isPrimitive(value)) vReq[key] = value;
  }
  const r = req as IncomingMessage & Marks & { ip?: unknown; originalUrl?: unknown; webSocketClose?: unknown };
  const remote = remoteAddress(req, true);
  const peer = peerOf(req.socket);
  Object.assign(vReq, {
    method: req.method,
    url: req.url,
    originalUrl: r.originalUrl,
    headers: { ...req.headers },
    httpVersion: req.httpVersion,
    httpVersionMajor: req.httpVersionMajor,
    httpVersionMinor: req.httpVersionMinor,
    ip: typeof r.ip === 'string' ? r.ip : undefined,
    _remoteAddress: remote,
    _startAt: r._startAt,
    _startTime: r._startTime,
    socket: { remoteAddress: peer.address, remotePort: peer.port },
  });
  vReq.connection = vReq.socket;
  let closeInfo: unknown = r.webSocketClose;
  const follow = {
    get: () => closeInfo,
    set: (value: unknown) => {
      closeInfo = value;
    },
    enumerable: true,
    configurable: true,
  };
  Object.defineProperty(vReq, 'webSocketClose', follow);
  // The setter on `req` keeps only `closeInfo` (its closure), never `req` itself. A library that
  // made the property non-configurable keeps it: the copy above is then all there is.
  const own = Object.getOwnPropertyDescriptor(req, 'webSocketClose');
  if (own === undefined || own.configurable) Object.defineProperty(req, 'webSocketClose', follow);

  const vRes = Object.create(closeResponseMethods) as Record<string | symbol, unknown>;
  vRes[kCopiedHeaders] = res.getHeaders();
  for (const key of Object.keys(res)) {
    const value = (res as unknown as Record<string, unknown>)[key];
    if (isPrimitive(value)) vRes[key] = value;
  }
  const m = res as ServerResponse & Marks;
  Object.assign(vRes, {
    statusCode: res.statusCode,
    statusMessage: res.statusMessage,
    headersSent: true,
    _startAt: m._startAt,
    _startTime: m._startTime,
    _switchAt: process.hrtime(),
    // `:switched` of the close line: what the switch was, worked out at the switch (the stand-in is
    // no upgrade response of its own).
    [kSwitched]: switchedAs,
  });
  return { req: vReq as unknown as IncomingMessage, res: vRes as unknown as ServerResponse & Marks };
}

function markResponseStart(this: ServerResponse): void {
  const marks = this as ServerResponse & Marks;
  marks._startAt = process.hrtime();
  marks._startTime = new Date();
}

/** On a close line's stand-in response: the `:switched` value, worked out at the switch. */
const kSwitched = Symbol('upgradeware.logger.switched');

function switchedTo(req: IncomingMessage, res: ServerResponse): string | undefined {
  if (kSwitched in res) return (res as ServerResponse & { [kSwitched]: string | undefined })[kSwitched];
  if (!isUpgradeResponse(res) || !res.headersSent) return undefined;
  const over = req.httpVersionMajor === 2 ? 'h2' : '1.1';
  if (res.statusCode === 101) {
    const upgrade = res.getHeader('upgrade') ?? req.headers.upgrade;
    return `${String(upgrade ?? 'upgrade').split(',')[0]!.trim().toLowerCase()}/${over}`;
  }
  if (res.statusCode !== 200 || req.method !== 'CONNECT') return undefined;
  const protocol = req.headers[':protocol'];
  return `${typeof protocol === 'string' ? protocol.toLowerCase() : 'connect'}/${over}`;
}

function remoteAddress(req: IncomingMessage, upgrade: boolean): string | undefined {
  const r = req as IncomingMessage & Marks & { ip?: unknown };
  if (typeof r.ip === 'string' && r.ip) return r.ip;
  return r._remoteAddress || remoteAddressOf(req, upgrade) || undefined;
}

/** A format by name, else the format string itself; morgan's `default` format for `''` or none. */
function formatFunction(name: string | undefined): AnyFormatFn {
  const key = name || 'default';
  const fmt = formats.get(key) ?? key;
  if (key === 'default' && formats.has(key)) deprecate('default format: use combined format');
  return typeof fmt === 'function' ? fmt : compile(fmt);
}

// ---- compile, token, format ----------------------------------------------------------------

const TOKEN = /:([-\w]{2,})(?:\[([^\]]+)\])?/g;

interface TokenPart {
  name: string;
  arg: string | undefined;
  /** The token as written, printed as it is when no such token is registered. */
  text: string;
}

function compile<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse>(
  format: string,
): CompiledFormat<Req, Res> {
  if (typeof format !== 'string') throw new TypeError(`${NAME}: argument format must be a string (compile(format) needs a format string)`);
  const parts: Array<string | TokenPart> = [];
  let last = 0;
  for (const match of format.matchAll(TOKEN)) {
    if (match.index > last) parts.push(format.slice(last, match.index));
    parts.push({ name: match[1]!, arg: match[2], text: match[0] });
    last = match.index + match[0].length;
  }
  if (last < format.length) parts.push(format.slice(last));

  return function compiledFormat(table: TokenIndexer<Req, Res>, req: Req, res: Res): string {
    let line = '';
    for (const part of parts) {
      if (typeof part === 'string') {
        line += part;
        continue;
      }
      // The registered tokens have no prototype: nothing inherited to rule out (a hash lookup saved).
      const fn = table === tokens ? tokens[part.name] : Object.prototype.hasOwnProperty.call(table, part.name) ? table[part.name] : undefined;
      line += typeof fn === 'function' ? fn(req, res, part.arg) || '-' : part.text;
    }
    return line;
  };
}

function token<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse>(
  name: string,
  fn: TokenCallback<Req, Res>,
): Logger {
  if (typeof name !== 'string' || name.length === 0) throw new TypeError(`${NAME}: token(name, fn) needs a name`);
  if (typeof fn !== 'function') throw new TypeError(`${NAME}: token(name, fn) needs a function`);
  const call = fn as (this: TokenIndexer, req: IncomingMessage, res: ServerResponse, arg?: string) => TokenResult;
  // Every value is escaped here, so format functions get safe values too.
  tokens[name] = function tokenValue(req, res, arg) {
    // Called on the token table, as morgan calls its tokens (`this[name]` reaches the others).
    const value = arg === undefined ? call.call(tokens, req, res) : call.call(tokens, req, res, arg);
    if (!value) return undefined;
    return escapeValue(typeof value === 'string' ? value : String(value));
  };
  return logger;
}

function format<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse>(
  name: string,
  fmt: string | FormatFn<Req, Res>,
): Logger {
  if (typeof name !== 'string' || name.length === 0) throw new TypeError(`${NAME}: format(name, fmt) needs a name`);
  if (typeof fmt !== 'string' && typeof fmt !== 'function') {
    throw new TypeError(`${NAME}: format(name, fmt) needs a format string or a function`);
  }
  formats.set(name, fmt as string | AnyFormatFn);
  return logger;
}

/**
 * `logger(format?, options?)`: a middleware that writes one line per request. `format` is the
 * name of a format (default `'combined'`), a format string, or a format function.
 */
export const logger: Logger = Object.assign(createLogger, { token, format, compile }) as Logger;

// ---- predefined formats --------------------------------------------------------------------

format('combined', ':remote-addr - :remote-user [:date[clf]] ":method :url HTTP/:http-version" :status :res[content-length] ":referrer" ":user-agent"');
format('common', ':remote-addr - :remote-user [:date[clf]] ":method :url HTTP/:http-version" :status :res[content-length]');
format('default', ':remote-addr - :remote-user [:date] ":method :url HTTP/:http-version" :status :res[content-length] ":referrer" ":user-agent"');
format('short', ':remote-addr :remote-user :method :url HTTP/:http-version :status :res[content-length] - :response-time ms');
format('tiny', ':method :url :status :res[content-length] - :response-time ms');
/** One line that says what a switch was: `CONNECT /chat HTTP/2.0 200 websocket/h2 …` or `GET /chat HTTP/1.1 101 websocket/1.1 …`. */
format('switch', ':remote-addr :method :url HTTP/:http-version :status :switched :response-time ms');

const devLines = new Map<number, AnyFormatFn>();
/** ANSI colour of a status: red 5xx, yellow 4xx, cyan 3xx, green 2xx, none otherwise (1xx too). */
function statusColour(status: number): number {
  if (status >= 500) return 31;
  if (status >= 400) return 33;
  if (status >= 300) return 36;
  if (status >= 200) return 32;
  return 0;
}
format('dev', function dev(table, req, res) {
  const colour = res.headersSent ? statusColour(res.statusCode) : 0;
  let line = devLines.get(colour);
  if (!line) {
    line = compile(`\x1b[0m:method :url \x1b[${colour}m:status\x1b[0m :response-time ms - :res[content-length]\x1b[0m`);
    devLines.set(colour, line);
  }
  return line(table, req, res);
});
// https://no-color.org: a non-empty NO_COLOR when the module loads gives a dev format without colours.
if (process.env.NO_COLOR) format('dev', ':method :url :status :response-time ms - :res[content-length]');

// ---- tokens --------------------------------------------------------------------------------

const CLF_MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const two = (n: number) => (n < 10 ? '0' : '') + n;

function clfDate(d: Date): string {
  return `${two(d.getUTCDate())}/${CLF_MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} +0000`;
}

function msBetween(from: [number, number], to: [number, number], digits: string | undefined): string {
  const ms = (to[0] - from[0]) * 1e3 + (to[1] - from[1]) / 1e6;
  return ms.toFixed(digits === undefined ? 3 : Number(digits));
}

function headerValue(value: number | string | readonly string[] | undefined): string | number | undefined {
  return Array.isArray(value) ? value.join(', ') : (value as string | number | undefined);
}

token('url', (req) => (req as IncomingMessage & { originalUrl?: string }).originalUrl || req.url);
token('method', (req) => req.method);
token('status', (_req, res) => (res.headersSent ? String(res.statusCode) : undefined));
token('response-time', (req, res, digits) => {
  const start = (req as IncomingMessage & Marks)._startAt;
  const end = (res as ServerResponse & Marks)._startAt;
  return start && end ? msBetween(start, end, digits) : undefined;
});
token('total-time', (req, res, digits) => {
  const start = (req as IncomingMessage & Marks)._startAt;
  if (!start || !(res as ServerResponse & Marks)._startAt) return undefined;
  return msBetween(start, process.hrtime(), digits);
});
/** The last second written in each whole-second style, and its text: one formatting per second. */
const webSecond = { at: Number.NaN, text: '' };
const clfSecond = { at: Number.NaN, text: '' };
function inSecond(cache: { at: number; text: string }, ms: number, write: (d: Date) => string): string {
  const second = Math.floor(ms / 1000);
  if (second !== cache.at) {
    cache.text = write(new Date(ms));
    cache.at = second;
  }
  return cache.text;
}
const webDate = (d: Date): string => d.toUTCString();

token('date', (_req, _res, style) => {
  if (style === undefined || style === 'web') return inSecond(webSecond, Date.now(), webDate);
  if (style === 'clf') return inSecond(clfSecond, Date.now(), clfDate);
  if (style === 'iso') return new Date().toISOString();
  return undefined;
});
token('referrer', (req) => req.headers.referer || (req.headers.referrer as string | undefined));
token('remote-addr', (req) => remoteAddress(req, false));
token('remote-user', (req) => basicAuth(req)?.name);
token('http-version', (req) => `${req.httpVersionMajor}.${req.httpVersionMinor}`);
token('user-agent', (req) => req.headers['user-agent']);
token('req', (req, _res, field) => (field === undefined ? undefined : headerValue(req.headers[field.toLowerCase()])));
token('res', (_req, res, field) => (field === undefined || !res.headersSent ? undefined : headerValue(res.getHeader(field))));
token('pid', () => String(process.pid));
/** The protocol an upgrade asked for (`websocket`; HTTP/2: the `:protocol`); `-` for an ordinary request. */
token('upgrade', (req) => req.headers.upgrade ?? (req.headers[':protocol'] as string | undefined));
/**
 * What the connection switched to, and over which HTTP: `websocket/1.1` (an HTTP/1.1 upgrade, 101),
 * `websocket/h2` (an RFC 8441 extended CONNECT, 200), `connect/1.1`, `connect/h2` (tunnels);
 * `-` when nothing switched (a refusal, an ordinary request).
 */
token('switched', switchedTo);
/** For the `closeFormat` line: ms from the switch to the close of the connection. */
token('connection-time', (_req, res, digits) => {
  const { _switchAt: from, _closeAt: to } = res as ServerResponse & Marks;
  return from && to ? msBetween(from, to, digits) : undefined;
});
/** The WebSocket close code, as recorded by @upgradeware/websocket on `req.webSocketClose`. */
token('close-code', (req) => {
  const close = (req as IncomingMessage & { webSocketClose?: { code?: unknown } }).webSocketClose;
  return typeof close?.code === 'number' ? String(close.code) : undefined;
});
