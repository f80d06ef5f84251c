/**
 * Issue 13: "every example in a README that a user could copy survives 1,000 client resets."
 * Every README program (found as readme-examples.test.ts finds them) runs, as written, in one
 * child process on the built packages (readme-resets-child.cjs). Each example that serves
 * upgrades or CONNECT is hit with 1,000 client resets spread over eight moments — before a byte,
 * mid-head, right after the head (before any answer), a tick later, with the new protocol's
 * first bytes in the same packet, right after the 101 (or the refusal), mid-frame, and behind a
 * pipelined ordinary request — then must answer exactly as it did before, with the child alive
 * (an uncaught exception would have ended it).
 *
 * To reach the moments after a switch, the examples this file knows are driven with what they
 * ask for (a token, a login cookie, a Host); one it does not know is hit on `/` (it still has
 * to survive, its switch is just not reached).
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { HOST, until } from '../../test-support';

const root = path.join(__dirname, '..', '..');
const RESETS = 1000;
const BATCH = 50;

interface Example {
  label: string;
  readme: string;
  heading: string;
  error?: string;
  ports: number[];
  upgrade: boolean[];
  connect: boolean[];
  /** Does the server answer ordinary requests at all (a bare 'upgrade' server does not)? */
  request: boolean[];
}

let child: ChildProcess;
let examples: Example[] = [];
let exited: { code: number | null; signal: string | null } | null = null;
let stderr = '';
let upstream: net.Server;
let upstreamPort = 0;
const tunnels = new Set<net.Socket>();

beforeAll(async () => {
  // CONNECT examples tunnel to this: an echo server.
  upstream = net.createServer((s) => {
    tunnels.add(s);
    s.once('close', () => tunnels.delete(s));
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((resolve) => upstream.listen(0, HOST, resolve));
  upstreamPort = (upstream.address() as net.AddressInfo).port;
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
  const build = spawnSync(process.execPath, [tsc, '-b'], { cwd: root, encoding: 'utf8', timeout: 180_000 });
  if (build.status !== 0) throw new Error(`tsc -b failed: ${build.stdout}${build.stderr}`);
  const env = { ...process.env };
  delete env.DEBUG;
  child = fork(path.join(__dirname, 'readme-resets-child.cjs'), [], { env, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.on('exit', (code, signal) => (exited = { code, signal }));
  examples = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the child did not start: ${stderr}`)), 60_000);
    child.on('message', (msg: { type: string; examples: Example[] }) => {
      clearTimeout(timer);
      resolve(msg.examples);
    });
    child.on('exit', () => reject(new Error(`the child exited: ${stderr}`)));
  });
}, 240_000);

afterAll(async () => {
  if (child && exited === null) {
    child.disconnect();
    await until(() => exited !== null, 5000).catch(() => child.kill('SIGKILL'));
  }
  // A tunnel still open now is the example's to close; this suite closes its own end anyway.
  for (const s of tunnels) s.destroy();
  await new Promise((resolve) => upstream.close(resolve));
});

function alive(during: string): void {
  if (exited !== null) throw new Error(`the child died during ${during} (${JSON.stringify(exited)}):\n${stderr}`);
}

// ---- What each known example needs to switch ------------------------------------------------

type Kind = 'ws' | 'raw' | 'connect';
interface Plan {
  kind: Kind;
  /** The request head (may need a cookie from `setup`). */
  head: (ctx: { cookie: string }) => string;
  /** Does the head switch (101, or 200 to CONNECT)? null: not asserted (an unknown example). */
  switches: boolean | null;
  /** An ordinary request that logs in, when the example needs a session cookie. */
  login?: string;
}
const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
const wsHead = (url: string, headers: Record<string, string> = {}) =>
  `GET ${url} HTTP/1.1\r\nHost: ${headers.Host ?? HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n` +
  Object.entries(headers)
    .filter(([k]) => k !== 'Host')
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('') +
  '\r\n';
const withCookie = (cookie: string): Record<string, string> => (cookie ? { Cookie: cookie } : {});

const PLANS: Record<string, Plan> = {
  'README.md#upgradeware': {
    kind: 'raw',
    head: () => `GET /echo HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: echo\r\nConnection: Upgrade\r\nAuthorization: Bearer s3cret\r\n\r\n`,
    switches: true,
  },
  'packages/basic-auth/README.md#Usage': { kind: 'ws', head: () => wsHead('/admin', { Authorization: basic('admin', 'readme-test-admin_password') }), switches: false },
  'packages/basic-auth/README.md#`proxy`': {
    kind: 'connect',
    head: () => `CONNECT ${HOST}:${upstreamPort} HTTP/1.1\r\nHost: ${HOST}:${upstreamPort}\r\nProxy-Authorization: ${basic('proxy', 'readme-test-proxy_password')}\r\n\r\n`,
    switches: true,
  },
  'packages/cookie-parser/README.md#Usage': { kind: 'ws', head: () => wsHead('/chat'), switches: false },
  'packages/dispatcher/README.md#Install': { kind: 'ws', head: () => wsHead('/admin/feed', { Authorization: basic('admin', 's3cret') }), switches: true },
  'packages/express/README.md#Install': { kind: 'ws', head: () => wsHead('/chat'), switches: false },
  'packages/logger/README.md#Install': { kind: 'ws', head: () => wsHead('/chat'), switches: false },
  'packages/query/README.md#Usage': { kind: 'ws', head: () => wsHead('/chat?room=lobby'), switches: true },
  'packages/response-time/README.md#Install': { kind: 'ws', head: () => wsHead('/'), switches: false },
  'packages/session/README.md#Usage': { kind: 'ws', head: ({ cookie }) => wsHead('/chat', withCookie(cookie)), switches: true, login: '/login' },
  'packages/upgrade-response/README.md#Install': { kind: 'raw', head: () => wsHead('/', { Authorization: 'Bearer s3cret' }), switches: true },
  'packages/vhost/README.md#Usage': { kind: 'ws', head: () => wsHead('/live', { Host: 'api.example.com' }), switches: true },
  'packages/websocket/README.md#Install': { kind: 'ws', head: () => wsHead('/echo'), switches: true },
  'packages/websocket/README.md#A complete, auth-protected example': {
    kind: 'ws',
    head: ({ cookie }) => wsHead('/chat', { Origin: 'https://chat.example.com', ...withCookie(cookie) }),
    switches: true,
    login: '/login?name=ann',
  },
  'packages/websocket/README.md#For scripts: HTTP Basic, and no browser at all': {
    kind: 'ws',
    head: () => wsHead('/feed', { Authorization: basic('bot', 'readme-test-feed_password') }),
    switches: true,
  },
};
const FALLBACK: Plan = { kind: 'ws', head: () => wsHead('/'), switches: null };

// ---- Talking to a server --------------------------------------------------------------------

interface Conn {
  socket: net.Socket;
  text: () => string;
  closed: () => boolean;
  /** Resolves when `re` matches what came back, or the connection closed, or after `ms`. */
  wait: (re: RegExp, ms?: number) => Promise<void>;
}
function open(port: number): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, HOST);
    let text = '';
    let closed = false;
    const waiters = new Set<() => void>();
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      for (const w of [...waiters]) w();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      for (const w of [...waiters]) w();
    });
    const wait = (re: RegExp, ms = 2000) =>
      new Promise<void>((done) => {
        const check = () => {
          if (!re.test(text) && !closed) return;
          waiters.delete(check);
          clearTimeout(timer);
          done();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          done();
        }, ms);
        waiters.add(check);
        check();
      });
    socket.once('connect', () => resolve({ socket, text: () => text, closed: () => closed, wait }));
    socket.once('error', reject);
  });
}
const HEAD_END = /\r\n\r\n/;
const statusOf = (text: string) => Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1] ?? 0);

/** One exchange: the head, then what the server answers (its status; 0 for none). */
async function answer(port: number, head: string): Promise<number> {
  const c = await open(port);
  try {
    c.socket.write(head);
    await c.wait(HEAD_END, 3000);
    return statusOf(c.text());
  } finally {
    c.socket.destroy();
  }
}

async function login(port: number, url: string): Promise<string> {
  const res = await fetch(`http://${HOST}:${port}${url}`, { redirect: 'manual' });
  await res.arrayBuffer();
  return res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
}

/** A masked binary frame header announcing 256 bytes, and 8 of them: cut mid-frame. */
const PARTIAL_FRAME = Buffer.concat([Buffer.from([0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4]), Buffer.alloc(8, 0x61)]);

type Moment = (port: number, head: string, payload: Buffer | string) => Promise<void>;
const tick = () => new Promise((r) => setImmediate(r));
const reset = (c: Conn) => void c.socket.resetAndDestroy();
const MOMENTS: Array<[string, Moment]> = [
  ['before a byte', async (port) => reset(await open(port))],
  [
    'mid-head',
    async (port, head) => {
      const c = await open(port);
      c.socket.write(head.slice(0, Math.max(1, head.length >> 1)));
      await tick();
      reset(c);
    },
  ],
  [
    'right after the head, before any answer',
    async (port, head) => {
      const c = await open(port);
      c.socket.write(head);
      reset(c);
    },
  ],
  [
    'a tick after the head',
    async (port, head) => {
      const c = await open(port);
      c.socket.write(head);
      await tick();
      reset(c);
    },
  ],
  [
    'head and the first bytes of the new protocol in one packet',
    async (port, head, payload) => {
      const c = await open(port);
      c.socket.write(Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(payload)]));
      await tick();
      reset(c);
    },
  ],
  [
    'right after the 101 (or the refusal)',
    async (port, head) => {
      const c = await open(port);
      c.socket.write(head);
      await c.wait(HEAD_END);
      reset(c);
    },
  ],
  [
    'mid-frame',
    async (port, head, payload) => {
      const c = await open(port);
      c.socket.write(head);
      await c.wait(HEAD_END);
      if (!c.closed()) c.socket.write(payload);
      await tick();
      reset(c);
    },
  ],
  [
    'behind a pipelined ordinary request',
    async (port, head) => {
      const c = await open(port);
      c.socket.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n` + head);
      await tick();
      reset(c);
    },
  ],
];

test('every README program that serves is found and runs in the child', () => {
  const serving = examples.filter((e) => e.ports.length > 0);
  expect(serving.length).toBeGreaterThanOrEqual(Object.keys(PLANS).length);
  expect(serving.map((e) => `${e.readme}#${e.heading}`)).toEqual(expect.arrayContaining(Object.keys(PLANS)));
  // Only examples that serve nothing may fail to run (a Store subclass shown alone).
  expect(examples.filter((e) => e.error !== undefined && e.ports.length > 0)).toEqual([]);
  alive('start-up');
});

const keys = Object.keys(PLANS);
test.each(keys.map((k) => [k]))('%s: 1,000 client resets at eight moments; it answers as before and the process lives', async (key) => {
  const matching = examples.filter((e) => `${e.readme}#${e.heading}` === key);
  expect(matching.length).toBeGreaterThan(0);
  for (const example of matching) {
    const plan = PLANS[key] ?? FALLBACK;
    for (let i = 0; i < example.ports.length; i++) {
      if (!example.upgrade[i] && !example.connect[i]) continue;
      const port = example.ports[i]!;
      const cookie = plan.login ? await login(port, plan.login) : '';
      const head = plan.head({ cookie });
      const before = await answer(port, head);
      const switched = plan.kind === 'connect' ? before === 200 : before === 101;
      if (plan.switches !== null) expect({ example: example.label, switched }).toEqual({ example: example.label, switched: plan.switches });
      const payload = plan.kind === 'ws' ? PARTIAL_FRAME : 'x'.repeat(2048);
      for (let done = 0; done < RESETS; done += BATCH) {
        await Promise.all(
          Array.from({ length: Math.min(BATCH, RESETS - done) }, (_, j) => MOMENTS[(done + j) % MOMENTS.length]![1](port, head, payload)),
        );
        alive(`${example.label} (resets ${done}–${done + BATCH})`);
      }
      // Still serving, as before: the same answer to the same handshake, and an ordinary request answered.
      expect({ example: example.label, status: await answer(port, head) }).toEqual({ example: example.label, status: before });
      if (example.request[i]) expect(await answer(port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`)).toBeGreaterThanOrEqual(200);
      alive(example.label);
    }
  }
}, 60_000);

test('after all the resets: the child is alive and printed no warning of a leak or an unhandled error', () => {
  alive('the whole run');
  expect(stderr).not.toMatch(/MaxListenersExceeded|Unhandled|uncaught|ERR_HTTP_SOCKET_ASSIGNED/i);
});
