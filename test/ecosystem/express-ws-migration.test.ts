/**
 * The migration guide of docs/express.md, run (issue 18): a typical express-ws chat, and the same
 * app converted by the guide. The express-ws app opens the WebSocket before its handler can say
 * no, logs nothing for it and never saves the session; the converted one answers a real 401, logs
 * its 101s with morgan and saves the session. The two apps are written as in the guide.
 */
import * as http from 'node:http';
import express5 from 'express';
import expressWs from 'express-ws';
import session from 'express-session';
import morgan from 'morgan';
import { attachUpgrades } from '@upgradeware/express';
import { websocket } from '@upgradeware/websocket';
import { delay, request, until, wsClose, wsOpen, WsRefused, type TestServer } from '../../test-support';
import { ask, cookiePairs, lineSink } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const express4 = require('express4') as typeof express5;

interface ChatSession {
  user?: string;
  visits?: number;
}
const sess = (req: unknown): ChatSession => (req as { session: ChatSession }).session;

interface Harness {
  server: http.Server;
  store: session.MemoryStore;
  log: { lines: string[] };
  close(): Promise<void>;
}

/** BEFORE: express-ws. The handler runs after ws wrote the 101. */
function expressWsApp(): Harness {
  const log = lineSink();
  const store = new session.MemoryStore();
  const app = express5();
  const server = http.createServer(app);
  const { app: wsApp, getWss } = expressWs(app, server);

  wsApp.use(morgan(':method :url :status', { stream: log }));
  wsApp.use(session({ secret: 'migrate', store, resave: false, saveUninitialized: false }));
  wsApp.post('/login', (req, res) => {
    sess(req).user = 'alice';
    res.send('welcome');
  });
  wsApp.ws('/chat', (ws, req) => {
    const data = sess(req);
    if (!data.user) return ws.close(1008, 'log in first'); // too late for a 401
    data.visits = (data.visits ?? 0) + 1; // never saved: nobody ends the response
    ws.on('message', (m) => ws.send(`${data.user}: ${String(m)}`));
  });
  return {
    server,
    store,
    log,
    close: async () => {
      for (const c of getWss().clients) c.terminate();
    },
  };
}

/** AFTER: the same app converted by the guide. The handshake goes through Express's stack. */
function convertedApp(express: typeof express5): Harness {
  const log = lineSink();
  const store = new session.MemoryStore();
  const app = express();

  app.use(morgan(':method :url :status', { stream: log }));
  app.use(session({ secret: 'migrate', store, resave: false, saveUninitialized: false }));
  app.post('/login', (req, res) => {
    sess(req).user = 'alice';
    res.send('welcome');
  });
  const requireLogin: express5.RequestHandler = (req, res, next) => {
    if (!sess(req).user) return void res.status(401).send('log in first'); // a real 401
    sess(req).visits = (sess(req).visits ?? 0) + 1; // saved with the 101
    next();
  };
  const chat = websocket((ws, req) => {
    const data = sess(req);
    ws.on('message', (m) => ws.send(`${data.user}: ${String(m)}`));
  });
  app.get('/chat', requireLogin, chat);

  const server = http.createServer(app);
  attachUpgrades(server, app);
  return { server, store, log, close: () => chat.close() };
}

async function listen(h: Harness): Promise<TestServer> {
  const sockets = new Set<import('node:net').Socket>();
  h.server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => h.server.listen(0, '127.0.0.1', resolve));
  const { port } = h.server.address() as import('node:net').AddressInfo;
  return {
    server: h.server,
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
    close: async () => {
      await h.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => h.server.close(() => resolve()));
    },
  };
}

async function login(s: TestServer): Promise<string> {
  const r = await request(`${s.url}/login`, { method: 'POST' });
  expect(r.body).toBe('welcome');
  return cookiePairs(r.headers['set-cookie'])[0]!;
}

function visitsOf(h: Harness, cookie: string): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    h.store.all((err, all) => {
      if (err) return reject(err);
      const sessions = Object.values(all ?? {}) as ChatSession[];
      expect(sessions.length).toBe(1);
      expect(cookie).toMatch(/^connect\.sid=/);
      resolve(sessions[0]!.visits);
    });
  });
}

describe('before: the express-ws app', () => {
  let h: Harness;
  let s: TestServer;
  beforeAll(async () => {
    h = expressWsApp();
    s = await listen(h);
  });
  afterAll(() => s.close());

  test('a refused login is an opened-then-closed WebSocket, not a 401; nothing logged; the session not saved', async () => {
    const { ws, response } = await wsOpen(`${s.wsUrl}/chat`);
    expect(response.statusCode).toBe(101);
    const code = await new Promise<number>((resolve) => ws.once('close', (c) => resolve(c)));
    expect(code).toBe(1008);

    const cookie = await login(s);
    const ok = await wsOpen(`${s.wsUrl}/chat`, { headers: { Cookie: cookie } });
    expect(await ask(ok.ws, 'hi')).toBe('alice: hi');
    await wsClose(ok.ws);
    await until(() => log(h).includes('POST /login 200'));
    await delay(50);
    expect(log(h).filter((l) => l.includes('/chat'))).toEqual([]);
    expect(await visitsOf(h, cookie)).toBeUndefined();
  });
});

describe.each([
  ['Express 4', express4],
  ['Express 5', express5],
])('after: the app converted by the guide, %s', (_name, express) => {
  let h: Harness;
  let s: TestServer;
  beforeAll(async () => {
    h = convertedApp(express);
    s = await listen(h);
  });
  afterAll(() => s.close());

  test('answers 401, logs its 101s, saves the session', async () => {
    const refused = (await wsOpen(`${s.wsUrl}/chat`).catch((e: unknown) => e)) as WsRefused;
    expect(refused).toBeInstanceOf(WsRefused);
    expect([refused.status, refused.body]).toEqual([401, 'log in first']);

    const cookie = await login(s);
    for (const n of [1, 2]) {
      const { ws, response } = await wsOpen(`${s.wsUrl}/chat`, { headers: { Cookie: cookie } });
      expect(response.statusCode).toBe(101);
      expect(await ask(ws, `hi ${n}`)).toBe(`alice: hi ${n}`);
      await wsClose(ws);
      expect(await visitsOf(h, cookie)).toBe(n);
    }
    await until(() => log(h).filter((l) => l === 'GET /chat 101').length === 2);
    expect(log(h)).toEqual(['GET /chat 401', 'POST /login 200', 'GET /chat 101', 'GET /chat 101']);
  });
});

function log(h: Harness): string[] {
  return h.log.lines;
}
