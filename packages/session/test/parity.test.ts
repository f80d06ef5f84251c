/**
 * Parity with express-session on ordinary requests: the same request sequences against an app
 * using express-session and an app using ours (same options, same deterministic ids), comparing
 * status, body (what the handler saw of req.session), every Set-Cookie attribute, and what the
 * store holds after every step.
 */
import './quiet-deprecations';
import type { IncomingMessage, ServerResponse } from 'node:http';
import expressSession from 'express-session';
import { createRequire } from 'node:module';
import { createApp } from '@upgradeware/dispatcher';
import { session, MemoryStore, Store, type SessionOptions, type SessionStoreLike, type StoredSession } from '@upgradeware/session';
import { delay, request, start } from '../../../test-support';
import { setCookieFor } from './helpers';

// The cookie-signature that express-session itself uses (a transitive dependency).
const { sign: cookieSign } = createRequire(require.resolve('express-session'))('cookie-signature') as {
  sign(value: string, secret: string): string;
};

// express-session prints deprecation notices for some of the option sets compared here: see
// ./quiet-deprecations, imported first.

type Impl = 'express' | 'ours';

interface Step {
  path: string;
  method?: string;
  headers?: Record<string, string>;
  /** Send this Cookie header instead of the jar's. */
  cookie?: string;
  /** Send no cookie on this step. */
  noCookie?: boolean;
}

interface Scenario {
  name: string;
  /** `null`: no secret option at all (express-session then uses cookie-parser's req.secret). */
  options: Omit<SessionOptions, 'secret' | 'store' | 'genid'> & { secret?: SessionOptions['secret'] | null };
  /** A layer in front of the session middleware in both apps (what a framework or cookie-parser sets). */
  before?: (req: IncomingMessage, res: ServerResponse, next: () => void) => void;
  /** Put something in front of each implementation's MemoryStore (both get the same wrapper). */
  wrapStore?: <S extends object>(store: S) => S;
  steps: Step[];
  /** Extra checks on our results, so that no scenario passes by both doing nothing. */
  check?: (steps: StepResult[]) => void;
}

interface StepResult {
  status: number;
  body: unknown;
  setCookie: string | null;
  expires: number | null;
  store: Record<string, unknown>;
}

interface StoreLike {
  all(cb: (err: unknown, sessions?: Record<string, StoredSession> | null) => void): void;
}

/** The handler behind both session middlewares: what it does depends on the last path segment. */
function routes(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://x');
  const action = url.pathname.split('/').pop();
  const send = (extra: Record<string, unknown> = {}): void => {
    const s = req.session;
    const body = {
      ...extra,
      id: req.sessionID ?? null,
      hasSession: Boolean(s),
      data: s ? JSON.parse(JSON.stringify({ ...s, cookie: undefined })) : null,
      cookie: s ? normalizeCookie(JSON.parse(JSON.stringify(s.cookie)) as Record<string, unknown>) : null,
    };
    const text = JSON.stringify(body);
    if (action === 'length') res.setHeader('Content-Length', Buffer.byteLength(text));
    if (!res.headersSent) res.setHeader('Content-Type', 'application/json');
    res.end(text);
  };
  const s = req.session;
  if (!s) return send();
  const fail = (err: unknown): void => send({ err: err instanceof Error ? err.message : err ? String(err) : null });
  switch (action) {
    case 'set':
      s.note = url.searchParams.get('v') ?? 'x';
      return send();
    case 'views':
      s.views = (s.views ?? 0) + 1;
      return send();
    case 'login':
      return void s.regenerate((err) => {
        if (req.session) req.session.user = 'alice';
        fail(err);
      });
    case 'logout':
      return void s.destroy(fail);
    case 'unset':
      (req as { session?: unknown }).session = null;
      return send();
    case 'save':
      s.note = 'saved';
      return void s.save(fail);
    case 'reload':
      return void s.reload(fail);
    case 'reloadsave':
      return void s.reload((err) => {
        if (err || !req.session) return fail(err);
        req.session.note = 'reloaded';
        req.session.save(fail);
      });
    case 'maxage':
      s.cookie.maxAge = 5000;
      return send();
    case 'touch':
      s.touch();
      return send();
    case 'resetMaxAge':
      s.resetMaxAge();
      return send();
    case 'length':
      s.views = (s.views ?? 0) + 1;
      return send();
    case 'write':
      s.views = (s.views ?? 0) + 1;
      res.write('part;');
      return send();
    case 'tojson':
      // Invisible to for…in, but JSON.stringify calls it: the session counts as modified.
      Object.defineProperty(s, 'toJSON', { value: () => ({ fromToJSON: true }), enumerable: false, configurable: true });
      return send();
    case 'replacecookie':
      // The application swaps the Cookie for a plain object.
      (s as { cookie: unknown }).cookie = { maxAge: 60_000 };
      s.views = (s.views ?? 0) + 1;
      return send();
    default:
      return send();
  }
}

function normalizeCookie(cookie: Record<string, unknown>): Record<string, unknown> {
  const out = { ...cookie };
  if (typeof out.expires === 'string') out.expires = 'date';
  if (typeof out.originalMaxAge === 'number') out.originalMaxAge = Math.round(out.originalMaxAge / 1000);
  return out;
}

function build(impl: Impl, scenario: Scenario): { app: ReturnType<typeof createApp>; store: StoreLike; close(): void } {
  let n = 0;
  const genid = (): string => `id${++n}`;
  const app = createApp();
  const { secret: given, ...rest } = scenario.options;
  const secret = given === null ? undefined : (given ?? 'keyboard cat');
  if (scenario.before) app.use(scenario.before);
  if (impl === 'express') {
    const store = new expressSession.MemoryStore();
    const opts = { ...rest, ...(secret === undefined ? {} : { secret }), store, genid } as expressSession.SessionOptions;
    app.use(expressSession({ ...opts, store: scenario.wrapStore ? scenario.wrapStore(store) : store }));
    app.use(routes);
    return { app, store: store as unknown as StoreLike, close: () => undefined };
  }
  const store = new MemoryStore();
  app.use(session({ ...rest, ...(secret === undefined ? {} : { secret }), store: scenario.wrapStore ? scenario.wrapStore(store) : store, genid }));
  app.use(routes);
  return { app, store, close: () => store.close() };
}

function dump(store: StoreLike): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    store.all((err, sessions) => {
      if (err) return reject(err);
      const out: Record<string, unknown> = {};
      for (const [sid, sess] of Object.entries(sessions ?? {})) {
        out[sid] = { ...sess, cookie: normalizeCookie(sess.cookie as Record<string, unknown>) };
      }
      resolve(out);
    });
  });
}

async function run(impl: Impl, scenario: Scenario): Promise<StepResult[]> {
  const { app, store, close } = build(impl, scenario);
  const server = await start(app);
  const name = scenario.options.name ?? 'connect.sid';
  const results: StepResult[] = [];
  let jar: string | undefined;
  try {
    for (const step of scenario.steps) {
      const headers: Record<string, string> = { ...step.headers };
      const cookie = step.cookie ?? (step.noCookie ? undefined : jar);
      if (cookie) headers.cookie = cookie;
      const r = await request(server.url + step.path, { method: step.method ?? 'GET', headers });
      const line = setCookieFor(r.headers['set-cookie'], name);
      if (line) jar = line.split(';')[0];
      const expires = line ? /Expires=([^;]+)/.exec(line)?.[1] : undefined;
      results.push({
        status: r.status,
        body: r.body.startsWith('{') || r.body.startsWith('part;') ? r.body : r.status,
        setCookie: line ? line.replace(/Expires=[^;]+/, 'Expires=<date>') : null,
        expires: expires ? Date.parse(expires) : null,
        store: await dump(store),
      });
    }
  } finally {
    await server.close();
    close();
  }
  return results;
}

const hasCookie = (r: StepResult): boolean => r.setCookie !== null;

const scenarios: Scenario[] = [
  {
    name: 'defaults (resave and saveUninitialized unset: both true)',
    options: {},
    steps: [{ path: '/' }, { path: '/' }, { path: '/set?v=a' }, { path: '/' }, { path: '/views' }, { path: '/views' }],
    check: (r) => expect(r.filter(hasCookie).length).toBe(1),
  },
  {
    name: 'resave false, saveUninitialized false',
    options: { resave: false, saveUninitialized: false },
    steps: [{ path: '/' }, { path: '/' }, { path: '/set?v=a' }, { path: '/' }, { path: '/set?v=a' }, { path: '/set?v=b' }],
    check: (r) => {
      expect(r[0]!.setCookie).toBeNull();
      expect(r[2]!.setCookie).not.toBeNull();
    },
  },
  {
    name: 'saveUninitialized false, resave true',
    options: { resave: true, saveUninitialized: false },
    steps: [{ path: '/' }, { path: '/views' }, { path: '/' }, { path: '/views' }],
  },
  {
    name: 'rolling',
    options: { resave: false, saveUninitialized: true, rolling: true, cookie: { maxAge: 60_000 } },
    steps: [{ path: '/' }, { path: '/' }, { path: '/views' }, { path: '/' }],
    check: (r) => expect(r.every(hasCookie)).toBe(true),
  },
  {
    name: 'cookie maxAge: re-sent when a session with an expiry is modified',
    options: { resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 } },
    steps: [{ path: '/views' }, { path: '/' }, { path: '/views' }, { path: '/maxage' }, { path: '/touch' }, { path: '/resetMaxAge' }],
    check: (r) => expect(r[0]!.setCookie).toMatch(/Expires=<date>/),
  },
  {
    name: 'cookie expires',
    options: { resave: false, saveUninitialized: true, cookie: { expires: new Date(Date.now() + 3_600_000) } },
    steps: [{ path: '/' }, { path: '/views' }],
  },
  {
    name: 'every cookie attribute',
    options: {
      resave: false,
      saveUninitialized: true,
      cookie: { domain: '127.0.0.1', path: '/', httpOnly: false, partitioned: true, priority: 'high', sameSite: 'strict', maxAge: 10_000 },
    },
    steps: [{ path: '/' }, { path: '/views' }],
    check: (r) => expect(r[0]!.setCookie).toMatch(/Domain=127\.0\.0\.1; Path=\/; Expires=<date>; Partitioned; Priority=High; SameSite=Strict$/),
  },
  {
    name: 'sameSite true',
    options: { resave: false, saveUninitialized: true, cookie: { sameSite: true } },
    steps: [{ path: '/' }],
    check: (r) => expect(r[0]!.setCookie).toMatch(/SameSite=Strict/),
  },
  {
    name: 'sameSite none with secure',
    options: { resave: false, saveUninitialized: true, proxy: true, cookie: { sameSite: 'none', secure: true } },
    steps: [{ path: '/', headers: { 'X-Forwarded-Proto': 'https' } }],
    check: (r) => expect(r[0]!.setCookie).toMatch(/Secure; SameSite=None/),
  },
  {
    name: "sameSite 'auto'",
    options: { resave: false, saveUninitialized: true, proxy: true, cookie: { sameSite: 'auto' } },
    steps: [{ path: '/', headers: { 'X-Forwarded-Proto': 'https' } }, { path: '/', noCookie: true }],
    check: (r) => expect([r[0]!.setCookie, r[1]!.setCookie]).toEqual([expect.stringMatching(/SameSite=None/), expect.stringMatching(/SameSite=Lax/)]),
  },
  {
    name: 'cookie path: requests outside it get no session',
    options: { resave: false, saveUninitialized: true, cookie: { path: '/app' } },
    steps: [{ path: '/other' }, { path: '/app/views' }, { path: '/app/views' }, { path: '/apple' }, { path: '/other/views' }],
    check: (r) => {
      expect(r[0]!.setCookie).toBeNull();
      expect(r[1]!.setCookie).toMatch(/Path=\/app/);
    },
  },
  {
    name: 'secure cookie over plain http is not sent',
    options: { resave: false, saveUninitialized: true, cookie: { secure: true } },
    steps: [{ path: '/views' }, { path: '/views' }],
    check: (r) => expect(r[0]!.setCookie).toBeNull(),
  },
  {
    name: "secure 'auto' with proxy true and X-Forwarded-Proto",
    options: { resave: false, saveUninitialized: true, proxy: true, cookie: { secure: 'auto' } },
    steps: [{ path: '/', headers: { 'X-Forwarded-Proto': 'https, http' } }, { path: '/views', noCookie: true }],
    check: (r) => {
      expect(r[0]!.setCookie).toMatch(/; Secure/);
      expect(r[1]!.setCookie).not.toMatch(/Secure/);
    },
  },
  {
    name: 'secure true with proxy true trusts X-Forwarded-Proto; proxy false ignores it',
    options: { resave: false, saveUninitialized: true, proxy: true, cookie: { secure: true } },
    steps: [{ path: '/', headers: { 'X-Forwarded-Proto': 'https' } }, { path: '/', headers: { 'X-Forwarded-Proto': 'http' }, noCookie: true }],
    check: (r) => expect(r.map(hasCookie)).toEqual([true, false]),
  },
  {
    name: 'proxy false',
    options: { resave: false, saveUninitialized: true, proxy: false, cookie: { secure: true } },
    steps: [{ path: '/', headers: { 'X-Forwarded-Proto': 'https' } }],
  },
  {
    name: 'custom name',
    options: { resave: false, saveUninitialized: true, name: 'sid' },
    steps: [{ path: '/views' }, { path: '/views' }],
    check: (r) => expect(r[0]!.setCookie).toMatch(/^sid=s%3Aid1\./),
  },
  {
    name: 'unset destroy',
    options: { resave: false, saveUninitialized: true, unset: 'destroy' },
    steps: [{ path: '/views' }, { path: '/unset' }, { path: '/' }],
  },
  {
    name: 'unset keep',
    options: { resave: false, saveUninitialized: true, unset: 'keep' },
    steps: [{ path: '/views' }, { path: '/unset' }, { path: '/' }],
  },
  {
    name: 'regenerate, destroy, save, reload',
    options: { resave: false, saveUninitialized: false },
    steps: [{ path: '/views' }, { path: '/login' }, { path: '/' }, { path: '/save' }, { path: '/reload' }, { path: '/logout' }, { path: '/' }],
  },
  {
    name: 'bad cookies: tampered, unsigned, wrong secret, garbage',
    options: { resave: false, saveUninitialized: false, secret: 'keyboard cat' },
    steps: [
      { path: '/views' },
      { path: '/views', cookie: `connect.sid=s%3A${encodeURIComponent(cookieSign('id1', 'keyboard cat')).replace('id1', 'id2')}` },
      { path: '/views', cookie: 'connect.sid=id1' },
      { path: '/views', cookie: `connect.sid=s%3A${encodeURIComponent(cookieSign('id1', 'other secret'))}` },
      { path: '/views', cookie: 'connect.sid=%E0%A4%A; other=1' },
      { path: '/views', cookie: `connect.sid=s%3A${encodeURIComponent(cookieSign('id1', 'keyboard cat'))}` },
    ],
    check: (r) => expect((r[5]!.body as string).includes('"views":2')).toBe(true),
  },
  {
    name: 'secret rotation: sign with the first, accept all',
    options: { resave: false, saveUninitialized: false, secret: ['new', 'old'] },
    steps: [
      { path: '/views' },
      { path: '/views', cookie: `connect.sid=s%3A${encodeURIComponent(cookieSign('id1', 'old'))}` },
      { path: '/views' },
    ],
    check: (r) => expect((r[1]!.body as string).includes('"views":2')).toBe(true),
  },
  {
    name: 'cookie maxAge then expires: the one given last wins',
    options: { resave: false, saveUninitialized: true, cookie: { maxAge: 60_000, expires: new Date(Date.now() + 7_200_000) } },
    steps: [{ path: '/' }],
    check: (r) => expect(r[0]!.expires! - Date.now()).toBeGreaterThan(3_600_000),
  },
  {
    name: 'cookie expires then maxAge: the one given last wins',
    options: { resave: false, saveUninitialized: true, cookie: { expires: new Date(Date.now() + 7_200_000), maxAge: 60_000 } },
    steps: [{ path: '/' }],
    check: (r) => expect(r[0]!.expires! - Date.now()).toBeLessThan(120_000),
  },
  {
    name: 'proxy unset follows req.secure (set by a framework in front)',
    options: { resave: false, saveUninitialized: true, cookie: { secure: true } },
    before: (req, _res, next) => {
      (req as { secure?: boolean }).secure = req.headers['x-test-secure'] === '1';
      next();
    },
    steps: [{ path: '/', headers: { 'X-Test-Secure': '1', 'X-Forwarded-Proto': 'https' } }, { path: '/', noCookie: true, headers: { 'X-Forwarded-Proto': 'https' } }],
    check: (r) => expect(r.map(hasCookie)).toEqual([true, false]),
  },
  {
    name: "no secret option: cookie-parser's req.secret signs and verifies; without it, an error",
    options: { resave: false, saveUninitialized: false, secret: null },
    before: (req, _res, next) => {
      if (!req.headers['x-no-secret']) (req as { secret?: string }).secret = 'from cookie-parser';
      next();
    },
    steps: [
      { path: '/views' },
      { path: '/views' },
      { path: '/views', headers: { 'X-No-Secret': '1' } },
      { path: '/views', cookie: `connect.sid=s%3A${encodeURIComponent(cookieSign('id1', 'keyboard cat'))}` },
    ],
    check: (r) => {
      expect(r[0]!.setCookie!.startsWith(`connect.sid=${encodeURIComponent(`s:${cookieSign('id1', 'from cookie-parser')}`)};`)).toBe(true);
      expect((r[1]!.body as string).includes('"views":2')).toBe(true);
      expect(r[2]!.status).toBe(500);
    },
  },
  {
    name: 'a toJSON that for…in cannot see still counts as a change',
    options: { resave: false, saveUninitialized: false },
    steps: [{ path: '/tojson' }, { path: '/' }],
    check: (r) => expect(r[0]!.setCookie).not.toBeNull(),
  },
  {
    name: 'stored data with a key a session cannot take (id) counts as modified, as express-session hashes what the store returned',
    options: { resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 } },
    wrapStore: <S extends object>(inner: S): S => {
      const wrapped = Object.create(inner) as S & { get(sid: string, cb: (err: unknown, s?: object | null) => void): void };
      const get = (inner as unknown as typeof wrapped).get.bind(inner);
      wrapped.get = (sid, cb) => get(sid, (err, sess) => cb(err, sess ? { ...sess, id: 'stale' } : sess));
      return wrapped;
    },
    steps: [{ path: '/views' }, { path: '/' }, { path: '/' }],
    check: (r) => expect(r.map(hasCookie)).toEqual([true, true, true]),
  },
  {
    name: 'a cookie replaced by a plain object',
    options: { resave: false, saveUninitialized: true, cookie: { maxAge: 10_000 } },
    steps: [{ path: '/replacecookie' }, { path: '/views' }, { path: '/replacecookie' }],
    check: (r) => expect(r[0]!.setCookie).toMatch(/^connect\.sid=s%3Aid1\.[^;]+$/),
  },
  {
    name: 'response written in parts and with Content-Length',
    options: { resave: false, saveUninitialized: false },
    steps: [{ path: '/write' }, { path: '/length' }, { path: '/write' }, { path: '/length', method: 'HEAD' }],
    check: (r) => {
      expect(r[2]!.body).toMatch(/^part;.*"views":3/);
      expect(r[1]!.body).toMatch(/"views":2/);
    },
  },
];

describe('parity with express-session', () => {
  test.each(scenarios.map((s) => [s.name, s] as const))('%s', async (_name, scenario) => {
    const theirs = await run('express', scenario);
    const ours = await run('ours', scenario);
    for (let i = 0; i < theirs.length; i++) {
      const a = theirs[i]!;
      const b = ours[i]!;
      const where = `${scenario.name}, step ${i} (${scenario.steps[i]!.path})`;
      expect({ where, status: b.status, body: b.body, setCookie: b.setCookie, store: b.store }).toEqual({
        where,
        status: a.status,
        body: a.body,
        setCookie: a.setCookie,
        store: a.store,
      });
      if (a.expires !== null) expect(Math.abs(a.expires - b.expires!)).toBeLessThanOrEqual(2000);
    }
    scenario.check?.(ours);
  });

  test('cookie function: called with the request', async () => {
    const scenario: Scenario = {
      name: 'cookie function',
      options: { resave: false, saveUninitialized: true, cookie: ((req: IncomingMessage) => ({ maxAge: req.url?.includes('long') ? 60_000 : 1000 })) as SessionOptions['cookie'] },
      steps: [{ path: '/long', noCookie: true }, { path: '/short', noCookie: true }],
    };
    const theirs = await run('express', scenario);
    const ours = await run('ours', scenario);
    expect(ours.map((r) => r.setCookie)).toEqual(theirs.map((r) => r.setCookie));
    expect(ours.map((r) => r.store)).toEqual(theirs.map((r) => r.store));
    expect(ours[0]!.expires! - ours[1]!.expires!).toBeGreaterThan(50_000);
  });

  test('a cookie issued by express-session is accepted by ours, and the other way round (one shared store)', async () => {
    const store = new expressSession.MemoryStore();
    const theirs = createApp();
    theirs.use(expressSession({ secret: 's', resave: false, saveUninitialized: false, store }));
    theirs.use(routes);
    const ours = createApp();
    ours.use(session({ secret: 's', resave: false, saveUninitialized: false, store }));
    ours.use(routes);
    const a = await start(theirs);
    const b = await start(ours);
    try {
      const login = await request(`${a.url}/login`);
      const cookie = setCookieFor(login.headers['set-cookie'])!.split(';')[0]!;
      const seen = JSON.parse((await request(`${b.url}/views`, { headers: { cookie } })).body) as { data: { user: string; views: number } };
      expect(seen.data).toEqual({ user: 'alice', views: 1 });
      const back = JSON.parse((await request(`${a.url}/views`, { headers: { cookie } })).body) as { data: { views: number } };
      expect(back.data.views).toBe(2);
      // Ours issues, theirs accepts.
      const mine = await request(`${b.url}/set?v=ours`);
      const cookie2 = setCookieFor(mine.headers['set-cookie'])!.split(';')[0]!;
      const theirView = JSON.parse((await request(`${a.url}/`, { headers: { cookie: cookie2 } })).body) as { data: { note: string } };
      expect(theirView.data.note).toBe('ours');
    } finally {
      await a.close();
      await b.close();
    }
  });
});

/**
 * A store for both implementations (over express-session's Store for theirs, ours for ours):
 * callbacks synchronous or deferred, and any operation made to fail.
 */
type Op = 'get' | 'set' | 'destroy' | 'touch';
interface SwitchableStore {
  map: Map<string, string>;
  sync: boolean;
  failing: Set<Op>;
}
function switchableStore(Base: new () => object): SwitchableStore & object {
  const store = new Base() as SwitchableStore & Record<string, unknown>;
  store.map = new Map();
  store.sync = false;
  store.failing = new Set();
  const reply = (op: Op, cb: ((err: unknown, value?: unknown) => void) | undefined, value?: unknown): void => {
    const err = store.failing.has(op) ? new Error(`${op} failed`) : null;
    const call = (): void => cb?.(err, value);
    if (store.sync) call();
    else setImmediate(call);
  };
  store.get = (sid: string, cb: (err: unknown, value?: unknown) => void) => {
    const raw = store.map.get(sid);
    reply('get', cb, raw === undefined ? undefined : JSON.parse(raw));
  };
  store.set = (sid: string, sess: unknown, cb?: (err: unknown) => void) => {
    if (!store.failing.has('set')) store.map.set(sid, JSON.stringify(sess));
    reply('set', cb);
  };
  store.destroy = (sid: string, cb?: (err: unknown) => void) => {
    if (!store.failing.has('destroy')) store.map.delete(sid);
    reply('destroy', cb);
  };
  store.touch = (_sid: string, _sess: unknown, cb?: (err: unknown) => void) => reply('touch', cb);
  return store;
}

describe('store operations as the response ends, side by side with express-session', () => {
  interface EndStep {
    path: string;
    method?: string;
    fail?: Op[];
  }
  const steps: EndStep[] = [
    { path: '/views' },
    { path: '/views', fail: ['set'] },
    { path: '/', fail: ['touch'] },
    { path: '/write', fail: ['set'] },
    { path: '/length', fail: ['set'] },
    { path: '/length', method: 'HEAD', fail: ['set'] },
    { path: '/length', method: 'HEAD' },
    { path: '/write' },
    { path: '/unset', fail: ['destroy'] },
    { path: '/unset' },
    { path: '/views' },
  ];

  async function runEnd(impl: Impl, sync: boolean): Promise<unknown[]> {
    const store = switchableStore(impl === 'express' ? (expressSession.Store as unknown as new () => object) : (Store as unknown as new () => object));
    store.sync = sync;
    let n = 0;
    const errors: string[] = [];
    const app = createApp();
    const options = { secret: 's', resave: false, saveUninitialized: false, unset: 'destroy' as const, genid: () => `id${++n}`, cookie: { maxAge: 60_000 } };
    app.use(impl === 'express' ? expressSession({ ...options, store: store as unknown as expressSession.Store }) : session({ ...options, store: store as unknown as SessionStoreLike }));
    app.use(routes);
    // The error layer hears of a failure after the response went out, as express-session reports it.
    app.use((err: unknown, _req: IncomingMessage, res: ServerResponse, _next: () => void) => {
      errors.push(err instanceof Error ? err.message : String(err));
      if (!res.headersSent) res.end('error layer');
    });
    const server = await start(app);
    const out: unknown[] = [];
    let jar: string | undefined;
    try {
      for (const step of steps) {
        store.failing = new Set(step.fail ?? []);
        const before = errors.length;
        const r = await request(server.url + step.path, { method: step.method ?? 'GET', headers: jar ? { cookie: jar } : {} });
        const line = setCookieFor(r.headers['set-cookie']);
        if (line) jar = line.split(';')[0];
        // The error (if any) is reported right after the response: wait for it, bounded.
        for (let i = 0; i < 50 && errors.length === before && (step.fail?.length ?? 0) > 0; i++) await delay(5);
        await delay(5);
        out.push({
          step: `${step.method ?? 'GET'} ${step.path} failing ${step.fail?.join() ?? 'nothing'}`,
          status: r.status,
          framing: r.headers['transfer-encoding'] ?? (r.headers['content-length'] === undefined ? 'none' : 'length'),
          body: r.body,
          setCookie: line ? line.replace(/Expires=[^;]+/, 'Expires=<date>') : null,
          errors: errors.slice(before),
          stored: [...store.map.keys()],
        });
      }
      // Still serving.
      expect((await request(`${server.url}/`)).status).toBe(200);
    } finally {
      await server.close();
    }
    return out;
  }

  test.each([
    ['asynchronous store', false],
    ['synchronous store (callbacks called at once)', true],
  ])('%s: same responses, same errors reported, same store', async (_name, sync) => {
    const theirs = await runEnd('express', sync);
    const ours = await runEnd('ours', sync);
    // Framing included: while the store works the head is made at once, as there, so a body given
    // to end() goes out chunked in both.
    expect(ours).toEqual(theirs);
    // Not a vacuous comparison: the failures were heard and the responses still went out whole.
    expect(ours[1]).toMatchObject({ status: 200, errors: ['set failed'], body: expect.stringContaining('"views":2') });
    expect(ours[2]).toMatchObject({ status: 200, errors: ['touch failed'] });
    expect(ours[3]).toMatchObject({ errors: ['set failed'], body: expect.stringMatching(/^part;\{/) });
    expect(ours[4]).toMatchObject({ errors: ['set failed'], framing: 'length', body: expect.any(String) });
    if (!sync) expect(ours[1]).toMatchObject({ framing: 'chunked' });
    expect((ours[4] as unknown as { body: string }).body.length).toBeGreaterThan(0);
    expect(ours[5]).toMatchObject({ body: '', errors: ['set failed'] });
    expect(ours[8]).toMatchObject({ errors: ['destroy failed'], stored: ['id1'] });
    expect(ours[9]).toMatchObject({ errors: [], stored: [] });
  });
});

describe('store writes per request, side by side with express-session', () => {
  type Op = 'get' | 'set' | 'touch' | 'destroy';
  const OPS: Op[] = ['get', 'set', 'touch', 'destroy'];
  // Saves made by hand and then the end of the response, reloads, values set to what they were.
  const paths = ['/views', '/', '/save', '/', '/reloadsave', '/set?v=a', '/set?v=a', '/set?v=b', '/touch', '/maxage', '/'];

  /** Each implementation's own MemoryStore, every operation counted on the instance (as the stock suite counts). */
  async function writes(impl: Impl, options: Omit<SessionOptions, 'secret' | 'store'>): Promise<Array<Record<Op, number>>> {
    const store = (impl === 'express' ? new expressSession.MemoryStore() : new MemoryStore()) as unknown as Record<Op, (...args: unknown[]) => unknown>;
    const counts: Record<Op, number> = { get: 0, set: 0, touch: 0, destroy: 0 };
    for (const op of OPS) {
      const original = store[op]!;
      store[op] = function counted(this: unknown, ...args: unknown[]) {
        counts[op]++;
        return original.apply(this, args);
      };
    }
    const app = createApp();
    const sessionOptions = { ...options, secret: 'keyboard cat', store: store as never };
    app.use(impl === 'express' ? expressSession(sessionOptions as expressSession.SessionOptions) : session(sessionOptions));
    app.use(routes);
    const server = await start(app);
    const out: Array<Record<Op, number>> = [];
    let jar: string | undefined;
    try {
      for (const path of paths) {
        const before = { ...counts };
        const r = await request(server.url + path, { headers: jar ? { cookie: jar } : {} });
        expect(r.status).toBe(200);
        const line = setCookieFor(r.headers['set-cookie']);
        if (line) jar = line.split(';')[0];
        out.push({ get: counts.get - before.get, set: counts.set - before.set, touch: counts.touch - before.touch, destroy: counts.destroy - before.destroy });
      }
    } finally {
      await server.close();
      if (store instanceof MemoryStore) store.close();
    }
    return out;
  }

  test.each([
    ['resave false, saveUninitialized false', { resave: false, saveUninitialized: false }],
    ['resave false, saveUninitialized true', { resave: false, saveUninitialized: true }],
    ['resave true, saveUninitialized false', { resave: true, saveUninitialized: false }],
    ['resave false, cookie maxAge', { resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 } }],
  ] as const)('%s: the same gets, sets, touches and destroys on every request', async (_name, options) => {
    const theirs = await writes('express', options);
    const ours = await writes('ours', options);
    expect(ours.map((c, i) => ({ path: paths[i], ...c }))).toEqual(theirs.map((c, i) => ({ path: paths[i], ...c })));
    if (!options.resave) {
      // Not vacuous: save() then end() writes once, reload() + save() once, an unchanged value never.
      expect(ours[2]!.set).toBe(1);
      expect(ours[4]!.set).toBe(1);
      expect(ours[6]!.set).toBe(0);
      expect(ours[7]!.set).toBe(1);
    }
  });
});

describe('the end of a response, side by side with express-session', () => {
  interface Seen {
    status: number;
    body: string;
    setCookie: boolean;
    framing: string;
    errors: string[];
    handler: unknown;
  }

  /** One request through each implementation: what the client got, what the handler saw, what reached next(err). */
  async function once(
    impl: Impl,
    options: Omit<SessionOptions, 'store'>,
    handler: (req: IncomingMessage, res: ServerResponse, seen: Record<string, unknown>) => void,
  ): Promise<Seen> {
    const app = createApp();
    const errors: string[] = [];
    const seen: Record<string, unknown> = {};
    app.use(impl === 'express' ? expressSession(options as expressSession.SessionOptions) : session(options));
    app.use((req: IncomingMessage, res: ServerResponse) => handler(req, res, seen));
    app.use((err: unknown, _req: IncomingMessage, res: ServerResponse, _next: () => void) => {
      errors.push(err instanceof Error ? err.message : String(err));
      if (!res.headersSent) {
        res.statusCode = 500;
        res.end('error layer');
      }
    });
    const server = await start(app);
    try {
      const r = await request(server.url);
      // An error reported after the response went out: wait for it (bounded).
      for (let i = 0; i < 40 && errors.length === 0 && r.status === 200 && seen.expectError === true; i++) await delay(5);
      await delay(10);
      return {
        status: r.status,
        body: r.body,
        setCookie: r.headers['set-cookie'] !== undefined,
        framing: r.headers['transfer-encoding'] ?? (r.headers['content-length'] === undefined ? 'none' : 'length'),
        errors,
        handler: { ...seen, expectError: undefined },
      };
    } finally {
      await server.close();
    }
  }

  const base = { secret: 'keyboard cat', resave: false };

  test.each([
    ['a save at the end (new session)', { ...base, saveUninitialized: true }],
    ['no store operation', { ...base, saveUninitialized: false }],
  ])('res.end() twice, %s: the second returns false and writes nothing; a header set between throws the same error', async (_name, options) => {
    const endTwice = (_req: IncomingMessage, res: ServerResponse, seen: Record<string, unknown>): void => {
      res.setHeader('Content-Type', 'text/plain');
      res.end('Hello, world!');
      try {
        res.setHeader('Content-Length', '3');
        seen.setHeader = 'allowed';
      } catch (err) {
        seen.setHeader = (err as { code?: string }).code;
      }
      seen.second = res.end('foo');
    };
    const theirs = await once('express', options, endTwice);
    const ours = await once('ours', options, endTwice);
    expect(ours).toEqual(theirs);
    expect(ours).toMatchObject({ status: 200, body: 'Hello, world!', handler: { second: false, setHeader: 'ERR_HTTP_HEADERS_SENT' } });
  });

  test('an invalid cookie.expires set during a request: the response goes out without the cookie and next(err) hears why', async () => {
    const invalid = (req: IncomingMessage, res: ServerResponse, seen: Record<string, unknown>): void => {
      seen.expectError = true;
      req.session!.cookie.expires = new Date(Number.NaN);
      req.session!.note = 'x';
      res.end('ok');
    };
    const options = { ...base, saveUninitialized: false };
    const theirs = await once('express', options, invalid);
    const ours = await once('ours', options, invalid);
    expect(ours).toEqual(theirs);
    expect(ours).toMatchObject({ status: 200, body: 'ok', setCookie: false, errors: ['option expires is invalid'] });
  });

  test('a Buffer secret, and an array with Buffers: cookies are interchangeable both ways', async () => {
    for (const secret of [Buffer.from('a buffer secret'), [Buffer.from('first'), 'second'], ['first', Buffer.from('second')]] as const) {
      const store = new expressSession.MemoryStore();
      const theirs = createApp();
      theirs.use(expressSession({ secret: secret as unknown as string, resave: false, saveUninitialized: false, store }));
      theirs.use(routes);
      const ours = createApp();
      ours.use(session({ secret, resave: false, saveUninitialized: false, store: store as unknown as SessionStoreLike }));
      ours.use(routes);
      const a = await start(theirs);
      const b = await start(ours);
      try {
        const fromTheirs = setCookieFor((await request(`${a.url}/views`)).headers['set-cookie'])!.split(';')[0]!;
        const fromOurs = setCookieFor((await request(`${b.url}/views`)).headers['set-cookie'])!.split(';')[0]!;
        expect(fromOurs).not.toBe(fromTheirs);
        // Each accepts the other's cookie: the session goes on (views 2), no new cookie.
        const seenByOurs = await request(`${b.url}/views`, { headers: { cookie: fromTheirs } });
        const seenByTheirs = await request(`${a.url}/views`, { headers: { cookie: fromOurs } });
        expect(JSON.parse(seenByOurs.body)).toMatchObject({ data: { views: 2 } });
        expect(JSON.parse(seenByTheirs.body)).toMatchObject({ data: { views: 2 } });
      } finally {
        await a.close();
        await b.close();
      }
    }
  });

  test('the deprecated key option names the cookie, as there', async () => {
    const theirs = await run('express', { name: 'key option', options: { key: 'sessid', resave: false, saveUninitialized: true } as Scenario['options'], steps: [{ path: '/views' }, { path: '/views' }] });
    const ours = await run('ours', { name: 'key option', options: { key: 'sessid', resave: false, saveUninitialized: true } as Scenario['options'], steps: [{ path: '/views' }, { path: '/views' }] });
    expect(ours.map((r) => [r.body, r.store])).toEqual(theirs.map((r) => [r.body, r.store]));
    expect(ours.map((r) => r.status)).toEqual([200, 200]);
  });
});
