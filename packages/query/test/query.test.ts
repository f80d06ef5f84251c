import type { IncomingMessage, ServerResponse } from 'node:http';
import express from 'express';
import * as qs from 'qs';
import { WebSocketServer } from 'ws';
import { createApp } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade, type UpgradeResponse } from '@upgradeware/upgrade-response';
import { parseQuery, query, type ParsedQuery } from '@upgradeware/query';
import {
  rawRequest,
  request,
  start,
  wsHandshake,
  type RawResponse,
  type TestServer,
  wsAsk,
} from '../../../test-support';

function get(port: number, path: string): Promise<RawResponse> {
  return rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
}

/** Responds with req.query as JSON: the same handler for Express and for ours. */
function show(req: IncomingMessage, res: ServerResponse): void {
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify(req.query));
}

/** Query strings both parsers must agree on (request-targets as sent on the wire). */
const corpus = [
  '/',
  '/?',
  '/p?a=1',
  '/p?a=1&a=2&a=3',
  '/p?a&b=&=c',
  '/p?a+b=c+d%20e',
  '/p?%FF=%E0%A4%A',
  '/p?a=%zz&b=%&c=%%',
  '/p?__proto__=x&constructor=y&toString=z&hasOwnProperty=1',
  '/p?__proto__[polluted]=1&constructor[prototype][polluted]=1',
  '/p?a[]=1&a[]=2&b[c]=3&d[0]=x&d[1]=y',
  '/p?a.b=1&a[b]=2',
  '/p??a=1',
  '/p?a=1#frag',
  '/p#x?a=1',
  '/p?a=1;b=2',
  '/p?x=%00&y=%0D%0A',
  '/p?a=%C3%A9&%E2%9C%93',
  '/p?a=b=c&&&',
  '/p/sub?deep=1',
  'http://127.0.0.1/absolute?z=9',
  '/p?' + 'k=v&'.repeat(200),
];

describe('factory', () => {
  test('returns a middleware that supports upgrades', () => {
    expect(query().supportsUpgrade).toBe(true);
    expect(query({}).supportsUpgrade).toBe(true);
    expect(query({ parser: parseQuery }).supportsUpgrade).toBe(true);
    expect(query(parseQuery).supportsUpgrade).toBe(true);
  });

  test.each([null, 42, 'extended', true])('options %p are refused', (options) => {
    expect(() => query(options as unknown as undefined)).toThrow(
      new TypeError('@upgradeware/query: options must be an object or a parser function'),
    );
  });

  test('an unknown option is refused, named', () => {
    expect(() => query({ parse: parseQuery } as never)).toThrow(TypeError);
    expect(() => query({ parse: parseQuery } as never)).toThrow(/^@upgradeware\/query: unknown option "parse" /);
    // Express 4's query() took qs options: the message says where they go now.
    expect(() => query({ depth: 2 } as never)).toThrow('unknown option "depth" (for qs options, pass your own parser: query((s) => qs.parse(s, options)))');
  });

  test('the middleware is named query (for DEBUG traces)', () => {
    expect(query().name).toBe('query');
  });

  test.each([null, 'qs', 1, {}])('parser %p is refused', (parser) => {
    expect(() => query({ parser: parser as unknown as undefined })).toThrow(
      new TypeError('@upgradeware/query: parser must be a function'),
    );
  });
});

describe('parity on ordinary requests', () => {
  let expressSimple: TestServer;
  let expressExtended: TestServer;
  let ours: TestServer;
  let oursQs: TestServer;

  beforeAll(async () => {
    // Express 5's default "simple" query parser is Node's querystring; its "extended" one is qs.
    const e1 = express();
    e1.use(show);
    const e2 = express();
    e2.set('query parser', 'extended');
    e2.use(show);
    const a1 = createApp().use(query()).use(show);
    const a2 = createApp()
      .use(query((s) => qs.parse(s, { allowPrototypes: true })))
      .use(show);
    [expressSimple, expressExtended, ours, oursQs] = await Promise.all([start(e1), start(e2), start(a1), start(a2)]);
  });

  afterAll(async () => {
    await Promise.all([expressSimple, expressExtended, ours, oursQs].map((s) => s.close()));
  });

  test('the default parser gives what Express 5 gives with its default ("simple") parser', async () => {
    for (const path of corpus) {
      const [a, b] = await Promise.all([get(expressSimple.port, path), get(ours.port, path)]);
      expect({ path, status: b.status, body: b.body }).toEqual({ path, status: a.status, body: a.body });
      expect(b.status).toBe(200);
    }
  });

  test('a qs parser gives what Express gives with its "extended" parser', async () => {
    for (const path of corpus) {
      const [a, b] = await Promise.all([get(expressExtended.port, path), get(oursQs.port, path)]);
      expect({ path, status: b.status, body: b.body }).toEqual({ path, status: a.status, body: a.body });
      expect(b.status).toBe(200);
    }
  });

  test('by example', async () => {
    const r = await get(ours.port, '/p?room=lobby&tag=a&tag=b&empty&sp=a+b%21');
    expect(JSON.parse(r.body)).toEqual({ room: 'lobby', tag: ['a', 'b'], empty: '', sp: 'a b!' });
    expect(JSON.parse((await get(ours.port, '/p')).body)).toEqual({});
  });

  test('deliberate difference: no 1000-pair limit (Node querystring drops pairs past 1000)', async () => {
    const path = '/p?' + 'a=&'.repeat(1500);
    const [a, b] = await Promise.all([get(expressSimple.port, path), get(ours.port, path)]);
    expect((JSON.parse(a.body) as { a: string[] }).a).toHaveLength(1000);
    expect((JSON.parse(b.body) as { a: string[] }).a).toHaveLength(1500);
  });
});

describe('the result object', () => {
  test('has no prototype: __proto__ and friends are plain data, nothing is polluted', () => {
    const q = parseQuery('__proto__=x&constructor=y&toString=z&__proto__=w&hasOwnProperty=1');
    expect(Object.getPrototypeOf(q)).toBeNull();
    expect(Object.keys(q)).toEqual(['__proto__', 'constructor', 'toString', 'hasOwnProperty']);
    expect(q['__proto__']).toEqual(['x', 'w']);
    expect(q.constructor).toBe('y');
    expect(({} as Record<string, unknown>).x).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
  });
});

/** A tiny WebSocket endpoint answering each message with req.query and req.url. */
function endpoint() {
  const wss = new WebSocketServer({ noServer: true });
  const pending = new WeakMap<IncomingMessage, UpgradeResponse>();
  wss.on('headers', (lines: string[], req: IncomingMessage) => {
    const res = pending.get(req);
    if (res) lines.push(...res.externalSwitch());
  });
  const mw = supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => {
    if (!isUpgradeResponse(res)) return next();
    const info = JSON.stringify({ url: req.url, query: req.query, nullPrototype: Object.getPrototypeOf(req.query) === null });
    pending.set(req, res);
    wss.handleUpgrade(req, res.socket!, res.upgradeHead, (ws) => {
      ws.on('message', () => ws.send(info));
    });
  });
  return { mw, wss };
}

/** Answers an upgrade by switching and writing req.query as JSON, then closing. */
const rawEndpoint = supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => {
  if (!isUpgradeResponse(res)) return next();
  res.switchProtocols((socket) => socket.end(JSON.stringify(req.query)));
});

describe('upgrades through the dispatcher', () => {
  let s: TestServer;
  let wss: WebSocketServer;

  beforeAll(async () => {
    const ep = endpoint();
    wss = ep.wss;
    const app = createApp();

    // Apps mounted before the root query(): each parses with its own.
    const bad = Object.assign(new Error('bad query'), { status: 400, expose: true });
    app.use(
      '/strict',
      createApp()
        .use(
          query((s: string): ParsedQuery => {
            if (s.includes('%')) throw bad;
            return parseQuery(s);
          }),
        )
        .use(rawEndpoint)
        .use(show),
    );
    app.use('/broken', createApp().use(query(() => null as unknown as ParsedQuery)).use(rawEndpoint).use(show));
    // A sub-app with its own query(): it sees the URL stripped of the mount path.
    const chat = createApp()
      .use(query((s) => ({ seen: s })))
      .use('/ws', ep.mw);
    app.use('/m', createApp().use('/chat', chat));
    // Something set req.query before: it is left alone.
    const preset = createApp()
      .use(
        supportsUpgrade((req: IncomingMessage, _res: ServerResponse, next: () => void) => {
          req.query = { preset: 'yes' };
          next();
        }),
      )
      .use(query())
      .use(rawEndpoint)
      .use(show);
    app.use('/preset', preset);

    app.use(query());
    app.use('/room', ep.mw);
    app.use('/raw', rawEndpoint);
    app.use(supportsUpgrade((req: IncomingMessage, res: ServerResponse) => show(req, res)));
    s = await start(app);
  });

  afterAll(async () => {
    wss.close();
    await s.close();
  });

  async function stillServing(): Promise<void> {
    const r = await request(`${s.url}/anything?ok=1`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ ok: '1' });
  }

  const wsInfo = async (path: string): Promise<unknown> => JSON.parse(await wsAsk(`${s.wsUrl}${path}`, 'info'));

  test('a WebSocket URL\'s query string is req.query', async () => {
    expect(await wsInfo('/room?name=lobby&token=a&token=b&x=%C3%A9')).toEqual({
      url: '/?name=lobby&token=a&token=b&x=%C3%A9',
      query: { name: 'lobby', token: ['a', 'b'], x: 'é' },
      nullPrototype: true,
    });
    expect(await wsInfo('/room')).toEqual({ url: '/', query: {}, nullPrototype: true });
  });

  test('in a mounted app, on the stripped URL', async () => {
    expect(await wsInfo('/m/chat/ws?room=7')).toEqual({ url: '/?room=7', query: { seen: 'room=7' }, nullPrototype: false });
  });

  test('__proto__ keys on an upgrade are plain data (raw bytes)', async () => {
    const raw = await rawRequest(s.port, wsHandshake('/raw?__proto__=x&constructor[prototype][p]=1&__proto__=y'));
    expect(raw.status).toBe(101);
    expect(raw.headers.upgrade).toEqual(['websocket']);
    // Compared as text: an object literal with a __proto__ key would set a prototype instead.
    expect(raw.body).toBe('{"__proto__":["x","y"],"constructor[prototype][p]":"1"}');
    expect(Object.prototype).not.toHaveProperty('p');
    await stillServing();
    const plain = await get(s.port, '/x?__proto__[a]=1&__proto__=2&constructor=3');
    expect(plain.status).toBe(200);
    expect(plain.body).toBe('{"__proto__[a]":"1","__proto__":"2","constructor":"3"}');
    await stillServing();
  });

  test('an existing req.query is left alone, on upgrades and requests', async () => {
    const raw = await rawRequest(s.port, wsHandshake('/preset?a=1'));
    expect(raw.status).toBe(101);
    expect(JSON.parse(raw.body)).toEqual({ preset: 'yes' });
    const r = await request(`${s.url}/preset?a=1`);
    expect(JSON.parse(r.body)).toEqual({ preset: 'yes' });
  });

  test('a parser that throws: its status on upgrades and requests, and the server still serves', async () => {
    const up = await rawRequest(s.port, wsHandshake('/strict?a=%zz'));
    expect(up.status).toBe(400);
    expect(up.headers.connection).toEqual(['close']);
    expect(up.body).toContain('bad query');
    expect(up.closed).toBe(true);
    const plain = await get(s.port, '/strict?a=%zz');
    expect(plain.status).toBe(400);
    await stillServing();
    const ok = await rawRequest(s.port, wsHandshake('/strict?a=1'));
    expect(ok.status).toBe(101);
    expect(JSON.parse(ok.body)).toEqual({ a: '1' });
  });

  test('a parser that returns no object: 500, and the server still serves', async () => {
    const up = await rawRequest(s.port, wsHandshake('/broken?a=1'));
    expect(up.status).toBe(500);
    expect(up.body).toContain('parser must return an object');
    expect(up.closed).toBe(true);
    expect((await get(s.port, '/broken?a=1')).status).toBe(500);
    await stillServing();
  });

  test('CONNECT: the target has no query, req.query is empty', async () => {
    const raw = await rawRequest(s.port, 'CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n');
    expect(raw.status).toBe(200);
    expect(raw.headers.connection).toEqual(['close']);
    expect(raw.body).toBe('{}');
    await stillServing();
  });

  test.each([
    ['a lone percent sign', 101, '/raw?%', { '%': '' }],
    ['runs of percent signs', 101, '/raw?%%%%=%', { '%%%%': '%' }],
    ['a UTF-8 surrogate', 101, '/raw?a=%ED%A0%80', { a: '\ufffd\ufffd\ufffd' }],
    ['3000 empty pairs', 101, '/raw?' + '&'.repeat(3000), {}],
    ['one key 3000 times', 101, '/raw?' + 'a=&'.repeat(3000), { a: Array<string>(3000).fill('') }],
    ['a 20 kB query (Node: 431)', 431, '/raw?' + 'x'.repeat(20000), null],
    ['a control byte (Node: 400)', 400, '/raw?a=\x01', null],
  ])('hostile upgrade, %s: %i, and the server still serves', async (_label, status, path, expected) => {
    const raw = await rawRequest(s.port, wsHandshake(path));
    expect(raw.status).toBe(status);
    if (expected !== null) expect(JSON.parse(Buffer.from(raw.body, 'latin1').toString('utf8'))).toEqual(expected);
    expect(raw.closed).toBe(true);
    await stillServing();
  });
});

describe('what a custom parser is given', () => {
  test("the query string ('' when there is none, no fragment) and the request itself", async () => {
    const calls: Array<[string, boolean, string | undefined]> = [];
    const app = createApp();
    app.use(
      query((s, req) => {
        calls.push([s, typeof req.on === 'function', req.url]);
        return {};
      }),
    );
    app.use(show);
    const s = await start(app);
    try {
      for (const path of ['/none', '/q?a=1&b', '/frag?x=1#part', '/empty?']) expect((await get(s.port, path)).status).toBe(200);
    } finally {
      await s.close();
    }
    expect(calls).toEqual([
      ['', true, '/none'],
      ['a=1&b', true, '/q?a=1&b'],
      ['x=1', true, '/frag?x=1#part'],
      ['', true, '/empty?'],
    ]);
  });
});
