/**
 * The Store base both ways third-party stores extend it, MemoryStore's pruning, Cookie and
 * Session on their own, option checks at factory time, and failures at request time.
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as util from 'node:util';
import { createHmac } from 'node:crypto';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { createApp } from '@upgradeware/dispatcher';
import {
  Cookie,
  MemoryStore,
  Session,
  Store,
  session,
  type GetCallback,
  type SessionCallback,
  type SessionData,
  type SessionRequest,
  type SessionOptions,
  type StoredSession,
} from '@upgradeware/session';
import { rawRequest, request, start, wsHandshake } from '../../../test-support';
import { cookiePairs } from './helpers';

// express-session's deprecated forms (no secret, no resave …) are used here on purpose; their
// notices are checked in deprecation.test.ts.
process.noDeprecation = true;

/** A store written the modern way (connect-redis style). */
class ClassStore extends Store {
  readonly map = new Map<string, string>();
  override get(sid: string, cb: GetCallback): void {
    const raw = this.map.get(sid);
    setImmediate(() => cb(null, raw === undefined ? null : (JSON.parse(raw) as StoredSession)));
  }
  override set(sid: string, sess: StoredSession, cb?: SessionCallback): void {
    this.map.set(sid, JSON.stringify(sess));
    setImmediate(() => cb?.());
  }
  override destroy(sid: string, cb?: SessionCallback): void {
    this.map.delete(sid);
    setImmediate(() => cb?.());
  }
}

/** A store written the older way (connect-pg-simple, memorystore style). */
interface OldStore extends Store {
  map: Map<string, string>;
  options: unknown;
}
const OldStore = function OldStore(this: OldStore, options?: unknown): void {
  Store.call(this, options);
  this.options = options;
  this.map = new Map();
} as unknown as { new (options?: unknown): OldStore };
util.inherits(OldStore, Store);
OldStore.prototype.get = function (this: OldStore, sid: string, cb: GetCallback) {
  const raw = this.map.get(sid);
  process.nextTick(() => cb(null, raw === undefined ? undefined : (JSON.parse(raw) as StoredSession)));
};
OldStore.prototype.set = function (this: OldStore, sid: string, sess: StoredSession, cb?: SessionCallback) {
  this.map.set(sid, JSON.stringify(sess));
  process.nextTick(() => cb?.());
};
OldStore.prototype.destroy = function (this: OldStore, sid: string, cb?: SessionCallback) {
  this.map.delete(sid);
  process.nextTick(() => cb?.());
};

function counter(req: IncomingMessage, res: ServerResponse): void {
  req.session!.views = (req.session!.views ?? 0) + 1;
  res.end(String(req.session!.views));
}

describe('Store', () => {
  test.each([
    ['class X extends Store', () => new ClassStore()],
    ['Store.call(this) + util.inherits', () => new OldStore({ a: 1 })],
  ])('%s: an EventEmitter that works as the session store', async (_name, make) => {
    const store = make() as ClassStore | OldStore;
    expect(store).toBeInstanceOf(Store);
    expect(store).toBeInstanceOf(EventEmitter);
    const app = createApp();
    app.use(session({ secret: 's', resave: false, saveUninitialized: false, store }));
    app.use(counter);
    const s = await start(app);
    try {
      const first = await request(s.url);
      const cookie = cookiePairs(first.headers['set-cookie'])[0]!;
      expect((await request(s.url, { headers: { cookie } })).body).toBe('2');
      expect(store.map.size).toBe(1);
      const sid = [...store.map.keys()][0]!;
      // load() gives a Session with its methods; regenerate() uses the middleware's generator.
      const loaded = await new Promise<(Session & Partial<SessionData>) | undefined>((resolve, reject) => store.load(sid, (err, sess) => (err ? reject(err) : resolve(sess))));
      expect(loaded).toBeInstanceOf(Session);
      expect(loaded!.id).toBe(sid);
      expect(loaded!.views).toBe(2);
      expect(loaded!.cookie).toBeInstanceOf(Cookie);
      const req = { sessionID: sid, sessionStore: store } as { sessionID?: string; sessionStore: Store; session?: Session };
      await new Promise<void>((resolve, reject) => store.regenerate(req, (err) => (err ? reject(err) : resolve())));
      expect(store.map.has(sid)).toBe(false);
      expect(req.sessionID).not.toBe(sid);
      expect(req.session).toBeInstanceOf(Session);
    } finally {
      await s.close();
    }
  });

  test('the methods of Store.prototype are not enumerable (they never reach a store as data)', () => {
    expect(Object.keys(Store.prototype)).toEqual([]);
    expect(typeof Store.prototype.createSession).toBe('function');
  });
});

describe('MemoryStore', () => {
  test('expired sessions are pruned, sessions without expiry leave after ttl; the timer can be closed', async () => {
    const store = new MemoryStore({ checkPeriod: 20, ttl: 50 });
    try {
      const set = (sid: string, expires: Date | null): Promise<void> =>
        new Promise((resolve) => store.set(sid, { cookie: { originalMaxAge: null, expires } }, () => resolve()));
      await set('past', new Date(Date.now() - 1000));
      await set('soon', new Date(Date.now() + 30));
      await set('later', new Date(Date.now() + 60_000));
      await set('no-expiry', null);
      const size = (): number => (store as unknown as { entries: Map<string, unknown> }).entries.size;
      for (let i = 0; i < 100 && size() > 1; i++) await new Promise((r) => setTimeout(r, 10));
      expect(size()).toBe(1);
      const n = await new Promise<number | undefined>((resolve) => store.length((_e, len) => resolve(len)));
      expect(n).toBe(1);
      const got = await new Promise<StoredSession | null | undefined>((resolve) => store.get('later', (_e, s) => resolve(s)));
      expect(got?.cookie.expires).toEqual(expect.any(String));
      await new Promise<void>((resolve) => store.clear(() => resolve()));
      expect(size()).toBe(0);
    } finally {
      store.close();
    }
  });

  test('an expired session is never returned, even between sweeps', async () => {
    const store = new MemoryStore({ checkPeriod: 0 });
    await new Promise<void>((resolve) => store.set('x', { cookie: { expires: new Date(Date.now() - 1) } }, () => resolve()));
    const got = await new Promise<unknown>((resolve) => store.get('x', (_e, s) => resolve(s)));
    expect(got).toBeUndefined();
    expect(store.prune()).toBe(0);
  });

  test('callbacks come asynchronously, and a loop polling the store never starves the event loop', async () => {
    const store = new MemoryStore({ checkPeriod: 0 });
    let inside = true;
    const calledInside = await new Promise<boolean>((resolve) => {
      store.get('x', () => resolve(inside));
      inside = false;
    });
    expect(calledInside).toBe(false);
    // On the next tick: before what was queued for the check phase.
    const order: string[] = [];
    await new Promise<void>((resolve) => {
      setImmediate(() => {
        order.push('immediate');
        resolve();
      });
      store.get('x', () => order.push('store'));
    });
    expect(order).toEqual(['store', 'immediate']);
    // A timer must get its turn while the loop polls (bounded: never more than 200,000 polls).
    let fired = false;
    const timer = setTimeout(() => (fired = true), 5);
    let polls = 0;
    await new Promise<void>((resolve) => {
      const poll = (): void => {
        store.get('x', () => {
          polls++;
          if (fired || polls >= 200_000) resolve();
          else poll();
        });
      };
      poll();
    });
    clearTimeout(timer);
    expect(fired).toBe(true);
    expect(polls).toBeLessThan(200_000);
  });

  test('the expiry kept is the one the stored JSON says, whether the session holds a Cookie or plain data', async () => {
    const ttl = 60_000;
    const store = new MemoryStore({ checkPeriod: 0, ttl });
    const set = (sid: string, data: object): Promise<void> =>
      new Promise((resolve) => store.set(sid, data as StoredSession, () => resolve()));
    const expiresAt = (sid: string): number | undefined =>
      (store as unknown as { entries: Map<string, { expiresAt: number }> }).entries.get(sid)?.expiresAt;
    const past = new Date(Date.now() - 1000);
    const future = new Date(Date.now() + 3_600_000);
    const invalid = new Cookie();
    invalid.expires = new Date(Number.NaN);
    class PastCookie extends Cookie {
      override toJSON(): ReturnType<Cookie['toJSON']> {
        return { ...super.toJSON(), expires: past };
      }
    }
    try {
      const before = Date.now();
      await set('cookie-past', { cookie: new Cookie({ expires: past }) });
      await set('cookie-future', { cookie: new Cookie({ expires: future }) });
      await set('cookie-none', { cookie: new Cookie() });
      // An invalid date is written as null: no expiry.
      await set('cookie-invalid', { cookie: invalid });
      // What toJSON writes counts: a subclass's, the session's own.
      await set('subclass', { cookie: new PastCookie({ expires: future }) });
      await set('rewritten', { cookie: new Cookie({ expires: future }), toJSON: () => ({ cookie: { expires: past.toISOString() } }) });
      // A cookie JSON does not write (not enumerable) gives no expiry.
      await set('hidden', Object.defineProperty({}, 'cookie', { value: new Cookie({ expires: past }), enumerable: false }));
      await set('plain', { cookie: { expires: future.toISOString() } });
      const after = Date.now();
      expect(expiresAt('cookie-past')).toBe(past.getTime());
      expect(expiresAt('cookie-future')).toBe(future.getTime());
      expect(expiresAt('subclass')).toBe(past.getTime());
      expect(expiresAt('rewritten')).toBe(past.getTime());
      expect(expiresAt('plain')).toBe(future.getTime());
      for (const sid of ['cookie-none', 'cookie-invalid', 'hidden']) {
        expect(expiresAt(sid)).toBeGreaterThanOrEqual(before + ttl);
        expect(expiresAt(sid)).toBeLessThanOrEqual(after + ttl);
      }
      const got = await new Promise<StoredSession | null | undefined>((resolve) => store.get('cookie-past', (_e, s) => resolve(s)));
      expect(got).toBeUndefined();
    } finally {
      store.close();
    }
  });

  test('bad options throw', () => {
    expect(() => new MemoryStore({ checkPeriod: -1 })).toThrow(/MemoryStore option checkPeriod/);
    expect(() => new MemoryStore({ ttl: Number.NaN })).toThrow(/MemoryStore option ttl/);
  });
});

describe('Cookie and Session', () => {
  test('maxAge counts down from expires; originalMaxAge remembers; touch grants it again', () => {
    const cookie = new Cookie({ maxAge: 10_000, sameSite: 'lax' });
    expect(cookie.originalMaxAge).toBe(10_000);
    expect(cookie.maxAge).toBeLessThanOrEqual(10_000);
    expect(cookie.maxAge).toBeGreaterThan(9_000);
    expect(cookie.serialize('n', 'v')).toMatch(/^n=v; Path=\/; Expires=[^;]+; HttpOnly; SameSite=Lax$/);
    expect(JSON.parse(JSON.stringify(cookie))).toEqual({ originalMaxAge: 10_000, expires: cookie.expires!.toISOString(), httpOnly: true, path: '/', sameSite: 'lax' });
    const plain = new Cookie();
    expect(plain.maxAge).toBeNull();
    expect(plain.serialize('n', 'v')).toBe('n=v; Path=/; HttpOnly');
    expect(() => new Cookie({ maxAge: 'soon' as unknown as number })).toThrow(TypeError);
  });

  test('without a callback the methods return promises; ignored rejections are not unhandled', async () => {
    const store = new ClassStore();
    const req: SessionRequest = { sessionID: 'abc', sessionStore: store };
    const sess: Session & Partial<SessionData> = new Session(req, { views: 3 });
    sess.cookie = new Cookie();
    req.session = sess;
    await sess.save();
    expect(store.map.has('abc')).toBe(true);
    sess.views = 4;
    await sess.reload();
    expect(req.session!.views).toBe(3);
    await req.session!.destroy();
    expect(store.map.has('abc')).toBe(false);
    expect(req.session).toBeUndefined();
    // regenerate(): a store used by a middleware knows how to make the new session.
    session({ secret: 's', resave: false, saveUninitialized: false, store });
    const sess2: Session & Partial<SessionData> = new Session(req, { views: 1 });
    sess2.cookie = new Cookie();
    req.session = sess2;
    await sess2.save();
    await sess2.regenerate();
    expect(store.map.has('abc')).toBe(false);
    expect(req.sessionID).not.toBe('abc');
    expect(req.session).toBeInstanceOf(Session);
    expect(req.session!.views).toBeUndefined();
    await expect(new Session({ sessionID: 'gone', sessionStore: store }).reload()).rejects.toThrow('failed to load session');
    // Fire and forget, as express-session code does: no unhandled rejection.
    void new Session({ sessionID: 'gone', sessionStore: store }).reload();
    // With a callback, the session is returned (chainable, as in express-session).
    const s2 = new Session({ sessionID: 'x', sessionStore: store });
    s2.cookie = new Cookie();
    expect(s2.save(() => undefined)).toBe(s2);
  });
});

describe('options', () => {
  const base: SessionOptions = { secret: 's', resave: false, saveUninitialized: false };
  test.each<[string, unknown, RegExp]>([
    ['options not an object', 5, /options must be an object/],
    ['empty secret', { ...base, secret: '' }, /option secret must be/],
    ['secret a number', { ...base, secret: 42 }, /option secret must be/],
    ['empty secret array', { ...base, secret: [] }, /^@upgradeware\/session: secret option array must contain one or more strings$/],
    ['secret array with a number', { ...base, secret: ['a', 1] }, /option secret must be/],
    ['genid not a function', { ...base, genid: 'x' }, /option genid must be a function/],
    ['bad name', { ...base, name: 'a b' }, /option name/],
    ['resave not boolean', { ...base, resave: 'yes' }, /option resave must be a boolean/],
    ['rolling not boolean', { ...base, rolling: 1 }, /option rolling must be a boolean/],
    ['saveUninitialized not boolean', { ...base, saveUninitialized: null }, /option saveUninitialized must be a boolean/],
    ['proxy not boolean', { ...base, proxy: 'true' }, /option proxy must be a boolean/],
    ['unset', { ...base, unset: 'drop' }, /option unset must be/],
    ['store without get', { ...base, store: { set() {}, destroy() {}, on() {} } }, /option store must have a get\(\) method/],
    ['cookie not an object', { ...base, cookie: 5 }, /option cookie must be an object/],
    ['cookie.maxAge', { ...base, cookie: { maxAge: '1d' } }, /option cookie\.maxAge/],
    ['cookie.expires', { ...base, cookie: { expires: 'tomorrow' } }, /option cookie\.expires/],
    ['cookie.secure', { ...base, cookie: { secure: 'yes' } }, /option cookie\.secure/],
    ['cookie.sameSite', { ...base, cookie: { sameSite: 'loose' } }, /option cookie\.sameSite/],
    ['cookie.priority', { ...base, cookie: { priority: 'urgent' } }, /option cookie\.priority/],
    ['cookie.partitioned', { ...base, cookie: { partitioned: 'yes' } }, /option cookie\.partitioned/],
    ['cookie.httpOnly', { ...base, cookie: { httpOnly: 1 } }, /option cookie\.httpOnly/],
    ['cookie.domain', { ...base, cookie: { domain: '' } }, /option cookie\.domain/],
    ['cookie.path', { ...base, cookie: { path: 7 } }, /option cookie\.path/],
  ])('%s: TypeError at factory time', (_name, options, message) => {
    expect(() => session(options as SessionOptions)).toThrow(TypeError);
    expect(() => session(options as SessionOptions)).toThrow(/^@upgradeware\/session: /);
    expect(() => session(options as SessionOptions)).toThrow(message);
  });

  test('the factory marks the middleware for upgrades', () => {
    const mw = session({ ...base, store: new ClassStore() });
    expect(mw.supportsUpgrade).toBe(true);
  });

  test('default ids: 24 random bytes, base64url', async () => {
    const app = createApp();
    app.use(session({ secret: 's', resave: false, saveUninitialized: true, store: new ClassStore() }));
    app.use((req: IncomingMessage, res: ServerResponse) => res.end(req.sessionID));
    const s = await start(app);
    try {
      const ids = new Set<string>();
      for (let i = 0; i < 20; i++) ids.add((await request(s.url)).body);
      expect(ids.size).toBe(20);
      for (const id of ids) expect(Buffer.from(id, 'base64url')).toHaveLength(24);
      for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_-]{32}$/);
    } finally {
      await s.close();
    }
  });
});

describe('failures at request time go to next(err)', () => {
  test('genid that throws, and a cookie function that returns bad options: 500 on requests and upgrades', async () => {
    const app = createApp();
    app.use('/genid', session({ secret: 's', store: new ClassStore(), genid: () => { throw new Error('no ids today'); } }));
    app.use('/cookie', session({ secret: 's', store: new ClassStore(), cookie: () => ({ sameSite: 'loose' as 'lax' }) }));
    app.use((_req: IncomingMessage, res: ServerResponse) => res.end('ok'));
    const s = await start(app);
    try {
      const r1 = await request(`${s.url}/genid`);
      expect(r1.status).toBe(500);
      expect(r1.body).toContain('no ids today');
      const r2 = await rawRequest(s.port, wsHandshake('/genid'));
      expect(r2.status).toBe(500);
      expect(r2.body).toContain('no ids today');
      expect(r2.closed).toBe(true);
      const r3 = await rawRequest(s.port, wsHandshake('/cookie'));
      expect(r3.status).toBe(500);
      expect(r3.body).toContain('cookie().sameSite');
      expect((await request(`${s.url}/other`)).body).toBe('ok');
    } finally {
      await s.close();
    }
  });

  test('a stored session without a cookie is an error, not a crash', async () => {
    const store = new ClassStore();
    store.map.set('broken', JSON.stringify({ views: 1 }));
    const app = createApp();
    app.use(session({ secret: 's', store, genid: () => 'broken' }));
    app.use(counter);
    const s = await start(app);
    try {
      const first = await request(s.url);
      // genid gives 'broken', whose stored form lacks a cookie: the second request loads it.
      const cookie = cookiePairs(first.headers['set-cookie'])[0]!;
      store.map.set('broken', JSON.stringify({ views: 1 }));
      const r = await rawRequest(s.port, wsHandshake('/', { Cookie: cookie }));
      expect(r.status).toBe(500);
      expect(r.body).toContain('stored session has no cookie');
      expect((await request(s.url)).status).toBe(200);
    } finally {
      await s.close();
    }
  });
});

describe("no secret option: cookie-parser's req.secret, as in express-session", () => {
  test('signs and verifies with req.secret on requests and upgrades; without one, 500 and the server keeps serving', async () => {
    const app = createApp();
    // What cookie-parser('from cookie-parser') leaves on every request.
    app.use(
      supportsUpgrade((req: IncomingMessage, _res: ServerResponse, next: () => void) => {
        if (!req.headers['x-no-secret']) (req as { secret?: string }).secret = 'from cookie-parser';
        next();
      }),
    );
    expect(() => session()).not.toThrow();
    app.use(session({ resave: false, saveUninitialized: false, store: new ClassStore() }));
    app.use(supportsUpgrade((req: IncomingMessage, res: ServerResponse) => {
      if (!req.session) return res.end('none');
      req.session.views = (req.session.views ?? 0) + 1;
      res.end(String(req.session.views));
    }));
    const s = await start(app);
    try {
      const first = await request(s.url);
      const cookie = cookiePairs(first.headers['set-cookie'])[0]!;
      const id = decodeURIComponent(cookie.split('=')[1]!).slice(2).split('.')[0]!;
      const mac = createHmac('sha256', 'from cookie-parser').update(id).digest('base64').replace(/=+$/, '');
      expect(cookie).toBe(`connect.sid=${encodeURIComponent(`s:${id}.${mac}`)}`);
      expect((await request(s.url, { headers: { cookie } })).body).toBe('2');
      // The upgrade sees the same session (the layer answers it with a plain 200 here).
      const up = await rawRequest(s.port, wsHandshake('/', { Cookie: cookie }));
      expect(up.status).toBe(200);
      expect(up.body).toBe('3');

      const bad = await request(s.url, { headers: { cookie, 'x-no-secret': '1' } });
      expect(bad.status).toBe(500);
      expect(bad.body).toContain('secret option required for sessions');
      const badUp = await rawRequest(s.port, wsHandshake('/', { Cookie: cookie, 'X-No-Secret': '1' }));
      expect(badUp.status).toBe(500);
      expect(badUp.body).toContain('secret option required for sessions');
      expect(badUp.closed).toBe(true);
      expect((await request(s.url, { headers: { cookie } })).body).toBe('4');
    } finally {
      await s.close();
    }
  });
});

describe('a cookie function', () => {
  test("is called once per request, and its 'auto' values follow the request", async () => {
    const calls: string[] = [];
    const app = createApp();
    app.use(
      session({
        secret: 's',
        resave: false,
        saveUninitialized: true,
        proxy: true,
        store: new ClassStore(),
        cookie: (req) => {
          calls.push(req.url ?? '');
          return { secure: 'auto', sameSite: 'auto', maxAge: 60_000 };
        },
      }),
    );
    app.use(counter);
    const s = await start(app);
    try {
      const secure = await request(`${s.url}/a`, { headers: { 'x-forwarded-proto': 'https' } });
      expect(secure.headers['set-cookie']![0]).toMatch(/; Secure; SameSite=None$/);
      const plain = await request(`${s.url}/b`);
      expect(plain.headers['set-cookie']![0]).toMatch(/; HttpOnly; SameSite=Lax$/);
      expect(plain.headers['set-cookie']![0]).not.toMatch(/Secure/);
      const again = await request(`${s.url}/c`, { headers: { cookie: cookiePairs(plain.headers['set-cookie'])[0]! } });
      expect(again.body).toBe('2');
      expect(calls).toEqual(['/a', '/b', '/c']);
    } finally {
      await s.close();
    }
  });
});
