/**
 * Crashes a server must survive (issue 13), observed in a child process running the built
 * packages (crash-child.cjs): an uncaught exception ends the child, and every test checks that it
 * is still running and serving. Covered: an ordinary request pipelined with an upgrade or CONNECT
 * in one packet; 1,000 client resets at varied moments against each README example that a user
 * could copy (the root README's echo, basic-auth's CONNECT proxy); the time limit meeting an
 * `end()` that throws; an HTTP/2 CONNECT on an `allowHTTP1` server; errors printed to stderr.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as path from 'node:path';
import { HOST, until } from '../../test-support';

const root = path.resolve(__dirname, '../..');
const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
const fixtures = path.join(root, 'test-support/fixtures');

interface Ports {
  echo: number;
  proxy: number;
  upstream: number;
  limits: number;
  errors: number;
  h2: number;
}

let child: ChildProcessWithoutNullStreams;
let ports: Ports;
let stderr = '';
let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;

const BEARER = 'Authorization: Bearer s3cret\r\n';
const PROXY_AUTH = `Proxy-Authorization: Basic ${Buffer.from('proxy:pw').toString('base64')}\r\n`;
const wsHead = (extra = BEARER) =>
  `GET /echo HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`;
const connectHead = (extra = PROXY_AUTH) =>
  `CONNECT ${HOST}:${ports.upstream} HTTP/1.1\r\nHost: ${HOST}:${ports.upstream}\r\n${extra}\r\n`;
const getHead = (extra: string) => `GET / HTTP/1.1\r\nHost: ${HOST}\r\n${extra}\r\n`;

beforeAll(async () => {
  const build = spawnSync(
    process.execPath,
    [tsc, '-b', 'packages/dispatcher', 'packages/basic-auth', 'packages/session', 'packages/upgrade-response'],
    { cwd: root, encoding: 'utf8', timeout: 120_000 },
  );
  if (build.status !== 0) throw new Error(`tsc -b failed: ${build.stdout}${build.stderr}`);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    UPGRADEWARE_PATHS: JSON.stringify({
      dispatcher: path.join(root, 'packages/dispatcher'),
      upgradeResponse: path.join(root, 'packages/upgrade-response'),
      basicAuth: path.join(root, 'packages/basic-auth'),
      session: path.join(root, 'packages/session'),
      onHeaders: require.resolve('on-headers'),
      key: path.join(fixtures, 'localhost-key.pem'),
      cert: path.join(fixtures, 'localhost-cert.pem'),
    }),
  };
  // Errors at the end of the stack are printed unless NODE_ENV=test (jest's own value).
  delete env.NODE_ENV;
  delete env.DEBUG;
  child = spawn(process.execPath, [path.join(__dirname, 'crash-child.cjs')], { env });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.on('exit', (code, signal) => (exit = { code, signal }));
  ports = await new Promise<Ports>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the child did not start: ${stderr}`)), 20_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl !== -1) {
        clearTimeout(timer);
        resolve(JSON.parse(out.slice(0, nl)) as Ports);
      }
    });
    child.on('exit', () => reject(new Error(`the child exited: ${stderr}`)));
  });
}, 150_000);

afterAll(async () => {
  if (child && exit === null) {
    child.stdin.end();
    await until(() => exit !== null, 5000).catch(() => child.kill('SIGKILL'));
  }
});

function alive(): void {
  if (exit !== null) throw new Error(`the child died (${JSON.stringify(exit)}):\n${stderr}`);
}

/** A raw connection that collects what it receives. */
function open(port: number): Promise<{ socket: net.Socket; received: () => string; closed: () => boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, HOST);
    let data = '';
    let closed = false;
    socket.on('data', (d: Buffer) => (data += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => (closed = true));
    socket.once('connect', () => resolve({ socket, received: () => data, closed: () => closed }));
    socket.once('error', reject);
  });
}

/** Open, write, wait for `until` in the answer (bounded), close. Returns what came back. */
async function exchange(port: number, bytes: string, until: RegExp, then?: string, thenUntil?: RegExp): Promise<string> {
  const c = await open(port);
  try {
    c.socket.write(bytes);
    await waitFor(() => until.test(c.received()), () => `no ${until} in ${JSON.stringify(c.received())}`);
    if (then !== undefined) {
      c.socket.write(then);
      await waitFor(() => thenUntil!.test(c.received()), () => `no ${thenUntil} in ${JSON.stringify(c.received())}`);
    }
    return c.received();
  } finally {
    c.socket.destroy();
  }
}

async function waitFor(predicate: () => boolean, message: () => string, ms = 3000): Promise<void> {
  try {
    await until(predicate, ms);
  } catch {
    throw new Error(message());
  }
}

describe('an ordinary request and an upgrade or CONNECT in one packet', () => {
  test('GET then a WebSocket upgrade: the 404 of the GET, then the 101, then the echo', async () => {
    const text = await exchange(ports.echo, getHead(BEARER) + wsHead(), /HTTP\/1\.1 101 [^]*\r\n\r\n/, 'ping', /ping$/);
    expect(text).toMatch(/^HTTP\/1\.1 404 Not Found\r\n[^]*Cannot GET \/[^]*HTTP\/1\.1 101 Switching Protocols\r\n[^]*\r\n\r\nping$/);
    alive();
  });

  test('GET, GET, then an upgrade: each answered in order', async () => {
    const text = await exchange(ports.echo, getHead(BEARER) + getHead('') + wsHead(), /HTTP\/1\.1 101 [^]*\r\n\r\n/);
    const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    expect(statuses).toEqual(['404', '401', '101']);
    alive();
  });

  test('a refused GET then a refused upgrade: 401, 401, closed', async () => {
    const c = await open(ports.echo);
    c.socket.write(getHead('') + wsHead(''));
    await waitFor(c.closed, () => `not closed: ${c.received()}`);
    expect([...c.received().matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1])).toEqual(['401', '401']);
    alive();
  });

  test('GET then CONNECT on the proxy: the 404, then 200 Connection Established, then the tunnel', async () => {
    const text = await exchange(ports.proxy, getHead(PROXY_AUTH) + connectHead(), /200 Connection Established\r\n[^]*?\r\n\r\n/, 'tunnel', /tunnel$/);
    expect(text).toMatch(/^HTTP\/1\.1 404 Not Found\r\n[^]*HTTP\/1\.1 200 Connection Established\r\n(?:Date: [^\r]*\r\n)?\r\ntunnel$/);
    alive();
  });

  test('the earlier response is cut by a reset: nothing is served, nothing crashes', async () => {
    for (let i = 0; i < 50; i++) {
      const c = await open(i % 2 ? ports.echo : ports.proxy);
      c.socket.write(i % 2 ? getHead(BEARER) + wsHead() : getHead(PROXY_AUTH) + connectHead());
      if (i % 3 === 0) await new Promise((r) => setImmediate(r));
      c.socket.resetAndDestroy();
    }
    await exchange(ports.echo, wsHead(), /101[^]*\r\n\r\n/);
    alive();
  });
});

/** The moments at which a client resets, against one example. */
type Moment = (port: number) => Promise<void>;

function resetMoments(head: () => string, ready: RegExp, payload: string, pipelinedBefore: () => string): Moment[] {
  const reset = (s: net.Socket): void => {
    s.resetAndDestroy();
  };
  const tick = () => new Promise((r) => setImmediate(r));
  return [
    // before sending anything
    async (port) => reset((await open(port)).socket),
    // halfway through the head
    async (port) => {
      const c = await open(port);
      c.socket.write(head().slice(0, 20));
      await tick();
      reset(c.socket);
    },
    // right after the head, while the stack runs
    async (port) => {
      const c = await open(port);
      c.socket.write(head());
      reset(c.socket);
    },
    // a moment after the head
    async (port) => {
      const c = await open(port);
      c.socket.write(head());
      await tick();
      reset(c.socket);
    },
    // head and payload in one packet
    async (port) => {
      const c = await open(port);
      c.socket.write(head() + payload);
      await tick();
      reset(c.socket);
    },
    // after the switch
    async (port) => {
      const c = await open(port);
      c.socket.write(head());
      await until(() => ready.test(c.received()) || c.closed(), 2000).catch(() => undefined);
      reset(c.socket);
    },
    // while data flows through the switched connection
    async (port) => {
      const c = await open(port);
      c.socket.write(head());
      await until(() => ready.test(c.received()) || c.closed(), 2000).catch(() => undefined);
      c.socket.write(payload);
      c.socket.write(payload);
      reset(c.socket);
    },
    // with an ordinary request pipelined before it
    async (port) => {
      const c = await open(port);
      c.socket.write(pipelinedBefore() + head());
      await tick();
      reset(c.socket);
    },
  ];
}

const RESETS = 1000;
const BATCH = 50;

async function attack(port: number, moments: Moment[]): Promise<void> {
  for (let i = 0; i < RESETS; i += BATCH) {
    await Promise.all(Array.from({ length: Math.min(BATCH, RESETS - i) }, (_, j) => moments[(i + j) % moments.length]!(port)));
    alive();
  }
}

describe('README examples survive 1,000 client resets at varied moments', () => {
  test('the root README echo example (res.switchProtocols((socket) => socket.pipe(socket)))', async () => {
    await attack(ports.echo, resetMoments(() => wsHead(), /101[^]*\r\n\r\n/, 'x'.repeat(2048), () => getHead(BEARER)));
    // Still serving: a switch that echoes.
    const text = await exchange(ports.echo, wsHead(), /101[^]*\r\n\r\n/, 'still here', /still here$/);
    expect(text).toMatch(/^HTTP\/1\.1 101 /);
    alive();
  }, 120_000);

  test("the basic-auth README's CONNECT proxy (socket.pipe(upstream).pipe(socket))", async () => {
    await attack(ports.proxy, resetMoments(() => connectHead(), /200 Connection Established\r\n[^]*?\r\n\r\n/, 'y'.repeat(2048), () => getHead(PROXY_AUTH)));
    const text = await exchange(ports.proxy, connectHead(), /Established\r\n[^]*?\r\n\r\n/, 'through', /through$/);
    expect(text).toMatch(/^HTTP\/1\.1 200 Connection Established\r\n(?:Date: [^\r]*\r\n)?\r\nthrough$/);
    alive();
  }, 120_000);
});

describe('the time limit meets an end() that throws', () => {
  test.each([
    ['an on-headers hook that throws', '/hook'],
    ['a session holding a BigInt', '/bigint'],
  ])('%s: the connection is closed, the process lives', async (_name, url) => {
    const c = await open(ports.limits);
    c.socket.write(wsHead().replace('/echo', url));
    await waitFor(c.closed, () => `still open: ${c.received()}`, 4000);
    alive();
    const next = await exchange(ports.limits, wsHead().replace('/echo', '/x'), /served$/);
    expect(next).toMatch(/^HTTP\/1\.1 200 /);
  });
});

describe('HTTP/2 on app.attach(http2.createSecureServer({ allowHTTP1: true }))', () => {
  test('an HTTP/2 CONNECT goes through the stack (404: nobody here serves tunnels) and the server goes on serving', async () => {
    const client = http2.connect(`https://${HOST}:${ports.h2}`, { rejectUnauthorized: false });
    client.on('error', () => undefined);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const stream = client.request({ ':method': 'CONNECT', ':authority': `example.com:443` });
        stream.on('response', (h) => resolve(Number(h[':status'])));
        stream.on('error', reject);
        setTimeout(() => reject(new Error('no answer')), 3000).unref();
      });
      expect(status).toBe(404);
      const page = await new Promise<string>((resolve, reject) => {
        const stream = client.request({ ':path': '/' });
        let body = '';
        stream.on('data', (d: Buffer) => (body += d.toString()));
        stream.on('end', () => resolve(body));
        stream.on('error', reject);
      });
      expect(page).toBe('h2 page');
    } finally {
      client.close();
    }
    alive();
  });
});

test('an HTTP/1 head that says HTTP/2.0 is not taken for HTTP/2: answered on its socket (fuzz finding)', async () => {
  const text = await exchange(ports.echo, wsHead().replace('HTTP/1.1', 'HTTP/2.0'), /^HTTP\/1\.1 \d{3} [^]*\r\n\r\n/);
  expect(text).toMatch(/^HTTP\/1\.1 101 /);
  alive();
});

describe('errors at the end of the stack are printed (NODE_ENV is not test)', () => {
  test('for a request, an upgrade and a CONNECT, with their stacks', async () => {
    await exchange(ports.errors, getHead('Connection: close\r\n'), /HTTP\/1\.1 500/);
    await exchange(ports.errors, wsHead(''), /HTTP\/1\.1 500/);
    await exchange(ports.errors, `CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n`, /HTTP\/1\.1 500/);
    await waitFor(
      () => ['kaboom-GET-request', 'kaboom-GET-websocket', 'kaboom-CONNECT-request'].every((k) => stderr.includes(`Error: ${k}\n    at failing`)),
      () => `stderr: ${stderr}`,
    );
    alive();
  });
});

test('the child exits cleanly, with no uncaught exception on its stderr', async () => {
  alive();
  child.stdin.end();
  await until(() => exit !== null, 5000);
  expect(exit).toEqual({ code: 0, signal: null });
  expect(stderr).not.toMatch(/uncaught|ERR_HTTP_SOCKET_ASSIGNED|Unhandled/i);
});
