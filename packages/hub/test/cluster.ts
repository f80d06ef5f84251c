/**
 * An app instance as the README describes one: sessions in a shared store, a hub, a chat endpoint
 * whose sockets join `session:<id>` and `chat`. Several instances on port 0 make a cluster.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import WebSocket, { WebSocketServer } from 'ws';
import { createApp } from '@upgradeware/dispatcher';
import type { NextFunction } from '@upgradeware/upgrade-response';
import { session, type SessionStoreLike } from '@upgradeware/session';
import { websocket } from '@upgradeware/websocket';
import { trustProxy, type TrustValue } from '@upgradeware/trust-proxy';
import { createHub, type Hub, type HubTransport, type WatchSessionsOptions } from '@upgradeware/hub';
import { nextMessage, request, start, wsOpen, type TestServer } from '../../../test-support';
import { loginRequired } from '../../../test-support/endpoints';

declare module '@upgradeware/session' {
  interface SessionData {
    user: string;
  }
}

export interface Instance {
  name: string;
  hub: Hub;
  server: TestServer;
  /** Stop serving: the endpoint, the server and the hub. */
  close(): Promise<void>;
  /** Like a crash as clients see it: every socket reset, nothing said. */
  kill(): Promise<void>;
}

export async function instance(
  name: string,
  store: SessionStoreLike,
  transport: HubTransport,
  watch: WatchSessionsOptions | false = {},
  trust: TrustValue = false,
  keepOnRegenerate = false,
): Promise<Instance> {
  const hub = createHub({ transport });
  const unwatch = watch === false ? () => undefined : hub.watchSessions(store, watch);
  const app = createApp();
  app.use(trustProxy(trust));
  app.use('/whoami', (req: IncomingMessage, res: ServerResponse) => res.end(`${name} ${req.ip}`));
  app.use(session({ secret: 'cluster secret', resave: false, saveUninitialized: false, store, cookie: { maxAge: 60_000 } }));
  if (keepOnRegenerate) app.use(hub.keepOnRegenerate());
  app.use('/login', (req: IncomingMessage, res: ServerResponse, next: NextFunction) => {
    req.session!.regenerate((err) => {
      if (err) return next(err);
      req.session!.user = new URL(req.url ?? '/', 'http://x').searchParams.get('user') ?? 'alice';
      res.end(name);
    });
  });
  app.use('/logout', (req: IncomingMessage, res: ServerResponse, next: NextFunction) => {
    if (!req.session) return res.end(name);
    req.session.destroy((err) => (err ? next(err) : res.end(name)));
  });
  app.use('/say', (req: IncomingMessage, res: ServerResponse) => {
    const text = new URL(req.url ?? '/', 'http://x').searchParams.get('text') ?? '';
    const n = hub.broadcast(`${name}: ${text}`, { room: 'chat' });
    res.end(String(n));
  });
  app.use('/chat', loginRequired);
  const endpoint = websocket(
    (ws, req) => {
      ws.send(`hello ${req.session?.user ?? ''} from ${name}`);
      ws.on('message', (data) => hub.broadcast(`${req.session?.user}: ${String(data)}`, { room: 'chat' }));
    },
    { hub, rooms: () => 'chat' },
  );
  app.use('/chat', endpoint);
  const server = await start(app);
  let done = false;
  return {
    name,
    hub,
    server,
    close: async () => {
      if (done) return;
      done = true;
      unwatch();
      await endpoint.close();
      await server.close();
      await hub.close();
    },
    kill: async () => {
      if (done) return;
      done = true;
      unwatch();
      for (const ws of endpoint.clients) ws.terminate();
      await server.close();
      await hub.close();
    },
  };
}

/** Log in on `inst`; resolves with the cookie to send back. */
export async function login(inst: Instance, user = 'alice'): Promise<string> {
  const res = await request(`${inst.server.url}/login?user=${user}`);
  if (res.status !== 200) throw new Error(`login failed: ${res.status}`);
  const set = res.headers['set-cookie'];
  const line = Array.isArray(set) ? set[0] : set;
  if (!line) throw new Error('no cookie');
  return line.split(';')[0]!;
}

/** Open the chat socket on `inst` with `cookie`; resolves once the greeting arrived. */
export async function chat(inst: Instance, cookie: string): Promise<{ ws: WebSocket; greeting: string; closed: Promise<{ code: number; reason: string }> }> {
  const { ws } = await wsOpen(`${inst.server.wsUrl}/chat`, { headers: { cookie } });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
  const greeting = await nextMessage(ws);
  return { ws, greeting, closed };
}

/** Collect the messages of a client. */
export function collect(ws: WebSocket): string[] {
  const out: string[] = [];
  ws.on('message', (data) => out.push(String(data)));
  return out;
}

/** Resolve with the close of `closed`, or reject after `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** The session id inside a signed `connect.sid=s:<id>.<signature>` cookie. */
export function sidOf(cookie: string): string {
  const value = decodeURIComponent(cookie.slice(cookie.indexOf('=') + 1));
  return value.slice(2, value.lastIndexOf('.'));
}

/** A pair of connected sockets: `server` is the hub member, `client` sees what it gets. */
export async function wsPair(): Promise<{ server: WebSocket; client: WebSocket; close(): Promise<void> }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  const port = (wss.address() as { port: number }).port;
  const serverSide = new Promise<WebSocket>((resolve) => wss.once('connection', resolve));
  const { ws: client } = await wsOpen(`ws://127.0.0.1:${port}`);
  const server = await serverSide;
  return {
    server,
    client,
    close: async () => {
      client.terminate();
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}
