/**
 * cookie-parser in front of a WebSocket endpoint through the dispatcher; hostile cookies;
 * option checks.
 */
import { createHmac } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createApp } from '@upgradeware/dispatcher';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { cookieParser } from '@upgradeware/cookie-parser';
import {
  nextMessage,
  rawConnect,
  rawRequest,
  request,
  start,
  wsClose,
  wsHandshake,
  wsOpen,
  WsRefused,
  type TestServer,
} from '../../../test-support';
import { replyingWsEndpoint } from '../../../test-support/endpoints';

const SECRET = 'keyboard cat';
const OLD = 'old secret';

function sign(value: string, secret: string): string {
  return `s:${value}.${createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '')}`;
}

const report = (req: IncomingMessage) =>
  JSON.stringify({ cookies: { ...req.cookies }, signedCookies: { ...req.signedCookies }, secret: req.secret ?? null });

/** A WebSocket endpoint the way @upgradeware/websocket builds one: ws writes the 101. */
const wsEndpoint = () => replyingWsEndpoint((req) => report(req));

/** A guard that reads the parsed cookies: only a verified signed `sid` gets through. */
const requireSession = supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => {
  const sid = req.signedCookies?.sid;
  if (typeof sid === 'string') return next();
  res.statusCode = 403;
  res.end(sid === false ? 'bad signature' : 'no session');
});

describe('on a WebSocket upgrade', () => {
  let s: TestServer;
  let endpoint: ReturnType<typeof wsEndpoint>;
  beforeAll(async () => {
    endpoint = wsEndpoint();
    const app = createApp();
    app.use(cookieParser([SECRET, OLD]));
    app.use('/private', requireSession);
    app.use(endpoint.handle);
    app.use((req: IncomingMessage, res: ServerResponse) => res.end(report(req)));
    s = await start(app);
  });
  afterAll(async () => {
    endpoint.wss.close();
    await s.close();
  });

  async function ask(path: string, cookie?: string) {
    const { ws } = await wsOpen(`${s.wsUrl}${path}`, cookie === undefined ? {} : { headers: { Cookie: cookie } });
    try {
      ws.send('?');
      return JSON.parse(await nextMessage(ws)) as { cookies: Record<string, unknown>; signedCookies: Record<string, unknown>; secret: string };
    } finally {
      await wsClose(ws);
    }
  }

  async function stillServing() {
    const r = await request(`${s.url}/`, { headers: { Cookie: 'again=1' } });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body).cookies).toEqual({ again: '1' });
  }

  test('a ws client gets the same req.cookies, req.signedCookies and req.secret as a request', async () => {
    const cookie = `a=1; o=j:{"x":[1]}; sid=${sign('abc', SECRET)}; old=${sign('r', OLD)}; bad=${sign('v', 'nope')}; e=%41`;
    const viaWs = await ask('/', cookie);
    const viaHttp = JSON.parse((await request(`${s.url}/`, { headers: { Cookie: cookie } })).body) as unknown;
    expect(viaWs).toEqual(viaHttp);
    expect(viaWs).toEqual({
      cookies: { a: '1', o: { x: [1] }, e: 'A' },
      signedCookies: { sid: 'abc', old: 'r', bad: false },
      secret: SECRET,
    });
  });

  test('without a Cookie header: empty objects', async () => {
    expect(await ask('/')).toEqual({ cookies: {}, signedCookies: {}, secret: SECRET });
  });

  test('a layer behind can refuse the upgrade on a bad signature: a real 403, endpoint never reached', async () => {
    const runs = endpoint.state.runs;
    for (const [cookie, body] of [
      [undefined, 'no session'],
      [`sid=${sign('abc', SECRET).slice(0, -5)}`, 'bad signature'],
      [`sid=${sign('abc', SECRET).replace('abc', 'abd')}`, 'bad signature'],
      [`sid=${sign('abc', 'stranger')}`, 'bad signature'],
    ] as const) {
      const err = await wsOpen(`${s.wsUrl}/private`, cookie === undefined ? {} : { headers: { Cookie: cookie } }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WsRefused);
      expect((err as WsRefused).status).toBe(403);
      expect((err as WsRefused).body).toBe(body);
    }
    expect(endpoint.state.runs).toBe(runs);
    const ok = await ask('/private', `sid=${sign('abc', OLD)}`);
    expect(ok.signedCookies).toEqual({ sid: 'abc' });
    await stillServing();
  });

  const hostile: Array<[string, string, Record<string, unknown>, Record<string, unknown>]> = [
    ['a tampered signature', `sid=${sign('abc', SECRET).slice(0, -1)}x`, {}, { sid: false }],
    ['a truncated signature', `sid=${sign('abc', SECRET).slice(0, 8)}`, {}, { sid: false }],
    ['a signature without a value', 's=s:.; t=s:', {}, { s: false, t: false }],
    ['__proto__ cookie names', '__proto__=j:{"polluted":true}; __proto__=x; a=1', { a: '1' }, {}],
    ['a signed __proto__ cookie', `__proto__=${sign('j:{"polluted":true}', SECRET)}`, {}, {}],
    ['a JSON __proto__ key', 'o=j:{"__proto__":{"polluted":true}}', { o: JSON.parse('{"__proto__":{"polluted":true}}') }, {}],
    ['broken escapes and JSON', 'a=%E0%A4%A; b=j:{; c=%', { a: '%E0%A4%A', b: 'j:{', c: '%' }, {}],
    ['deeply nested JSON', `deep=j:${'['.repeat(3000)}${']'.repeat(3000)}`, {}, {}],
    ['unbalanced JSON nesting', `deep=j:${'['.repeat(6000)}`, { deep: `j:${'['.repeat(6000)}` }, {}],
    ['a huge cookie (12 KiB)', `big=${'x'.repeat(12 * 1024)}`, { big: 'x'.repeat(12 * 1024) }, {}],
    ['many cookies', Array.from({ length: 500 }, (_, i) => `c${i}=${i}`).join('; '), {}, {}],
    ['only separators', ';;; ;=;= ;', { '': '' }, {}],
    ['latin1 bytes', 'a=\u00ff\u00fe; b=%FF', { a: '\u00ff\u00fe', b: '%FF' }, {}],
  ];
  test.each(hostile)('raw handshake with %s: 101, no pollution, still serving', async (name, cookie, cookies, signed) => {
    const c = await rawConnect(s.port);
    try {
      c.socket.write(wsHandshake('/', { Cookie: cookie }));
      const head = (await c.waitFor('\r\n\r\n')).toString('latin1');
      expect(head.startsWith('HTTP/1.1 101 Switching Protocols\r\n')).toBe(true);
      // A masked text frame "?" so the endpoint answers with its report.
      c.socket.write(Buffer.from([0x81, 0x81, 1, 2, 3, 4, '?'.charCodeAt(0) ^ 1]));
      await c.waitFor('secret');
    } finally {
      c.close();
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
    // The same header on an ordinary request shows what was parsed.
    const r = await request(`${s.url}/`, { headers: { Cookie: cookie } });
    expect(r.status).toBe(200);
    const parsed = JSON.parse(r.body) as { cookies: Record<string, unknown>; signedCookies: Record<string, unknown> };
    if (name === 'deeply nested JSON') expect(Array.isArray(parsed.cookies.deep)).toBe(true);
    else if (name === 'many cookies') expect(Object.keys(parsed.cookies)).toHaveLength(500);
    else {
      expect(parsed.cookies).toEqual(cookies);
      expect(parsed.signedCookies).toEqual(signed);
    }
    await stillServing();
  });

  test('a Cookie header beyond the header size limit is refused by Node (431)', async () => {
    const runs = endpoint.state.runs;
    const r = await rawRequest(s.port, wsHandshake('/', { Cookie: `big=${'x'.repeat(20000)}` }));
    expect(r.status).toBe(431);
    expect(r.closed).toBe(true);
    expect(endpoint.state.runs).toBe(runs);
    await stillServing();
  });
});

describe('options are checked when the factory is called', () => {
  test('a middleware that supports upgrades', () => {
    expect(cookieParser().supportsUpgrade).toBe(true);
    expect(cookieParser(SECRET, { decode: (v) => v }).supportsUpgrade).toBe(true);
    expect(cookieParser([SECRET, OLD]).supportsUpgrade).toBe(true);
    expect(cookieParser(null, null).supportsUpgrade).toBe(true);
  });

  test('the middleware is named cookieParser (for DEBUG traces), as the stock one', () => {
    expect(cookieParser().name).toBe('cookieParser');
  });

  const call = cookieParser as unknown as (...args: unknown[]) => unknown;
  test.each<[string, unknown[], RegExp]>([
    ['a numeric secret', [42], /option secret must be a string or an array of non-empty strings/],
    ['an object secret', [{ key: 'x' }], /option secret/],
    ['an array with an empty secret', [['a', '']], /option secret/],
    ['an array with a number', [['a', 1]], /option secret/],
    ['options that are a string', ['s', 'decode'], /options must be an object/],
    ['a decode that is not a function', ['s', { decode: 'yes' }], /option decode must be a function/],
    ['an unknown option', ['s', { decoder: (v: string) => v }], /unknown option "decoder"/],
  ])('%s', (_name, args, message) => {
    expect(() => call(...args)).toThrow(TypeError);
    expect(() => call(...args)).toThrow(/^@upgradeware\/cookie-parser: /);
    expect(() => call(...args)).toThrow(message);
  });
});
