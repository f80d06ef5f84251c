/**
 * A session that cannot be judged at the end of a response (its data cannot be serialised — a
 * BigInt — so neither the change check nor the save can run): the error reaches the response,
 * later end() calls are not swallowed, and every kind of upgrade is answered or closed.
 * (express-session throws from res.end() and then drops every later end(): the response never
 * goes out. See "Differences from express-session" in the README.)
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import createDebug from 'debug';
import { format } from 'node:util';
import { createApp } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade, type NextFunction } from '@upgradeware/upgrade-response';
import { session, MemoryStore, type SessionOptions } from '@upgradeware/session';
import { delay, rawRequest, request, start, until, wsHandshake, wsOpen, type TestServer } from '../../../test-support';
import { SilentStore, cookiePairs, once, wsEndpoint } from './helpers';

declare module '@upgradeware/session' {
  interface SessionData {
    big: bigint;
  }
}

interface Harness {
  server: TestServer;
  errors: string[];
  close(): Promise<void>;
}

async function harness(options: Partial<SessionOptions> = {}): Promise<Harness> {
  const store = new MemoryStore({ checkPeriod: 0 });
  const app = createApp({ upgradeTimeout: 2000 });
  app.use(session({ secret: 's', resave: false, saveUninitialized: false, store, ...options }));
  // Puts a value no JSON can hold into the session when asked (?big).
  app.use(
    supportsUpgrade((req: IncomingMessage, _res: ServerResponse, next: NextFunction) => {
      if (req.url?.includes('big')) req.session!.big = 10n;
      next();
    }),
  );
  app.use('/page', (_req: IncomingMessage, res: ServerResponse) => {
    res.end('page');
  });
  app.use('/views', (req: IncomingMessage, res: ServerResponse) => {
    req.session!.views = (req.session!.views ?? 0) + 1;
    res.end(String(req.session!.views));
  });
  app.use('/partial', (_req: IncomingMessage, res: ServerResponse) => {
    res.write('started;');
    res.end('ended');
  });
  app.use(
    '/refuse',
    supportsUpgrade((_req: IncomingMessage, res: ServerResponse) => {
      res.statusCode = 401;
      res.end('login first');
    }),
  );
  app.use(
    '/switch',
    supportsUpgrade((_req: IncomingMessage, res: ServerResponse, next: NextFunction) => {
      if (!isUpgradeResponse(res)) return next();
      res.switchProtocols((socket: Duplex) => socket.end('switched'));
    }),
  );
  const ws = wsEndpoint((socket) => socket.send('open'));
  app.use('/ws', ws.handle);
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
    errors,
    close: async () => {
      ws.close();
      await server.close();
      store.close();
    },
  };
}

const BIGINT = /BigInt/;

describe('a session that cannot be serialised', () => {
  test('ordinary request: the error is the response (500), the server keeps serving', async () => {
    const h = await harness();
    try {
      const r = await request(`${h.server.url}/page?big`);
      expect(r.status).toBe(500);
      expect(h.errors).toEqual([expect.stringMatching(BIGINT)]);
      expect(r.headers['set-cookie']).toBeUndefined();
      const ok = await request(`${h.server.url}/views`);
      expect([ok.status, ok.body]).toEqual([200, '1']);
    } finally {
      await h.close();
    }
  });

  test('ordinary request whose body has started: it ends as written, next(err) hears why', async () => {
    const h = await harness();
    try {
      const r = await request(`${h.server.url}/partial?big`);
      expect([r.status, r.body]).toEqual([200, 'started;ended']);
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(h.errors).toEqual([expect.stringMatching(BIGINT)]);
    } finally {
      await h.close();
    }
  });

  test('a refused upgrade is answered (the error, 500) and closed, well before the time limit', async () => {
    const h = await harness();
    try {
      const started = Date.now();
      const r = await rawRequest(h.server.port, wsHandshake('/refuse?big'));
      expect(r.status).toBe(500);
      expect(r.closed).toBe(true);
      expect(Date.now() - started).toBeLessThan(1500);
      expect(h.errors).toEqual([expect.stringMatching(BIGINT)]);
      // Not poisoned for the next one: an ordinary refusal goes out as usual.
      const next = await rawRequest(h.server.port, wsHandshake('/refuse'));
      expect([next.status, next.body, next.closed]).toEqual([401, 'login first', true]);
    } finally {
      await h.close();
    }
  });

  test('switchProtocols: no 101 over a session that could not be saved; the connection is closed', async () => {
    const h = await harness();
    try {
      const r = await rawRequest(h.server.port, wsHandshake('/switch?big'));
      expect(r.closed).toBe(true);
      expect(r.raw).not.toMatch(/101/);
      expect(h.errors).toEqual([expect.stringMatching(BIGINT)]);
    } finally {
      await h.close();
    }
  });

  test("ws's own 101: the WebSocket is closed with 1011", async () => {
    const h = await harness();
    try {
      const { ws } = await wsOpen(`${h.server.wsUrl}/ws?big`);
      const [code] = (await once(ws, 'close')) as [number];
      expect(code).toBe(1011);
      expect(h.errors).toEqual([expect.stringMatching(BIGINT)]);
    } finally {
      await h.close();
    }
  });
});

describe('options', () => {
  const base = { secret: 's', resave: false, saveUninitialized: false };

  test.each([
    ['secrt', /^@upgradeware\/session: unknown option secrt \(did you mean secret\?\)$/],
    ['maxAge', /^@upgradeware\/session: unknown option maxAge$/],
    ['saveUnitialized', /unknown option saveUnitialized \(did you mean saveUninitialized\?\)/],
  ])('unknown option %s: a TypeError naming the package and the option', (key, message) => {
    expect(() => session({ ...base, [key]: true } as SessionOptions)).toThrow(TypeError);
    expect(() => session({ ...base, [key]: true } as SessionOptions)).toThrow(message);
  });

  test('every option express-session reads is accepted', () => {
    const all: Required<SessionOptions> = {
      cookie: {},
      genid: () => 'x',
      key: 'sid',
      name: 'sid',
      proxy: false,
      resave: false,
      rolling: false,
      saveUninitialized: false,
      secret: 's',
      store: new MemoryStore({ checkPeriod: 0 }),
      unset: 'keep',
    };
    const quiet = process.noDeprecation;
    process.noDeprecation = true; // `key` is announced (deprecation.test.ts)
    try {
      expect(typeof session(all)).toBe('function');
    } finally {
      process.noDeprecation = quiet;
    }
  });

  test('secrets: a Buffer or an array with Buffers is taken; an empty one is not', () => {
    expect(() => session({ ...base, secret: Buffer.from('k') })).not.toThrow();
    expect(() => session({ ...base, secret: [Buffer.from('k'), 'old'] })).not.toThrow();
    expect(() => session({ ...base, secret: Buffer.alloc(0) })).toThrow(/option secret must be a non-empty string or Buffer/);
    expect(() => session({ ...base, secret: ['k', Buffer.alloc(0)] })).toThrow(/option secret must be/);
  });

  test('the middleware is named "session", as express-session names it', () => {
    expect(session(base).name).toBe('session');
  });
});

describe('debug output', () => {
  test('lines name the request and never print a whole session id', async () => {
    const lines: string[] = [];
    const log = createDebug.log;
    const enabled = createDebug.disable();
    createDebug.enable('upgradeware:session');
    createDebug.log = (...args: unknown[]) => {
      lines.push(format(...(args as [unknown, ...unknown[]])));
    };
    const h = await harness();
    try {
      const first = await request(`${h.server.url}/views`);
      const cookie = cookiePairs(first.headers['set-cookie'])[0]!;
      const id = decodeURIComponent(cookie.split('=')[1]!).slice(2).split('.')[0]!;
      await request(`${h.server.url}/views?again`, { headers: { cookie } });
      const ours = lines.filter((l) => l.includes('upgradeware:session'));
      expect(ours.some((l) => l.includes('GET /views?again') && l.includes(`loading session ${id.slice(0, 6)}`))).toBe(true);
      expect(ours.some((l) => l.includes('GET /views') && l.includes('new session'))).toBe(true);
      expect(ours.filter((l) => l.includes(id))).toEqual([]);
    } finally {
      createDebug.log = log;
      createDebug.disable();
      if (enabled) createDebug.enable(enabled);
      await h.close();
    }
  });
});

describe('return values of end()', () => {
  test('the first end() returns the response, as Node\'s does, also while the store works; a repeat returns false', async () => {
    const seen: unknown[] = [];
    const app = createApp();
    app.use(session({ secret: 's', resave: false, saveUninitialized: true, store: new MemoryStore({ checkPeriod: 0 }) }));
    app.use((_req: IncomingMessage, res: ServerResponse) => {
      seen.push(res.end('x') === res, res.end('y'));
    });
    const server = await start(app);
    try {
      const r = await request(server.url);
      expect([r.status, r.body]).toEqual([200, 'x']);
      expect(r.headers['set-cookie']).toBeDefined();
      expect(seen).toEqual([true, false]);
    } finally {
      await server.close();
    }
  });
});

describe('the connection closes while the store saves', () => {
  test("after ws's 101: the response still ends ('finish', 'close'), and a late answer does nothing", async () => {
    const store = new SilentStore();
    store.hangGet = false;
    const held: Array<() => void> = [];
    // set() holds its callback until the test lets it go.
    store.set = (_sid, _session, cb) => {
      if (cb) held.push(cb);
    };
    const events: string[] = [];
    const app = createApp({ upgradeTimeout: 0 });
    app.use(
      supportsUpgrade((_req: IncomingMessage, res: ServerResponse, next: NextFunction) => {
        res.on('finish', () => events.push(`finish ${res.statusCode}`));
        res.on('close', () => events.push('close'));
        next();
      }),
    );
    app.use(session({ secret: 's', resave: false, saveUninitialized: true, store }));
    const endpoint = wsEndpoint(() => undefined);
    app.use(endpoint.handle);
    const errors: unknown[] = [];
    app.use(supportsUpgrade((err: unknown, _req: IncomingMessage, _res: ServerResponse, next: NextFunction) => {
      errors.push(err);
      next(err);
    }));
    const server = await start(app);
    try {
      const { ws } = await wsOpen(server.wsUrl);
      await until(() => held.length === 1);
      expect(events).toEqual([]);
      ws.terminate();
      await until(() => events.length === 2);
      expect(events).toEqual(['finish 101', 'close']);
      held[0]!();
      await delay(20);
      expect(events).toEqual(['finish 101', 'close']);
      expect(errors).toEqual([]);
    } finally {
      endpoint.close();
      await server.close();
    }
  });
});

describe('README differences, checked', () => {
  test("regenerate() makes the new session with the request's cookie options: the cookie function runs once per request", async () => {
    let calls = 0;
    const app = createApp();
    const store = new MemoryStore({ checkPeriod: 0 });
    app.use(
      session({
        secret: 's',
        resave: false,
        saveUninitialized: false,
        store,
        cookie: () => {
          calls++;
          return { maxAge: 60_000, sameSite: 'strict' };
        },
      }),
    );
    app.use((req: IncomingMessage, res: ServerResponse) => {
      req.session!.regenerate((err) => {
        req.session!.views = 1;
        res.end(err ? 'error' : String(req.session!.cookie.originalMaxAge));
      });
    });
    const server = await start(app);
    try {
      const r = await request(server.url);
      expect(r.body).toBe('60000');
      expect(r.headers['set-cookie']?.[0]).toMatch(/; Expires=.*; SameSite=Strict$/);
      expect(calls).toBe(1);
    } finally {
      await server.close();
      store.close();
    }
  });

  test('nothing is written to the console for a MemoryStore under NODE_ENV=production', () => {
    const env = process.env.NODE_ENV;
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    const log = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    const error = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    process.env.NODE_ENV = 'production';
    try {
      const mw = session({ secret: 's', resave: false, saveUninitialized: false });
      expect(typeof mw).toBe('function');
      expect([warn.mock.calls, log.mock.calls, error.mock.calls]).toEqual([[], [], []]);
    } finally {
      process.env.NODE_ENV = env;
      warn.mockRestore();
      log.mockRestore();
      error.mockRestore();
    }
  });
});
