/**
 * Unmodified npm middleware on upgrades (issue 7): morgan, cookie-parser and express-session run
 * on WebSocket upgrades through our stack, marked with `supportsUpgrade()`, because the upgrade's
 * response is a real `http.ServerResponse`. Both ways a switch can end the response are covered:
 * `ws` writing its own 101 (`res.externalSwitch()`) and `res.switchProtocols()`.
 */
import type * as http from 'node:http';
import morgan from 'morgan';
import cookieParser from 'cookie-parser';
import expressSession from 'express-session';
import { createApp } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade } from '@upgradeware/upgrade-response';
import {
  start,
  rawConnect,
  rawRequest,
  request,
  upgradeRequest,
  until,
  wsClose,
  wsHandshake,
  wsOpen,
  parseResponse,
  type TestServer,
} from '../../test-support';
import { ask, cookiePairs, lineSink, replyEndpoint, signCookie } from './helpers';

type Next = (err?: unknown) => void;

/** A layer that switches to the made-up protocol `echo` and echoes bytes back. */
const echoSwitch = supportsUpgrade((req: http.IncomingMessage, res: http.ServerResponse, next: Next) => {
  if (!isUpgradeResponse(res)) return next();
  res.switchProtocols((socket, head) => {
    socket.write(head);
    socket.pipe(socket);
  });
});

/** Send an `echo` upgrade on a raw socket; resolves with the parsed 101 once the echo works. */
async function echoUpgrade(port: number, path: string, extra: Record<string, string> = {}) {
  const conn = await rawConnect(port);
  try {
    conn.socket.write(upgradeRequest(path, 'echo', extra) + 'ping');
    const bytes = await conn.waitFor('ping');
    const text = bytes.toString('latin1');
    return parseResponse(text.slice(0, text.indexOf('\r\n\r\n') + 4), false);
  } finally {
    conn.close();
  }
}

describe('morgan, unmodified, marked with supportsUpgrade()', () => {
  let s: TestServer;
  const sink = lineSink();
  const endpoint = replyEndpoint(() => 'hello');

  beforeAll(async () => {
    const app = createApp({ upgradeProtocols: ['websocket', 'echo'] });
    app.use(supportsUpgrade(morgan('combined', { stream: sink })));
    app.use('/ws', endpoint);
    app.use('/echo', echoSwitch);
    app.use('/private', supportsUpgrade((_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.statusCode = 401;
      res.setHeader('WWW-Authenticate', 'Basic realm="test"');
      res.end('Unauthorized');
    }));
    app.use((_req: http.IncomingMessage, res: http.ServerResponse) => res.end('plain'));
    s = await start(app);
  });
  afterAll(async () => {
    await endpoint.close();
    await s.close();
  });

  test('logs 101 for a WebSocket handshake written by ws', async () => {
    const { ws, response } = await wsOpen(`${s.wsUrl}/ws?x=1`, { headers: { 'User-Agent': 'eco-test/1' } });
    expect(response.statusCode).toBe(101);
    expect(await ask(ws)).toBe('hello');
    await wsClose(ws);
    await until(() => sink.lines.some((l) => l.includes('"GET /ws?x=1 HTTP/1.1"')));
    const line = sink.lines.find((l) => l.includes('"GET /ws?x=1 HTTP/1.1"'))!;
    // combined: :remote-addr - :remote-user [:date] ":method :url HTTP/:v" :status :res[content-length] ":referrer" ":user-agent"
    expect(line).toMatch(/^127\.0\.0\.1 - - \[[^\]]+\] "GET \/ws\?x=1 HTTP\/1\.1" 101 - "-" "eco-test\/1"$/);
  });

  test('logs 101 for res.switchProtocols()', async () => {
    const head = await echoUpgrade(s.port, '/echo');
    expect(head.status).toBe(101);
    await until(() => sink.lines.some((l) => l.includes('"GET /echo HTTP/1.1"')));
    expect(sink.lines.find((l) => l.includes('"GET /echo HTTP/1.1"'))).toMatch(/" 101 - "-" "-"$/);
  });

  test('logs the real status of a rejected upgrade, and of an ordinary request', async () => {
    const r = await rawRequest(s.port, wsHandshake('/private'));
    expect(r.status).toBe(401);
    expect(r.closed).toBe(true);
    const plain = await request(`${s.url}/page`);
    expect(plain.body).toBe('plain');
    await until(() => sink.lines.some((l) => l.includes('"GET /private HTTP/1.1"')) && sink.lines.some((l) => l.includes('"GET /page HTTP/1.1"')));
    expect(sink.lines.find((l) => l.includes('"GET /private HTTP/1.1"'))).toMatch(/" 401 - "-" "-"$/);
    expect(sink.lines.find((l) => l.includes('"GET /page HTTP/1.1"'))).toMatch(/" 200 - "-" "-"$/);
  });

  test('without supportsUpgrade() morgan is passed over on upgrades but still logs ordinary requests', async () => {
    const quiet = lineSink();
    const ep = replyEndpoint(() => 'hi');
    const app = createApp();
    app.use(morgan('tiny', { stream: quiet }));
    app.use('/ws', ep);
    app.use((_req: http.IncomingMessage, res: http.ServerResponse) => res.end('ok'));
    const t = await start(app);
    try {
      const { ws } = await wsOpen(`${t.wsUrl}/ws`);
      expect(await ask(ws)).toBe('hi');
      await wsClose(ws);
      await request(`${t.url}/after`);
      await until(() => quiet.lines.length === 1);
      expect(quiet.lines[0]).toMatch(/^GET \/after 200 - - /);
    } finally {
      await ep.close();
      await t.close();
    }
  });
});

describe('cookie-parser (stock), marked with supportsUpgrade()', () => {
  let s: TestServer;
  const endpoint = replyEndpoint((req) => {
    const r = req as http.IncomingMessage & { cookies: unknown; signedCookies: unknown };
    return JSON.stringify({ cookies: r.cookies, signed: r.signedCookies });
  });

  beforeAll(async () => {
    const app = createApp();
    app.use(supportsUpgrade(cookieParser('s3cret')));
    app.use('/ws', endpoint);
    s = await start(app);
  });
  afterAll(async () => {
    await endpoint.close();
    await s.close();
  });

  test('parses plain, JSON and signed cookies of the upgrade request', async () => {
    const signed = encodeURIComponent('s:' + signCookie('alice', 's3cret'));
    const json = encodeURIComponent('j:' + JSON.stringify({ a: 1 }));
    const { ws } = await wsOpen(`${s.wsUrl}/ws`, { headers: { Cookie: `theme=dark; prefs=${json}; user=${signed}` } });
    const got = JSON.parse(await ask(ws));
    await wsClose(ws);
    expect(got).toEqual({ cookies: { theme: 'dark', prefs: { a: 1 } }, signed: { user: 'alice' } });
  });

  test('a tampered signed cookie is false, as on an ordinary request', async () => {
    const forged = encodeURIComponent('s:' + signCookie('mallory', 'wrong'));
    const { ws } = await wsOpen(`${s.wsUrl}/ws`, { headers: { Cookie: `user=${forged}` } });
    const got = JSON.parse(await ask(ws));
    await wsClose(ws);
    expect(got).toEqual({ cookies: {}, signed: { user: false } });
  });
});

describe('express-session (stock), marked with supportsUpgrade()', () => {
  const secret = 'keyboard cat';
  let s: TestServer;
  let store: expressSession.MemoryStore;
  const sink = lineSink();
  const endpoint = replyEndpoint((req) => {
    const session = (req as http.IncomingMessage & { session: expressSession.Session & { user?: string; visits?: number } }).session;
    return JSON.stringify({ user: session.user ?? null, visits: session.visits ?? 0 });
  });

  /** Count the visits on every request that reaches it, ordinary or upgrade, then go on. */
  const countVisit = supportsUpgrade((req: http.IncomingMessage, _res: http.ServerResponse, next: Next) => {
    const session = (req as http.IncomingMessage & { session: { visits?: number } }).session;
    session.visits = (session.visits ?? 0) + 1;
    next();
  });

  beforeAll(async () => {
    store = new expressSession.MemoryStore();
    const app = createApp({ upgradeProtocols: ['websocket', 'echo'] });
    app.use(supportsUpgrade(morgan(':method :url :status', { stream: sink })));
    app.use(supportsUpgrade(expressSession({ secret, store, saveUninitialized: true, resave: false })));
    app.use('/login', (req: http.IncomingMessage, res: http.ServerResponse) => {
      (req as http.IncomingMessage & { session: { user?: string } }).session.user = 'alice';
      res.end('logged in');
    });
    app.use(countVisit);
    app.use('/ws', endpoint);
    app.use('/echo', echoSwitch);
    app.use('/visits', (req: http.IncomingMessage, res: http.ServerResponse) => {
      res.end(String((req as http.IncomingMessage & { session: { visits?: number } }).session.visits));
    });
    s = await start(app);
  });
  afterAll(async () => {
    await endpoint.close();
    await s.close();
  });

  const storeSize = () => new Promise<number>((resolve, reject) => store.length((err, n) => (err ? reject(err) : resolve(n ?? 0))));

  test('a new session cookie rides on the 101 that ws writes, and the session is saved', async () => {
    const before = await storeSize();
    const { ws, response } = await wsOpen(`${s.wsUrl}/ws`);
    const [pair] = cookiePairs(response.headers['set-cookie']);
    expect(pair).toMatch(/^connect\.sid=s%3A[\w-]+\.[\w%+/]+$/);
    expect(String(response.headers['set-cookie'])).toMatch(/; Path=\/; HttpOnly/);
    expect(JSON.parse(await ask(ws))).toEqual({ user: null, visits: 1 });
    await wsClose(ws);
    await until(() => sink.lines.includes('GET /ws 101'));
    expect(await storeSize()).toBe(before + 1);
    // The cookie names the saved session: an ordinary request with it sees the visit.
    const visits = await request(`${s.url}/visits`, { headers: { Cookie: pair! } });
    expect(visits.body).toBe('2');
  });

  test('a new session cookie rides on the 101 of res.switchProtocols(), written after the save', async () => {
    const before = await storeSize();
    const head = await echoUpgrade(s.port, '/echo');
    expect(head.status).toBe(101);
    expect(head.headers['upgrade']).toEqual(['echo']);
    const [pair] = cookiePairs(head.headers['set-cookie']);
    expect(pair).toMatch(/^connect\.sid=s%3A/);
    // express-session wraps res.end: the 101 is written once the store has the session.
    expect(await storeSize()).toBe(before + 1);
    await until(() => sink.lines.includes('GET /echo 101'));
    const visits = await request(`${s.url}/visits`, { headers: { Cookie: pair! } });
    expect(visits.body).toBe('2');
  });

  test('a session from an ordinary login is loaded on the upgrade, and changes made there are saved', async () => {
    const login = await request(`${s.url}/login`);
    const [pair] = cookiePairs(login.headers['set-cookie']);
    expect(pair).toMatch(/^connect\.sid=/);
    const { ws, response } = await wsOpen(`${s.wsUrl}/ws`, { headers: { Cookie: pair! } });
    // An existing session: no new cookie on the 101.
    expect(response.headers['set-cookie']).toBeUndefined();
    expect(JSON.parse(await ask(ws))).toEqual({ user: 'alice', visits: 1 });
    await wsClose(ws);
    await until(() => sink.lines.filter((l) => l === 'GET /ws 101').length >= 2);
    const head = await echoUpgrade(s.port, '/echo', { Cookie: pair! });
    expect(head.status).toBe(101);
    expect(head.headers['set-cookie']).toBeUndefined();
    const visits = await request(`${s.url}/visits`, { headers: { Cookie: pair! } });
    expect(visits.body).toBe('3');
  });
});
