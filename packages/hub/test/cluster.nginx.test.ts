/**
 * Two app instances behind a real nginx (round robin, no sticky sessions, WebSocket proxying),
 * sharing sessions (connect-redis) and a hub (Redis Streams) on a real redis-server. Run by
 * .ci/run through jest.nginx.config.js; needs Debian's `nginx` and `redis-server`.
 */
import { RedisStore } from 'connect-redis';
import { redisTransport } from '@upgradeware/hub';
import { nextMessage, request, wsOpen } from '../../../test-support';
import { collect, instance, within, type Instance } from './cluster';
import { clients, startRedis, type Clients, type RedisServer } from './redis-helpers';
import { startNginx, type Nginx } from './nginx-helpers';

let redis: RedisServer;
let nginx: Nginx;
const nodes: Array<{ inst: Instance; clients: Clients }> = [];

beforeAll(async () => {
  redis = await startRedis();
  for (const name of ['A', 'B']) {
    const c = await clients('redis', redis.url);
    const store = new RedisStore({ client: c.store, prefix: 'nginx-test:' });
    const transport = redisTransport({ publisher: c.publisher, subscriber: c.subscriber, mode: 'streams', channel: 'nginx-test', blockMs: 1000 });
    nodes.push({ inst: await instance(name, store, transport, {}, 'loopback'), clients: c });
  }
  await Promise.all(nodes.map((n) => n.inst.hub.ready));
  nginx = await startNginx(nodes.map((n) => n.inst.server.port));
});

afterAll(async () => {
  await nginx?.stop();
  for (const n of nodes) {
    await n.inst.close();
    await n.clients.close();
  }
  await redis?.stop();
});

/** Send requests through nginx until the next one will land on `name` (round robin). */
async function aim(name: string): Promise<void> {
  for (let i = 0; i < 10; i++) {
    const who = (await request(`${nginx.url}/whoami`)).body.split(' ')[0];
    if (who !== name) return;
  }
  throw new Error(`round robin never left ${name}`);
}

test('login through nginx lands on A, the WebSocket on B; a broadcast from A reaches it; logout on A closes it', async () => {
  await aim('A');
  const login = await request(`${nginx.url}/login?user=alice`);
  expect(login.body).toBe('A');
  const cookie = String(login.headers['set-cookie']).split(';')[0]!;

  await aim('B');
  const { ws } = await wsOpen(`${nginx.wsUrl}/chat`, { headers: { cookie } });
  expect(await nextMessage(ws)).toBe('hello alice from B');
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, r) => resolve({ code, reason: String(r) })));

  // From A itself (straight to its port), so it surely starts on A.
  const got = collect(ws);
  for (let i = 0; i < 50 && got.length === 0; i++) {
    await request(`${nodes[0]!.inst.server.url}/say?text=through%20nginx`);
    await new Promise((r) => setTimeout(r, 20));
  }
  expect(got[0]).toBe('A: through nginx');

  await aim('A');
  const logout = await request(`${nginx.url}/logout`, { headers: { cookie } });
  expect(logout.body).toBe('A');
  expect(await within(closed, 3000, 'close on B')).toEqual({ code: 4001, reason: 'session ended' });
  await expect(wsOpen(`${nginx.wsUrl}/chat`, { headers: { cookie } })).rejects.toMatchObject({ status: 401 });
});

test('behind nginx (a trusted proxy on loopback), req.ip is the client nginx saw, not nginx', async () => {
  const { body } = await request(`${nginx.url}/whoami`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
  // nginx appends the peer it saw (127.0.0.1) to the client's header: every hop is loopback, so
  // with trust 'loopback' the first untrusted address is the one the client claimed — as Express.
  expect(body.split(' ')[1]).toBe('203.0.113.9');
  const direct = await request(`${nodes[0]!.inst.server.url}/whoami`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
  expect(direct.body).toBe('A 203.0.113.9');
});
