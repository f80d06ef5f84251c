/**
 * basic-auth in front of a WebSocket endpoint and a CONNECT tunnel, through the dispatcher;
 * hostile credentials; option checks.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { createApp, type App } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade } from '@upgradeware/upgrade-response';
import { basicAuth } from '@upgradeware/basic-auth';
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

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

/** A WebSocket endpoint the way @upgradeware/websocket builds one: ws writes the 101. */
const wsEndpoint = () => replyingWsEndpoint((req) => JSON.stringify({ user: req.user, remoteUser: req.remoteUser }));

/** The ordinary endpoint behind the guard. */
const hello = (req: IncomingMessage, res: ServerResponse) => res.end(`hello ${String(req.user)}`);

describe('on a WebSocket upgrade', () => {
  let s: TestServer;
  let endpoint: ReturnType<typeof wsEndpoint>;
  let asyncCalls = 0;
  beforeAll(async () => {
    endpoint = wsEndpoint();
    const app = createApp();
    app.use('/sync', basicAuth('tj', 'wahoo', 'Chat'));
    app.use(
      '/async',
      basicAuth((user, pass, done) => {
        asyncCalls++;
        setTimeout(() => done(null, pass === 'open' ? { name: user } : null), 5);
      }),
    );
    app.use(endpoint.handle);
    app.use(hello);
    s = await start(app);
  });
  afterAll(async () => {
    endpoint.wss.close();
    await s.close();
  });

  /** After every refusal: the endpoint never ran and the server still answers. */
  async function stillServing(runsBefore: number) {
    expect(endpoint.state.runs).toBe(runsBefore);
    const r = await request(`${s.url}/sync`, { headers: { Authorization: `Basic ${b64('tj:wahoo')}` } });
    expect(r).toMatchObject({ status: 200, body: 'hello tj' });
  }

  test('a ws client without credentials gets a real 401 and the endpoint never runs', async () => {
    const runs = endpoint.state.runs;
    const refusal = await wsOpen(`${s.wsUrl}/sync`).then(
      () => null,
      (err: unknown) => err,
    );
    expect(refusal).toBeInstanceOf(WsRefused);
    const { status, headers, body } = refusal as WsRefused;
    expect(status).toBe(401);
    expect(headers['www-authenticate']).toBe('Basic realm="Chat"');
    expect(headers.connection).toBe('close');
    expect(body).toBe('Unauthorized');
    await stillServing(runs);
  });

  test('a ws client with wrong credentials gets 401', async () => {
    const runs = endpoint.state.runs;
    const err = await wsOpen(`${s.wsUrl}/sync`, { headers: { Authorization: `Basic ${b64('tj:nope')}` } }).catch((e: unknown) => e);
    expect((err as WsRefused).status).toBe(401);
    await stillServing(runs);
  });

  test('a ws client with credentials opens, and the endpoint sees req.user', async () => {
    const { ws, response } = await wsOpen(`${s.wsUrl}/sync`, { headers: { Authorization: `Basic ${b64('tj:wahoo')}` } });
    try {
      expect(response.statusCode).toBe(101);
      ws.send('who');
      expect(JSON.parse(await nextMessage(ws))).toEqual({ user: 'tj', remoteUser: 'tj' });
    } finally {
      await wsClose(ws);
    }
  });

  test('credentials in the URL (ws sends them as Basic) work too', async () => {
    const { ws } = await wsOpen(`ws://tj:wahoo@127.0.0.1:${s.port}/sync`);
    try {
      ws.send('who');
      expect(JSON.parse(await nextMessage(ws)).user).toBe('tj');
    } finally {
      await wsClose(ws);
    }
  });

  test('the asynchronous form on an upgrade: in with the object it gives, 401 without', async () => {
    const { ws } = await wsOpen(`${s.wsUrl}/async`, { headers: { Authorization: `Basic ${b64('ann:open')}` } });
    try {
      ws.send('who');
      expect(JSON.parse(await nextMessage(ws))).toEqual({ user: { name: 'ann' }, remoteUser: { name: 'ann' } });
    } finally {
      await wsClose(ws);
    }
    const runs = endpoint.state.runs;
    const calls = asyncCalls;
    const r = await rawRequest(s.port, wsHandshake('/async', { Authorization: `Basic ${b64('ann:shut')}` }));
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toEqual(['Basic realm="Authorization Required"']);
    expect(r.body).toBe('Unauthorized');
    expect(r.closed).toBe(true);
    expect(asyncCalls).toBe(calls + 1);
    await stillServing(runs);
  });

  const hostile: Array<[string, string, number]> = [
    ['malformed base64', 'Basic !!!!', 400],
    ['a header without a colon', `Basic ${b64('tjwahoo')}`, 400],
    ['another scheme', 'Bearer abc', 400],
    ['the scheme alone', 'Basic', 400],
    ['empty credentials', `Basic ${b64(':')}`, 401],
    ['a NUL in the name', `Basic ${b64('tj\u0000:wahoo')}`, 401],
    ['huge credentials (5 KiB each)', `Basic ${b64('x'.repeat(5120) + ':' + 'y'.repeat(5120))}`, 401],
    ['a long run of padding', `Basic ${b64('tj:nope')}${'='.repeat(4000)}`, 401],
  ];
  test.each(hostile)('raw handshake with %s: status, bytes, closed, still serving', async (_name, authorization, status) => {
    const runs = endpoint.state.runs;
    const r = await rawRequest(s.port, wsHandshake('/sync', { Authorization: authorization }));
    expect(r.status).toBe(status);
    expect(r.headers.connection).toEqual(['close']);
    expect(r.closed).toBe(true);
    if (status === 401) {
      expect(r.headers['www-authenticate']).toEqual(['Basic realm="Chat"']);
      expect(r.headers['content-length']).toEqual(['12']);
      expect(r.body).toBe('Unauthorized');
    } else {
      expect(r.headers['www-authenticate']).toBeUndefined();
      expect(r.body).toContain('Bad Request');
    }
    await stillServing(runs);
  });

  test('credentials beyond the header size limit are refused by Node (431) before any middleware', async () => {
    const runs = endpoint.state.runs;
    const r = await rawRequest(s.port, wsHandshake('/sync', { Authorization: `Basic ${b64('x'.repeat(20000) + ':y')}` }));
    expect(r.status).toBe(431);
    expect(r.closed).toBe(true);
    await stillServing(runs);
  });

  test('the same hostile headers on ordinary requests', async () => {
    for (const [, authorization, status] of hostile) {
      const r = await rawRequest(s.port, `GET /sync HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: ${authorization}\r\n\r\n`);
      expect(r.status).toBe(status);
    }
    await stillServing(endpoint.state.runs);
  });
});

describe('errors at request time go to next(err)', () => {
  let s: TestServer;
  beforeAll(async () => {
    const app = createApp();
    app.use(
      '/throws',
      basicAuth(() => {
        throw Object.assign(new Error('check exploded'), { status: 502 });
      }),
    );
    app.use('/rejects', basicAuth(() => Promise.reject(Object.assign(new Error('db down'), { status: 503 }))));
    app.use(
      '/twice',
      basicAuth((user, _pass, done) => {
        done(null, user);
        done(new Error('second call'));
      }),
    );
    app.use(hello);
    s = await start(app);
  });
  afterAll(() => s.close());

  test('a throwing check, a rejecting check, on requests and upgrades', async () => {
    const auth = { Authorization: `Basic ${b64('tj:wahoo')}` };
    expect((await request(`${s.url}/throws`, { headers: auth })).status).toBe(502);
    expect((await request(`${s.url}/rejects`, { headers: auth })).status).toBe(503);
    const up = await rawRequest(s.port, wsHandshake('/throws', auth));
    expect(up.status).toBe(502);
    expect(up.closed).toBe(true);
    expect((await rawRequest(s.port, wsHandshake('/rejects', auth))).status).toBe(503);
  });

  test('a callback called twice counts once', async () => {
    const r = await request(`${s.url}/twice`, { headers: { Authorization: `Basic ${b64('ann:x')}` } });
    expect(r).toMatchObject({ status: 200, body: 'hello ann' });
    expect((await request(`${s.url}/twice`, { headers: { Authorization: `Basic ${b64('bob:x')}` } })).body).toBe('hello bob');
  });
});

describe('proxy mode guards CONNECT', () => {
  let s: TestServer;
  let echo: net.Server;
  let echoPort: number;
  let echoConnections = 0;
  const opened = new Set<net.Socket>();

  beforeAll(async () => {
    echo = net.createServer((socket) => {
      echoConnections++;
      opened.add(socket);
      socket.on('close', () => opened.delete(socket));
      socket.on('error', () => undefined);
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    echoPort = (echo.address() as AddressInfo).port;

    const app: App = createApp();
    app.use(basicAuth((user, pass) => user === 'proxy' && pass === 's3cret', { proxy: true, realm: 'Proxy' }));
    app.use(
      supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => {
        if (!isUpgradeResponse(res) || req.method !== 'CONNECT') return next();
        // Only ever tunnel to the local echo server.
        if (req.url !== `127.0.0.1:${echoPort}`) {
          res.statusCode = 403;
          res.end('Forbidden');
          return;
        }
        const upstream = net.connect(echoPort, '127.0.0.1');
        opened.add(upstream);
        upstream.on('close', () => opened.delete(upstream));
        upstream.once('error', next);
        upstream.once('connect', () => {
          res.switchProtocols((socket, head) => {
            upstream.write(head);
            socket.pipe(upstream).pipe(socket);
            socket.on('close', () => upstream.destroy());
          });
        });
      }),
    );
    app.use((req: IncomingMessage, res: ServerResponse) => res.end(`plain ${String(req.user)}`));
    s = await start(app);
  });
  afterAll(async () => {
    await s.close();
    for (const socket of opened) socket.destroy();
    await new Promise<void>((resolve) => echo.close(() => resolve()));
  });

  const connectRequest = (extra = '') =>
    `CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: 127.0.0.1:${echoPort}\r\n${extra}\r\n`;

  test('without credentials: 407 with Proxy-Authenticate, no tunnel', async () => {
    const before = echoConnections;
    const r = await rawRequest(s.port, connectRequest());
    expect(r.status).toBe(407);
    expect(r.headers['proxy-authenticate']).toEqual(['Basic realm="Proxy"']);
    expect(r.headers['www-authenticate']).toBeUndefined();
    expect(r.headers.connection).toEqual(['close']);
    expect(r.body).toBe('Proxy Authentication Required');
    expect(r.closed).toBe(true);
    expect(echoConnections).toBe(before);
  });

  test('an Authorization header is not proxy credentials', async () => {
    const r = await rawRequest(s.port, connectRequest(`Authorization: Basic ${b64('proxy:s3cret')}\r\n`));
    expect(r.status).toBe(407);
  });

  test('wrong and malformed credentials: 407 and 400', async () => {
    const before = echoConnections;
    const wrong = await rawRequest(s.port, connectRequest(`Proxy-Authorization: Basic ${b64('proxy:guess')}\r\n`));
    expect(wrong.status).toBe(407);
    const bad = await rawRequest(s.port, connectRequest('Proxy-Authorization: Basic %%%\r\n'));
    expect(bad.status).toBe(400);
    expect(bad.closed).toBe(true);
    expect(echoConnections).toBe(before);
  });

  test('with credentials the tunnel carries bytes both ways, the first ones included', async () => {
    const c = await rawConnect(s.port);
    try {
      c.socket.write(connectRequest(`Proxy-Authorization: Basic ${b64('proxy:s3cret')}\r\n`) + 'early-bytes|');
      const head = (await c.waitFor('early-bytes|')).toString('latin1');
      expect(head.startsWith('HTTP/1.1 200 Connection Established\r\n')).toBe(true);
      c.socket.write('through-the-tunnel');
      await c.waitFor('through-the-tunnel');
    } finally {
      c.close();
    }
    // Still serving, and an ordinary request through the proxy guard needs credentials too.
    expect((await request(`${s.url}/`)).status).toBe(407);
    const ok = await request(`${s.url}/`, { headers: { 'Proxy-Authorization': `Basic ${b64('proxy:s3cret')}` } });
    expect(ok).toMatchObject({ status: 200, body: 'plain proxy' });
  });

  test('without proxy mode a CONNECT is challenged with 401 on Authorization', async () => {
    const app = createApp();
    app.use(basicAuth('a', 'b'));
    const t = await start(app);
    try {
      const r = await rawRequest(t.port, connectRequest());
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toEqual(['Basic realm="Authorization Required"']);
      // Authorized, but nobody tunnels: the dispatcher's 404.
      expect((await rawRequest(t.port, connectRequest(`Authorization: Basic ${b64('a:b')}\r\n`))).status).toBe(404);
    } finally {
      await t.close();
    }
  });
});

describe('options are checked when the factory is called', () => {
  test('a middleware that supports upgrades, named basicAuth (the dispatcher DEBUG trace shows it)', () => {
    expect(basicAuth('a', 'b').name).toBe('basicAuth');
    expect(basicAuth(() => true, { proxy: true }).name).toBe('basicAuth');
    expect(basicAuth('a', 'b').supportsUpgrade).toBe(true);
    expect(basicAuth(() => true).supportsUpgrade).toBe(true);
    expect(basicAuth(() => true, { proxy: true }).supportsUpgrade).toBe(true);
  });

  const call = basicAuth as unknown as (...args: unknown[]) => unknown;
  test.each<[string, unknown[], RegExp]>([
    ['no arguments', [], /argument user must be a string or a check function/],
    ['a number', [42], /argument user must be a string or a check function/],
    ['a user without a password (the stock wording, then ours)', ['tj'], /: password argument required \(argument pass must be a string\)$/],
    ['a user with a colon', ['t:j', 'pw'], /argument user must not contain ':'/],
    ['a numeric password', ['tj', 123], /password argument required \(argument pass must be a string\)/],
    ['a numeric realm', [() => true, 5], /option realm must be a string/],
    ['a realm with a newline', ['a', 'b', 'x\r\nSet-Cookie: y'], /option realm must be a string of Latin-1 text without control characters/],
    ['a realm beyond Latin-1 (setHeader would throw on every request)', ['a', 'b', 'Zo\u00eb \u65e5\u672c'], /option realm must be a string of Latin-1 text/],
    ['a null options object', [() => true, null], /option realm must be a string/],
    ['a non-boolean proxy', [() => true, { proxy: 'yes' }], /option proxy must be a boolean/],
    ['an unknown option (a typo must not leave a guard unconfigured)', [() => true, { proxy: true, relm: 'x' }], /: unknown option relm$/],
    ['an unknown option with fixed credentials', ['a', 'b', { Proxy: true }], /: unknown option Proxy$/],
  ])('%s', (_name, args, message) => {
    expect(() => call(...args)).toThrow(TypeError);
    expect(() => call(...args)).toThrow(/^@upgradeware\/basic-auth: /);
    expect(() => call(...args)).toThrow(message);
  });
});
