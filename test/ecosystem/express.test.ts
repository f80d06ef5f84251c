/**
 * Express 5 and upgradeware in one server (issue 7):
 * - `app.attach(server)` on the server Express listens with: Express keeps its routes, upgrades
 *   go through our stack;
 * - the reverse: an Express app mounted as a layer of our dispatcher for ordinary requests;
 * - our middleware used as plain Express middleware on ordinary requests;
 * - an Express Router and an Express app marked with supportsUpgrade() serve upgrades (the app
 *   replaces the response's prototype; issue 18 made the response survive that).
 */
import * as http from 'node:http';
import express from 'express';
import { createApp } from '@upgradeware/dispatcher';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { websocket } from '@upgradeware/websocket';
import { logger } from '@upgradeware/logger';
import { basicAuth } from '@upgradeware/basic-auth';
import { responseTime } from '@upgradeware/response-time';
import { query } from '@upgradeware/query';
import { start, rawRequest, request, until, wsClose, wsHandshake, wsOpen, WsRefused, type TestServer } from '../../test-support';
import { ask, lineSink } from './helpers';

const auth = (user: string, pass: string) => 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64');

describe('upgradeApp.attach(server) on the server an Express app listens with', () => {
  let s: TestServer;
  const log = lineSink();
  const chat = websocket((ws, req) => {
    ws.on('message', (m) => ws.send(`${(req as http.IncomingMessage & { user?: string }).user}: ${String(m)}`));
  });

  beforeAll(async () => {
    const web = express();
    web.get('/', (_req, res) => {
      res.send('home');
    });
    web.get('/api/items', (req, res) => {
      res.json({ items: [1, 2], q: req.query.q });
    });
    web.get('/ws', (_req, res) => {
      res.status(426).send('use a WebSocket');
    });
    const upgrades = createApp();
    upgrades.use(logger(':method :url :status', { stream: log }));
    upgrades.use('/ws', basicAuth('alice', 'secret'));
    upgrades.use('/ws', chat);
    // http.createServer(expressApp) + upgrades.attach(server): what start() does with `setup`.
    s = await start(null, (server) => {
      server.on('request', web);
      upgrades.attach(server);
    });
  });
  afterAll(async () => {
    await chat.close();
    await s.close();
  });

  test('Express keeps serving its routes, with its own 404', async () => {
    expect((await request(`${s.url}/`)).body).toBe('home');
    const items = await request(`${s.url}/api/items?q=x`);
    expect(items.headers['content-type']).toMatch(/^application\/json/);
    expect(JSON.parse(items.body)).toEqual({ items: [1, 2], q: 'x' });
    const ws = await request(`${s.url}/ws`);
    expect([ws.status, ws.body]).toEqual([426, 'use a WebSocket']);
    const missing = await request(`${s.url}/nope`);
    expect(missing.status).toBe(404);
    expect(missing.headers['x-powered-by']).toBe('Express');
  });

  test('WebSocket upgrades go through our stack: auth, endpoint, logger', async () => {
    const refused = await wsOpen(`${s.wsUrl}/ws`).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(WsRefused);
    expect((refused as WsRefused).status).toBe(401);
    expect((refused as WsRefused).headers['www-authenticate']).toBe('Basic realm="Authorization Required"');

    const { ws, response } = await wsOpen(`${s.wsUrl}/ws`, { headers: { Authorization: auth('alice', 'secret') } });
    expect(response.statusCode).toBe(101);
    expect(await ask(ws, 'hi')).toBe('alice: hi');
    await wsClose(ws);
    await until(() => log.lines.includes('GET /ws 401') && log.lines.includes('GET /ws 101'));
    // Ordinary requests never reach our stack here: Express owns them.
    expect(log.lines.filter((l) => !l.startsWith('GET /ws '))).toEqual([]);
  });

  test('an upgrade no layer answers gets our 404, and Express still answers afterwards', async () => {
    const r = await rawRequest(s.port, wsHandshake('/elsewhere'));
    expect(r.status).toBe(404);
    expect(r.headers['connection']).toEqual(['close']);
    expect(r.closed).toBe(true);
    expect((await request(`${s.url}/`)).body).toBe('home');
  });
});

describe('an Express app mounted as a layer of our dispatcher', () => {
  let s: TestServer;
  const log = lineSink();
  const echo = websocket((ws) => {
    ws.on('message', (m) => ws.send(String(m)));
  });

  beforeAll(async () => {
    const web = express();
    web.get('/hello', (req, res) => {
      res.send(`hello from express at ${req.originalUrl} (${req.url})`);
    });
    web.post('/form', express.urlencoded({ extended: false }), (req, res) => {
      res.json(req.body);
    });
    const app = createApp();
    app.use(logger(':method :url :status', { stream: log }));
    app.use(responseTime());
    app.use('/legacy', web);
    app.use('/legacy/ws', echo);
    app.use((_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.end('ours');
    });
    s = await start(app);
  });
  afterAll(async () => {
    await echo.close();
    await s.close();
  });

  test('ordinary requests reach Express routes under the mount path', async () => {
    const r = await request(`${s.url}/legacy/hello`);
    expect(r.status).toBe(200);
    expect(r.body).toBe('hello from express at /legacy/hello (/hello)');
    expect(r.headers['x-powered-by']).toBe('Express');
    expect(r.headers['x-response-time']).toMatch(/^\d+\.\d{3}ms$/);
    const form = await request(`${s.url}/legacy/form`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'a=1&b=two',
    });
    expect(JSON.parse(form.body)).toEqual({ a: '1', b: 'two' });
  });

  test('a request Express does not route falls through to our next layer', async () => {
    const r = await request(`${s.url}/legacy/unknown`);
    expect([r.status, r.body]).toEqual([200, 'ours']);
  });

  test('upgrades pass over the Express app (not marked) to our endpoint, and are logged', async () => {
    const { ws, response } = await wsOpen(`${s.wsUrl}/legacy/ws`);
    expect(response.statusCode).toBe(101);
    expect(response.headers['x-response-time']).toMatch(/ms$/);
    expect(await ask(ws, 'ping')).toBe('ping');
    await wsClose(ws);
    await until(() => log.lines.includes('GET /legacy/ws 101'));
    expect(log.lines).toEqual(expect.arrayContaining(['GET /legacy/hello 200']));
  });
});

describe('our middleware as plain Express middleware', () => {
  let s: TestServer;
  const log = lineSink();

  beforeAll(async () => {
    const web = express();
    web.use(logger('tiny', { stream: log }));
    web.use(responseTime({ suffix: false }));
    web.use(query());
    web.use('/admin', basicAuth((user, pass) => user === 'root' && pass === 'toor', 'Admin'));
    web.get('/admin/panel', (req, res) => {
      res.send(`panel for ${(req as express.Request & { user?: string }).user}`);
    });
    web.get('/search', (req, res) => {
      res.json(req.query);
    });
    s = await start(web);
  });
  afterAll(() => s.close());

  test('basic-auth guards an Express route and sets req.user', async () => {
    const denied = await request(`${s.url}/admin/panel`);
    expect(denied.status).toBe(401);
    expect(denied.headers['www-authenticate']).toBe('Basic realm="Admin"');
    const ok = await request(`${s.url}/admin/panel`, { headers: { Authorization: auth('root', 'toor') } });
    expect([ok.status, ok.body]).toEqual([200, 'panel for root']);
  });

  test('logger logs Express responses; response-time and query work', async () => {
    const r = await request(`${s.url}/search?q=socks&n=2`);
    expect(JSON.parse(r.body)).toEqual({ q: 'socks', n: '2' });
    expect(r.headers['x-response-time']).toMatch(/^\d+\.\d{3}$/);
    await until(() => log.lines.some((l) => l.startsWith('GET /search?q=socks&n=2 200')));
    expect(log.lines.find((l) => l.startsWith('GET /search'))).toMatch(/^GET \/search\?q=socks&n=2 200 \d+ - \d+\.\d{3} ms$/);
  });
});

describe('Express routing on upgrades', () => {
  let s: TestServer;
  const endpoint = websocket((ws) => {
    ws.on('message', (m) => ws.send(`router: ${String(m)}`));
  });

  beforeAll(async () => {
    const router = express.Router();
    router.use('/ws', endpoint);
    const web = express();
    web.use('/ws', endpoint);
    const app = createApp();
    app.use('/router', supportsUpgrade(router));
    app.use('/app', supportsUpgrade(web));
    s = await start(app);
  });
  afterAll(async () => {
    await endpoint.close();
    await s.close();
  });

  test('an Express Router marked with supportsUpgrade() routes upgrades to our endpoint', async () => {
    const { ws, response } = await wsOpen(`${s.wsUrl}/router/ws`);
    expect(response.statusCode).toBe(101);
    expect(await ask(ws, 'x')).toBe('router: x');
    await wsClose(ws);
  });

  test('an Express app marked with supportsUpgrade() switches too (issue 18: the response survives its prototype swap)', async () => {
    const { ws, response } = await wsOpen(`${s.wsUrl}/app/ws`);
    expect(response.statusCode).toBe(101);
    expect(response.headers['x-powered-by']).toBe('Express');
    expect(await ask(ws, 'y')).toBe('router: y');
    await wsClose(ws);
    const r = await rawRequest(s.port, wsHandshake('/app/elsewhere'));
    expect(r.status).toBe(404);
    expect(r.headers['connection']).toEqual(['close']);
    expect(r.closed).toBe(true);
  });
});
