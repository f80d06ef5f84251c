/**
 * Express apps route their own upgrades (issue 18), with Express 4 and Express 5:
 * - the response survives Express's prototype swap: isUpgradeResponse(), switchProtocols(),
 *   externalSwitch() (through @upgradeware/websocket) and Express's own res.status()/send();
 * - `attachUpgrades(server, app)`: `app.get('/chat', requireLogin, websocket(…))` answers a real
 *   401, logs a 101 through morgan, rides express-session's cookie and saves the session; helmet,
 *   cors and express-rate-limit run before the handshake;
 * - `createApp().use(upgradable(app))`: layers after the Express app see the request as it came.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import express5 from 'express';
import expressSession from 'express-session';
import cookieParser from 'cookie-parser';
import morgan from 'morgan';
import helmet from 'helmet';
import cors from 'cors';
import { rateLimit } from 'express-rate-limit';
import { WebSocketServer } from 'ws';
import { attachUpgrades, upgradable } from '@upgradeware/express';
import { createApp } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade, UpgradeResponse } from '@upgradeware/upgrade-response';
import { websocket } from '@upgradeware/websocket';
import { session as ourSession } from '@upgradeware/session';
import {
  start,
  rawConnect,
  nextMessage,
  rawRequest,
  request,
  until,
  upgradeRequest,
  wsClose,
  wsHandshake,
  wsOpen,
  WsRefused,
  type TestServer,
} from '../../test-support';
import { ask, cookiePairs, lineSink } from './helpers';

/** The session data of these apps (express-session's `req.session`, typed for the test). */
interface ChatSession {
  user?: string;
  chats?: number;
}
const sess = (req: unknown): ChatSession => (req as { session: ChatSession }).session;

// eslint-disable-next-line @typescript-eslint/no-require-imports
const express4 = require('express4') as typeof express5;
const versions: Array<[string, typeof express5]> = [
  ['Express 4', express4],
  ['Express 5', express5],
];

type Req = express5.Request;

test('the two suites really run two Express majors', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  expect([require('express4/package.json').version, require('express/package.json').version].map((v: string) => v[0])).toEqual(['4', '5']);
});

describe.each(versions)('%s: the upgrade response survives the prototype swap', (_name, express) => {
  let s: TestServer;
  const seen: Array<Record<string, unknown>> = [];
  const protos: object[] = [];
  const old = new WebSocketServer({ noServer: true });
  let held: (http.IncomingMessage & { res?: unknown; next?: unknown }) | null = null;
  const echo = websocket((ws, req) => {
    held = req;
    ws.on('message', (m) => ws.send(`echo ${String(m)}`));
  });

  beforeAll(async () => {
    const web = express();
    web.use((req, res, next) => {
      seen.push({
        url: req.url,
        swapped: !(res instanceof UpgradeResponse),
        upgrade: isUpgradeResponse(res),
        status: typeof res.status,
        switchProtocols: typeof (res as unknown as UpgradeResponse).switchProtocols,
        isConnect: (res as unknown as UpgradeResponse).isConnect,
      });
      protos.push(Object.getPrototypeOf(res) as object);
      next();
    });
    // A protocol of our own, switched by hand inside an Express route.
    web.get('/raw', (req, res, next) => {
      if (!isUpgradeResponse(res)) return next();
      res.setHeader('X-Route', 'raw');
      res.switchProtocols((socket: Duplex, head: Buffer) => {
        socket.write(`hello ${head.toString()}|`);
        socket.on('data', (d: Buffer) => socket.end(`bye ${d.toString()}`));
      });
    });
    web.get('/refuse', (_req, res) => {
      res.status(403).set('X-Why', 'because').send('no');
    });
    web.use('/echo', echo);
    web.get('/', (_req, res) => {
      res.send('home');
    });
    s = await start(null, (server) => {
      server.on('request', web);
      // An 'upgrade' listener the server had before: it gets the upgrades Express did not answer.
      server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
        old.handleUpgrade(req, socket, head, (ws) => ws.send('the old listener'));
      });
      attachUpgrades(server, web, { upgradeProtocols: ['websocket', 'raw'] });
    });
  });
  afterAll(async () => {
    await echo.close();
    for (const c of old.clients) c.terminate();
    old.close();
    await s.close();
  });

  test('the prototype that carries the switch methods is made once per Express app and reused', async () => {
    protos.length = 0;
    await rawRequest(s.port, wsHandshake('/refuse'));
    await rawRequest(s.port, wsHandshake('/refuse'));
    expect(protos).toHaveLength(2);
    expect(protos[0]).toBe(protos[1]);
  });

  test('an upgrade no route of the Express app answers goes to the listener the server already had', async () => {
    const { ws } = await wsOpen(`${s.wsUrl}/not-routed`);
    expect(await nextMessage(ws)).toBe('the old listener');
    await wsClose(ws);
  });

  test('inside Express, isUpgradeResponse() is true and puts the switch methods back next to Express’s', async () => {
    seen.length = 0;
    const r = await rawRequest(s.port, wsHandshake('/refuse'));
    expect(r.status).toBe(403);
    expect(seen).toEqual([{ url: '/refuse', swapped: true, upgrade: true, status: 'function', switchProtocols: 'function', isConnect: false }]);
    // Express's res.status().set().send() answered the upgrade, as an ordinary closing response.
    expect(r.headers['x-why']).toEqual(['because']);
    expect(r.headers['x-powered-by']).toEqual(['Express']);
    expect(r.headers['connection']).toEqual(['close']);
    expect(r.body).toBe('no');
    expect(r.closed).toBe(true);
  });

  test('res.switchProtocols() in an Express route: 101 with the route’s headers, head bytes handed over', async () => {
    const c = await rawConnect(s.port);
    try {
      c.socket.write(upgradeRequest('/raw', 'raw') + 'early');
      const got = (await c.waitFor('hello early|')).toString('latin1');
      expect(got).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
      expect(got).toMatch(/\r\nX-Route: raw\r\n/);
      expect(got).toMatch(/\r\nUpgrade: raw\r\n/);
      c.socket.write('now');
      await c.waitFor('bye now');
      expect(await c.waitClose()).toBe(true);
    } finally {
      c.socket.destroy();
    }
  });

  test('@upgradeware/websocket mounted with app.use() in Express: a 101 and an echo', async () => {
    const { ws, response } = await wsOpen(`${s.wsUrl}/echo`);
    expect(response.statusCode).toBe(101);
    expect(response.headers['x-powered-by']).toBe('Express');
    expect(await ask(ws, 'x')).toBe('echo x');
    await wsClose(ws);
  });

  test('an open WebSocket’s req no longer links to the finished response or the router (req.res, req.next)', async () => {
    held = null;
    const { ws } = await wsOpen(`${s.wsUrl}/echo`);
    expect(await ask(ws, 'h')).toBe('echo h');
    expect(held).not.toBeNull();
    expect([held!.res, held!.next]).toEqual([undefined, undefined]);
    expect(held!.originalUrl).toBe('/echo');
    await wsClose(ws);
  });

  test('ordinary requests are untouched: Express’s own response, no upgrade methods', async () => {
    seen.length = 0;
    const r = await request(`${s.url}/`);
    expect([r.status, r.body]).toEqual([200, 'home']);
    expect(seen).toEqual([{ url: '/', swapped: true, upgrade: false, status: 'function', switchProtocols: 'undefined', isConnect: undefined }]);
  });
});

describe.each(versions)('%s: attachUpgrades(server, app) — a login-protected chat routed by Express', (_name, express) => {
  let s: TestServer;
  const log = lineSink();
  const store = new expressSession.MemoryStore();
  const secret = 'keyboard cat';
  const chat = websocket<Req>((ws, req) => {
    ws.on('message', (m) => ws.send(`${sess(req).user}: ${String(m)}`));
  });

  beforeAll(async () => {
    const app = express();
    app.use(morgan(':method :url :status', { stream: log }));
    app.use(helmet());
    app.use(cors({ origin: 'https://chat.example' }));
    app.use(rateLimit({ windowMs: 60_000, limit: 1000, standardHeaders: 'draft-7', legacyHeaders: false }));
    app.use(cookieParser(secret));
    app.use(expressSession({ secret, store, resave: false, saveUninitialized: false }));
    app.post('/login', express.urlencoded({ extended: false }), (req, res) => {
      sess(req).user = String(req.body.name);
      res.send('welcome');
    });
    const requireLogin: express5.RequestHandler = (req, res, next) => {
      if (sess(req).user) return next();
      res.status(401).send('log in first');
    };
    const countChats: express5.RequestHandler = (req, _res, next) => {
      const data = sess(req);
      data.chats = (data.chats ?? 0) + 1;
      next();
    };
    app.get('/chat', requireLogin, countChats, chat);
    app.get('/', (_req, res) => {
      res.send('home');
    });
    app.get('/boom', () => {
      throw Object.assign(new Error('route failed'), { status: 503 });
    });
    s = await start(null, (server) => {
      server.on('request', app);
      expect(attachUpgrades(server, app)).toBe(server);
    });
  });
  afterAll(async () => {
    await chat.close();
    await s.close();
  });

  async function login(name: string): Promise<string> {
    const r = await request(`${s.url}/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: `name=${name}`,
    });
    expect([r.status, r.body]).toEqual([200, 'welcome']);
    const [cookie] = cookiePairs(r.headers['set-cookie']);
    expect(cookie).toMatch(/^connect\.sid=/);
    return cookie!;
  }

  function sessionOf(cookie: string): Promise<ChatSession | null | undefined> {
    const sid = cookieParser.signedCookie(decodeURIComponent(cookie.slice('connect.sid='.length)), secret);
    expect(typeof sid).toBe('string');
    return new Promise((resolve, reject) => store.get(sid as string, (err, data) => (err ? reject(err) : resolve(data as ChatSession | null | undefined))));
  }

  test('no login: a real 401 from the route, with helmet’s and cors’s headers, logged by morgan', async () => {
    const refused = await wsOpen(`${s.wsUrl}/chat`, { headers: { Origin: 'https://chat.example' } }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(WsRefused);
    const r = refused as WsRefused;
    expect([r.status, r.body]).toEqual([401, 'log in first']);
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.headers['access-control-allow-origin']).toBe('https://chat.example');
    expect(r.headers['connection']).toBe('close');
    await until(() => log.lines.includes('GET /chat 401'));
  });

  test('logged in: 101 with the middleware’s headers, the chat knows the user, the session is saved', async () => {
    const cookie = await login('alice');
    expect((await sessionOf(cookie))?.chats).toBeUndefined();
    const { ws, response } = await wsOpen(`${s.wsUrl}/chat`, { headers: { Cookie: cookie, Origin: 'https://chat.example' } });
    expect(response.statusCode).toBe(101);
    expect(response.headers['x-content-type-options']).toBe('nosniff'); // helmet
    expect(response.headers['access-control-allow-origin']).toBe('https://chat.example'); // cors
    expect(response.headers['ratelimit-policy']).toBe('1000;w=60'); // express-rate-limit
    expect(await ask(ws, 'hi')).toBe('alice: hi');
    // The response ended with 'finish' at the switch (not when the connection closes), although
    // express-session wrapped res.end after Express had swapped the prototype.
    await until(() => log.lines.includes('GET /chat 101'));
    await wsClose(ws);
    // countChats changed the session before the handshake: express-session saved it with the 101.
    expect((await sessionOf(cookie))?.chats).toBe(1);
    const again = await wsOpen(`${s.wsUrl}/chat?room=lobby`, { headers: { Cookie: cookie } });
    await wsClose(again.ws);
    await until(() => log.lines.includes('GET /chat?room=lobby 101'));
    expect((await sessionOf(cookie))?.chats).toBe(2);
  });

  test('a handshake and a first frame in one packet: the frame waits through session loading and reaches the chat', async () => {
    const cookie = await login('dora');
    const mask = Buffer.from([1, 2, 3, 4]);
    const payload = Buffer.from('early');
    const frame = Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ mask[i % 4]!)]);
    const c = await rawConnect(s.port);
    try {
      c.socket.write(Buffer.concat([Buffer.from(wsHandshake('/chat', { Cookie: cookie }), 'latin1'), frame]));
      const got = (await c.waitFor('dora: early')).toString('latin1');
      expect(got).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
    } finally {
      c.socket.destroy();
    }
  });

  test('app.get() does not match other paths or methods: 404 for /chat/x, 405 for a HEAD handshake', async () => {
    const cookie = await login('bob');
    const other = await rawRequest(s.port, wsHandshake('/chat/x', { Cookie: cookie }));
    expect(other.status).toBe(404);
    expect(other.closed).toBe(true);
    // Express routes HEAD to GET handlers; a WebSocket handshake must be a GET.
    const head = await rawRequest(s.port, wsHandshake('/chat', { Cookie: cookie }).replace(/^GET/, 'HEAD'));
    expect(head.status).toBe(405);
    expect(head.headers['allow']).toEqual(['GET']);
    expect(head.closed).toBe(true);
  });

  test('a route that throws on an upgrade: the error’s status, and Express keeps serving', async () => {
    const r = await rawRequest(s.port, wsHandshake('/boom'));
    expect(r.status).toBe(503);
    expect(r.headers['connection']).toEqual(['close']);
    expect(r.closed).toBe(true);
    expect((await request(`${s.url}/`)).body).toBe('home');
  });

  test('a CONNECT request: Express’s router needs a path and runs nothing for it, so it gets our 404 and is closed', async () => {
    const r = await rawRequest(s.port, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    expect(r.status).toBe(404);
    expect(r.closed).toBe(true);
    expect((await request(`${s.url}/?after-connect`)).body).toBe('home');
    await until(() => log.lines.includes('GET /?after-connect 200'));
    expect(log.lines.filter((l) => l.startsWith('CONNECT'))).toEqual([]);
  });

  test('ordinary requests are Express’s as before (helmet, cors, its 404)', async () => {
    const home = await request(`${s.url}/`, { headers: { Origin: 'https://chat.example' } });
    expect([home.status, home.body]).toEqual([200, 'home']);
    expect(home.headers['x-content-type-options']).toBe('nosniff');
    expect(home.headers['access-control-allow-origin']).toBe('https://chat.example');
    const missing = await request(`${s.url}/nope`);
    expect(missing.status).toBe(404);
    expect(missing.body).toMatch(/Cannot GET \/nope/);
    await until(() => log.lines.includes('GET /nope 404'));
  });
});

describe.each(versions)('%s: refusals before the handshake are real statuses', (_name, express) => {
  let s: TestServer;
  const log = lineSink();
  const endpoint = websocket((ws) => ws.send('in'));

  beforeAll(async () => {
    const app = express();
    app.use(morgan(':method :url :status', { stream: log }));
    app.use('/limited', rateLimit({ windowMs: 60_000, limit: 1, message: 'slow down' }));
    app.get('/limited', endpoint);
    // Our session inside Express works the same on upgrades.
    app.use(ourSession({ secret: 's3', resave: false, saveUninitialized: true }));
    app.get('/ours', endpoint);
    s = await start(null, (server) => {
      server.on('request', app);
      attachUpgrades(server, app);
    });
  });
  afterAll(async () => {
    await endpoint.close();
    await s.close();
  });

  test('express-rate-limit: the second handshake gets 429 and is logged', async () => {
    const first = await wsOpen(`${s.wsUrl}/limited`);
    await wsClose(first.ws);
    const second = (await wsOpen(`${s.wsUrl}/limited`).catch((e: unknown) => e)) as WsRefused;
    expect(second).toBeInstanceOf(WsRefused);
    expect([second.status, second.body]).toEqual([429, 'slow down']);
    await until(() => log.lines.includes('GET /limited 101') && log.lines.includes('GET /limited 429'));
  });

  test('@upgradeware/session used inside Express: its cookie rides on the 101', async () => {
    const { ws, response } = await wsOpen(`${s.wsUrl}/ours`);
    expect(response.statusCode).toBe(101);
    expect(cookiePairs(response.headers['set-cookie'])[0]).toMatch(/^connect\.sid=s%3A/);
    await wsClose(ws);
  });
});

describe.each(versions)('%s: createApp().use(upgradable(app)) and supportsUpgrade(app)', (_name, express) => {
  let s: TestServer;
  const after = websocket((ws) => ws.send('after express'));
  const inside = websocket((ws) => ws.send('inside express'));
  const other = new WebSocketServer({ noServer: true });
  const seenAfter: boolean[] = [];

  beforeAll(async () => {
    const web = express();
    web.get('/inside', inside);
    const marked = express();
    marked.get('/inside', inside);
    const app = createApp();
    app.use('/wrapped', upgradable(web));
    app.use('/marked', supportsUpgrade(marked));
    app.use(
      supportsUpgrade((_req: http.IncomingMessage, res: http.ServerResponse, next: (err?: unknown) => void) => {
        seenAfter.push(res instanceof UpgradeResponse);
        next();
      }),
    );
    app.use('/wrapped/after', after);
    s = await start(null, (server) => {
      // An 'upgrade' listener the server already had: gets what no layer answered (rule 6).
      server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
        other.handleUpgrade(req, socket, head, (ws) => ws.send('the old listener'));
      });
      app.attach(server);
    });
  });
  afterAll(async () => {
    await after.close();
    await inside.close();
    other.close();
    for (const c of other.clients) c.terminate();
    await s.close();
  });

  async function firstMessage(path: string): Promise<string> {
    const { ws } = await wsOpen(`${s.wsUrl}${path}`);
    const message = await nextMessage(ws);
    await wsClose(ws);
    return message;
  }

  test('routes inside the Express app serve upgrades, both ways of mounting it', async () => {
    expect(await firstMessage('/wrapped/inside')).toBe('inside express');
    expect(await firstMessage('/marked/inside')).toBe('inside express');
  });

  test('upgradable(): past the Express app, the response is our own again; the old listener still gets the rest', async () => {
    seenAfter.length = 0;
    expect(await firstMessage('/wrapped/after')).toBe('after express');
    expect(seenAfter).toEqual([true]);
    expect(await firstMessage('/wrapped/nobody')).toBe('the old listener');
  });

  test('attachUpgrades() on an https server: wss handshakes routed by Express', async () => {
    const fixtures = join(__dirname, '../../test-support/fixtures');
    const web = express();
    web.get('/secure', inside);
    const server = https.createServer({ key: readFileSync(join(fixtures, 'localhost-key.pem')), cert: readFileSync(join(fixtures, 'localhost-cert.pem')) }, web);
    expect(attachUpgrades(server, web)).toBe(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const { ws, response } = await wsOpen(`wss://127.0.0.1:${port}/secure`, { rejectUnauthorized: false });
      expect(response.statusCode).toBe(101);
      expect(await nextMessage(ws)).toBe('inside express');
      await wsClose(ws);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  test('options are checked when the factory is called', () => {
    expect(() => upgradable(undefined as unknown as express5.Express)).toThrow(
      new TypeError('@upgradeware/express: app must be an Express application or router (a function)'),
    );
    expect(() => attachUpgrades({} as http.Server, express())).toThrow(/@upgradeware\/express: server must be/);
  });
});

describe.each(versions)('%s: failures and nesting inside the Express app', (_name, express) => {
  let s: TestServer;
  const endpoint = websocket((ws) => ws.send('sub'));
  let release: (() => void) | null = null;

  beforeAll(async () => {
    const sub = express();
    sub.get('/ws', endpoint);
    const app = express();
    // A dependency that never answers (a session store, an auth service …).
    app.get('/hang', (_req, _res, next) => {
      release = () => next();
    });
    app.get('/fail', (_req, _res, next) => next(Object.assign(new Error('nope'), { code: 'E_NOPE' })));
    app.use('/sub', sub);
    app.get('/sub/late', endpoint);
    app.get('/after-sub', endpoint);
    // Express's own error handler answers upgrade errors the Express way.
    app.use((err: { code?: string }, _req: express5.Request, res: express5.Response, next: express5.NextFunction) => {
      if (err.code !== 'E_NOPE') return next(err);
      res.status(418).json({ error: err.code });
    });
    s = await start(null, (server) => {
      server.on('request', app);
      attachUpgrades(server, app, { upgradeTimeout: 200 });
    });
  });
  afterAll(async () => {
    release?.();
    await endpoint.close();
    await s.close();
  });

  test('a middleware that hangs: the dispatcher’s upgradeTimeout answers 503 and closes; a late next() is harmless', async () => {
    const r = await rawRequest(s.port, wsHandshake('/hang'));
    expect(r.status).toBe(503);
    expect(r.closed).toBe(true);
    release?.();
    release = null;
    const { ws } = await wsOpen(`${s.wsUrl}/after-sub`);
    expect(await nextMessage(ws)).toBe('sub');
    await wsClose(ws);
  });

  test('an error handled by Express’s own error middleware: its status and JSON body, connection closed', async () => {
    const r = await rawRequest(s.port, wsHandshake('/fail'));
    expect(r.status).toBe(418);
    expect(JSON.parse(r.body)).toEqual({ error: 'E_NOPE' });
    expect(r.headers['connection']).toEqual(['close']);
    expect(r.closed).toBe(true);
  });

  test('a mounted sub-app routes its upgrades; after leaving it the parent app’s routes still switch', async () => {
    const inner = await wsOpen(`${s.wsUrl}/sub/ws`);
    expect(await nextMessage(inner.ws)).toBe('sub');
    await wsClose(inner.ws);
    const missed = await rawRequest(s.port, wsHandshake('/sub/nothing'));
    expect(missed.status).toBe(404);
    // Through the sub-app (no route there: Express puts the parent's prototype back) to the parent.
    const outer = await wsOpen(`${s.wsUrl}/sub/late`);
    expect(await nextMessage(outer.ws)).toBe('sub');
    await wsClose(outer.ws);
  });

  test('a client that resets while Express waits: nothing crashes, the next handshake is served', async () => {
    const c = await rawConnect(s.port);
    c.socket.write(wsHandshake('/hang'));
    await until(() => release !== null);
    c.socket.resetAndDestroy();
    await new Promise((resolve) => setTimeout(resolve, 20));
    release?.();
    release = null;
    const { ws } = await wsOpen(`${s.wsUrl}/sub/ws`);
    expect(await nextMessage(ws)).toBe('sub');
    await wsClose(ws);
  });
});

describe.each(versions)('%s: a use()-mounted endpoint after a route that passed the request on', (_name, express) => {
  let s: TestServer;
  beforeAll(async () => {
    const app = express();
    // A route that matches every path and passes on: Express leaves req.route set to it.
    app.get(/.*/, (_req, _res, next) => next());
    app.use('/chat', websocket((ws) => ws.send('chat')));
    s = await start(null, (server) => {
      attachUpgrades(server, app);
      server.on('request', app);
    });
  });
  afterAll(async () => {
    await s.close();
  });

  test('serves its own mount path, and not a path below it (req.route is the earlier route, not its own)', async () => {
    const { ws } = await wsOpen(`${s.wsUrl}/chat`);
    expect(await nextMessage(ws)).toBe('chat');
    await wsClose(ws);
    const below = await rawRequest(s.port, wsHandshake('/chat/x'));
    expect(below.status).toBe(404);
  });
});
