/**
 * The demo scaled (issue 17): `node examples/chat/cluster.mjs` — two chat instances behind nginx
 * (round robin, no sticky sessions) with a redis-server of its own — in a child process, on the
 * built packages. Real HTTP through nginx, real `ws` clients. Needs Debian's nginx and redis-server
 * (run by .ci/run through jest.nginx.config.js).
 */
import WebSocket from 'ws';
import { build, login, request } from './demo';
import { startCluster, type Cluster } from './suites';

let cluster: Cluster;
let port = 0;
const sockets = new Set<WebSocket>();

beforeAll(async () => {
  build();
  cluster = await startCluster();
  port = cluster.port;
}, 200_000);

afterAll(async () => {
  for (const ws of sockets) ws.terminate();
  await cluster?.close();
});

type Message = Record<string, unknown>;
interface Open {
  ws: WebSocket;
  messages: Message[];
  closed: Promise<number>;
}

function open(url: string, cookie?: string, headers: Record<string, string> = {}): Promise<Open> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: cookie ? { cookie, ...headers } : headers });
    sockets.add(ws);
    const messages: Message[] = [];
    ws.on('message', (data) => messages.push(JSON.parse(String(data)) as Message));
    const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
    ws.once('open', () => resolve({ ws, messages, closed }));
    ws.once('error', reject);
  });
}

async function until(predicate: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('chat across instances through nginx; the admin feed shows both; a logout closes the sockets on both', async () => {
  const origin = `http://127.0.0.1:${port}`;
  const wsOrigin = `ws://127.0.0.1:${port}`;
  const auth = `Basic ${Buffer.from('admin:upgradeware').toString('base64')}`;
  // One admin feed per instance (round robin puts consecutive handshakes on both).
  const feeds = [await open(`${wsOrigin}/admin/feed`, undefined, { authorization: auth }), await open(`${wsOrigin}/admin/feed`, undefined, { authorization: auth })];
  const alice = await login(origin, 'alice', 'wonderland');
  const bob = await login(origin, 'bob', 'builder');
  // Alice twice and Bob once: consecutive handshakes alternate between A and B.
  const a1 = await open(`${wsOrigin}/chat?room=lobby`, alice);
  const a2 = await open(`${wsOrigin}/chat?room=lobby`, alice);
  const b1 = await open(`${wsOrigin}/chat?room=lobby`, bob);
  await until(() => [a1, a2, b1].every((s) => s.messages.some((m) => m.type === 'hello')), 'hello');

  // Every 'open' reached every feed, whichever instance it happened on.
  for (const f of feeds) {
    await until(() => f.messages.filter((m) => m.type === 'event' && (m.event as Message).type === 'open').length >= 3, 'open events');
    const instances = new Set(f.messages.filter((m) => m.type === 'event').map((m) => (m.event as Message).instance));
    expect([...instances].sort()).toEqual(['A', 'B']);
  }

  // A feed opened now starts with every connection of both instances: its own instance's snapshot,
  // then the other instance's part.
  const late = await open(`${wsOrigin}/admin/feed`, undefined, { authorization: auth });
  const listed = (): Message[] => late.messages
    .filter((m) => m.type === 'snapshot' || m.type === 'snapshot-part')
    .flatMap((m) => m.connections as Message[]);
  await until(() => listed().length >= 3, 'connections of both instances in a new feed');
  expect(new Set(listed().map((c) => c.instance))).toEqual(new Set(['A', 'B']));
  expect(listed().map((c) => c.user).sort()).toEqual(['alice', 'alice', 'bob']);
  late.ws.close();
  await late.closed;

  b1.ws.send(JSON.stringify({ type: 'say', text: 'hi from bob' }));
  for (const s of [a1, a2, b1]) {
    await until(() => s.messages.some((m) => m.type === 'message' && m.text === 'hi from bob'), 'message everywhere');
  }
  expect(a1.messages.filter((m) => m.type === 'message')).toHaveLength(1);

  const out = await request(`${origin}/logout`, { method: 'POST', headers: { cookie: alice } });
  expect(out.status).toBe(302);
  expect(await a1.closed).toBe(4001);
  expect(await a2.closed).toBe(4001);
  expect(b1.ws.readyState).toBe(WebSocket.OPEN);
  const again = await new Promise<number>((resolve) => {
    const ws = new WebSocket(`${wsOrigin}/chat`, { headers: { cookie: alice } });
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('open', () => {
      resolve(101);
      ws.terminate();
    });
    ws.once('error', () => undefined);
  });
  expect(again).toBe(401);
  // The log shows both instances served requests, with the clients' addresses (trust proxy).
  expect(cluster.output()).toMatch(/\[A\] .*GET \/chat/);
  expect(cluster.output()).toMatch(/\[B\] .*GET \/chat/);
  for (const s of [...feeds, b1]) {
    s.ws.close();
    await s.closed;
  }
});

test('an instance killed (SIGKILL) with sockets open: its clients reconnect through nginx to the other and keep their session', async () => {
  const origin = `http://127.0.0.1:${port}`;
  const wsOrigin = `ws://127.0.0.1:${port}`;
  const pids = /pid (\d+); B on \d+, pid (\d+)/.exec(cluster.output());
  expect(pids).not.toBeNull();
  const carol = await login(origin, 'carol', 'singer');
  // Two sockets: one on each instance.
  const first = await open(`${wsOrigin}/chat?room=kill`, carol);
  const second = await open(`${wsOrigin}/chat?room=kill`, carol);
  await until(() => [first, second].every((s) => s.messages.some((m) => m.type === 'hello')), 'hello');
  process.kill(Number(pids![1]), 'SIGKILL'); // instance A
  // One of the two loses its connection without a close frame (nginx closes its side: 1006 or 1005).
  const lost = await Promise.race([first.closed.then((code) => ({ s: first, code })), second.closed.then((code) => ({ s: second, code }))]);
  expect([1005, 1006]).toContain(lost.code);
  const survivor = lost.s === first ? second : first;
  expect(survivor.ws.readyState).toBe(WebSocket.OPEN);
  // Reconnecting: nginx passes over the dead instance; the session in Redis still holds.
  for (let i = 0; i < 3; i++) {
    const again = await open(`${wsOrigin}/chat?room=kill`, carol);
    await until(() => again.messages.some((m) => m.type === 'hello'), 'hello after the kill');
    expect(again.messages.find((m) => m.type === 'hello')!.user).toBe('carol');
    again.ws.close();
    await again.closed;
  }
  survivor.ws.close();
  await survivor.closed;
  expect(cluster.output()).toMatch(/instance A exited \(SIGKILL\)/);
});
