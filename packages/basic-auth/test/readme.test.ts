/**
 * The README's examples, run as written: each ```js block is taken out of README.md, compiled,
 * and run against the real packages and Node modules it imports. Only what ties a program to a
 * machine is redirected: `app.listen(port, host)` listens on 127.0.0.1 port 0, and `process` is
 * a stand-in with the example's environment.
 */
import * as http from 'node:http';
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import * as stream from 'node:stream';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import * as basicAuthPkg from '@upgradeware/basic-auth';
import * as uprPkg from '@upgradeware/upgrade-response';
import { HOST, rawConnect, rawRequest, request, until, readmeDispatcher, readmeBlock, readmeModule } from '../../../test-support';


/** The first ```js block after the heading `heading` in this package's README. */
const block = (heading: string): string => readmeBlock(join(__dirname, '..', 'README.md'), heading, 'js');

interface Running {
  port: number;
  close(): Promise<void>;
}
const running: Running[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.close();
});

/** Compile and run one README block; resolves once its server listens. */
async function run(source: string, env: Record<string, string>): Promise<Running> {
  const servers: http.Server[] = [];
  const sockets = new Set<net.Socket>();
  const modules: Record<string, unknown> = {
    'node:crypto': crypto,
    'node:net': net,
    'node:stream': stream,
    '@upgradeware/basic-auth': basicAuthPkg,
    '@upgradeware/upgrade-response': uprPkg,
    '@upgradeware/dispatcher': readmeDispatcher(servers, sockets),
  };
  const { code, diagnostics, require: fakeRequire } = readmeModule(source, modules);
  expect(diagnostics).toEqual([]);
  new Function('require', 'exports', 'process', code)(fakeRequire, {}, { env });
  expect(servers).toHaveLength(1);
  const server = servers[0]!;
  if (!server.listening) await new Promise((resolve) => server.once('listening', resolve));
  const r: Running = {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  running.push(r);
  return r;
}

const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

test('the usage example runs as written: the three forms, and the refusals', async () => {
  const app = await run(block('## Usage'), { ADMIN_PASSWORD: 'admin-pw' });
  const url = `http://${HOST}:${app.port}`;
  const as = (user: string, pass: string) => ({ headers: { Authorization: basic(user, pass) } });

  expect(await request(`${url}/admin`, as('admin', 'admin-pw'))).toMatchObject({ status: 200, body: 'hello "admin"' });
  const refused = await request(`${url}/admin`, as('admin', 'guess'));
  expect(refused).toMatchObject({ status: 401, body: 'Unauthorized' });
  expect(refused.headers['www-authenticate']).toBe('Basic realm="Admin area"');
  expect(await request(`${url}/api`, as('tj', 'wahoo'))).toMatchObject({ status: 200, body: 'hello "tj"' });
  expect((await request(`${url}/api`, as('tj', 'wah'))).status).toBe(401);
  expect(await request(`${url}/team`, as('ann', 'correct horse'))).toMatchObject({ status: 200, body: 'hello {"name":"ann"}' });
  expect((await request(`${url}/team`, as('ann', 'wrong'))).status).toBe(401);
  expect((await request(`${url}/team`, as('nobody', 'correct horse'))).status).toBe(401);
  // Outside the guarded paths: nobody is signed in.
  expect(await request(`${url}/`)).toMatchObject({ status: 200, body: 'hello undefined' });
});

test('the examples refuse to start without their password', async () => {
  await expect(run(block('## Usage'), {})).rejects.toThrow('set ADMIN_PASSWORD');
  await expect(run(block('### `proxy`'), {})).rejects.toThrow('set PROXY_PASSWORD');
});

describe('the CONNECT proxy example', () => {
  let echo: net.Server;
  let echoPort: number;
  const upstreams = new Set<net.Socket>();
  beforeAll(async () => {
    echo = net.createServer((socket) => {
      upstreams.add(socket);
      socket.on('close', () => upstreams.delete(socket));
      socket.on('error', () => undefined);
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => echo.listen(0, HOST, resolve));
    echoPort = (echo.address() as AddressInfo).port;
  });
  afterAll(async () => {
    for (const s of upstreams) s.destroy();
    await new Promise<void>((resolve) => echo.close(() => resolve()));
  });

  const connectTo = (port: number, auth?: string) =>
    `CONNECT ${HOST}:${port} HTTP/1.1\r\nHost: ${HOST}:${port}\r\n${auth ? `Proxy-Authorization: ${auth}\r\n` : ''}\r\n`;

  test('runs as written: 407 without credentials, a tunnel with them, 502 for a dead target', async () => {
    const app = await run(block('### `proxy`'), { PROXY_PASSWORD: 'pw' });
    const none = await rawRequest(app.port, connectTo(echoPort));
    expect(none.status).toBe(407);
    expect(none.headers['proxy-authenticate']).toEqual(['Basic realm="Proxy"']);

    const c = await rawConnect(app.port);
    try {
      c.socket.write(connectTo(echoPort, basic('proxy', 'pw')) + 'early|');
      const head = (await c.waitFor('early|')).toString('latin1');
      expect(head.startsWith('HTTP/1.1 200 Connection Established\r\n')).toBe(true);
      c.socket.write('late');
      await c.waitFor('early|late');
    } finally {
      c.close();
    }
    // A target nobody listens on: the connect error is an ordinary 502.
    const dead = net.createServer();
    await new Promise<void>((resolve) => dead.listen(0, HOST, resolve));
    const deadPort = (dead.address() as AddressInfo).port;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    expect((await rawRequest(app.port, connectTo(deadPort, basic('proxy', 'pw')))).status).toBe(502);
  });

  test('survives 1,000 client resets at every moment of a tunnel, and leaves no target connection open', async () => {
    const app = await run(block('### `proxy`'), { PROXY_PASSWORD: 'pw' });
    const auth = basic('proxy', 'pw');
    /** One tunnel, reset by the client at `moment`. */
    const once = (moment: number) =>
      new Promise<void>((resolve) => {
        const socket = net.connect(app.port, HOST);
        const timer = setTimeout(() => socket.destroy(), 3000);
        socket.on('error', () => undefined);
        socket.on('close', () => {
          clearTimeout(timer);
          resolve();
        });
        socket.on('connect', () => {
          if (moment === 0) return socket.resetAndDestroy(); // before a byte
          socket.write(connectTo(echoPort, auth) + (moment >= 3 ? 'data' : ''));
          if (moment === 1) return socket.resetAndDestroy(); // right behind the request
          let got = '';
          socket.on('data', (chunk: Buffer) => {
            got += chunk.toString('latin1');
            if (moment === 2 && got.includes('\r\n\r\n')) socket.resetAndDestroy(); // at the 200
            if (moment === 3 && got.endsWith('data')) {
              socket.write('more'); // mid-conversation
              socket.resetAndDestroy();
            }
          });
          if (moment === 4) setImmediate(() => socket.resetAndDestroy()); // while the target connects
        });
      });
    for (let i = 0; i < 1000; i += 50) await Promise.all(Array.from({ length: 50 }, (_, j) => once((i + j) % 5)));
    // Every target connection the proxy opened is closed again; the proxy still serves.
    await until(() => upstreams.size === 0, 5000);
    const c = await rawConnect(app.port);
    try {
      c.socket.write(connectTo(echoPort, auth) + 'still here');
      await c.waitFor('still here');
    } finally {
      c.close();
    }
  });
});
