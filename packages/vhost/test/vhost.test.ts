import type { IncomingMessage, ServerResponse } from 'node:http';
import connect from 'connect';
import express from 'express';
import stockVhost from 'vhost';
import { WebSocketServer } from 'ws';
import { createApp } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade, type UpgradeResponse } from '@upgradeware/upgrade-response';
import { vhost } from '@upgradeware/vhost';
import {
  rawRequest,
  request,
  start,
  wsHandshake,
  wsOpen,
  WsRefused,
  type RawResponse,
  type TestServer,
  wsAsk,
} from '../../../test-support';

/** A GET with the given Host header (none at all when `host` is null: HTTP/1.0 allows that). */
function get(port: number, host: string | null, path = '/'): Promise<RawResponse> {
  if (host === null) return rawRequest(port, `GET ${path} HTTP/1.0\r\n\r\n`);
  return rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
}

/** What a handler saw, as JSON: the url and a plain copy of req.vhost. */
function describe_(name: string, req: IncomingMessage) {
  const vh = req.vhost;
  return {
    name,
    url: req.url,
    originalUrl: req.originalUrl,
    vhost: vh === undefined ? null : { ...vh },
    nullPrototype: vh === undefined ? null : Object.getPrototypeOf(vh) === null,
  };
}

function echo(name: string) {
  return (req: IncomingMessage, res: ServerResponse) => {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify(describe_(name, req)));
  };
}

describe('factory', () => {
  test('returns a middleware that supports upgrades', () => {
    const mw = vhost('a.example', echo('a'));
    expect(mw.supportsUpgrade).toBe(true);
    expect(typeof mw).toBe('function');
  });

  test.each([
    [undefined, 'argument hostname is required'],
    [null, 'argument hostname is required'],
    ['', 'argument hostname is required'],
    [42, 'argument hostname must be a string or a RegExp'],
    [{}, 'argument hostname must be a string or a RegExp'],
  ])('hostname %p is refused', (hostname, message) => {
    expect(() => vhost(hostname as unknown as string, echo('x'))).toThrow(new TypeError(`@upgradeware/vhost: ${message}`));
  });

  test.each([
    [undefined, 'argument handle is required'],
    [null, 'argument handle is required'],
    ['app', 'argument handle must be a function'],
    [{}, 'argument handle must be a function'],
  ])('handle %p is refused', (handle, message) => {
    expect(() => vhost('a.example', handle as unknown as () => void)).toThrow(new TypeError(`@upgradeware/vhost: ${message}`));
  });

  test("each refusal is stock vhost's message with our prefix (what its own suite looks for)", () => {
    const cases: Array<[unknown[], RegExp]> = [
      [[], /hostname.*required/],
      [['a.example'], /handle.*required/],
      [['a.example', {}], /handle.*function/],
    ];
    for (const [args, wording] of cases) {
      let stockMessage = '';
      try {
        (stockVhost as unknown as (...a: unknown[]) => unknown)(...args);
      } catch (err) {
        stockMessage = (err as Error).message;
      }
      expect(stockMessage).toMatch(wording);
      const call = () => (vhost as unknown as (...a: unknown[]) => unknown)(...args);
      expect(call).toThrow(new TypeError(`@upgradeware/vhost: ${stockMessage}`));
    }
  });

  test('the middleware is named vhost (for DEBUG traces)', () => {
    expect(vhost('a.example', echo('a')).name).toBe('vhost');
  });
});

describe('parity with the stock vhost on ordinary requests', () => {
  // Each pattern is mounted at /p<i> in two Connect apps: one with stock vhost, one with ours.
  const patterns: Array<string | RegExp> = [
    'a.example',
    '*.example',
    '*.*.example',
    'a-b.example',
    'x+y.example',
    '[::1]',
    '127.0.0.1',
    /(\w+)\.regex\.example/,
    /^api\.(?<version>v\d+)\.example$/,
    /(?:(www)\.)?opt\.example/,
    // From stock vhost's own suite: a pattern that must match the whole name, two captures of a
    // wildcard pattern, and RegExps whose own anchors must not let a longer name through.
    '.example',
    'user-*.*.example',
    /\.tobi$/,
    /^loki\./,
  ];
  const hosts: Array<string | null> = [
    'a.example',
    'A.EXAMPLE',
    'a.example:8080',
    'a.example.',
    'a.example:x:y',
    'b.a.example',
    'z.example',
    'x.y.example',
    'x.y.z.example',
    '.example',
    'a-b.example',
    'x+y.example',
    'xxy.example',
    'aXexample',
    '[::1]',
    '[::1]:8080',
    '[::1',
    '::1',
    '127.0.0.1:80',
    '127.0.0.1.',
    '127a0a0a1',
    'foo.regex.example',
    'FOO.REGEX.EXAMPLE:1',
    'api.v2.example',
    'api.v2.example.evil',
    'opt.example',
    'www.opt.example',
    'foo.example',
    'user-bob.foo.example:8080',
    'user-.foo.example',
    'loki.tobi',
    'loki.tobi.example',
    '.tobi',
    '',
    ':80',
    'a example',
    '...',
    '%61.example',
    null,
  ];

  let stock: TestServer;
  let ours: TestServer;

  beforeAll(async () => {
    const stockApp = connect();
    const ourApp = connect();
    patterns.forEach((pattern, i) => {
      stockApp.use(`/p${i}`, stockVhost(pattern, echo(`p${i}`)));
      ourApp.use(`/p${i}`, vhost(pattern, echo(`p${i}`)));
    });
    stock = await start(stockApp);
    ours = await start(ourApp);
  });

  afterAll(async () => {
    await stock.close();
    await ours.close();
  });

  test('every pattern and Host header gives the same status and body', async () => {
    const seen = new Map<number, number>();
    for (let i = 0; i < patterns.length; i++) {
      for (const host of hosts) {
        const [a, b] = await Promise.all([get(stock.port, host, `/p${i}/x?q=1`), get(ours.port, host, `/p${i}/x?q=1`)]);
        const where = `pattern ${String(patterns[i])}, Host ${JSON.stringify(host)}`;
        expect({ where, status: b.status, body: b.body }).toEqual({ where, status: a.status, body: a.body });
        seen.set(a.status, (seen.get(a.status) ?? 0) + 1);
      }
    }
    // The matrix exercises both outcomes, and nothing else.
    expect([...seen.keys()].sort()).toEqual([200, 404]);
  });

  test('what a match carries, by example', async () => {
    const cases: Array<[number, string | null, unknown]> = [
      [0, 'A.Example:8080', { host: 'A.Example:8080', hostname: 'A.Example', length: 0 }],
      [1, 'www.example', { 0: 'www', host: 'www.example', hostname: 'www.example', length: 1 }],
      [2, 'x.y.example', { 0: 'x', 1: 'y', host: 'x.y.example', hostname: 'x.y.example', length: 2 }],
      [5, '[::1]:3000', { host: '[::1]:3000', hostname: '[::1]', length: 0 }],
      [7, 'foo.regex.example', { 0: 'foo', host: 'foo.regex.example', hostname: 'foo.regex.example', length: 1 }],
      [9, 'opt.example', { host: 'opt.example', hostname: 'opt.example', length: 1 }],
    ];
    for (const [i, host, vh] of cases) {
      const r = await get(ours.port, host, `/p${i}/room?x=1`);
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toEqual({
        name: `p${i}`,
        url: '/room?x=1',
        originalUrl: `/p${i}/room?x=1`,
        vhost: vh,
        nullPrototype: true,
      });
    }
    // An optional group that did not take part is an index holding undefined (dropped by JSON).
    const r = await get(ours.port, 'opt.example', '/p9/');
    expect(JSON.parse(r.body).vhost).not.toHaveProperty('0');
  });

  test('deliberate difference: an alternation RegExp is anchored as a whole', async () => {
    const stockApp = connect().use(stockVhost(/a\.example|b\.example/, echo('alt')));
    const ourApp = connect().use(vhost(/a\.example|b\.example/, echo('alt')));
    const s1 = await start(stockApp);
    const s2 = await start(ourApp);
    try {
      // Stock vhost makes it ^a\.example|b\.example$, which lets a.example.evil through.
      expect((await get(s1.port, 'a.example.evil')).status).toBe(200);
      expect((await get(s2.port, 'a.example.evil')).status).toBe(404);
      expect((await get(s2.port, 'evil.b.example')).status).toBe(404);
      for (const host of ['a.example', 'B.example']) {
        expect((await get(s1.port, host)).status).toBe(200);
        expect((await get(s2.port, host)).status).toBe(200);
      }
    } finally {
      await s1.close();
      await s2.close();
    }
  });

  test('a stateful RegExp (g, y) matches every time', async () => {
    const s = await start(connect().use(vhost(/a\.example/gy, echo('g'))));
    try {
      for (let i = 0; i < 3; i++) expect((await get(s.port, 'a.example')).status).toBe(200);
    } finally {
      await s.close();
    }
  });
});

/** A tiny WebSocket endpoint: ws writes the 101, the response accounts for it. */
function endpoint(name: string) {
  const wss = new WebSocketServer({ noServer: true });
  const pending = new WeakMap<IncomingMessage, UpgradeResponse>();
  wss.on('headers', (lines: string[], req: IncomingMessage) => {
    const res = pending.get(req);
    if (res) lines.push(...res.externalSwitch());
  });
  const mw = supportsUpgrade((req: IncomingMessage, res: ServerResponse) => {
    const info = describe_(name, req);
    if (!isUpgradeResponse(res)) {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify(info));
      return;
    }
    pending.set(req, res);
    wss.handleUpgrade(req, res.socket!, res.upgradeHead, (ws) => {
      // Answers each message with what the endpoint saw (sent on request: no race with 'open').
      ws.on('message', () => ws.send(JSON.stringify(info)));
    });
  });
  return { mw, wss };
}

describe('upgrades through the dispatcher', () => {
  let s: TestServer;
  const endpoints: WebSocketServer[] = [];

  beforeAll(async () => {
    const a = endpoint('A');
    const b = endpoint('B');
    endpoints.push(a.wss, b.wss);
    const appA = createApp().use('/ws', a.mw);
    const appB = createApp().use('/ws', b.mw);
    const main = createApp();
    main.use(vhost('a.example', appA));
    main.use(vhost('*.b.example', appB));
    main.use(vhost('[::1]', appA));
    main.use('/m', vhost(/(\w+)\.m\.example/, appB));
    main.use(vhost('plain.example', (req, res) => res.end('plain')));
    main.use(vhost('connect.example', connect().use((req: IncomingMessage, res: ServerResponse) => res.end('connect'))));
    const ex = express();
    ex.get('/', (req, res) => {
      res.send(`express ${req.vhost?.hostname}`);
    });
    main.use(vhost('express.example', ex));
    main.use(
      vhost(
        'raw.example',
        supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => {
          if (!isUpgradeResponse(res)) return next();
          res.setHeader('X-Vhost', req.vhost!.hostname);
          res.switchProtocols((socket) => socket.end(`hello ${req.vhost![0] ?? 'raw'}`));
        }),
      ),
    );
    main.use(
      vhost(
        'throws.example',
        supportsUpgrade(() => {
          throw Object.assign(new Error('nope'), { status: 418 });
        }),
      ),
    );
    main.use(
      vhost(
        'rejects.example',
        supportsUpgrade(async () => {
          await Promise.resolve();
          throw Object.assign(new Error('later'), { status: 503 });
        }),
      ),
    );
    s = await start(main);
  });

  afterAll(async () => {
    for (const wss of endpoints) wss.close();
    await s.close();
  });

  async function stillServing(): Promise<void> {
    const r = await request(`${s.url}/ws?ok=1`, { headers: { host: 'a.example' } });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ name: 'A', url: '/?ok=1', originalUrl: '/ws?ok=1' });
  }

  const wsInfo = async (path: string, host: string): Promise<unknown> =>
    JSON.parse(await wsAsk(`${s.wsUrl}${path}`, 'info', { headers: { host } }));

  test('an upgrade to host A reaches A, with the url and req.vhost right', async () => {
    expect(await wsInfo('/ws?room=lobby', 'a.example')).toEqual({
      name: 'A',
      url: '/?room=lobby',
      originalUrl: '/ws?room=lobby',
      vhost: { host: 'a.example', hostname: 'a.example', length: 0 },
      nullPrototype: true,
    });
  });

  test('an upgrade to a wildcard host reaches B, with the capture and the port', async () => {
    expect(await wsInfo('/ws', 'Chat.B.Example:8443')).toEqual({
      name: 'B',
      url: '/',
      originalUrl: '/ws',
      vhost: { 0: 'Chat', host: 'Chat.B.Example:8443', hostname: 'Chat.B.Example', length: 1 },
      nullPrototype: true,
    });
  });

  test('IPv6 literal with a port, and a vhost under a mount path', async () => {
    expect(await wsInfo('/ws', '[::1]:9000')).toMatchObject({ name: 'A', vhost: { hostname: '[::1]', length: 0 } });
    expect(await wsInfo('/m/ws?x=1', 'room7.m.example')).toEqual({
      name: 'B',
      url: '/?x=1',
      originalUrl: '/m/ws?x=1',
      vhost: { 0: 'room7', host: 'room7.m.example', hostname: 'room7.m.example', length: 1 },
      nullPrototype: true,
    });
  });

  test('ordinary requests are routed by the same layers', async () => {
    const r = await request(`${s.url}/ws?room=1`, { headers: { host: 'x.b.example' } });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ name: 'B', url: '/?room=1', vhost: { 0: 'x' } });
    expect((await request(`${s.url}/`, { headers: { host: 'plain.example' } })).body).toBe('plain');
    expect((await request(`${s.url}/`, { headers: { host: 'connect.example' } })).body).toBe('connect');
    expect((await request(`${s.url}/`, { headers: { host: 'Express.example:1' } })).body).toBe('express Express.example');
  });

  test('an unknown host falls through to a real 404', async () => {
    const refused = await wsOpen(`${s.wsUrl}/ws`, { headers: { host: 'c.example' } }).then(
      () => null,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(WsRefused);
    expect((refused as WsRefused).status).toBe(404);
    const raw = await rawRequest(s.port, wsHandshake('/ws', {}, 'c.example'));
    expect(raw.status).toBe(404);
    expect(raw.headers.connection).toEqual(['close']);
    expect(raw.body).toContain('Cannot GET /ws');
    expect(raw.closed).toBe(true);
    await stillServing();
  });

  test('a handle that did not opt in is passed over on upgrades (404), served on requests', async () => {
    for (const host of ['plain.example', 'connect.example', 'express.example']) {
      const raw = await rawRequest(s.port, wsHandshake('/', {}, host));
      expect(raw.status).toBe(404);
      expect(raw.closed).toBe(true);
      await stillServing();
    }
  });

  test('a handler that opted in switches protocols itself', async () => {
    const raw = await rawRequest(s.port, wsHandshake('/', {}, 'RAW.example:1'));
    expect(raw.status).toBe(101);
    expect(raw.headers['x-vhost']).toEqual(['RAW.example']);
    expect(raw.headers.upgrade).toEqual(['websocket']);
    expect(raw.body).toBe('hello raw');
    await stillServing();
  });

  test('a handle that throws or rejects reaches the error handling with its status', async () => {
    for (const [host, status] of [
      ['throws.example', 418],
      ['rejects.example', 503],
    ] as const) {
      const up = await rawRequest(s.port, wsHandshake('/', {}, host));
      expect(up.status).toBe(status);
      expect(up.headers.connection).toEqual(['close']);
      expect(up.closed).toBe(true);
      const plain = await get(s.port, host);
      expect(plain.status).toBe(status);
      await stillServing();
    }
  });

  test.each([
    ['A.EXAMPLE', 101],
    ['a.example:80', 101],
    ['a.example:x:y', 101],
    ['[::1]', 101],
    ['[0:0:0:0:0:0:0:1]', 404],
    ['::1', 404],
    ['[::1', 404],
    ['a.example.', 404],
    ['.a.example', 404],
    ['a..example', 404],
    ['x.y.b.example', 404],
    ['.b.example', 404],
    ['', 400],
    [':443', 404],
    ['a.example\tjunk', 404],
    ['\u00e4.example', 404],
    ['a'.repeat(4000), 404],
  ])('hostile Host %j on an upgrade: %i, and the server still serves', async (host, status) => {
    const raw = await rawRequest(s.port, wsHandshake('/ws', {}, host), { untilHead: status === 101 });
    expect(raw.status).toBe(status);
    if (status === 101) expect(raw.headers['sec-websocket-accept']).toEqual(['s3pPLMBiTxaQ9kYGzzhZRbK+xOo=']);
    else {
      expect(raw.headers.connection).toEqual(['close']);
      expect(raw.closed).toBe(true);
    }
    await stillServing();
  });

  test('an HTTP/1.1 upgrade without Host gets 400 from the dispatcher, as an ordinary request does from Node', async () => {
    const raw = await rawRequest(s.port, wsHandshake('/ws', { Host: '' }));
    expect(raw.status).toBe(400);
    expect(raw.headers.connection).toEqual(['close']);
    expect(raw.closed).toBe(true);
    await stillServing();
  });
});
