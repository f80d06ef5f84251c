/**
 * Shared helpers for the test suites: real servers on 127.0.0.1 port 0, raw `net` clients and
 * real `ws` clients. Every helper is bounded in time and closes what it opens.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';

export const HOST = '127.0.0.1';

export interface TestServer {
  server: http.Server;
  port: number;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `ws://127.0.0.1:<port>` */
  wsUrl: string;
  /** Close the server and destroy every socket it accepted, upgraded ones included. */
  close(): Promise<void>;
}

/** Something that can serve a server: an upgradeware app (attached) or a request listener. */
export interface Attachable {
  (req: http.IncomingMessage, res: http.ServerResponse): void;
  attach?: (server: http.Server) => http.Server;
}

/** A loopback port that was free a moment ago (for a server the test starts as a child: redis-server, nginx, an example). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, HOST, resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/**
 * Start `app` on 127.0.0.1, port 0. An upgradeware app is attached, so its upgrades and CONNECT
 * requests are served too; `setup` runs before the app is attached (to add listeners of one's own).
 */
export async function start(app: Attachable | null, setup?: (server: http.Server) => void): Promise<TestServer> {
  const server = http.createServer(app ?? undefined);
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  setup?.(server);
  if (app && typeof app.attach === 'function') app.attach(server);
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    port,
    url: `http://${HOST}:${port}`,
    wsUrl: `ws://${HOST}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface RawResponse {
  /** Everything the server sent, as latin1 text. */
  raw: string;
  /** The status code of the first response, or 0 when nothing parseable arrived. */
  status: number;
  /** The status line's reason phrase. */
  reason: string;
  /** Header lines of the first response; names lowercased, repeated names in order. */
  headers: Record<string, string[]>;
  /** Everything after the first response head. */
  body: string;
  /** True when the server closed the connection (FIN or reset) within the time allowed. */
  closed: boolean;
}

/** Parse the first response head out of `raw`. */
export function parseResponse(raw: string, closed: boolean): RawResponse {
  const end = raw.indexOf('\r\n\r\n');
  const headText = end === -1 ? raw : raw.slice(0, end);
  const lines = headText.split('\r\n');
  const match = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
  const headers: Record<string, string[]> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    (headers[name] ??= []).push(line.slice(colon + 1).trim());
  }
  return {
    raw,
    status: match ? Number(match[1]) : 0,
    reason: match?.[2] ?? '',
    headers,
    body: end === -1 ? '' : raw.slice(end + 4),
    closed,
  };
}

export interface RawOptions {
  /** Give up waiting for the server to close after this many ms (default 3000). */
  timeoutMs?: number;
  /** Resolve as soon as a full response head has arrived, leaving the socket open. */
  untilHead?: boolean;
}

/**
 * Send `request` (raw bytes) on a fresh connection and collect what comes back until the server
 * closes the connection or `timeoutMs` passes (pass `untilHead` for a 101 that stays open). The
 * socket is always destroyed at the end. A string is sent as UTF-8: for exact bytes above 0x7f,
 * pass `Buffer.from(text, 'latin1')`.
 */
export function rawRequest(port: number, request: string | Buffer, options: RawOptions = {}): Promise<RawResponse> {
  const timeoutMs = options.timeoutMs ?? 3000;
  return new Promise((resolve) => {
    const socket = net.connect(port, HOST);
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(parseResponse(Buffer.concat(chunks).toString('latin1'), closed));
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('error', () => finish(true));
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      if (options.untilHead && Buffer.concat(chunks).includes('\r\n\r\n')) finish(false);
    });
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.write(request);
  });
}

/** A raw connection kept open: write bytes, wait for bytes. */
export interface RawConnection {
  socket: net.Socket;
  /** All bytes received so far. */
  received(): Buffer;
  /** Wait until the received bytes contain `text` (latin1), or reject after `timeoutMs`. */
  waitFor(text: string | Buffer, timeoutMs?: number): Promise<Buffer>;
  /** Wait until the server closes the connection; resolves false after `timeoutMs`. */
  waitClose(timeoutMs?: number): Promise<boolean>;
  close(): void;
}

export function rawConnect(port: number): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, HOST);
    const chunks: Buffer[] = [];
    let closed = false;
    const waiters = new Set<() => void>();
    const notify = () => {
      for (const w of [...waiters]) w();
    };
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      notify();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      notify();
    });
    socket.on('end', () => {
      closed = true;
      notify();
    });
    socket.once('connect', () => {
      const conn: RawConnection = {
        socket,
        received: () => Buffer.concat(chunks),
        waitFor(text, timeoutMs = 3000) {
          return new Promise((res, rej) => {
            const check = () => {
              const all = Buffer.concat(chunks);
              if (all.includes(text)) {
                cleanup();
                res(all);
              } else if (closed) {
                cleanup();
                rej(new Error(`connection closed before ${JSON.stringify(String(text))}; got ${JSON.stringify(all.toString('latin1'))}`));
              }
            };
            const timer = setTimeout(() => {
              cleanup();
              rej(new Error(`timed out waiting for ${JSON.stringify(String(text))}; got ${JSON.stringify(Buffer.concat(chunks).toString('latin1'))}`));
            }, timeoutMs);
            const cleanup = () => {
              clearTimeout(timer);
              waiters.delete(check);
            };
            waiters.add(check);
            check();
          });
        },
        waitClose(timeoutMs = 3000) {
          return new Promise((res) => {
            const check = () => {
              if (closed) {
                cleanup();
                res(true);
              }
            };
            const timer = setTimeout(() => {
              cleanup();
              res(false);
            }, timeoutMs);
            const cleanup = () => {
              clearTimeout(timer);
              waiters.delete(check);
            };
            waiters.add(check);
            check();
          });
        },
        close: () => socket.destroy(),
      };
      resolve(conn);
    });
    socket.once('error', reject);
  });
}

/** A valid WebSocket handshake request for `path`, with extra header lines. */
export function wsHandshake(path: string, extra: Record<string, string> = {}, host = HOST): string {
  const headers: Record<string, string> = {
    Host: host,
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
    'Sec-WebSocket-Version': '13',
    ...extra,
  };
  let text = `GET ${path} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(headers)) if (value !== '') text += `${name}: ${value}\r\n`;
  return text + '\r\n';
}

/** An upgrade request to an arbitrary protocol. */
export function upgradeRequest(path: string, protocol: string, extra: Record<string, string> = {}): string {
  let text = `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: ${protocol}\r\nConnection: Upgrade\r\n`;
  for (const [name, value] of Object.entries(extra)) text += `${name}: ${value}\r\n`;
  return text + '\r\n';
}

export interface WsResult {
  ws: WebSocket;
  /** The 101 response as the client saw it. */
  response: http.IncomingMessage;
}

/** Open a real `ws` client; resolves on open, rejects with `{ status, headers, body }` on refusal. */
export function wsOpen(url: string, options: WebSocket.ClientOptions & { protocols?: string | string[] } = {}): Promise<WsResult> {
  const { protocols, ...rest } = options;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { handshakeTimeout: 5000, ...rest });
    track(ws);
    let response: http.IncomingMessage | undefined;
    ws.once('upgrade', (res) => {
      response = res;
    });
    ws.once('open', () => resolve({ ws, response: response! }));
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        ws.terminate();
        reject(new WsRefused(res.statusCode ?? 0, res.headers, Buffer.concat(chunks).toString()));
      });
      res.on('error', () => undefined);
    });
    ws.once('error', (err) => reject(err));
  });
}

export class WsRefused extends Error {
  constructor(
    readonly status: number,
    readonly headers: http.IncomingHttpHeaders,
    readonly body: string,
  ) {
    super(`WebSocket refused with ${status}`);
  }
}

/** Close a client and wait for its 'close' (bounded). */
export function wsClose(ws: WebSocket, timeoutMs = 2000): Promise<void> {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve();
    const timer = setTimeout(() => {
      ws.terminate();
      resolve();
    }, timeoutMs);
    ws.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    ws.close();
  });
}

interface Inbox {
  queue: string[];
  waiters: Array<(message: string) => void>;
}
const inboxes = new WeakMap<WebSocket, Inbox>();

/** Record every message from the moment the client exists, so none is missed by `nextMessage`. */
function track(ws: WebSocket): void {
  const box: Inbox = { queue: [], waiters: [] };
  inboxes.set(ws, box);
  ws.on('message', (data) => {
    const message = data.toString();
    const waiter = box.waiters.shift();
    if (waiter) waiter(message);
    // Kept for a later nextMessage() only when no other listener took it.
    else if (ws.listenerCount('message') === 1) box.queue.push(message);
  });
}

/**
 * Resolve with the next message a client receives (bounded). For clients opened by `wsOpen`,
 * messages that arrived before the call (even in the same packet as the 101) are not lost.
 */
export function nextMessage(ws: WebSocket, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    let box = inboxes.get(ws);
    if (!box) {
      track(ws);
      box = inboxes.get(ws)!;
    }
    const queued = box.queue.shift();
    if (queued !== undefined) return resolve(queued);
    const waiter = (message: string) => {
      clearTimeout(timer);
      resolve(message);
    };
    const timer = setTimeout(() => {
      const i = box!.waiters.indexOf(waiter);
      if (i !== -1) box!.waiters.splice(i, 1);
      reject(new Error('no message in time'));
    }, timeoutMs);
    box.waiters.push(waiter);
  });
}

/** Plain HTTP GET (or other method) against 127.0.0.1; resolves with status, headers and body. */
export function request(
  url: string,
  options: http.RequestOptions & { body?: string } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  const { body, ...rest } = options;
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent: false, ...rest }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.setTimeout(5000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/** Wait `ms` milliseconds. */
export const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Wait until `predicate()` is true, polling every 5 ms, for at most `timeoutMs`. */
export async function until(predicate: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await delay(5);
  }
}

/** Open a client, send `message`, resolve with the first reply, and close (all bounded). */
export async function wsAsk(url: string, message: string, options: Parameters<typeof wsOpen>[1] = {}): Promise<string> {
  const { ws } = await wsOpen(url, options);
  try {
    const reply = nextMessage(ws);
    ws.send(message);
    return await reply;
  } finally {
    await wsClose(ws);
  }
}

/**
 * `@upgradeware/dispatcher` as a README example gets it in the README suites: every
 * `app.listen(...)` listens on 127.0.0.1 port 0 whatever the example asked for, and the servers
 * (and, with `sockets`, the connections they accept) are recorded so the test can close them.
 */
export function readmeDispatcher(servers: http.Server[], sockets?: Set<net.Socket>): typeof import('@upgradeware/dispatcher') {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const dispatcher = require('@upgradeware/dispatcher') as typeof import('@upgradeware/dispatcher');
  return {
    ...dispatcher,
    createApp: (...args: Parameters<typeof dispatcher.createApp>) => {
      const app = dispatcher.createApp(...args);
      app.listen = ((): http.Server => {
        const server = app.attach(http.createServer(app));
        if (sockets) {
          server.on('connection', (s: net.Socket) => {
            sockets.add(s);
            s.once('close', () => sockets.delete(s));
          });
        }
        servers.push(server);
        return server.listen(0, HOST);
      }) as typeof app.listen;
      return app;
    },
  };
}

/**
 * A raw WebSocket handshake on `socket` (connected or connecting): `headers` are extra
 * `Name: value\r\n` lines. Resolves with the socket once its 101 is in (what follows is drained),
 * or with the reason it was not: `refused: …`, `error …`, `no answer: …` (after `timeoutMs`).
 */
export function rawSwitch(socket: net.Socket, url: string, headers = '', timeoutMs = 15_000): Promise<net.Socket | string> {
  return new Promise((resolve) => {
    let got = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(`no answer: ${JSON.stringify(got.slice(0, 120))}`);
    }, timeoutMs);
    socket.on('error', (e) => {
      clearTimeout(timer);
      resolve(`error ${e.message}`);
    });
    const onData = (chunk: Buffer) => {
      got += chunk.toString('latin1');
      if (!got.includes('\r\n\r\n')) return;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.on('data', () => undefined);
      if (got.startsWith('HTTP/1.1 101 ')) resolve(socket);
      else {
        socket.destroy();
        resolve(`refused: ${JSON.stringify(got.slice(0, 120))}`);
      }
    };
    socket.on('data', onData);
    socket.write(
      `GET ${url} HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${headers}\r\n`,
    );
  });
}

/**
 * A README example as CommonJS, and the `require` it runs with: `modules` by name, any other name
 * an error naming it. `diagnostics` are the transpiler's (a test expects none).
 */
export function readmeModule(source: string, modules: Record<string, unknown>): { code: string; diagnostics: unknown[]; require: (name: string) => unknown } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ts = require('typescript') as typeof import('typescript');
  const js = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
    reportDiagnostics: true,
  });
  return {
    code: js.outputText,
    diagnostics: js.diagnostics ?? [],
    require: (name) => {
      if (!(name in modules)) throw new Error(`the README example imports ${name}, which this test does not provide`);
      return modules[name];
    },
  };
}

/**
 * The first fenced block of `lang` after the line `heading` in the README at `path`: what a user
 * copies. Throws when the README has no such heading.
 */
export function readmeBlock(path: string, heading: string, lang: 'js' | 'ts'): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const text = (require('node:fs') as typeof import('node:fs')).readFileSync(path, 'utf8');
  const at = text.indexOf(`${heading}\n`);
  if (at === -1) throw new Error(`${path} has no heading ${heading}`);
  const start = text.indexOf(`\`\`\`${lang}\n`, at) + lang.length + 4;
  const end = text.indexOf('\n```', start);
  return text.slice(start, end + 1);
}

/** The names of the functions listening for `event` on `emitter`, in the order they run. */
export function listenerNames(emitter: { listeners(event: string): Function[] }, event: string): string[] {
  return emitter.listeners(event).map((listener) => listener.name);
}
