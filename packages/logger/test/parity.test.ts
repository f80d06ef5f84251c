/**
 * Ordinary requests: morgan and our logger, each in its own app with the same handler, get the
 * same raw requests; their lines must match once dates and times are normalised (their shape is
 * still compared: date styles, and the number of decimals of every time).
 */
import type * as http from 'node:http';
import './quiet-deprecations';
import morgan from 'morgan';
import { createApp } from '@upgradeware/dispatcher';
import { logger, type FormatFn } from '@upgradeware/logger';
import { start, rawRequest, until, type TestServer } from '../../../test-support';
import { collector, normalise } from './helpers';


type Mw = (req: http.IncomingMessage, res: http.ServerResponse, next: (err?: unknown) => void) => void;

function handler(req: http.IncomingMessage, res: http.ServerResponse, next: (err?: unknown) => void): void {
  const path = (req.url ?? '/').split('?')[0];
  const send = (status: number, body: string, headers: Record<string, string | string[]> = {}) => {
    res.statusCode = status;
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    if (body) res.setHeader('Content-Type', 'text/plain');
    if (body) res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(body);
  };
  switch (path) {
    case '/ok':
    case '/sentinel':
      return send(200, 'hello');
    case '/redirect':
      return send(302, 'moved', { Location: '/ok' });
    case '/missing':
      return send(404, 'nope');
    case '/boom':
      return send(500, 'boom');
    case '/multi':
      return send(200, 'multi', { 'X-Multi': ['a', 'b'] });
    case '/empty':
      return send(204, '');
    case '/chunked':
      res.write('a');
      return void res.end('b');
    default:
      return next();
  }
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
/** A request as bytes; each character of the head is one byte (latin1), as a raw client sends it. */
const raw = (line: string, headers: string[] = []) =>
  Buffer.from([line, 'Host: 127.0.0.1', ...headers, 'Connection: close', '', ''].join('\r\n'), 'latin1');

const REQUESTS: Buffer[] = [
  raw('GET /ok?q=1&r=%20x HTTP/1.1', ['User-Agent: parity/1.0 (test)', 'Referer: http://example.test/from', `Authorization: Basic ${b64('alice:secret')}`]),
  raw('POST /missing HTTP/1.0', ['Content-Length: 0']),
  raw('GET /redirect HTTP/1.1', ['Referrer: http://example.test/other']),
  raw('GET /boom HTTP/1.1', [`Authorization: Basic ${b64('bob')}`]),
  raw('HEAD /ok HTTP/1.1'),
  raw('GET /multi HTTP/1.1', ['X-Custom: one', 'X-Custom: two', 'Accept: text/plain']),
  raw('GET /empty HTTP/1.1'),
  raw('GET /chunked HTTP/1.1'),
  raw('DELETE /not/here HTTP/1.1'),
  // Hostile values that Node's parser lets through: quotes, tabs, backslashes, C1 controls
  // (latin1 \x9b is an 8-bit CSI), and anything at all inside a Basic username.
  raw('GET /ok?"quoted"\\ HTTP/1.1', [
    'User-Agent: evil"\t\\\x9b31m',
    'Referer: http://x.test/\x85next',
    `Authorization: Basic ${b64('mallory\n127.0.0.1 - admin [x] "GET / HTTP/1.1" 200\x1b[2J\u2028:pw')}`,
  ]),
];

const servers: TestServer[] = [];
afterAll(async () => {
  for (const s of servers.splice(0)) await s.close();
});

/**
 * Serve `requests` through an app made of `stock` (morgan) and one made of `ours`, then a
 * sentinel request, and return both sets of lines without the sentinel's.
 */
async function compare(
  make: (which: 'stock' | 'ours', stream: { write(s: string): unknown }) => Array<Mw | [string, Mw]>,
  requests: Buffer[] = REQUESTS,
  sentinel = '/sentinel',
): Promise<{ stock: string[]; ours: string[] }> {
  const out = { stock: [] as string[], ours: [] as string[] };
  for (const which of ['stock', 'ours'] as const) {
    const c = collector();
    const app = createApp();
    for (const mw of make(which, c.stream)) {
      if (Array.isArray(mw)) app.use(mw[0], mw[1]);
      else app.use(mw);
    }
    app.use(handler);
    const s = await start(app);
    servers.push(s);
    for (const r of requests) {
      const res = await rawRequest(s.port, r);
      expect(res.status).toBeGreaterThan(0);
    }
    await rawRequest(s.port, raw(`GET ${sentinel} HTTP/1.1`));
    await until(() => c.lines().some((l) => l.includes(sentinel)));
    out[which] = c.lines().filter((l) => !l.includes(sentinel));
  }
  expect(out.ours).toHaveLength(out.stock.length);
  return out;
}

function expectSame({ stock, ours }: { stock: string[]; ours: string[] }): void {
  expect(ours.map(normalise)).toEqual(stock.map(normalise));
  for (const line of ours) expect(line).not.toMatch(/[\n\r\u2028\u0085\u009b]/);
}

describe('every predefined format matches morgan', () => {
  test.each(['combined', 'common', 'dev', 'short', 'tiny', 'default'])('%s', async (format) => {
    const result = await compare((which, stream) => [which === 'stock' ? (morgan(format, { stream }) as Mw) : logger(format, { stream })]);
    expect(result.stock).toHaveLength(REQUESTS.length);
    expectSame(result);
  });

  test('dev colours the status as morgan does (exact bytes apart from the time)', async () => {
    const result = await compare((which, stream) => [which === 'stock' ? (morgan('dev', { stream }) as Mw) : logger('dev', { stream })]);
    const colours = result.ours.map((l) => /\x1b\[(\d+)m(\d{3}|-)\x1b\[0m/.exec(l)?.slice(1, 3).join(' '));
    expect(colours).toEqual(['32 200', '33 404', '36 302', '31 500', '32 200', '32 200', '32 204', '32 200', '33 404', '32 200']);
    expectSame(result);
  });

  test('the hostile request is escaped, not obeyed, and identically so', async () => {
    const result = await compare(
      (which, stream) => [which === 'stock' ? (morgan('combined', { stream }) as Mw) : logger('combined', { stream })],
      [REQUESTS[REQUESTS.length - 1]!],
    );
    expect(result.ours).toHaveLength(1);
    const line = result.ours[0]!;
    expect(line).toContain('mallory\\n127.0.0.1 - admin [x] \\"GET / HTTP/1.1\\" 200\\u001b[2J\\u2028');
    expect(line).toContain('"GET /ok?\\"quoted\\"\\\\ HTTP/1.1"');
    expect(line).toContain('"evil\\"\\t\\\\\\u009b31m"');
    expect(line).toContain('"http://x.test/\\u0085next"');
    expectSame(result);
  });
});

describe('every token, with its arguments, matches morgan', () => {
  const ALL =
    ':url|:method|:status|:response-time|:response-time[0]|:response-time[5]|:total-time|:total-time[1]|' +
    ':date|:date[clf]|:date[iso]|:date[web]|:date[other]|:referrer|:remote-addr|:remote-user|:http-version|' +
    ':user-agent|:req[x-custom]|:req[ACCEPT]|:req[missing]|:res[content-type]|:res[X-Multi]|:res[content-length]|:pid';

  test('all built-in tokens in one format string', async () => {
    const result = await compare((which, stream) => [which === 'stock' ? (morgan(ALL, { stream }) as Mw) : logger(ALL, { stream })]);
    // :response-time[0] has no decimals for normalise() to keep: check it is a whole number, then drop it.
    const wholeMs = (lines: string[]) =>
      lines.map((l) => {
        const f = l.split('|');
        expect(f[4]).toMatch(/^\d+$/);
        f[4] = 'N';
        return f.join('|');
      });
    expectSame({ stock: wholeMs(result.stock), ours: wholeMs(result.ours) });
    const first = result.ours[0]!.split('|');
    expect(first.slice(0, 3)).toEqual(['/ok?q=1&r=%20x', 'GET', '200']);
    expect(first[24]).toBe(String(process.pid));
  });

  test('text around tokens, backslashes and quotes in the format string are kept as written', async () => {
    const fmt = 'LOCAL\\:remote-user ":method :url" method=:method :status';
    const result = await compare((which, stream) => [which === 'stock' ? (morgan(fmt, { stream }) as Mw) : logger(fmt, { stream })]);
    expect(result.ours[0]).toBe('LOCAL\\alice "GET /ok?q=1&r=%20x" method=GET 200');
    expectSame(result);
  });

  test('times are - when the start mark was deleted, or when the logger ran after the response', async () => {
    const fmt = ':method :url :response-time :total-time';
    const dropMark: Mw = (req, _res, next) => {
      delete (req as { _startAt?: unknown })._startAt;
      next();
    };
    const result = await compare((which, stream) => [which === 'stock' ? (morgan(fmt, { stream }) as Mw) : logger(fmt, { stream }), dropMark]);
    expect(result.ours.every((l) => l.endsWith(' - -'))).toBe(true);
    expectSame(result);
    // A logger called once the response was sent (immediate): no response mark, so '-' too.
    const lines = { stock: [] as string[], ours: [] as string[] };
    for (const which of ['stock', 'ours'] as const) {
      const c = collector();
      const late = which === 'stock' ? (morgan(fmt, { stream: c.stream, immediate: true }) as Mw) : logger(fmt, { stream: c.stream, immediate: true });
      const app = createApp();
      app.use((req: http.IncomingMessage, res: http.ServerResponse) => {
        res.end('done');
        setTimeout(() => late(req, res, () => undefined), 5);
      });
      const s = await start(app);
      servers.push(s);
      await rawRequest(s.port, raw('GET /late HTTP/1.1'));
      await until(() => c.lines().length === 1);
      lines[which] = c.lines();
    }
    expect(lines.ours).toEqual(['GET /late - -']);
    expect(lines.ours).toEqual(lines.stock);
  });

  test('custom tokens registered with token(), in both', async () => {
    const lang = (req: http.IncomingMessage) => req.headers['accept'];
    const count = (_req: http.IncomingMessage, _res: http.ServerResponse, arg?: string) => (arg ? arg.length : 0);
    // A token may call the others through `this`, the token table (morgan calls tokens on it).
    type Table = Record<string, (req: http.IncomingMessage, res: http.ServerResponse) => unknown>;
    const viaThis = function (this: Table, req: http.IncomingMessage, res: http.ServerResponse) {
      return `${String(this['method']!(req, res))}!`;
    };
    morgan.token('p-accept', lang);
    morgan.token('p-len', count as never);
    morgan.token('p-this', viaThis as never);
    logger.token('p-accept', lang);
    logger.token('p-len', count);
    logger.token('p-this', viaThis);
    const fmt = ':method :url :p-accept :p-len :p-len[abcd] :p-this';
    expectSame(await compare((which, stream) => [which === 'stock' ? (morgan(fmt, { stream }) as Mw) : logger(fmt, { stream })]));
  });

  test('tokens of a mounted app log the original URL', async () => {
    const result = await compare(
      (which, stream) => {
        const sub = createApp();
        sub.use(which === 'stock' ? (morgan('tiny', { stream }) as Mw) : logger('tiny', { stream }));
        sub.use(handler);
        return [['/api', sub]];
      },
      [raw('GET /api/ok?x=1 HTTP/1.1'), raw('GET /api/missing HTTP/1.1')],
      '/api/sentinel',
    );
    expect(result.ours.map((l) => l.split(' ').slice(0, 3).join(' '))).toEqual(['GET /api/ok?x=1 200', 'GET /api/missing 404']);
    expectSame(result);
  });
});

describe('every option matches morgan', () => {
  test('immediate: logged at arrival, with no status', async () => {
    const fmt = ':method :url :status :res[content-length] :response-time :total-time';
    const result = await compare((which, stream) => [
      which === 'stock' ? (morgan(fmt, { stream, immediate: true }) as Mw) : logger(fmt, { stream, immediate: true }),
    ]);
    expect(result.ours[0]).toBe('GET /ok?q=1&r=%20x - - - -');
    expectSame(result);
  });

  test('skip(req, res) sees the finished response', async () => {
    const skip = (req: http.IncomingMessage, res: http.ServerResponse) => res.statusCode < 400 && !req.url!.startsWith('/sentinel');
    const result = await compare((which, stream) => [
      which === 'stock' ? (morgan('short', { stream, skip }) as Mw) : logger('short', { stream, skip }),
    ]);
    expect(result.ours.map((l) => l.split(' ')[5])).toEqual(['404', '500', '404']);
    expectSame(result);
  });

  test('a format function gets the tokens; null or undefined skips the line', async () => {
    const fmt = (tokens: Record<string, (req: http.IncomingMessage, res: http.ServerResponse, arg?: string) => string | undefined>, req: http.IncomingMessage, res: http.ServerResponse) => {
      if (req.method === 'HEAD') return null;
      if (res.statusCode === 204) return undefined;
      return [tokens.method!(req, res), tokens.url!(req, res), tokens.status!(req, res), tokens['response-time']!(req, res, '1'), tokens['user-agent']!(req, res)].join(' ');
    };
    const result = await compare((which, stream) => [
      which === 'stock' ? (morgan(fmt as never, { stream }) as Mw) : logger(fmt as FormatFn, { stream }),
    ]);
    expect(result.ours).toHaveLength(REQUESTS.length - 2);
    expectSame(result);
  });

  test('format(name, string | function) and compile()', async () => {
    morgan.format('p-named', ':method :url :status');
    logger.format('p-named', ':method :url :status');
    const mCompiled = morgan.compile(':status :method :url');
    const oCompiled = logger.compile(':status :method :url');
    morgan.format('p-fn', ((tokens: never, req: never, res: never) => 'fn ' + mCompiled(tokens, req, res)) as never);
    logger.format('p-fn', (tokens, req, res) => 'fn ' + oCompiled(tokens, req, res));
    for (const name of ['p-named', 'p-fn']) {
      expectSame(await compare((which, stream) => [which === 'stock' ? (morgan(name, { stream }) as Mw) : logger(name, { stream })]));
    }
  });

  test('stream defaults to process.stdout', async () => {
    const written: string[] = [];
    const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    try {
      for (const mw of [morgan('tiny') as Mw, logger('tiny')]) {
        const app = createApp();
        app.use(mw);
        app.use(handler);
        const s = await start(app);
        servers.push(s);
        await rawRequest(s.port, raw('GET /ok HTTP/1.1'));
      }
      await until(() => written.filter((l) => l.startsWith('GET /ok 200 5 - ')).length === 2);
      expect(written.every((l) => /^GET \/ok 200 5 - \d+\.\d{3} ms\n$/.test(l))).toBe(true);
    } finally {
      spy.mockRestore();
    }
  });
});

describe("morgan's deprecated forms, side by side (their warnings: deprecations.test.ts)", () => {
  test('logger(options) without a format: the default format', async () => {
    const result = await compare((which, stream) => [which === 'stock' ? (morgan({ stream } as never) as Mw) : logger({ stream })]);
    expect(result.ours[0]).toMatch(/^127\.0\.0\.1 - alice \[<?[A-Z][a-z]{2}, /);
    expectSame(result);
  });

  test('logger(undefined, options): the default format', async () => {
    const result = await compare((which, stream) => [which === 'stock' ? (morgan(undefined as never, { stream }) as Mw) : logger(undefined, { stream })]);
    expectSame(result);
  });

  test("logger('', options): the default format too", async () => {
    expectSame(await compare((which, stream) => [which === 'stock' ? (morgan('', { stream }) as Mw) : logger('', { stream })]));
  });

  test('logger({ format: string, ... }) and logger({ format: function, ... })', async () => {
    const result = await compare((which, stream) => [
      which === 'stock' ? (morgan({ format: ':method :url :status', stream } as never) as Mw) : logger({ format: ':method :url :status', stream }),
    ]);
    expect(result.ours[0]).toBe('GET /ok?q=1&r=%20x 200');
    expectSame(result);
    const fn = (_t: unknown, req: http.IncomingMessage, res: http.ServerResponse) => `${req.method} ${req.url} ${res.statusCode}`;
    expectSame(await compare((which, stream) => [which === 'stock' ? (morgan({ format: fn, stream } as never) as Mw) : logger({ format: fn, stream })]));
  });

  test('logger({ format, skip, immediate }) honours every option', async () => {
    const skip = (req: http.IncomingMessage) => req.url!.includes('q=1');
    const result = await compare((which, stream) => [
      which === 'stock'
        ? (morgan({ format: 'tiny', skip, immediate: true, stream } as never) as Mw)
        : logger({ format: 'tiny', skip, immediate: true, stream }),
    ]);
    expect(result.ours).toHaveLength(REQUESTS.length - 1);
    expectSame(result);
  });

  test('buffer: a number of ms: lines written together, in one write', async () => {
    const writes = { stock: [] as string[], ours: [] as string[] };
    for (const which of ['stock', 'ours'] as const) {
      const stream = { write: (s: string) => writes[which].push(s) };
      const options = { buffer: 400, stream };
      const app = createApp();
      app.use(which === 'stock' ? (morgan(':method :url', options as never) as Mw) : logger(':method :url', options));
      app.use(handler);
      const s = await start(app);
      servers.push(s);
      await rawRequest(s.port, raw('GET /ok HTTP/1.1'));
      await rawRequest(s.port, raw('GET /missing HTTP/1.1'));
      expect(writes[which]).toEqual([]);
      await until(() => writes[which].length > 0, 3000);
    }
    expect(writes.ours).toEqual(['GET /ok\nGET /missing\n']);
    expect(writes.ours).toEqual(writes.stock);
  });

  test('buffer: true flushes after a second; a new batch starts a new timer', async () => {
    const writes: string[] = [];
    const app = createApp();
    app.use(logger(':method :url', { buffer: true, stream: { write: (s) => writes.push(String(s)) } }));
    app.use(handler);
    const s = await start(app);
    servers.push(s);
    const started = Date.now();
    await rawRequest(s.port, raw('GET /ok HTTP/1.1'));
    await rawRequest(s.port, raw('GET /redirect HTTP/1.1'));
    await until(() => writes.length === 1, 3000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(writes).toEqual(['GET /ok\nGET /redirect\n']);
    await rawRequest(s.port, raw('GET /missing HTTP/1.1'));
    await until(() => writes.length === 2, 3000);
    expect(writes[1]).toBe('GET /missing\n');
  });
});

describe('buffer: edge values', () => {
  test.each([[false], [0], [null]])('buffer: %p means no buffering: each line is its own write', async (buffer) => {
    const writes: string[] = [];
    const app = createApp();
    app.use(logger(':method :url', { buffer: buffer as never, stream: { write: (s) => writes.push(String(s)) } }));
    app.use(handler);
    const s = await start(app);
    servers.push(s);
    await rawRequest(s.port, raw('GET /ok HTTP/1.1'));
    await until(() => writes.length === 1);
    await rawRequest(s.port, raw('GET /missing HTTP/1.1'));
    await until(() => writes.length === 2);
    expect(writes).toEqual(['GET /ok\n', 'GET /missing\n']);
  });

  test('a stream that throws when the buffer is flushed loses those lines, not the process', async () => {
    let calls = 0;
    const app = createApp();
    app.use(logger(':method :url', { buffer: 20, stream: { write: () => { calls++; throw new Error('disk full'); } } }));
    app.use(handler);
    const s = await start(app);
    servers.push(s);
    await rawRequest(s.port, raw('GET /ok HTTP/1.1'));
    await until(() => calls === 1);
    // The server serves on, and the next batch is tried again.
    expect((await rawRequest(s.port, raw('GET /ok HTTP/1.1'))).status).toBe(200);
    await until(() => calls === 2);
  });
});

describe('object-mode streams (morgan 1.12)', () => {
  test('an object from the format function is written as it is; a string still gets its newline', async () => {
    const fmt = (tokens: Record<string, (req: http.IncomingMessage, res: http.ServerResponse) => string | undefined>, req: http.IncomingMessage, res: http.ServerResponse) =>
      req.url === '/redirect' ? 'as text' : { method: tokens.method!(req, res), status: Number(tokens.status!(req, res)) };
    const written = { stock: [] as unknown[], ours: [] as unknown[] };
    for (const which of ['stock', 'ours'] as const) {
      const stream = { writableObjectMode: true, write: (entry: unknown) => written[which].push(entry) };
      const app = createApp();
      app.use(which === 'stock' ? (morgan(fmt as never, { stream } as never) as Mw) : logger(fmt as FormatFn, { stream }));
      app.use(handler);
      const s = await start(app);
      servers.push(s);
      await rawRequest(s.port, raw('GET /ok HTTP/1.1'));
      await rawRequest(s.port, raw('GET /redirect HTTP/1.1'));
      await until(() => written[which].length === 2);
    }
    expect(written.ours).toEqual([{ method: 'GET', status: 200 }, 'as text\n']);
    expect(written.ours).toEqual(written.stock);
  });
});
