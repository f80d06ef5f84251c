/**
 * Ordinary requests behave like Connect 3: the same stack is built with `connect` and with
 * createApp(), the same requests go to both, and status, headers and body are compared.
 */
import connect from 'connect';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createApp, type App } from '@upgradeware/dispatcher';
import { start, request, type TestServer } from '../../../test-support';

type Use = (pathOrFn: unknown, fn?: unknown) => unknown;

function build(use: Use, makeSub: () => { use: Use; handler: unknown }): void {
  use((req: IncomingMessage, res: ServerResponse, next: () => void) => {
    res.setHeader('X-First-Url', req.url ?? '');
    next();
  });
  use('/blog', (req: IncomingMessage, res: ServerResponse, next: () => void) => {
    if (req.url === '/' || req.url?.startsWith('/?')) {
      res.end(`blog index url=${req.url} original=${req.originalUrl}`);
      return;
    }
    next();
  });
  use('/blog/admin', (req: IncomingMessage, res: ServerResponse) => {
    res.end(`admin url=${req.url} original=${req.originalUrl}`);
  });
  use('/throw', () => {
    throw Object.assign(new Error('boom'), { status: 418 });
  });
  use('/bad-status', (_req: IncomingMessage, _res: ServerResponse, next: (err?: unknown) => void) => {
    next(Object.assign(new Error('odd'), { status: 302 }));
  });
  use('/status-code', (_req: IncomingMessage, _res: ServerResponse, next: (err?: unknown) => void) => {
    next(Object.assign(new Error('gone'), { statusCode: 410 }));
  });
  use('/next-err', (_req: IncomingMessage, _res: ServerResponse, next: (err?: unknown) => void) => {
    next(new Error('bad'));
  });
  use('/handled', (_req: IncomingMessage, _res: ServerResponse, next: (err?: unknown) => void) => {
    next(new Error('to be handled'));
  });
  // A layer of five arguments is never called, with or without an error.
  use('/five', (_a: unknown, _b: unknown, res: ServerResponse, _d: unknown, _e: unknown) => res.end('five ran'));
  // A three-argument layer is passed over while there is an error.
  use((_req: IncomingMessage, res: ServerResponse) => {
    if (_req.url === '/never') res.end('should not run on errors');
    else res.end('fallthrough ' + _req.url);
  });
  use((err: Error, req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => {
    if (req.url?.startsWith('/handled')) {
      res.statusCode = 500;
      res.end(`handled ${err.message} at ${req.url}`);
    } else next(err);
  });
  const sub = makeSub();
  sub.use('/deep', (req: IncomingMessage, res: ServerResponse) => {
    res.end(`deep url=${req.url} original=${req.originalUrl}`);
  });
  sub.use((req: IncomingMessage, _res: ServerResponse, next: () => void) => {
    next();
  });
  use('/sub', sub.handler);
}

describe('ordinary requests: parity with connect 3', () => {
  let ours: TestServer;
  let theirs: TestServer;

  beforeAll(async () => {
    // Both stacks end in a catch-all, so put the 404 and sub-app checks in a second pair.
    const app = createApp();
    build(app.use as Use, () => {
      const sub = createApp();
      return { use: sub.use as Use, handler: sub };
    });
    const c = connect();
    build(c.use.bind(c) as Use, () => {
      const sub = connect();
      return { use: sub.use.bind(sub) as Use, handler: sub };
    });
    ours = await start(app);
    theirs = await start(c as unknown as (req: IncomingMessage, res: ServerResponse) => void);
  });
  afterAll(async () => {
    await ours.close();
    await theirs.close();
  });

  const paths = [
    '/blog',
    '/blog/',
    '/blog?x=1',
    '/BLOG',
    '/Blog/Admin/users?id=2',
    '/blog/admin',
    '/blogger',
    '/throw',
    '/bad-status',
    '/status-code',
    '/next-err',
    '/handled/x',
    '/elsewhere?q=1',
    '/five',
  ];
  test.each(paths)('%s', async (path) => {
    const [a, b] = await Promise.all([request(ours.url + path), request(theirs.url + path)]);
    expect(a.status).toBe(b.status);
    expect(a.headers['x-first-url']).toBe(b.headers['x-first-url']);
    // Error bodies carry a stack trace from different files: compare their first line.
    const first = (body: string) => body.replace(/<br>.*$/s, '').replace(/\n\s+at .*/s, '');
    expect(first(a.body)).toBe(first(b.body));
  });
});

describe('final handler and mounting: parity with connect 3', () => {
  let ours: TestServer;
  let theirs: TestServer;
  let app: App;

  beforeAll(async () => {
    app = createApp();
    const c = connect();
    for (const u of [app.use as Use, c.use.bind(c) as Use]) {
      u('/api/', (req: IncomingMessage, res: ServerResponse, next: () => void) => {
        if (req.url === '/ping') res.end(`pong ${req.originalUrl}`);
        else next();
      });
      u('/fail', (_req: IncomingMessage, _res: ServerResponse, next: (e?: unknown) => void) =>
        next(Object.assign(new Error('teapot'), { status: 418, headers: { 'X-Why': 'tea' } })),
      );
    }
    const sub = createApp();
    sub.use('/x', (req, res) => {
      res.end(`sub x ${req.url} ${req.originalUrl}`);
    });
    app.use('/nested', sub);
    const csub = connect();
    csub.use('/x', (req: IncomingMessage, res: ServerResponse) => {
      res.end(`sub x ${req.url} ${(req as { originalUrl?: string }).originalUrl}`);
    });
    c.use('/nested', csub);
    ours = await start(app);
    theirs = await start(c as unknown as (req: IncomingMessage, res: ServerResponse) => void);
  });
  afterAll(async () => {
    await ours.close();
    await theirs.close();
  });

  test.each(['/api/ping', '/api/ping?x', '/api', '/missing', '/missing?<b>', '/nested/x/y?z=1', '/nested/y', '/fail'])(
    '%s',
    async (path) => {
      const [a, b] = await Promise.all([request(ours.url + path), request(theirs.url + path)]);
      expect(a.status).toBe(b.status);
      expect(a.headers['content-type']).toBe(b.headers['content-type']);
      expect(a.headers['x-why']).toBe(b.headers['x-why']);
      const first = (body: string) => body.replace(/<br>.*$/s, '').replace(/\n\s+at .*/s, '');
      expect(first(a.body)).toBe(first(b.body));
    },
  );

  test('HEAD gets the 404 status without a body', async () => {
    const res = await request(ours.url + '/missing', { method: 'HEAD' });
    expect(res.status).toBe(404);
    expect(res.body).toBe('');
  });

  test('a mounted app knows its route; nested originalUrl is the whole URL', () => {
    expect(app.stack.map((l) => l.route)).toEqual(['/api', '/fail', '/nested']);
    expect((app.stack[2]!.handle as unknown as App).route).toBe('/nested');
  });
});

describe('dispatcher specifics on ordinary requests', () => {
  let server: TestServer;
  /** Errors that reached the end of the stack (onError: not printed on the test run's stderr). */
  const reported: unknown[] = [];
  beforeAll(async () => {
    const app = createApp({ onError: (err) => void reported.push(err) });
    app.use('/chat', (req, res) => {
      res.end(`chat ${req.url}`);
    });
    app.use('/async', async () => {
      await new Promise((r) => setTimeout(r, 5));
      throw Object.assign(new Error('async failure'), { status: 422 });
    });
    app.use('/throw-null', () => {
      throw null; // eslint-disable-line no-throw-literal
    });
    server = await start(app);
  });
  afterAll(() => server.close());

  test('mount paths match on a / boundary only (connect also accepts "."; we do not)', async () => {
    expect((await request(server.url + '/chat/room')).body).toBe('chat /room');
    expect((await request(server.url + '/chat.json')).status).toBe(404);
    expect((await request(server.url + '/chatter')).status).toBe(404);
  });

  test('a rejected promise from an async middleware becomes next(err)', async () => {
    const res = await request(server.url + '/async');
    expect(res.status).toBe(422);
    expect(res.body).toContain('async failure');
  });

  test('throwing a non-error value still ends in a 500, and the server keeps serving', async () => {
    const res = await request(server.url + '/throw-null');
    expect(res.status).toBe(500);
    expect((await request(server.url + '/chat')).body).toBe('chat /');
  });

  test('no stack trace in production', async () => {
    const before = process.env.NODE_ENV;
    process.env.NODE_ENV = 'production';
    try {
      const count = reported.length;
      const res = await request(server.url + '/async');
      expect(res.status).toBe(422);
      expect(res.body).toContain('<pre>Unprocessable Entity</pre>');
      expect(res.body).not.toContain('async failure');
      expect(reported.slice(count).map((e) => (e as Error).message)).toEqual(['async failure']);
    } finally {
      process.env.NODE_ENV = before;
    }
  });

  test('options are checked when createApp is called', () => {
    expect(() => createApp({ upgradeTimeout: -1 })).toThrow(TypeError);
    expect(() => createApp({ upgradeTimeout: 'soon' as unknown as number })).toThrow(/@upgradeware\/dispatcher: option upgradeTimeout/);
    expect(() => createApp({ upgradeProtocols: 'websocket' as unknown as string[] })).toThrow(/option upgradeProtocols/);
    expect(() => createApp(null as unknown as object)).toThrow(TypeError);
    expect(() => createApp().use('/x', 42 as unknown as () => void)).toThrow(/app.use\(\) requires a middleware function/);
  });
});
