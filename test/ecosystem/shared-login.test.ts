/**
 * One login for Express routes, our stack and socket.io (issue 7): @upgradeware/session and
 * @upgradeware/cookie-parser as plain Express middleware on ordinary requests, and inside
 * socket.io's own hook `io.engine.use(...)` for both transports, sharing one session store.
 */
import type * as http from 'node:http';
import express from 'express';
import { Server as IoServer, type Socket as IoServerSocket } from 'socket.io';
import { io as ioClient, type Socket as IoClientSocket } from 'socket.io-client';
import { createApp } from '@upgradeware/dispatcher';
import { session, MemoryStore } from '@upgradeware/session';
import { cookieParser } from '@upgradeware/cookie-parser';
import { websocket } from '@upgradeware/websocket';
import { request, start, until, wsClose, wsOpen, type TestServer } from '../../test-support';
import { ask, cookiePairs, signCookie } from './helpers';

const SECRET = 'shared secret';
type WithSession = http.IncomingMessage & { session?: { user?: string; views?: number } };

describe('@upgradeware/session and cookie-parser as plain Express middleware', () => {
  let s: TestServer;

  beforeAll(async () => {
    const web = express();
    web.use(cookieParser(SECRET));
    web.use(session({ secret: SECRET, resave: false, saveUninitialized: false }));
    web.post('/login', (req, res) => {
      (req as WithSession).session!.user = 'alice';
      res.send('ok');
    });
    web.get('/me', (req, res) => {
      const sess = (req as WithSession).session!;
      if (sess.user) sess.views = (sess.views ?? 0) + 1;
      res.json({ user: sess.user ?? null, views: sess.views, signed: req.signedCookies, plain: req.cookies });
    });
    s = await start(web);
  });
  afterAll(() => s.close());

  test('login sets a session cookie that later Express requests load', async () => {
    const anon = await request(`${s.url}/me`);
    expect(JSON.parse(anon.body)).toMatchObject({ user: null });
    expect(anon.headers['set-cookie']).toBeUndefined(); // saveUninitialized: false, nothing modified
    const login = await request(`${s.url}/login`, { method: 'POST' });
    const [pair] = cookiePairs(login.headers['set-cookie']);
    expect(pair).toMatch(/^connect\.sid=s%3A/);
    const flag = encodeURIComponent('s:' + signCookie('on', SECRET));
    const me = await request(`${s.url}/me`, { headers: { Cookie: `${pair}; flag=${flag}; theme=dark` } });
    expect(JSON.parse(me.body)).toMatchObject({ user: 'alice', views: 1, signed: { flag: 'on' }, plain: { theme: 'dark' } });
    const again = await request(`${s.url}/me`, { headers: { Cookie: pair! } });
    expect(JSON.parse(again.body)).toMatchObject({ user: 'alice', views: 2 });
  });
});

describe('one login for our stack, our WebSocket endpoint and socket.io', () => {
  let s: TestServer;
  let io: IoServer;
  const store = new MemoryStore();
  const sessions = session({ secret: SECRET, store, resave: false, saveUninitialized: false });
  const chat = websocket((ws, req) => {
    ws.on('message', () => ws.send(`ws user: ${(req as WithSession).session?.user ?? 'nobody'}`));
  });

  beforeAll(async () => {
    const app = createApp();
    app.use(cookieParser(SECRET));
    app.use(sessions);
    app.use('/login', (req: http.IncomingMessage, res: http.ServerResponse) => {
      (req as WithSession).session!.user = 'alice';
      res.end('ok');
    });
    app.use('/chat', chat);
    s = await start(app, (server) => {
      io = new IoServer(server);
      io.engine.use(cookieParser(SECRET));
      io.engine.use(sessions);
      io.on('connection', (socket: IoServerSocket) => {
        socket.on('whoami', (ack: (v: unknown) => void) => {
          const req = socket.request as WithSession & { signedCookies?: Record<string, unknown> };
          ack({ user: req.session?.user ?? null, signed: req.signedCookies ?? null });
        });
      });
    });
  });
  afterAll(async () => {
    await chat.close();
    await s.close();
    await new Promise<void>((resolve) => io.close(() => resolve()));
  });

  function connect(opts: Parameters<typeof ioClient>[1]): Promise<IoClientSocket> {
    return new Promise((resolve, reject) => {
      const client = ioClient(s.url, { forceNew: true, reconnection: false, timeout: 4000, ...opts });
      const timer = setTimeout(() => {
        client.close();
        reject(new Error('no connect in time'));
      }, 5000);
      client.once('connect', () => {
        clearTimeout(timer);
        resolve(client);
      });
      client.once('connect_error', (err) => {
        clearTimeout(timer);
        client.close();
        reject(err);
      });
    });
  }

  test('a session made by an ordinary request is loaded on our upgrade and in socket.io (both transports)', async () => {
    const login = await request(`${s.url}/login`);
    const [pair] = cookiePairs(login.headers['set-cookie']);
    expect(pair).toMatch(/^connect\.sid=s%3A/);
    const flag = encodeURIComponent('s:' + signCookie('on', SECRET));
    const cookie = `${pair}; flag=${flag}`;

    const { ws } = await wsOpen(`${s.wsUrl}/chat`, { headers: { Cookie: cookie } });
    expect(await ask(ws)).toBe('ws user: alice');
    await wsClose(ws);

    for (const transports of [['websocket'], ['polling', 'websocket']]) {
      const client = await connect({ transports, extraHeaders: { Cookie: cookie } });
      try {
        expect(await client.timeout(3000).emitWithAck('whoami')).toMatchObject({ user: 'alice', signed: { flag: 'on' } });
      } finally {
        client.close();
        await until(() => io.engine.clientsCount === 0, 3000);
      }
    }
  });

  test('without the cookie socket.io sees no user', async () => {
    const client = await connect({ transports: ['websocket'] });
    try {
      expect(await client.timeout(3000).emitWithAck('whoami')).toEqual({ user: null, signed: {} });
    } finally {
      client.close();
      await until(() => io.engine.clientsCount === 0, 3000);
    }
  });
});
