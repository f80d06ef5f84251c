/**
 * Sessions on upgrades: loaded before the endpoint, saved with their Set-Cookie on the 101 (ws
 * writes it: externalSwitch; or switchProtocols), usable for the socket's life, and store
 * failures that end in a clear status or a clear close, never a hang.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { createHmac } from 'node:crypto';
import WebSocketClient, { type WebSocket } from 'ws';
import { createApp } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade, type NextFunction } from '@upgradeware/upgrade-response';
import { session, MemoryStore, Store, type GetCallback, type SessionCallback, type SessionOptions, type SessionStoreLike, type StoredSession } from '@upgradeware/session';
import {
  delay,
  nextMessage,
  rawConnect,
  rawRequest,
  request,
  start,
  wsClose,
  wsHandshake,
  until,
  wsOpen,
  WsRefused,
  type TestServer,
} from '../../../test-support';
import { loginRequired } from '../../../test-support/endpoints';
import { FailingStore, SilentStore, cookiePairs, once, setCookieFor, wsEndpoint } from './helpers';

interface Harness {
  server: TestServer;
  store: SessionStoreLike;
  /** Messages of the errors that reached the app's error layer (then passed on to the final handler). */
  errors: string[];
  close(): Promise<void>;
}

/** Sign like express-session / cookie-signature. */
function signed(id: string, secret: string): string {
  const mac = createHmac('sha256', secret).update(id).digest('base64').replace(/=+$/, '');
  return `connect.sid=${encodeURIComponent(`s:${id}.${mac}`)}`;
}

/**
 * An app: session; /login and /logout over HTTP; /ws requires req.session.user (401 otherwise)
 * and echoes commands; /open is a WebSocket endpoint for anyone; /switch uses switchProtocols.
 */
async function harness(options: Partial<SessionOptions> = {}, appOptions: { upgradeTimeout?: number } = {}): Promise<Harness> {
  const store = options.store ?? new MemoryStore();
  const app = createApp(appOptions);
  app.use(session({ secret: 'keyboard cat', resave: false, saveUninitialized: false, ...options, store }));
  app.use('/login', (req: IncomingMessage, res: ServerResponse) => {
    req.session!.regenerate((err) => {
      if (err) throw err;
      req.session!.user = new URL(req.url ?? '/', 'http://x').searchParams.get('user') ?? 'alice';
      res.end('hello');
    });
  });
  app.use('/logout', (req: IncomingMessage, res: ServerResponse) => {
    req.session!.destroy(() => res.end('bye'));
  });
  app.use('/whoami', (req: IncomingMessage, res: ServerResponse) => {
    res.end(JSON.stringify({ user: req.session?.user ?? null, note: req.session?.note ?? null, views: req.session?.views ?? 0 }));
  });
  app.use('/views', (req: IncomingMessage, res: ServerResponse) => {
    req.session!.views = (req.session!.views ?? 0) + 1;
    res.end(String(req.session!.views));
  });
  const onConnection = (ws: WebSocket, req: IncomingMessage): void => {
    ws.on('message', (data) => {
      const [cmd, arg] = data.toString().split(':');
      const s = req.session;
      if (!s) return ws.send(cmd === 'hi' ? 'welcome ' : 'no session');
      if (cmd === 'hi') return ws.send(`welcome ${s.user ?? ''}`);
      if (cmd === 'note') {
        s.note = arg ?? '';
        s.save((err) => ws.send(err ? `error ${String(err)}` : 'saved'));
        return;
      }
      if (cmd === 'reload') {
        s.reload((err) => ws.send(err ? `error ${String(err)}` : `views ${req.session!.views ?? 0}`));
        return;
      }
      if (cmd === 'logout') {
        void s.destroy().then(() => ws.send('bye'));
      }
      if (cmd === 'mutate') {
        // Changed, not saved: after the switch nothing saves it for you.
        s.note = arg ?? '';
        ws.send('mutated');
      }
    });
  };
  const guarded = wsEndpoint(onConnection);
  const open = wsEndpoint(onConnection);
  app.use('/ws', loginRequired);
  app.use('/ws', guarded.handle);
  app.use('/open', open.handle);
  app.use(
    '/switch',
    supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: NextFunction) => {
      if (!isUpgradeResponse(res)) return next();
      req.session!.note = 'switched';
      res.switchProtocols((socket: Duplex) => {
        // The save completed before the 101 was written.
        socket.end(`saved=${(store as FailingStore).data?.has(req.sessionID!) ?? 'n/a'}`);
      });
    }),
  );
  const errors: string[] = [];
  app.use(
    supportsUpgrade((err: unknown, _req: IncomingMessage, _res: ServerResponse, next: NextFunction) => {
      errors.push(err instanceof Error ? err.message : String(err));
      next(err);
    }),
  );
  const server = await start(app);
  return {
    server,
    store,
    errors,
    close: async () => {
      guarded.close();
      open.close();
      await server.close();
      if (store instanceof MemoryStore) store.close();
    },
  };
}

/** Send `text` and resolve with the answer. */
function ask(ws: WebSocket, text: string): Promise<string> {
  const answer = nextMessage(ws);
  ws.send(text);
  return answer;
}

async function login(h: Harness, user = 'alice'): Promise<string> {
  const r = await request(`${h.server.url}/login?user=${user}`);
  expect(r.status).toBe(200);
  return cookiePairs(r.headers['set-cookie'])[0]!;
}

function storeSize(store: SessionStoreLike): Promise<number> {
  return new Promise((resolve, reject) => store.length!((err, n) => (err ? reject(err) : resolve(n ?? 0))));
}

async function refused(p: Promise<unknown>): Promise<WsRefused> {
  const err = await p.then(
    () => {
      throw new Error('upgrade was accepted');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WsRefused);
  return err as WsRefused;
}

describe('sessions on WebSocket upgrades', () => {
  test('a new session (saveUninitialized) is saved and its cookie rides on the 101', async () => {
    const h = await harness({ saveUninitialized: true });
    try {
      const { ws, response } = await wsOpen(`${h.server.wsUrl}/open`);
      const line = setCookieFor(response.headers['set-cookie']);
      expect(line).toMatch(/^connect\.sid=s%3A[A-Za-z0-9_-]{32}\.[A-Za-z0-9%]+; Path=\/; HttpOnly$/);
      expect(await storeSize(h.store)).toBe(1);
      // The cookie works on an ordinary request afterwards.
      const who = await request(`${h.server.url}/views`, { headers: { cookie: cookiePairs(line)[0]! } });
      expect(who.body).toBe('1');
      expect(who.headers['set-cookie']).toBeUndefined();
      await wsClose(ws);
    } finally {
      await h.close();
    }
  });

  test('no cookie and nothing stored when nothing changed and saveUninitialized is false', async () => {
    const h = await harness({ saveUninitialized: false });
    try {
      const { ws, response } = await wsOpen(`${h.server.wsUrl}/open`);
      expect(response.headers['set-cookie']).toBeUndefined();
      expect(await ask(ws, 'hi')).toBe('welcome ');
      expect(await storeSize(h.store)).toBe(0);
      await wsClose(ws);
      // Raw bytes: a 101 without Set-Cookie.
      const raw = await rawRequest(h.server.port, wsHandshake('/open'), { untilHead: true });
      expect(raw.status).toBe(101);
      expect(raw.headers['set-cookie']).toBeUndefined();
    } finally {
      await h.close();
    }
  });

  test('log in over HTTP, the upgrade carries the session; without it the upgrade gets a real 401', async () => {
    const h = await harness();
    try {
      const cookie = await login(h, 'bob');
      const { ws, response } = await wsOpen(`${h.server.wsUrl}/ws`, { headers: { cookie } });
      expect(await ask(ws, 'hi')).toBe('welcome bob');
      // Unchanged session, not rolling: no cookie on the 101.
      expect(response.headers['set-cookie']).toBeUndefined();
      await wsClose(ws);

      const denied = await rawRequest(h.server.port, wsHandshake('/ws'));
      expect(denied.status).toBe(401);
      expect(denied.body).toBe('login first');
      expect(denied.headers.connection).toEqual(['close']);
      expect(denied.closed).toBe(true);
      // Still serving.
      expect((await request(`${h.server.url}/whoami`, { headers: { cookie } })).body).toContain('"user":"bob"');
    } finally {
      await h.close();
    }
  });

  test('tampered, unsigned and wrong-secret cookies are refused; an old secret still accepted', async () => {
    const h = await harness({ secret: ['new secret', 'keyboard cat'] });
    try {
      const cookie = await login(h);
      const id = decodeURIComponent(cookie.split('=')[1]!).slice(2).split('.')[0]!;
      // Issued with the first secret; a cookie signed with the old one is accepted too.
      expect(cookie).toBe(signed(id, 'new secret'));
      const { ws } = await wsOpen(`${h.server.wsUrl}/ws`, { headers: { cookie: signed(id, 'keyboard cat') } });
      expect(await ask(ws, 'hi')).toBe('welcome alice');
      await wsClose(ws);

      const bad = [
        signed(id, 'not a secret of ours'),
        `connect.sid=${encodeURIComponent(`s:${id}`)}`,
        `connect.sid=${id}`,
        cookie.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')),
        signed(id.replace(/^./, (c) => (c === 'a' ? 'b' : 'a')), 'new secret'),
        'connect.sid=%E0%A4%A',
      ];
      for (const c of bad) {
        const r = await rawRequest(h.server.port, wsHandshake('/ws', { Cookie: c }));
        expect({ c, status: r.status, body: r.body }).toEqual({ c, status: 401, body: 'login first' });
      }
      const ok = await rawRequest(h.server.port, wsHandshake('/ws', { Cookie: cookie }), { untilHead: true });
      expect(ok.status).toBe(101);
    } finally {
      await h.close();
    }
  });

  test('a live socket changes the session and saves it; reload sees changes made over HTTP', async () => {
    const h = await harness();
    try {
      const cookie = await login(h);
      const { ws } = await wsOpen(`${h.server.wsUrl}/ws`, { headers: { cookie } });
      expect(await ask(ws, 'hi')).toBe('welcome alice');
      ws.send('note:from the socket');
      expect(await nextMessage(ws)).toBe('saved');
      const seen = JSON.parse((await request(`${h.server.url}/whoami`, { headers: { cookie } })).body) as { note: string };
      expect(seen.note).toBe('from the socket');

      expect((await request(`${h.server.url}/views`, { headers: { cookie } })).body).toBe('1');
      expect((await request(`${h.server.url}/views`, { headers: { cookie } })).body).toBe('2');
      ws.send('reload');
      expect(await nextMessage(ws)).toBe('views 2');
      // And a save after the reload keeps what HTTP wrote.
      ws.send('note:again');
      expect(await nextMessage(ws)).toBe('saved');
      const after = JSON.parse((await request(`${h.server.url}/whoami`, { headers: { cookie } })).body) as { note: string; views: number };
      expect(after).toEqual({ user: 'alice', note: 'again', views: 2 });
      await wsClose(ws);
    } finally {
      await h.close();
    }
  });

  test('a session destroyed from a socket (or by logout over HTTP) denies the next upgrade', async () => {
    const h = await harness();
    try {
      const cookie = await login(h);
      const { ws } = await wsOpen(`${h.server.wsUrl}/ws`, { headers: { cookie } });
      expect(await ask(ws, 'hi')).toBe('welcome alice');
      ws.send('logout');
      expect(await nextMessage(ws)).toBe('bye');
      await wsClose(ws);
      const err = await refused(wsOpen(`${h.server.wsUrl}/ws`, { headers: { cookie } }));
      expect(err.status).toBe(401);

      const cookie2 = await login(h, 'carol');
      const { ws: ws2 } = await wsOpen(`${h.server.wsUrl}/ws`, { headers: { cookie: cookie2 } });
      expect(await ask(ws2, 'hi')).toBe('welcome carol');
      await wsClose(ws2);
      expect((await request(`${h.server.url}/logout`, { headers: { cookie: cookie2 } })).body).toBe('bye');
      expect((await refused(wsOpen(`${h.server.wsUrl}/ws`, { headers: { cookie: cookie2 } }))).status).toBe(401);
    } finally {
      await h.close();
    }
  });

  test('rolling: the 101 carries a fresh cookie and the store gets the new expiry', async () => {
    const h = await harness({ rolling: true, cookie: { maxAge: 3_600_000 } });
    try {
      const cookie = await login(h);
      const id = decodeURIComponent(cookie.split('=')[1]!).slice(2).split('.')[0]!;
      const expiryOf = (): Promise<number> =>
        new Promise((resolve, reject) =>
          h.store.get(id, (err, s) => (err || !s ? reject(err ?? new Error('gone')) : resolve(Date.parse(String(s.cookie.expires))))),
        );
      const before = await expiryOf();
      await new Promise((r) => setTimeout(r, 1100));
      const { ws, response } = await wsOpen(`${h.server.wsUrl}/ws`, { headers: { cookie } });
      const line = setCookieFor(response.headers['set-cookie']);
      expect(line).toBeDefined();
      expect(cookiePairs(line)[0]).toBe(cookie);
      const expires = Date.parse(/Expires=([^;]+)/.exec(line!)![1]!);
      expect(expires).toBeGreaterThan(before);
      // The touch (or save) reaches the store.
      let stored = before;
      for (let i = 0; i < 100 && stored <= before; i++) {
        stored = await expiryOf();
        if (stored <= before) await new Promise((r) => setTimeout(r, 10));
      }
      expect(stored).toBeGreaterThan(before);
      await wsClose(ws);
    } finally {
      await h.close();
    }
  });

  test('switchProtocols: the session is saved before the 101, which carries the cookie', async () => {
    const store = new FailingStore(new Set());
    const h = await harness({ store, saveUninitialized: false });
    try {
      const conn = await rawConnect(h.server.port);
      conn.socket.write(wsHandshake('/switch'));
      const all = (await conn.waitFor('saved=')).toString('latin1');
      await conn.waitClose();
      const text = conn.received().toString('latin1');
      expect(all.startsWith('HTTP/1.1 101 Switching Protocols\r\n')).toBe(true);
      expect(text).toMatch(/\r\nSet-Cookie: connect\.sid=s%3A[^\r]+\r\n/i);
      expect(text.endsWith('saved=true')).toBe(true);
      expect(store.data.size).toBe(1);
      conn.close();
    } finally {
      await h.close();
    }
  });
});

describe('store failures on upgrades', () => {
  test('a store that fails to load answers the upgrade with its error status; the server keeps serving', async () => {
    const store = new FailingStore(new Set(['get']));
    const h = await harness({ store });
    try {
      const r = await rawRequest(h.server.port, wsHandshake('/ws', { Cookie: signed('abc', 'keyboard cat') }));
      expect(r.status).toBe(503);
      expect(r.body).toContain('store get failed');
      expect(r.closed).toBe(true);
      // No cookie: no load, the upgrade goes on (and is denied by the auth layer).
      const r2 = await rawRequest(h.server.port, wsHandshake('/ws'));
      expect(r2.status).toBe(401);
      store.failing.clear();
      const r3 = await rawRequest(h.server.port, wsHandshake('/ws', { Cookie: signed('abc', 'keyboard cat') }));
      expect(r3.status).toBe(401);
    } finally {
      await h.close();
    }
  });

  test('an error without a status is a 500', async () => {
    const store = new FailingStore(new Set());
    store.get = (_sid, cb) => setImmediate(() => cb(new Error('boom')));
    const h = await harness({ store });
    try {
      const r = await rawRequest(h.server.port, wsHandshake('/open', { Cookie: signed('abc', 'keyboard cat') }));
      expect(r.status).toBe(500);
      expect(r.body).toContain('boom');
      expect((await request(`${h.server.url}/whoami`)).status).toBe(200);
    } finally {
      await h.close();
    }
  });

  test('a store that never answers: the dispatcher time limit answers 503', async () => {
    const store = new SilentStore();
    const h = await harness({ store }, { upgradeTimeout: 300 });
    try {
      const r = await rawRequest(h.server.port, wsHandshake('/ws', { Cookie: signed('abc', 'keyboard cat') }), { timeoutMs: 5000 });
      expect(r.status).toBe(503);
      expect(r.closed).toBe(true);
      store.hangGet = false;
      const r2 = await rawRequest(h.server.port, wsHandshake('/open', { Cookie: signed('abc', 'keyboard cat') }), { untilHead: true });
      expect(r2.status).toBe(101);
    } finally {
      await h.close();
    }
  });

  test('a disconnected store: upgrades pass through without a session (express-session behaviour)', async () => {
    const store = new MemoryStore();
    const h = await harness({ store, saveUninitialized: true });
    try {
      const cookie = await login(h);
      store.emit('disconnect');
      const denied = await rawRequest(h.server.port, wsHandshake('/ws', { Cookie: cookie }));
      expect(denied.status).toBe(401);
      const { ws, response } = await wsOpen(`${h.server.wsUrl}/open`);
      expect(await ask(ws, 'hi')).toBe('welcome ');
      expect(response.headers['set-cookie']).toBeUndefined();
      await wsClose(ws);
      store.emit('connect');
      const ok = await rawRequest(h.server.port, wsHandshake('/ws', { Cookie: cookie }), { untilHead: true });
      expect(ok.status).toBe(101);
    } finally {
      await h.close();
    }
  });

  test('a save that fails after ws wrote the 101 closes the WebSocket with 1011', async () => {
    const store = new FailingStore(new Set(['set']));
    const h = await harness({ store, saveUninitialized: true });
    try {
      // Listeners first: the close may follow the 101 closely.
      const ws = new WebSocketClient(`${h.server.wsUrl}/open`);
      const upgraded = once(ws, 'upgrade');
      const closed = once(ws, 'close');
      const [response] = (await upgraded) as [IncomingMessage];
      expect(setCookieFor(response.headers['set-cookie'])).toBeDefined();
      const [code] = (await closed) as [number];
      expect(code).toBe(1011);
      expect(store.data.size).toBe(0);
      // The server still serves.
      store.failing.clear();
      const { ws: ws2 } = await wsOpen(`${h.server.wsUrl}/open`);
      expect(await ask(ws2, 'hi')).toBe('welcome ');
      await wsClose(ws2);
    } finally {
      await h.close();
    }
  });

  test('a save that fails before a switchProtocols 101: no switch, the connection is closed', async () => {
    const store = new FailingStore(new Set(['set']));
    const h = await harness({ store });
    try {
      const r = await rawRequest(h.server.port, wsHandshake('/switch'));
      expect(r.raw).toBe('');
      expect(r.closed).toBe(true);
      store.failing.clear();
      const r2 = await rawRequest(h.server.port, wsHandshake('/switch'));
      expect(r2.status).toBe(101);
      expect(r2.body).toBe('saved=true');
    } finally {
      await h.close();
    }
  });
});

/** A MemoryStore whose saves wait until the test lets them through. */
class GatedStore extends MemoryStore {
  held: Array<() => void> = [];
  gate = false;
  override set(sid: string, session: StoredSession, callback?: SessionCallback): void {
    if (!this.gate) return super.set(sid, session, callback);
    this.held.push(() => super.set(sid, session, callback));
  }
  release(): void {
    this.gate = false;
    for (const go of this.held.splice(0)) go();
  }
}

/** A store that answers every call synchronously, inside the call. */
class SyncStore extends Store {
  readonly data = new Map<string, string>();
  override get(sid: string, cb: GetCallback): void {
    const raw = this.data.get(sid);
    cb(null, raw === undefined ? null : (JSON.parse(raw) as StoredSession));
  }
  override set(sid: string, session: StoredSession, cb?: SessionCallback): void {
    this.data.set(sid, JSON.stringify(session));
    cb?.();
  }
  override destroy(sid: string, cb?: SessionCallback): void {
    this.data.delete(sid);
    cb?.();
  }
  override touch(_sid: string, _session: StoredSession, cb?: SessionCallback): void {
    cb?.();
  }
}

describe('README claims about the save on an upgrade', () => {
  test("ws's 101: the connection callback may run before the save completes; 'finish' (status 101) fires after it", async () => {
    const store = new GatedStore();
    const events: string[] = [];
    const app = createApp();
    app.use(
      supportsUpgrade((_req: IncomingMessage, res: ServerResponse, next: NextFunction) => {
        res.on('finish', () => events.push(`finish ${res.statusCode}`));
        next();
      }),
    );
    app.use(session({ secret: 's', resave: false, saveUninitialized: true, store }));
    const endpoint = wsEndpoint((ws) => {
      events.push('connection');
      ws.send('hello');
    });
    app.use(endpoint.handle);
    const server = await start(app);
    try {
      store.gate = true;
      const { ws, response } = await wsOpen(server.wsUrl);
      expect(setCookieFor(response.headers['set-cookie'])).toBeDefined();
      expect(await nextMessage(ws)).toBe('hello');
      await until(() => store.held.length === 1);
      expect(events).toEqual(['connection']);
      store.release();
      await until(() => events.length === 2);
      expect(events).toEqual(['connection', 'finish 101']);
      expect(await new Promise((resolve) => store.length((_e, n) => resolve(n)))).toBe(1);
      await wsClose(ws);
    } finally {
      endpoint.close();
      await server.close();
      store.close();
    }
  });

  test('switchProtocols: a save that never completes is cut off by the time limit (no 101); the server keeps serving', async () => {
    const store = new SilentStore();
    store.hangGet = false;
    store.hangSet = true;
    const h = await harness({ store }, { upgradeTimeout: 300 });
    try {
      const r = await rawRequest(h.server.port, wsHandshake('/switch'), { timeoutMs: 5000 });
      expect(r.raw).toBe('');
      expect(r.closed).toBe(true);
      store.hangSet = false;
      const r2 = await rawRequest(h.server.port, wsHandshake('/switch'));
      expect(r2.status).toBe(101);
      expect(r2.body).toBe('saved=true');
      expect(store.data.size).toBe(1);
    } finally {
      await h.close();
    }
  });

  test("ws's 101: a save that never completes does not hold the WebSocket up", async () => {
    const store = new SilentStore();
    store.hangGet = false;
    store.hangSet = true;
    const h = await harness({ store, saveUninitialized: true }, { upgradeTimeout: 300 });
    try {
      const { ws, response } = await wsOpen(`${h.server.wsUrl}/open`);
      expect(setCookieFor(response.headers['set-cookie'])).toBeDefined();
      // Past the time limit, the connection is still up and served.
      await delay(400);
      expect(await ask(ws, 'hi')).toBe('welcome ');
      await wsClose(ws);
    } finally {
      await h.close();
    }
  });

  test('a save that fails is reported to the error layers (after ws\'s 101, and before a switchProtocols 101)', async () => {
    const store = new FailingStore(new Set(['set']));
    const h = await harness({ store, saveUninitialized: true });
    try {
      const ws = new WebSocketClient(`${h.server.wsUrl}/open`);
      const closed = once(ws, 'close');
      expect(((await closed) as [number])[0]).toBe(1011);
      await until(() => h.errors.length === 1);
      expect(h.errors).toEqual(['store set failed']);

      const r = await rawRequest(h.server.port, wsHandshake('/switch'));
      expect(r.raw).toBe('');
      expect(r.closed).toBe(true);
      await until(() => h.errors.length === 2);
      expect(h.errors).toEqual(['store set failed', 'store set failed']);
      expect((await request(`${h.server.url}/whoami`)).status).toBe(200);
    } finally {
      await h.close();
    }
  });

  test('after the switch nothing is saved for you: a change without save() stays on the socket', async () => {
    const h = await harness();
    try {
      const cookie = await login(h);
      const { ws } = await wsOpen(`${h.server.wsUrl}/ws`, { headers: { cookie } });
      expect(await ask(ws, 'mutate:unsaved')).toBe('mutated');
      await delay(20);
      const seen = JSON.parse((await request(`${h.server.url}/whoami`, { headers: { cookie } })).body) as { note: string | null };
      expect(seen.note).toBeNull();
      expect(await ask(ws, 'note:saved')).toBe('saved');
      const after = JSON.parse((await request(`${h.server.url}/whoami`, { headers: { cookie } })).body) as { note: string | null };
      expect(after.note).toBe('saved');
      await wsClose(ws);
    } finally {
      await h.close();
    }
  });

  test('a store that answers synchronously: both kinds of switch carry the cookie and the session is saved', async () => {
    const store = new SyncStore();
    const h = await harness({ store, saveUninitialized: true });
    try {
      const conn = await rawConnect(h.server.port);
      conn.socket.write(wsHandshake('/switch'));
      await conn.waitFor('saved=');
      expect(await conn.waitClose()).toBe(true);
      const text = conn.received().toString('latin1');
      expect(text.startsWith('HTTP/1.1 101 Switching Protocols\r\n')).toBe(true);
      expect(text).toMatch(/\r\nSet-Cookie: connect\.sid=s%3A[^\r]+\r\n/i);
      expect(store.data.size).toBe(1);
      conn.close();

      const { ws, response } = await wsOpen(`${h.server.wsUrl}/open`);
      const cookie = cookiePairs(response.headers['set-cookie'])[0]!;
      expect(cookie).toMatch(/^connect\.sid=s%3A/);
      expect(store.data.size).toBe(2);
      expect(await ask(ws, 'note:sync')).toBe('saved');
      expect(JSON.parse((await request(`${h.server.url}/whoami`, { headers: { cookie } })).body)).toMatchObject({ note: 'sync' });
      await wsClose(ws);
    } finally {
      await h.close();
    }
  });
});
