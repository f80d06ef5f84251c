/**
 * Site mode and proxy mode never accept each other's sign-in (issue 13 item 9), checked with real
 * CONNECT tunnels, requests and upgrades; a check that answers after the response already went
 * out (the dispatcher's upgradeTimeout 503) changes nothing and throws nothing (item 3); the
 * refusal carries its Content-Length, so a logger sees the length of what was sent (issue 15).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { createApp } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade, type NextFunction } from '@upgradeware/upgrade-response';
import { basicAuth } from '@upgradeware/basic-auth';
import { delay, rawConnect, rawRequest, request, start, until, wsHandshake, type TestServer } from '../../../test-support';

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const SITE = `Basic ${b64('admin:s3cret')}`;
const PROXY = `Basic ${b64('proxy:pw')}`;

/** A local echo server: the only target the test proxy tunnels to. */
async function echoServer() {
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** The tunnel of a forward proxy, to `echoPort` only; anything else goes on. */
function tunnel(echoPort: number) {
  return supportsUpgrade(function tunnel(req: IncomingMessage, res: ServerResponse, next: NextFunction) {
    if (!isUpgradeResponse(res) || req.method !== 'CONNECT') return next();
    const upstream = net.connect(echoPort, '127.0.0.1');
    upstream.once('error', next);
    upstream.once('connect', () => {
      res.switchProtocols((socket, head) => {
        upstream.write(head);
        socket.on('error', () => upstream.destroy());
        socket.on('close', () => upstream.destroy());
        upstream.on('close', () => socket.destroy());
        socket.pipe(upstream).pipe(socket);
      });
    });
  });
}

const connectTo = (port: number, extra: Record<string, string> = {}) =>
  `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
  Object.entries(extra)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('') +
  '\r\n';

/** Open a CONNECT tunnel and prove it carries bytes; or return the refusal's status. */
async function tryTunnel(port: number, echoPort: number, extra: Record<string, string>): Promise<'tunnel' | number> {
  const c = await rawConnect(port);
  try {
    c.socket.write(connectTo(echoPort, extra));
    const head = (await c.waitFor('\r\n\r\n')).toString('latin1');
    if (!head.startsWith('HTTP/1.1 200 ')) return Number(head.slice(9, 12));
    c.socket.write('through');
    await c.waitFor('through');
    return 'tunnel';
  } finally {
    c.close();
  }
}

describe('site credentials never open a CONNECT tunnel', () => {
  let s: TestServer;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  beforeAll(async () => {
    echo = await echoServer();
    const app = createApp();
    // A site guard at the root runs for CONNECT too (root layers see every request) …
    app.use(basicAuth('admin', 's3cret', 'site'));
    // … and the proxy guard behind it must still ask for proxy credentials.
    app.use(basicAuth('proxy', 'pw', { proxy: true, realm: 'proxy' }));
    app.use(tunnel(echo.port));
    app.use((req: IncomingMessage, res: ServerResponse) => res.end(`in as ${String(req.user)}`));
    s = await start(app);
  });
  afterAll(async () => {
    await s.close();
    await echo.close();
  });

  test('Authorization alone: 407, no connection to the target', async () => {
    const before = echo.connections();
    const r = await rawRequest(s.port, connectTo(echo.port, { Authorization: SITE }));
    expect(r.status).toBe(407);
    expect(r.headers['proxy-authenticate']).toEqual(['Basic realm="proxy"']);
    expect(r.closed).toBe(true);
    expect(echo.connections()).toBe(before);
  });

  test('both headers: the tunnel opens and carries bytes; proxy credentials alone are refused by the site guard', async () => {
    expect(await tryTunnel(s.port, echo.port, { Authorization: SITE, 'Proxy-Authorization': PROXY })).toBe('tunnel');
    expect(await tryTunnel(s.port, echo.port, { 'Proxy-Authorization': PROXY })).toBe(401);
  });

  test('an ordinary request with site credentials alone meets the proxy guard (407), with both it gets in', async () => {
    expect((await request(`${s.url}/`, { headers: { Authorization: SITE } })).status).toBe(407);
    const both = await request(`${s.url}/`, { headers: { Authorization: SITE, 'Proxy-Authorization': PROXY } });
    // The later layer's user is the one on the request.
    expect(both).toMatchObject({ status: 200, body: 'in as proxy' });
  });

  test('a req.user set by another middleware (a session login) does not open a tunnel either', async () => {
    const app = createApp();
    app.use(
      supportsUpgrade((req: IncomingMessage, _res: ServerResponse, next: NextFunction) => {
        req.user = 'from-a-session';
        next();
      }),
    );
    app.use(basicAuth('proxy', 'pw', { proxy: true, realm: 'proxy' }));
    app.use(tunnel(echo.port));
    const t = await start(app);
    try {
      expect(await tryTunnel(t.port, echo.port, {})).toBe(407);
      expect(await tryTunnel(t.port, echo.port, { 'Proxy-Authorization': PROXY })).toBe('tunnel');
    } finally {
      await t.close();
    }
  });
});

describe('proxy credentials never pass a site guard', () => {
  let s: TestServer;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  const admin: string[] = [];
  beforeAll(async () => {
    echo = await echoServer();
    const app = createApp();
    // A proxy guard for every request (as the README says it is) …
    app.use(basicAuth('proxy', 'pw', { proxy: true, realm: 'proxy' }));
    app.use(tunnel(echo.port));
    // … and an admin area behind it.
    app.use('/admin', basicAuth('admin', 's3cret', 'admin'));
    app.use(
      '/admin',
      supportsUpgrade((req: IncomingMessage, res: ServerResponse) => {
        admin.push(String(req.user));
        if (!isUpgradeResponse(res)) return res.end(`admin ${String(req.user)}`);
        res.switchProtocols((socket) => socket.end());
      }),
    );
    s = await start(app);
  });
  afterAll(async () => {
    await s.close();
    await echo.close();
  });

  test('Proxy-Authorization alone: 401 from basicAuth("admin", …) on a request and on an upgrade', async () => {
    const r = await request(`${s.url}/admin`, { headers: { 'Proxy-Authorization': PROXY } });
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe('Basic realm="admin"');
    const up = await rawRequest(s.port, wsHandshake('/admin', { 'Proxy-Authorization': PROXY }));
    expect(up.status).toBe(401);
    expect(up.closed).toBe(true);
    expect(admin).toEqual([]);
  });

  test('with both headers the admin area opens, as admin; the tunnel still works', async () => {
    const r = await request(`${s.url}/admin`, { headers: { 'Proxy-Authorization': PROXY, Authorization: SITE } });
    expect(r).toMatchObject({ status: 200, body: 'admin admin' });
    const up = await rawRequest(s.port, wsHandshake('/admin', { 'Proxy-Authorization': PROXY, Authorization: SITE }));
    expect(up.status).toBe(101);
    expect(await tryTunnel(s.port, echo.port, { 'Proxy-Authorization': PROXY })).toBe('tunnel');
  });
});

describe('skipping within one mode', () => {
  let s: TestServer;
  const calls: string[] = [];
  const check = (name: string) => (user: string, pass: string) => {
    calls.push(name);
    return pass === `${user}-pw`;
  };
  beforeAll(async () => {
    const app = createApp();
    app.use(basicAuth(check('site'), 'site'));
    // The same realm again: the credentials were checked for it, the layer is skipped.
    app.use('/same', basicAuth(check('same'), 'site'));
    // Another realm: another protection space, so its own check runs.
    app.use('/other', basicAuth((user, pass) => check('other')(user, pass) && user === 'root', 'other'));
    app.use((req: IncomingMessage, res: ServerResponse) => res.end(`in as ${String(req.user)}`));
    s = await start(app);
  });
  afterAll(() => s.close());

  const as = (user: string) => ({ headers: { Authorization: `Basic ${b64(`${user}:${user}-pw`)}` } });

  test('a second layer of the same mode and realm is skipped, as basic-auth-connect skips on req.user', async () => {
    calls.length = 0;
    expect(await request(`${s.url}/same`, as('bob'))).toMatchObject({ status: 200, body: 'in as bob' });
    expect(calls).toEqual(['site']);
  });

  test('a layer of another realm runs its own check: a user of the first realm is not let in', async () => {
    calls.length = 0;
    const r = await request(`${s.url}/other`, as('bob'));
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe('Basic realm="other"');
    expect(calls).toEqual(['site', 'other']);
    expect(await request(`${s.url}/other`, as('root'))).toMatchObject({ status: 200, body: 'in as root' });
  });

  test('a req.user changed by another middleware after our sign-in counts as that middleware’s', async () => {
    const app = createApp();
    app.use(basicAuth('proxy', 'pw', { proxy: true }));
    app.use(
      supportsUpgrade((req: IncomingMessage, _res: ServerResponse, next: NextFunction) => {
        req.user = { id: 7 }; // e.g. a user record looked up from the proxy login
        next();
      }),
    );
    // A foreign req.user: a site guard skips, as basic-auth-connect does; a proxy guard does not.
    app.use('/site', basicAuth('admin', 's3cret'));
    app.use('/proxy', basicAuth('other', 'pw2', { proxy: true }));
    app.use((_req: IncomingMessage, res: ServerResponse) => res.end('in'));
    const t = await start(app);
    try {
      const headers = { 'Proxy-Authorization': PROXY };
      expect((await request(`${t.url}/site`, { headers })).status).toBe(200);
      expect((await request(`${t.url}/proxy`, { headers })).status).toBe(407);
    } finally {
      await t.close();
    }
  });
});

describe('a check that answers after the response went out', () => {
  let s: TestServer;
  const outcomes: string[] = [];
  const rejections: unknown[] = [];
  const onRejection = (reason: unknown) => rejections.push(reason);
  beforeAll(async () => {
    process.on('unhandledRejection', onRejection);
    const app = createApp({ upgradeTimeout: 50 });
    app.use(
      '/callback',
      basicAuth((_user, pass, done) => {
        setTimeout(() => {
          try {
            done(null, pass === 'yes' ? 'u' : false);
            outcomes.push('callback returned');
          } catch (err) {
            outcomes.push(`callback threw ${String(err)}`);
          }
        }, 200);
      }),
    );
    app.use(
      '/promise',
      basicAuth((_user, pass) =>
        delay(200).then(() => {
          outcomes.push('promise settled');
          return pass === 'yes';
        }),
      ),
    );
    app.use((_req: IncomingMessage, res: ServerResponse) => res.end('in'));
    s = await start(app);
  });
  afterAll(async () => {
    process.off('unhandledRejection', onRejection);
    await s.close();
  });

  test.each(['/callback', '/promise'])('%s refusing after the 503 of upgradeTimeout: no throw, the server serves on', async (path) => {
    outcomes.length = 0;
    const r = await rawRequest(s.port, wsHandshake(path, { Authorization: `Basic ${b64('u:no')}` }));
    expect(r.status).toBe(503);
    expect(r.closed).toBe(true);
    await until(() => outcomes.length === 1, 2000);
    expect(outcomes).toEqual([path === '/callback' ? 'callback returned' : 'promise settled']);
    // Let the settled promise's reaction run, then look for anything that escaped.
    await delay(20);
    expect(rejections).toEqual([]);
    // Still serving: an ordinary request with good credentials gets in, a refused one its 401.
    expect(await request(`${s.url}${path}`, { headers: { Authorization: `Basic ${b64('u:yes')}` } })).toMatchObject({ status: 200, body: 'in' });
    expect((await request(`${s.url}${path}`, { headers: { Authorization: `Basic ${b64('u:no')}` } })).status).toBe(401);
  });

  test.each(['/callback', '/promise'])('%s letting the request in after the 503: nothing more is written, the server serves on', async (path) => {
    outcomes.length = 0;
    const r = await rawRequest(s.port, wsHandshake(path, { Authorization: `Basic ${b64('u:yes')}` }));
    expect(r.status).toBe(503);
    expect(r.body.includes('in')).toBe(false);
    await until(() => outcomes.length === 1, 2000);
    await delay(20);
    expect(rejections).toEqual([]);
    expect(await request(`${s.url}${path}`, { headers: { Authorization: `Basic ${b64('u:yes')}` } })).toMatchObject({ status: 200, body: 'in' });
  });

  test('a client that went away before a late refusal: nothing written, nothing thrown', async () => {
    outcomes.length = 0;
    const c = await rawConnect(s.port);
    c.socket.write(`GET /callback HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ${b64('u:no')}\r\n\r\n`);
    await delay(20);
    c.socket.resetAndDestroy();
    await until(() => outcomes.length === 1, 2000);
    expect(outcomes).toEqual(['callback returned']);
    expect((await request(`${s.url}/callback`, { headers: { Authorization: `Basic ${b64('u:yes')}` } })).status).toBe(200);
  });
});

describe('the refusal carries its length (a logger prints it)', () => {
  test.each([
    ['site mode', {}, 401, 'Unauthorized'],
    ['proxy mode', { proxy: true }, 407, 'Proxy Authentication Required'],
  ] as const)('%s: Content-Length set on res, on a request and on an upgrade', async (_mode, options, status, body) => {
    const logged: unknown[] = [];
    const app = createApp();
    app.use(
      supportsUpgrade((_req: IncomingMessage, res: ServerResponse, next: NextFunction) => {
        // What morgan's :res[content-length] reads.
        res.on('finish', () => logged.push(res.getHeader('content-length')));
        next();
      }),
    );
    app.use(basicAuth('a', 'b', options));
    const t = await start(app);
    try {
      const plain = await rawRequest(t.port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      const up = await rawRequest(t.port, wsHandshake('/'));
      for (const r of [plain, up]) {
        expect(r.status).toBe(status);
        expect(r.body).toBe(body);
        expect(r.headers['content-length']).toEqual([String(body.length)]);
      }
      await until(() => logged.length === 2);
      expect(logged).toEqual([body.length, body.length]);
    } finally {
      await t.close();
    }
  });
});

test('pipelined in one packet: two refusals on a kept-alive connection, then a request that gets in', async () => {
  const app = createApp();
  app.use(basicAuth('a', 'b'));
  app.use((req: IncomingMessage, res: ServerResponse) => res.end(`in as ${String(req.user)}`));
  const t = await start(app);
  try {
    const get = (auth = '') => `GET / HTTP/1.1\r\nHost: x\r\n${auth}\r\n`;
    const r = await rawRequest(t.port, get() + get(`Authorization: Basic ${b64('a:nope')}\r\n`) + get(`Authorization: Basic ${b64('a:b')}\r\nConnection: close\r\n`));
    const statuses = [...r.raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]);
    expect(statuses).toEqual(['401', '401', '200']);
    expect(r.raw.endsWith('in as a')).toBe(true);
    expect(r.closed).toBe(true);
  } finally {
    await t.close();
  }
});
