/**
 * Parity with basic-auth-connect on ordinary requests: the stock middleware and ours run in the
 * same kind of Connect app, on the same raw requests, and what the client sees is compared.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import connect from 'connect';
import { basicAuth } from '@upgradeware/basic-auth';
import { rawRequest, start, until, type RawResponse, type TestServer } from '../../../test-support';

type Handle = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const stockBasicAuth = require('basic-auth-connect') as (...args: unknown[]) => Handle;

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

/** A Connect app: the guard, then an endpoint that shows who got in, then an error reporter. */
function appWith(guard: Handle, preset?: string) {
  const app = connect();
  if (preset !== undefined) {
    app.use((req: IncomingMessage, _res: ServerResponse, next: () => void) => {
      req.user = preset;
      next();
    });
  }
  app.use(guard);
  app.use((req: IncomingMessage, res: ServerResponse) => {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ user: req.user, remoteUser: req.remoteUser }));
  });
  app.use((err: { status?: number; message?: string }, _req: IncomingMessage, res: ServerResponse, _next: unknown) => {
    res.statusCode = err.status ?? 500;
    res.end(`error ${err.status} ${err.message}`);
  });
  return app;
}

function get(port: number, authorization?: string, header = 'Authorization'): Promise<RawResponse> {
  const auth = authorization === undefined ? '' : `${header}: ${authorization}\r\n`;
  return rawRequest(port, `GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${auth}\r\n`);
}

/** What is compared: status, the challenge, the body. */
function seen(r: RawResponse) {
  return { status: r.status, challenge: r.headers['www-authenticate'], body: r.body };
}

interface Pair {
  stock: TestServer;
  ours: TestServer;
}

async function pair(stock: Handle, ours: Handle, preset?: string): Promise<Pair> {
  return { stock: await start(appWith(stock, preset)), ours: await start(appWith(ours, preset)) };
}

async function compare(p: Pair, authorization: string | undefined) {
  const [a, b] = [await get(p.stock.port, authorization), await get(p.ours.port, authorization)];
  expect(seen(b)).toEqual(seen(a));
  return seen(b);
}

describe('basicAuth(user, pass) against basic-auth-connect', () => {
  let p: Pair;
  beforeAll(async () => {
    p = await pair(stockBasicAuth('tj', 'wahoo'), basicAuth('tj', 'wahoo'));
  });
  afterAll(async () => {
    await p.stock.close();
    await p.ours.close();
  });

  const cases: Array<[string, string | undefined, number]> = [
    ['no header', undefined, 401],
    ['an empty header', '', 401],
    ['good credentials', `Basic ${b64('tj:wahoo')}`, 200],
    ['a wrong password', `Basic ${b64('tj:nope')}`, 401],
    ['a wrong name', `Basic ${b64('tk:wahoo')}`, 401],
    ['a password prefix', `Basic ${b64('tj:wah')}`, 401],
    ['a longer password', `Basic ${b64('tj:wahoo!')}`, 401],
    ['empty name and password', `Basic ${b64(':')}`, 401],
    ['another scheme', 'Bearer abc.def', 400],
    ['the scheme alone', 'Basic', 400],
    ['credentials without a colon', `Basic ${b64('tjwahoo')}`, 400],
    ['malformed base64', 'Basic !!!!', 400],
    ['three words', `Basic ${b64('tj:wahoo')} extra`, 400],
  ];
  test.each(cases)('%s', async (_name, authorization, status) => {
    const r = await compare(p, authorization);
    expect(r.status).toBe(status);
    if (status === 401) {
      expect(r.challenge).toEqual(['Basic realm="Authorization Required"']);
      expect(r.body).toBe('Unauthorized');
    }
    if (status === 400) expect(r.body).toBe('error 400 Bad Request');
    if (status === 200) expect(JSON.parse(r.body)).toEqual({ user: 'tj', remoteUser: 'tj' });
  });

  test('a realm as third argument', async () => {
    const q = await pair(stockBasicAuth('tj', 'wahoo', 'Admin area'), basicAuth('tj', 'wahoo', 'Admin area'));
    try {
      const r = await compare(q, undefined);
      expect(r.challenge).toEqual(['Basic realm="Admin area"']);
      expect((await compare(q, `Basic ${b64('tj:wahoo')}`)).status).toBe(200);
    } finally {
      await q.stock.close();
      await q.ours.close();
    }
  });

  test('an empty realm means the default', async () => {
    const q = await pair(stockBasicAuth('tj', 'wahoo', ''), basicAuth('tj', 'wahoo', ''));
    try {
      expect((await compare(q, undefined)).challenge).toEqual(['Basic realm="Authorization Required"']);
    } finally {
      await q.stock.close();
      await q.ours.close();
    }
  });
});

describe('basicAuth(fn) against basic-auth-connect', () => {
  const check = (user: string, pass: string) => user === 'tj' && pass === 'pa:ss w\u00f6rd';

  test('a synchronous check, a realm, a colon in the password, UTF-8', async () => {
    const p = await pair(stockBasicAuth(check, 'Zone'), basicAuth(check, 'Zone'));
    try {
      const ok = await compare(p, `Basic ${b64('tj:pa:ss w\u00f6rd')}`);
      expect(ok.status).toBe(200);
      expect(JSON.parse(ok.body)).toEqual({ user: 'tj', remoteUser: 'tj' });
      const no = await compare(p, `Basic ${b64('tj:pa:ss')}`);
      expect(no).toEqual({ status: 401, challenge: ['Basic realm="Zone"'], body: 'Unauthorized' });
    } finally {
      await p.stock.close();
      await p.ours.close();
    }
  });

  test('an asynchronous check sets req.user to what it gives', async () => {
    const asyncCheck = (user: string, pass: string, done: (err: unknown, user?: unknown) => void) => {
      setImmediate(() => done(null, pass === 'secret' ? { id: 7, name: user } : false));
    };
    const p = await pair(stockBasicAuth(asyncCheck), basicAuth(asyncCheck));
    try {
      const ok = await compare(p, `Basic ${b64('ann:secret')}`);
      expect(JSON.parse(ok.body)).toEqual({ user: { id: 7, name: 'ann' }, remoteUser: { id: 7, name: 'ann' } });
      expect((await compare(p, `Basic ${b64('ann:wrong')}`)).status).toBe(401);
      expect((await compare(p, undefined)).status).toBe(401);
      expect((await compare(p, 'Basic ####')).status).toBe(400);
    } finally {
      await p.stock.close();
      await p.ours.close();
    }
  });

  test('a request with req.user already set passes without credentials', async () => {
    const p = await pair(stockBasicAuth('tj', 'wahoo'), basicAuth('tj', 'wahoo'), 'someone');
    try {
      const r = await compare(p, undefined);
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toEqual({ user: 'someone' });
      expect((await compare(p, 'Bearer x')).status).toBe(200);
    } finally {
      await p.stock.close();
      await p.ours.close();
    }
  });
});

describe('documented differences from basic-auth-connect', () => {
  test('the scheme is case-insensitive and may be followed by several spaces (RFC 7617)', async () => {
    const p = await pair(stockBasicAuth('tj', 'wahoo'), basicAuth('tj', 'wahoo'));
    try {
      for (const header of [`basic ${b64('tj:wahoo')}`, `BASIC  ${b64('tj:wahoo')}`]) {
        expect((await get(p.stock.port, header)).status).toBe(400);
        const ours = await get(p.ours.port, header);
        expect(ours.status).toBe(200);
        expect(JSON.parse(ours.body)).toEqual({ user: 'tj', remoteUser: 'tj' });
      }
    } finally {
      await p.stock.close();
      await p.ours.close();
    }
  });

  test('an error from the asynchronous check goes to next(err) instead of a 401', async () => {
    const failing = (_u: string, _p: string, done: (err: unknown) => void) => {
      done(Object.assign(new Error('directory down'), { status: 503 }));
    };
    const p = await pair(stockBasicAuth(failing), basicAuth(failing));
    try {
      const auth = `Basic ${b64('tj:wahoo')}`;
      expect((await get(p.stock.port, auth)).status).toBe(401);
      const ours = await get(p.ours.port, auth);
      expect(ours.status).toBe(503);
      expect(ours.body).toBe('error 503 directory down');
      expect(ours.headers['www-authenticate']).toBeUndefined();
    } finally {
      await p.stock.close();
      await p.ours.close();
    }
  });

  test('a check that returns a promise is awaited (the stock package lets any promise in)', async () => {
    const check = async (user: string, pass: string) => user === 'tj' && pass === 'wahoo';
    const p = await pair(stockBasicAuth(check), basicAuth(check));
    try {
      const wrong = `Basic ${b64('tj:nope')}`;
      expect((await get(p.stock.port, wrong)).status).toBe(200);
      expect((await get(p.ours.port, wrong)).status).toBe(401);
      expect((await get(p.ours.port, `Basic ${b64('tj:wahoo')}`)).status).toBe(200);
    } finally {
      await p.stock.close();
      await p.ours.close();
    }
  });

  test('a password holding a line break is a malformed header (400); the stock package checks it', async () => {
    const check = (user: string, pass: string) => user === 'tj' && pass === 'a\nb';
    const p = await pair(stockBasicAuth(check), basicAuth(check));
    try {
      for (const text of ['tj:a\nb', 'tj:a\rb', 'tj:a\u2028b']) {
        const ours = await get(p.ours.port, `Basic ${b64(text)}`);
        expect(ours.status).toBe(400);
        expect(ours.body).toBe('error 400 Bad Request');
      }
      expect((await get(p.stock.port, `Basic ${b64('tj:a\nb')}`)).status).toBe(200);
      expect((await get(p.stock.port, `Basic ${b64('tj:a\rb')}`)).status).toBe(401);
      // A line break in the name is not refused by the parser: it is checked, and refused here.
      expect((await get(p.ours.port, `Basic ${b64('t\nj:a')}`)).status).toBe(401);
    } finally {
      await p.stock.close();
      await p.ours.close();
    }
  });

  test('a realm with quotes or backslashes is escaped as a quoted-string', async () => {
    const s = await start(appWith(basicAuth('a', 'b', 'say "hi" \\o/')));
    try {
      const r = await get(s.port);
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toEqual(['Basic realm="say \\"hi\\" \\\\o/"']);
    } finally {
      await s.close();
    }
  });
});

describe('fixed credentials: one HMAC of name:password accepts exactly one pair', () => {
  // The header is split at its FIRST ':', so a received name never holds one, and the factory
  // refuses a configured name holding one: `${name}:${password}` then stands for one pair only.
  // Every case is compared with the stock package, which compares name and password separately.
  const configs: Array<[string, string]> = [
    ['a', 'b:c'],
    ['a', ':b'],
    ['a', 'b:'],
    ['', 'a:b'],
    ['a', ''],
  ];
  const attempts = ['a:b:c', 'a:bc', 'a:b', 'ab:c', 'a::b:c', ':a:b:c', 'a:b:c:', 'a::b', 'a:b:', 'a:', ':a:b', 'a:b::', 'a', ':'];

  test.each(configs)('basicAuth(%p, %p): the same answer as basic-auth-connect for every split', async (user, pass) => {
    const p = await pair(stockBasicAuth(user, pass), basicAuth(user, pass));
    try {
      let accepted = 0;
      for (const text of attempts) {
        const r = await compare(p, `Basic ${b64(text)}`);
        if (r.status === 200) {
          accepted++;
          // Only the configured pair gets in, and it is seen as that pair.
          expect(text).toBe(`${user}:${pass}`);
          expect(JSON.parse(r.body)).toEqual({ user, remoteUser: user });
        } else {
          expect(r.status).toBe(text.includes(':') ? 401 : 400);
        }
      }
      expect(accepted).toBe(attempts.includes(`${user}:${pass}`) ? 1 : 0);
      // The configured pair always gets in (also those not in the list above).
      expect((await compare(p, `Basic ${b64(`${user}:${pass}`)}`)).status).toBe(200);
    } finally {
      await p.stock.close();
      await p.ours.close();
    }
  });

  test('a configured name holding ":" is refused by the factory (it could never sign in)', () => {
    expect(() => basicAuth('a:b', 'c')).toThrow(new TypeError("@upgradeware/basic-auth: argument user must not contain ':'"));
    // basic-auth-connect accepts it, and then refuses the only header that spells it.
    expect(() => stockBasicAuth('a:b', 'c')).not.toThrow();
  });

  test('lone surrogates in configured credentials match nothing (as with the stock package)', async () => {
    // UTF-8 would encode '\uD800' as U+FFFD: a client sending U+FFFD must not get in.
    for (const [user, pass, sent] of [
      ['x\uD800', 'p', 'x\uFFFD:p'],
      ['x', 'p\uDC00', 'x:p\uFFFD'],
    ] as const) {
      const p = await pair(stockBasicAuth(user, pass), basicAuth(user, pass));
      try {
        const r = await compare(p, `Basic ${b64(sent)}`);
        expect(r.status).toBe(401);
      } finally {
        await p.stock.close();
        await p.ours.close();
      }
    }
  });

  test('non-ASCII credentials are compared as UTF-8 text, as the stock package does', async () => {
    const p = await pair(stockBasicAuth('j\u00f6rg', 'p\u00e4ss \u{1F511}'), basicAuth('j\u00f6rg', 'p\u00e4ss \u{1F511}'));
    try {
      expect((await compare(p, `Basic ${b64('j\u00f6rg:p\u00e4ss \u{1F511}')}`)).status).toBe(200);
      expect((await compare(p, `Basic ${b64('jorg:p\u00e4ss \u{1F511}')}`)).status).toBe(401);
      // The same text in Latin-1 bytes is another password.
      const latin1 = Buffer.from('j\u00f6rg:p\u00e4ss', 'latin1').toString('base64');
      expect((await compare(p, `Basic ${latin1}`)).status).toBe(401);
    } finally {
      await p.stock.close();
      await p.ours.close();
    }
  });
});

/**
 * What basic-auth-connect's own test suite checks, for each of its three forms, our way: both
 * middleware in a Connect app whose last word is Connect's own final handler (so the 400 is
 * Connect's page), on the same raw requests. The password holds a colon, as theirs does.
 */
describe("basic-auth-connect's own suite, behaviour by behaviour", () => {
  const PASS = 'tobi:learnboost';
  /** Guard, then an endpoint; no error layer of ours: Connect answers errors itself. */
  function stockApp(guard: Handle, expectUser: (user: unknown) => boolean) {
    const app = connect();
    app.use(guard);
    app.use((req: IncomingMessage, res: ServerResponse) => {
      res.end(expectUser(req.user) ? 'secret!' : `unexpected user ${JSON.stringify(req.user)}`);
    });
    return app;
  }
  const forms: Array<[string, () => [Handle, Handle], (user: unknown) => boolean]> = [
    ['basicAuth(user, pass)', () => [stockBasicAuth('tj', PASS), basicAuth('tj', PASS)], (u) => u === 'tj'],
    [
      'basicAuth(callback)',
      () => {
        const check = (user: string, pass: string) => user === 'tj' && pass === PASS;
        return [stockBasicAuth(check), basicAuth(check)];
      },
      (u) => u === 'tj',
    ],
    [
      'basicAuth(callback) async',
      () => {
        const check = (user: string, pass: string, done: (err: unknown, user?: unknown) => void) =>
          done(null, user === 'tj' && pass === PASS ? { name: 'tj' } : null);
        return [stockBasicAuth(check), basicAuth(check)];
      },
      (u) => (u as { name?: unknown } | undefined)?.name === 'tj',
    ],
  ];

  describe.each(forms)('%s', (_form, make, expectUser) => {
    let p: Pair;
    beforeAll(async () => {
      const [stock, ours] = make();
      p = { stock: await start(stockApp(stock, expectUser)), ours: await start(stockApp(ours, expectUser)) };
    });
    afterAll(async () => {
      await p.stock.close();
      await p.ours.close();
    });
    const both = async (authorization?: string) => [await get(p.stock.port, authorization), await get(p.ours.port, authorization)];

    test('missing Authorization: 401 with the default challenge', async () => {
      for (const r of await both()) {
        expect(r.status).toBe(401);
        expect(r.headers['www-authenticate']).toEqual(['Basic realm="Authorization Required"']);
      }
    });

    test('valid credentials: next(), with req.user set', async () => {
      for (const r of await both(`Basic ${b64(`tj:${PASS}`)}`)) expect({ status: r.status, body: r.body }).toEqual({ status: 200, body: 'secret!' });
    });

    test('invalid credentials (bytes that are not UTF-8 in the password): 401, challenge, Unauthorized', async () => {
      for (const r of await both('Basic dGo69iaQ==')) {
        expect(seen(r)).toEqual({ status: 401, challenge: ['Basic realm="Authorization Required"'], body: 'Unauthorized' });
      }
    });

    test.each([
      ['another scheme', 'Digest dGo69iaQ=='],
      ['one part only', 'invalid'],
    ])('%s: 400, answered by the app with a Bad Request page', async (_name, authorization) => {
      const [stock, ours] = await both(authorization);
      for (const r of [stock!, ours!]) {
        expect(r.status).toBe(400);
        expect(r.body).toMatch(/Bad Request/);
        expect(r.headers['www-authenticate']).toBeUndefined();
      }
      // The same page: Connect's final handler renders the same error from both.
      expect(ours!.body.replace(/<pre>[\s\S]*<\/pre>/, '')).toBe(stock!.body.replace(/<pre>[\s\S]*<\/pre>/, ''));
    });
  });
});

describe('documented differences: what a logger sees, and a late answer', () => {
  test('a refusal shows its Content-Length to res.getHeader() (morgan logs it); the stock one leaves it to Node', async () => {
    const logged: Record<string, unknown> = {};
    const appOf = (name: string, guard: Handle) => {
      const app = connect();
      app.use((_req: IncomingMessage, res: ServerResponse, next: () => void) => {
        res.on('finish', () => (logged[name] = res.getHeader('content-length')));
        next();
      });
      app.use(guard);
      return app;
    };
    const stock = await start(appOf('stock', stockBasicAuth('tj', 'wahoo')));
    const ours = await start(appOf('ours', basicAuth('tj', 'wahoo')));
    try {
      const [a, b] = [await get(stock.port), await get(ours.port)];
      // The same header on the wire …
      expect(a.headers['content-length']).toEqual(['12']);
      expect(b.headers['content-length']).toEqual(['12']);
      // … but only ours is visible to a logger.
      expect(logged).toEqual({ stock: undefined, ours: 12 });
    } finally {
      await stock.close();
      await ours.close();
    }
  });

  test('a callback refusing after the response was sent: the stock setHeader throws, ours does nothing', async () => {
    const outcome: Record<string, string> = {};
    const appOf = (name: string, make: (check: (u: string, p: string, done: (e: unknown, u?: unknown) => void) => void) => Handle) => {
      const app = connect();
      // Another layer answers first (as a time limit would) while the check is still running.
      app.use((_req: IncomingMessage, res: ServerResponse, next: () => void) => {
        setTimeout(() => res.end('too late'), 5);
        next();
      });
      app.use(
        make((_user, _pass, done) => {
          setTimeout(() => {
            try {
              done(null, false);
              outcome[name] = 'returned';
            } catch (err) {
              outcome[name] = (err as { code?: string }).code ?? String(err);
            }
          }, 30);
        }),
      );
      return app;
    };
    const stock = await start(appOf('stock', (check) => stockBasicAuth(check)));
    const ours = await start(appOf('ours', (check) => basicAuth(check)));
    try {
      const [a, b] = [await get(stock.port, `Basic ${b64('a:b')}`), await get(ours.port, `Basic ${b64('a:b')}`)];
      expect([a.body, b.body]).toEqual(['too late', 'too late']);
      await until(() => Object.keys(outcome).length === 2);
      expect(outcome).toEqual({ stock: 'ERR_HTTP_HEADERS_SENT', ours: 'returned' });
    } finally {
      await stock.close();
      await ours.close();
    }
  });
});
