/**
 * The full stack the hardening suites attack: logger (to memory), response-time, cookie-parser,
 * query, session, a CONNECT proxy behind basic-auth proxy mode tunnelling to a local echo server,
 * an admin area behind basic-auth, a session-guarded WebSocket endpoint and an open one, both
 * with an Origin list. Every handler behind a guard counts its runs in `ran`.
 */
import * as net from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createApp, type App } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade, type NextFunction } from '@upgradeware/upgrade-response';
import { logger } from '@upgradeware/logger';
import { responseTime } from '@upgradeware/response-time';
import { cookieParser } from '@upgradeware/cookie-parser';
import { query } from '@upgradeware/query';
import { session, MemoryStore, type SessionStoreLike } from '@upgradeware/session';
import { basicAuth } from '@upgradeware/basic-auth';
import { websocket, type WebSocketEndpoint } from '@upgradeware/websocket';
import { HOST, start, request, type TestServer } from '../../test-support';

declare module '@upgradeware/session' {
  interface SessionData {
    user: string;
  }
}

export const SECRET = 'hardening-secret';
export const ORIGIN = 'http://good.example';
export const ADMIN = 'Basic ' + Buffer.from('admin:s3cret').toString('base64');
export const PROXY = 'Basic ' + Buffer.from('proxy:pw').toString('base64');
/** Sec-WebSocket-Accept for test-support's key `dGhlIHNhbXBsZSBub25jZQ==`. */
export const ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=';
export const LOG_FORMAT = ':method :url :status :remote-user ":user-agent" ":referrer" :req[x-note]';

export interface Hooks {
  /** Runs first in the stack (after the logger), with the request and response. */
  first?: (req: IncomingMessage, res: ServerResponse) => void;
  /** Inserted after query(); may delay, throw or answer. */
  afterQuery?: (req: IncomingMessage, res: ServerResponse, next: NextFunction) => unknown;
  /** An error layer at the end of the stack (4 arguments, supportsUpgrade). */
  errorLayer?: (err: unknown, req: IncomingMessage, res: ServerResponse, next: NextFunction) => unknown;
  /** Called by the open endpoint's onConnection, before it echoes. */
  onConnection?: (ws: import('ws').WebSocket, req: IncomingMessage) => unknown;
}

export interface StackOptions {
  store?: SessionStoreLike;
  upgradeTimeout?: number;
  hooks?: Hooks;
  /** Replace the admin check (sync or async basic-auth check). */
  adminCheck?: Parameters<typeof basicAuth>[0];
}

export interface Stack {
  app: App;
  srv: TestServer;
  port: number;
  echoPort: number;
  logs: string[];
  /** Errors that reached the end of the stack (the app's `onError`). */
  errors: unknown[];
  ran: Record<'admin' | 'adminWs' | 'ws' | 'wsConn' | 'open' | 'openConn' | 'tunnel' | 'login', number>;
  endpoints: WebSocketEndpoint[];
  /** Log in through /login and return the `Cookie` header value of the session. */
  login(user?: string): Promise<string>;
  close(): Promise<void>;
}

export async function buildStack(options: StackOptions = {}): Promise<Stack> {
  const logs: string[] = [];
  const ran: Stack['ran'] = { admin: 0, adminWs: 0, ws: 0, wsConn: 0, open: 0, openConn: 0, tunnel: 0, login: 0 };
  const hooks = options.hooks ?? {};

  // The CONNECT target: a local echo server.
  const echoSockets = new Set<net.Socket>();
  const echo = net.createServer((s) => {
    echoSockets.add(s);
    s.on('close', () => echoSockets.delete(s));
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, HOST, r));
  const echoPort = (echo.address() as net.AddressInfo).port;

  // Errors that reach the end of the stack are collected, not printed (some suites run with
  // NODE_ENV=production, where the dispatcher would print them to stderr).
  const errors: unknown[] = [];
  const onError = (err: unknown): void => void errors.push(err);
  const app = createApp(options.upgradeTimeout === undefined ? { onError } : { upgradeTimeout: options.upgradeTimeout, onError });
  app.use(logger(LOG_FORMAT, { stream: { write: (line: string) => logs.push(line) } }));
  if (hooks.first) {
    const first = hooks.first;
    app.use(supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: NextFunction) => {
      first(req, res);
      next();
    }));
  }
  app.use(responseTime());
  app.use(cookieParser(SECRET));
  app.use(query());
  if (hooks.afterQuery) app.use(supportsUpgrade(hooks.afterQuery));
  app.use(session({ secret: SECRET, store: options.store ?? new MemoryStore({ checkPeriod: 0 }), resave: false, saveUninitialized: false }));

  // CONNECT: basic-auth in proxy mode, then a tunnel to 127.0.0.1 only.
  const proxyAuth = basicAuth('proxy', 'pw', { proxy: true, realm: 'proxy' });
  app.use(supportsUpgrade(function proxy(req: IncomingMessage, res: ServerResponse, next: NextFunction) {
    if (req.method !== 'CONNECT') return next();
    proxyAuth(req, res, (err?: unknown) => {
      if (err) return next(err);
      if (!isUpgradeResponse(res)) return next();
      const url = req.url ?? '';
      if (url !== `${HOST}:${echoPort}`) {
        res.statusCode = 403;
        res.end('only the echo server');
        return;
      }
      ran.tunnel++;
      const upstream = net.connect(echoPort, HOST, () => {
        let switching: boolean;
        try {
          switching = res.switchProtocols((socket, head) => {
            if (head.length) upstream.write(head);
            socket.on('error', () => upstream.destroy());
            upstream.on('close', () => socket.destroy());
            socket.on('close', () => upstream.destroy());
            socket.pipe(upstream).pipe(socket);
          });
        } catch (err) {
          // An on-headers listener threw as the 200 was written: an ordinary error.
          upstream.destroy();
          return next(err);
        }
        if (!switching) upstream.destroy();
      });
      upstream.on('error', (e) => {
        if (!res.headersSent) next(Object.assign(e, { status: 502 }));
      });
    });
  }));

  app.use('/login', (req: IncomingMessage, res: ServerResponse) => {
    ran.login++;
    const user = req.query?.user;
    req.session!.user = typeof user === 'string' ? user : 'alice';
    res.end('ok');
  });

  const endpoints: WebSocketEndpoint[] = [];
  const echoHandler = (ws: import('ws').WebSocket) => ws.on('message', (d, bin) => ws.send(d, { binary: bin }));

  // The admin area: basic-auth, then a WebSocket endpoint and a page.
  app.use('/admin', options.adminCheck ? basicAuth(options.adminCheck, 'admin') : basicAuth('admin', 's3cret', 'admin'));
  app.use('/admin', supportsUpgrade((_req: IncomingMessage, _res: ServerResponse, next: NextFunction) => {
    ran.admin++;
    next();
  }));
  const adminWs = websocket((ws) => {
    ran.adminWs++;
    echoHandler(ws);
  }, { origins: [ORIGIN] });
  endpoints.push(adminWs);
  app.use('/admin/ws', adminWs);
  app.use('/admin', (_req: IncomingMessage, res: ServerResponse) => res.end('admin page'));

  // The chat: a session guard, then the endpoint.
  app.use('/ws', supportsUpgrade(function sessionGuard(req: IncomingMessage, res: ServerResponse, next: NextFunction) {
    if (typeof req.session?.user !== 'string') {
      res.statusCode = 401;
      res.end('log in first');
      return;
    }
    ran.ws++;
    next();
  }));
  const chat = websocket((ws, req) => {
    ran.wsConn++;
    ws.send(`hello ${String(req.session?.user)}`);
    echoHandler(ws);
  }, { origins: [ORIGIN] });
  endpoints.push(chat);
  app.use('/ws', chat);

  // An open echo endpoint (no guard) — what "the next good request" opens.
  app.use('/open', supportsUpgrade((_req: IncomingMessage, _res: ServerResponse, next: NextFunction) => {
    ran.open++;
    next();
  }));
  const open = websocket(async (ws, req) => {
    ran.openConn++;
    // The message listener goes on first: ws emits a message that came with the handshake as
    // soon as it reads it, before anything awaited here resumes.
    echoHandler(ws);
    if (hooks.onConnection) await hooks.onConnection(ws, req);
  }, { origins: [ORIGIN], onError: () => undefined });
  endpoints.push(open);
  app.use('/open', open);

  app.use('/', (_req: IncomingMessage, res: ServerResponse, next: NextFunction) => {
    if (_req.url === '/') res.end('home');
    else next();
  });

  if (hooks.errorLayer) {
    const layer = hooks.errorLayer;
    app.use(supportsUpgrade(function errorLayer(err: unknown, req: IncomingMessage, res: ServerResponse, next: NextFunction) {
      return layer(err, req, res, next);
    }));
  }

  const srv = await start(app);
  return {
    app,
    srv,
    port: srv.port,
    echoPort,
    logs,
    errors,
    ran,
    endpoints,
    async login(user = 'alice') {
      const r = await request(`${srv.url}/login?user=${encodeURIComponent(user)}`);
      const cookie = (r.headers['set-cookie'] ?? [])[0];
      if (!cookie) throw new Error('no session cookie');
      return cookie.split(';')[0]!;
    },
    async close() {
      for (const e of endpoints) await e.close();
      await srv.close();
      for (const s of echoSockets) s.destroy();
      await new Promise((r) => echo.close(r));
    },
  };
}

/** A raw WebSocket handshake with an allowed Origin. */
export function goodHandshake(path = '/open', extra: Record<string, string> = {}): string {
  let text = `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`;
  text += `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: ${ORIGIN}\r\n`;
  for (const [name, value] of Object.entries(extra)) text += `${name}: ${value}\r\n`;
  return text + '\r\n';
}

/** A masked client WebSocket frame (text, or a close frame with `code`). */
export function clientFrame(payload: string | Buffer, opcode = 0x1): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload;
  if (data.length > 125) throw new Error('short frames only');
  const mask = Buffer.from([1, 2, 3, 4]);
  const out = Buffer.alloc(6 + data.length);
  out[0] = 0x80 | opcode;
  out[1] = 0x80 | data.length;
  mask.copy(out, 2);
  for (let i = 0; i < data.length; i++) out[6 + i] = data[i]! ^ mask[i % 4]!;
  return out;
}

export const CLOSE_FRAME = clientFrame(Buffer.from([0x03, 0xe8]), 0x8);

export interface Exchange {
  raw: Buffer;
  text: string;
  closed: boolean;
}

/**
 * Send `bytes` on a fresh connection; collect until the server closes (or `timeoutMs`). With
 * `halfClose`, our side is ended right after the write (for requests Node would keep alive).
 * With `stopAt`, resolve as soon as the received bytes contain it.
 */
export function exchange(
  port: number,
  bytes: string | Buffer,
  opts: { halfClose?: boolean; stopAt?: string | Buffer; timeoutMs?: number; after?: (s: net.Socket) => void } = {},
): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = net.connect(port, HOST);
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const raw = Buffer.concat(chunks);
      resolve({ raw, text: raw.toString('latin1'), closed });
    };
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 3000);
    socket.on('data', (c) => {
      chunks.push(c);
      if (opts.stopAt !== undefined && Buffer.concat(chunks).includes(opts.stopAt)) finish(false);
    });
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
    socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
    if (opts.halfClose) socket.end();
    opts.after?.(socket);
  });
}
