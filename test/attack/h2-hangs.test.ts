/**
 * Issue 13 items 6–8 on the HTTP/2 path (RFC 8441 WebSockets): every asynchronous dependency of
 * the handshake hangs or fails — the session store's get/set/touch/destroy never answering or
 * answering an error, a verifyClient or an asynchronous basic-auth check that never calls back or
 * calls back after the time limit — and the dispatcher's upgradeTimeout must close the stream; a
 * late answer must not run the rest of the stack, nor destroy the user's session. The server goes
 * on serving the session's other streams. Real h2 sessions over TLS on 127.0.0.1.
 */
import * as http2 from 'node:http2';
import * as tls from 'node:tls';
import { createApp } from '@upgradeware/dispatcher';
import { session, Store, type StoredSession } from '@upgradeware/session';
import { websocket } from '@upgradeware/websocket';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { basicAuth } from '@upgradeware/basic-auth';
import { h2Connect, h2Request, h2WebSocket, H2Refused, startHttp2, type Http2App, type Http2TestServer } from '../../test-support/http2';

const LIMIT_MS = 300;
/** The limit, the 503's grace (1 s in the dispatcher) and room for a loaded machine. */
const CLOSED_WITHIN_MS = LIMIT_MS + 1000 + 2500;

type Behaviour = 'hang' | 'fail' | 'ok';
/** A store whose every operation does what `mode[op]` says; records the late callbacks it keeps. */
class FaultyStore extends Store {
  data = new Map<string, string>();
  mode: Record<'get' | 'set' | 'touch' | 'destroy', Behaviour> = { get: 'ok', set: 'ok', touch: 'ok', destroy: 'ok' };
  held: Array<() => void> = [];
  private run(op: keyof FaultyStore['mode'], cb: ((err?: unknown, v?: StoredSession | null) => void) | undefined, value?: () => StoredSession | null): void {
    const m = this.mode[op];
    if (m === 'hang') {
      // Never answers now; answers much later (after the stream is gone), as a slow store would.
      this.held.push(() => cb?.(undefined, value?.()));
      return;
    }
    setImmediate(() => (m === 'fail' ? cb?.(new Error(`store ${op} failed`)) : cb?.(undefined, value?.())));
  }
  override get(sid: string, cb: (err: unknown, s?: StoredSession | null) => void): void {
    this.run('get', cb as never, () => {
      const raw = this.data.get(sid);
      return raw === undefined ? null : (JSON.parse(raw) as StoredSession);
    });
  }
  override set(sid: string, s: StoredSession, cb?: (err?: unknown) => void): void {
    if (this.mode.set === 'ok') this.data.set(sid, JSON.stringify(s));
    this.run('set', cb);
  }
  override touch(_sid: string, _s: StoredSession, cb?: (err?: unknown) => void): void {
    this.run('touch', cb);
  }
  override destroy(sid: string, cb?: (err?: unknown) => void): void {
    if (this.mode.destroy === 'ok') this.data.delete(sid);
    this.run('destroy', cb);
  }
}

let server: Http2TestServer;
const store = new FaultyStore();
let verifyMode: 'never' | 'late-yes' | 'late-no' | 'yes' = 'yes';
const errors: unknown[] = [];
let afterSession = 0;
let afterAuth = 0;
let endpoint: ReturnType<typeof websocket>;
let authMode: 'never' | 'late-yes' | 'late-no' | 'late-error' = 'never';

beforeAll(async () => {
  const app = createApp({ upgradeTimeout: LIMIT_MS });
  app.use(session({ secret: 'hangs', store, resave: false, saveUninitialized: false, unset: 'destroy' }));
  // Ordinary requests only (a plain layer is passed over by upgrades): a login.
  app.use('/login', (req: unknown, res: { end(b: string): void }) => {
    (req as { session: Record<string, unknown> }).session.user = 'ann';
    res.end('in');
  });
  // Upgrades too: /save changes the session (saved before the switch), /logout drops it
  // (`unset: 'destroy'` destroys it as the response ends); anything else with the cookie loads
  // it unchanged (touched).
  app.use('/save', supportsUpgrade((req, _res, next) => {
    const s = (req as unknown as { session: Record<string, number> }).session;
    s.visits = (s.visits ?? 0) + 1;
    next();
  }));
  app.use('/logout', supportsUpgrade((req, _res, next) => {
    (req as unknown as { session: unknown }).session = null;
    next();
  }));
  const verifyClient = (_info: unknown, done: (ok: boolean, code?: number) => void): void => {
    if (verifyMode === 'yes') return done(true);
    if (verifyMode === 'never') return;
    setTimeout(() => done(verifyMode === 'late-yes', 403), LIMIT_MS + 200);
  };
  endpoint = websocket((ws) => ws.on('message', (m) => ws.send(String(m))), { verifyClient });
  // What runs after the session, for upgrades: counted (the stack must not run on once the time
  // limit answered).
  app.use(supportsUpgrade((_req, _res, next) => {
    afterSession++;
    next();
  }));
  app.use('/whoami', (req: unknown, res: { end(b: string): void }) => {
    res.end(String((req as { session?: { user?: string } }).session?.user));
  });
  // An asynchronous Basic check (proxy-less, site mode) that hangs or answers late.
  app.use('/auth', basicAuth((user: string, _pass: string, done: (err: unknown, ok?: unknown) => void) => {
    if (authMode === 'never') return;
    setTimeout(() => (authMode === 'late-error' ? done(new Error('directory down')) : done(null, authMode === 'late-yes' ? user : false)), LIMIT_MS + 200);
  }));
  app.use('/auth', supportsUpgrade((_req, _res, next) => {
    afterAuth++;
    next();
  }));
  for (const route of ['/ws', '/save', '/logout', '/auth']) app.use(route, endpoint);
  app.use((err: unknown, _req: unknown, res: { statusCode: number; end(b: string): void }, _next: unknown) => {
    errors.push(err);
    res.statusCode = 500;
    res.end('error');
  });
  server = await startHttp2(app as unknown as Http2App);
});
afterAll(() => server.close());
afterEach(() => {
  store.mode = { get: 'ok', set: 'ok', touch: 'ok', destroy: 'ok' };
  verifyMode = 'yes';
  // The late answers of a hanging store come now, after their streams were closed: nothing may break.
  for (const late of store.held.splice(0)) late();
});

/** A logged-in session cookie (the store working). */
async function login(s: http2.ClientHttp2Session): Promise<string> {
  const r = await h2Request(s, { ':path': '/login' });
  expect(r.status).toBe(200);
  const cookie = String(r.headers['set-cookie']).split(';')[0]!;
  expect(cookie).toMatch(/^connect\.sid=/);
  return cookie;
}

/** Open an extended CONNECT and report what became of it: a status, a switch, or a stream reset; and how long the stream lived. */
async function attempt(s: http2.ClientHttp2Session, path: string, headers: http2.OutgoingHttpHeaders = {}): Promise<{ outcome: string; ms: number }> {
  const started = Date.now();
  try {
    const { ws, stream } = await h2WebSocket(s, path, { headers, timeoutMs: CLOSED_WITHIN_MS });
    // Switched (a store operation that only failed after the switch): the test closes it.
    ws.terminate();
    stream.close();
    return { outcome: 'switched', ms: Date.now() - started };
  } catch (err) {
    if (err instanceof H2Refused) {
      const { status, rstCode } = err.response;
      return { outcome: status ? `status ${status}` : `reset ${rstCode}`, ms: Date.now() - started };
    }
    return { outcome: String((err as Error).message), ms: Date.now() - started };
  }
}

/** After each case, the same h2 session still serves a page and a WebSocket. */
async function stillServes(s: http2.ClientHttp2Session, cookie: string): Promise<void> {
  // The logged-in session is still there: no case's store operation went through (a failing or
  // hanging destroy deletes nothing), and the time limit's 503 must not destroy it either.
  const who = await h2Request(s, { ':path': '/whoami', cookie });
  expect([who.status, who.body.toString()]).toEqual([200, 'ann']);
  const { ws, stream } = await h2WebSocket(s, '/ws');
  const echoed = new Promise<string>((resolve) => ws.once('message', (m) => resolve(String(m))));
  ws.send('still here');
  expect(await echoed).toBe('still here');
  ws.terminate();
  stream.close();
}

async function withSession<T>(fn: (s: http2.ClientHttp2Session) => Promise<T>): Promise<T> {
  const { session: s } = await h2Connect(server.url);
  try {
    return await fn(s);
  } finally {
    s.destroy();
  }
}

// Each case: what the store or verifyClient does, the request, and what the client must see: a
// status (503 when the limit answers, 500 for an error) or the stream closed without one; never
// a stream left open past the limit.
const cases: Array<[string, () => void, string, boolean, RegExp]> = [
  ['store.get never answers', () => (store.mode.get = 'hang'), '/ws', true, /^status 503$/],
  ['store.get answers an error', () => (store.mode.get = 'fail'), '/ws', true, /^status 500$/],
  ['store.set never answers (the session changed: saved before the switch)', () => (store.mode.set = 'hang'), '/save', true, /^(status 503|reset \d+)$/],
  ['store.set answers an error', () => (store.mode.set = 'fail'), '/save', true, /^(status 500|reset \d+)$/],
  ['store.touch never answers', () => (store.mode.touch = 'hang'), '/ws', true, /^(status 503|reset \d+)$/],
  ['store.touch answers an error', () => (store.mode.touch = 'fail'), '/ws', true, /^(status 500|reset \d+|switched)$/],
  ['store.destroy never answers', () => (store.mode.destroy = 'hang'), '/logout', true, /^(status 503|reset \d+)$/],
  ['store.destroy answers an error', () => (store.mode.destroy = 'fail'), '/logout', true, /^(status 500|reset \d+)$/],
  ['verifyClient never calls back', () => (verifyMode = 'never'), '/ws', true, /^status 503$/],
  ['verifyClient accepts after the time limit', () => (verifyMode = 'late-yes'), '/ws', true, /^status 503$/],
  ['verifyClient refuses after the time limit', () => (verifyMode = 'late-no'), '/ws', true, /^status 503$/],
  ['an asynchronous basic-auth check never answers', () => (authMode = 'never'), '/auth', true, /^status 503$/],
  ['an asynchronous basic-auth check accepts after the time limit', () => (authMode = 'late-yes'), '/auth', true, /^status 503$/],
  ['an asynchronous basic-auth check refuses after the time limit', () => (authMode = 'late-no'), '/auth', true, /^status 503$/],
  ['an asynchronous basic-auth check fails after the time limit', () => (authMode = 'late-error'), '/auth', true, /^status 503$/],
];

test.each(cases)('%s: the stream is answered or closed within the limit; the session goes on serving', async (name, arrange, path, withCookie, expected) => {
  await withSession(async (s) => {
    const cookie = await login(s);
    errors.length = 0;
    arrange();
    afterSession = 0;
    afterAuth = 0;
    const headers: http2.OutgoingHttpHeaders = withCookie ? { cookie } : {};
    if (path === '/auth') headers.authorization = 'Basic ' + Buffer.from('ann:pw').toString('base64');
    const result = await attempt(s, path, headers);
    expect(result.outcome).toMatch(expected);
    expect(result.ms).toBeLessThan(CLOSED_WITHIN_MS);
    const ranOn = afterSession;
    // Late answers: verifyClient's and basic-auth's come LIMIT_MS + 200 after the request; the store's now.
    await new Promise((r) => setTimeout(r, 400));
    store.mode = { get: 'ok', set: 'ok', touch: 'ok', destroy: 'ok' };
    verifyMode = 'yes';
    for (const late of store.held.splice(0)) late();
    await new Promise((r) => setTimeout(r, 50));
    // A store.get answered after the time limit does not run the rest of the stack for an
    // answered request.
    if (name.startsWith('store.get')) expect({ ranOn, after: afterSession }).toEqual({ ranOn: 0, after: 0 });
    // A late basic-auth answer does not run the rest of the stack (the endpoint after it) either.
    if (path === '/auth') expect({ afterAuth, clients: endpoint.clients.size }).toEqual({ afterAuth: 0, clients: 0 });
    await stillServes(s, cookie);
  });
}, 15_000);

test.each([
  ['never answers', 'hang', 503],
  ['answers an error', 'fail', 500],
] as const)('HTTP/1.1 on the same server: store.get %s (%s): answered %d, the stack does not run on, the session is kept', async (_name, mode, status) => {
  await withSession(async (s) => {
    const cookie = await login(s);
    afterSession = 0;
    store.mode.get = mode;
    const socket = tls.connect({ port: server.port, host: '127.0.0.1', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
    socket.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const started = Date.now();
    socket.write(
      `GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
        `Sec-WebSocket-Version: 13\r\nCookie: ${cookie}\r\n\r\n`,
    );
    const timer = setTimeout(() => socket.destroy(), CLOSED_WITHIN_MS);
    await closed;
    clearTimeout(timer);
    expect(Date.now() - started).toBeLessThan(CLOSED_WITHIN_MS);
    expect(text.slice(0, 12)).toBe(`HTTP/1.1 ${status}`);
    store.mode.get = 'ok';
    for (const late of store.held.splice(0)) late();
    await new Promise((r) => setTimeout(r, 50));
    expect(afterSession).toBe(0);
    await stillServes(s, cookie);
  });
}, 15_000);
