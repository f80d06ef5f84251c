import * as http from 'node:http';
import './quiet-deprecations';
import connect from 'connect';
import stockResponseTime from 'response-time';
import { createApp } from '@upgradeware/dispatcher';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { responseTime, type ResponseTimeOptions } from '@upgradeware/response-time';
import { start, rawRequest, wsHandshake, wsOpen, wsClose, nextMessage, request, WsRefused, type TestServer } from '../../../test-support';
import { switchEndpoint, wsEndpoint } from '../../../test-support/endpoints';


/** Digits become N: two values of the same shape were formatted the same way. */
const shape = (v: unknown) => String(v).replace(/\d+/g, 'N');

const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function serve(app: Parameters<typeof start>[0]) {
  const s = await start(app);
  servers.push(s);
  return s;
}

describe('options are checked when the factory is called', () => {
  test.each<[string, unknown, RegExp]>([
    ['digits', { digits: -1 }, /option digits/],
    ['digits', { digits: 1.5 }, /option digits/],
    ['digits', { digits: '3' }, /option digits/],
    ['header', { header: '' }, /option header/],
    ['header', { header: 'X Bad' }, /option header/],
    ['suffix', { suffix: 'yes' }, /option suffix/],
    ['options', 'fast', /options must be/],
    ['an unknown option', { digit: 2 }, /unknown option "digit"/],
  ])('%s: %p', (_name, options, message) => {
    expect(() => responseTime(options as ResponseTimeOptions)).toThrow(TypeError);
    expect(() => responseTime(options as ResponseTimeOptions)).toThrow(/^@upgradeware\/response-time: /);
    expect(() => responseTime(options as ResponseTimeOptions)).toThrow(message);
  });

  test('the middleware is named responseTime (for DEBUG traces), as the stock one', () => {
    expect(responseTime().name).toBe('responseTime');
    expect(responseTime(() => undefined).name).toBe('responseTime');
  });

  test('the middleware supports upgrades', () => {
    expect(responseTime().supportsUpgrade).toBe(true);
    expect(responseTime(() => undefined).supportsUpgrade).toBe(true);
  });
});

describe('deliberate differences: what the stock package takes and this one refuses', () => {
  test.each<[string, Record<string, unknown>, RegExp, RegExp]>([
    ["suffix: 'no' (stock: true, so 'ms')", { suffix: 'no' }, /^\d+\.\d{3}ms$/, /option suffix/],
    ["digits: '3' (stock: through toFixed)", { digits: '3' }, /^\d+\.\d{3}ms$/, /option digits/],
    ['a misspelt option (stock: ignored)', { digit: 0 }, /^\d+\.\d{3}ms$/, /unknown option "digit"/],
  ])('%s', async (_name, options, stockValue, ourError) => {
    expect(() => responseTime(options as ResponseTimeOptions)).toThrow(ourError);
    const stock = connect();
    stock.use(stockResponseTime(options as never));
    stock.use((_req: http.IncomingMessage, res: http.ServerResponse) => res.end('ok'));
    const s = await serve(stock);
    expect((await request(s.url)).headers['x-response-time']).toMatch(stockValue);
  });
});

describe('parity with response-time on ordinary requests', () => {
  const cases: Array<ResponseTimeOptions | number | undefined> = [
    undefined,
    {},
    { digits: 0 },
    { digits: 1 },
    { digits: 5 },
    { suffix: false },
    { digits: 2, suffix: false },
    { header: 'X-Elapsed' },
    { header: 'Server-Timing', digits: 0 },
    4,
  ];

  test.each(cases)('options %p', async (options) => {
    const header = typeof options === 'object' && options.header ? options.header.toLowerCase() : 'x-response-time';
    const stock = connect();
    stock.use(stockResponseTime(options as never));
    stock.use((_req: http.IncomingMessage, res: http.ServerResponse) => res.end('ok'));
    const ours = createApp();
    ours.use(responseTime(options));
    ours.use((_req, res) => res.end('ok'));
    const [a, b] = [await serve(stock), await serve(ours)];
    const [ra, rb] = [await request(a.url + '/x'), await request(b.url + '/x')];
    expect(ra.headers[header]).toBeDefined();
    expect(shape(rb.headers[header])).toBe(shape(ra.headers[header]));
    expect(Number.parseFloat(String(rb.headers[header]))).toBeGreaterThanOrEqual(0);
  });

  test('a header already set is kept, as by response-time', async () => {
    const make = (mw: (req: http.IncomingMessage, res: http.ServerResponse, next: () => void) => void) => {
      const app = createApp();
      app.use(mw);
      app.use((_req, res) => {
        res.setHeader('X-Response-Time', 'mine');
        res.end('ok');
      });
      return app;
    };
    const [a, b] = [await serve(make(stockResponseTime())), await serve(make(responseTime()))];
    expect((await request(a.url)).headers['x-response-time']).toBe('mine');
    expect((await request(b.url)).headers['x-response-time']).toBe('mine');
  });

  test('the callback form gets req, res and a number of ms, once, before the head goes out', async () => {
    const calls: Array<{ url: string | undefined; time: number; headersSent: boolean }> = [];
    const app = createApp();
    app.use(
      responseTime((req, res, time) => {
        calls.push({ url: req.url, time, headersSent: res.headersSent });
        res.setHeader('X-From-Callback', String(time >= 0));
      }),
    );
    app.use((_req, res) => res.end('ok'));
    const s = await serve(app);
    const r = await request(s.url + '/cb');
    expect(r.headers['x-from-callback']).toBe('true');
    expect(r.headers['x-response-time']).toBeUndefined();
    expect(calls).toEqual([{ url: '/cb', time: expect.any(Number), headersSent: false }]);
  });
});

describe('upgrades', () => {
  test.each([
    ['switchProtocols', switchEndpoint],
    ['ws writes the 101', wsEndpoint],
  ])('X-Response-Time rides on the 101 a ws client sees (%s)', async (_name, endpoint) => {
    const ep = endpoint();
    const app = createApp();
    app.use(responseTime());
    app.use('/ws', ep.handle);
    const s = await serve(app);
    try {
      const { ws, response } = await wsOpen(s.wsUrl + '/ws');
      expect(response.statusCode).toBe(101);
      expect(response.headers['x-response-time']).toMatch(/^\d+\.\d{3}ms$/);
      if (endpoint === wsEndpoint) {
        const reply = nextMessage(ws);
        ws.send('ping');
        expect(await reply).toBe('ping');
      }
      await wsClose(ws);
    } finally {
      ep.close();
    }
  });

  test.each([
    ['switchProtocols', switchEndpoint],
    ['ws writes the 101', wsEndpoint],
  ])('the callback form is called once per upgrade, and the header options apply on the 101 (%s)', async (_name, endpoint) => {
    const times: number[] = [];
    const ep = endpoint();
    const app = createApp();
    app.use(responseTime((_req, _res, time) => times.push(time)));
    app.use(responseTime({ header: 'X-Elapsed', digits: 1, suffix: false }));
    app.use('/ws', ep.handle);
    const s = await serve(app);
    try {
      for (let i = 0; i < 3; i++) {
        const { ws, response } = await wsOpen(s.wsUrl + '/ws');
        expect(response.headers['x-elapsed']).toMatch(/^\d+\.\d$/);
        await wsClose(ws);
      }
      expect(times).toHaveLength(3);
      for (const t of times) expect(t).toBeGreaterThanOrEqual(0);
    } finally {
      ep.close();
    }
  });

  test('a rejected upgrade carries the header on its real status, and the server serves on', async () => {
    const app = createApp();
    app.use(responseTime());
    app.use('/private', supportsUpgrade((_req, res) => {
      res.statusCode = 401;
      res.setHeader('WWW-Authenticate', 'Basic realm="x"');
      res.end('Unauthorized');
    }));
    const s = await serve(app);
    const r = await rawRequest(s.port, wsHandshake('/private'));
    expect(r.status).toBe(401);
    expect(r.headers['x-response-time']?.[0]).toMatch(/^\d+\.\d{3}ms$/);
    expect(r.body).toBe('Unauthorized');
    expect(r.closed).toBe(true);

    const missing = await rawRequest(s.port, wsHandshake('/nowhere'));
    expect(missing.status).toBe(404);
    expect(missing.headers['x-response-time']?.[0]).toMatch(/^\d+\.\d{3}ms$/);

    await expect(wsOpen(s.wsUrl + '/private')).rejects.toMatchObject({ status: 401 });
    await expect(wsOpen(s.wsUrl + '/private')).rejects.toBeInstanceOf(WsRefused);
    expect((await request(s.url + '/private')).status).toBe(401);
  });
});
