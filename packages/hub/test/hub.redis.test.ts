/**
 * The hub against a real redis-server (our own, on a free loopback port): two app instances, each
 * with its own Redis clients (node-redis and ioredis) through a link the test can cut. Sessions in
 * connect-redis. Run with `node node_modules/jest/bin/jest.js -c jest.redis.config.js packages/hub`.
 */
import WebSocket from 'ws';
import { RedisStore } from 'connect-redis';
import { createHub, redisTransport, subscribeKeyspace, type HubTransport } from '@upgradeware/hub';
import { delay, request, until, wsOpen } from '../../../test-support';
import { chat, collect, instance, login, sidOf, within, wsPair, type Instance } from './cluster';
import { clients, link, startRedis, type Clients, type Lib, type Link, type RedisServer } from './redis-helpers';

let redis: RedisServer;
let counter = 0;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

interface Node {
  link: Link;
  clients: Clients;
  inst: Instance;
  store: RedisStore;
}

interface Pair {
  a: Node;
  b: Node;
  prefix: string;
  close(): Promise<void>;
}

async function node(
  name: string,
  lib: Lib,
  mode: 'pubsub' | 'streams',
  channel: string,
  prefix: string,
  opts: { wait?: boolean; cut?: boolean; watch?: Parameters<typeof instance>[3] } = {},
): Promise<Node> {
  const l = await link(redis.port);
  if (opts.cut) l.cut();
  const c = await clients(lib, l.url, { wait: opts.wait });
  const store = new RedisStore({ client: c.store, prefix });
  const transport: HubTransport = redisTransport({ publisher: c.publisher, subscriber: c.subscriber, mode, channel, blockMs: 1000 });
  const inst = await instance(name, store, transport, opts.watch ?? {});
  return { link: l, clients: c, inst, store };
}

async function pair(lib: Lib, mode: 'pubsub' | 'streams', opts: Parameters<typeof node>[5] = {}): Promise<Pair> {
  const id = `${process.pid}-${++counter}`;
  const channel = `hub-test:${id}`;
  const prefix = `sess-test:${id}:`;
  const a = await node('A', lib, mode, channel, prefix, opts);
  const b = await node('B', lib, mode, channel, prefix, opts);
  if (!opts.cut) await Promise.all([a.inst.hub.ready, b.inst.hub.ready]);
  return {
    a,
    b,
    prefix,
    close: async () => {
      for (const n of [a, b]) {
        n.link.restore();
        await n.inst.close();
        await n.clients.close();
        await n.link.close();
      }
    },
  };
}

/**
 * Two hubs alone (no app instances), each with its own clients through its own link to Redis:
 * A's link cut from the start with `cutA`, A's transport with `maxQueue: maxQueueA`. `close()`
 * closes the hubs, then the clients, then the links.
 */
async function twoHubs(lib: Lib, mode: 'pubsub' | 'streams', opts: { cutA?: boolean; maxQueueA?: number } = {}) {
  const la = await link(redis.port);
  const lb = await link(redis.port);
  if (opts.cutA) la.cut();
  const ca = await clients(lib, la.url, { wait: !opts.cutA });
  const cb = await clients(lib, lb.url);
  const channel = `hub-test:${process.pid}-${++counter}`;
  const hub = (c: Clients, maxQueue?: number) =>
    createHub({ transport: redisTransport({ publisher: c.publisher, subscriber: c.subscriber, mode, channel, blockMs: 1000, maxQueue }) });
  const a = hub(ca, opts.maxQueueA);
  const b = hub(cb);
  const close = async (): Promise<void> => {
    for (const x of [a, b, ca, cb, la, lb]) await x.close();
  };
  return { a, b, la, close };
}

/** Broadcast `count` numbered messages from A's hub to the room 'chat', `gap` ms apart every 10. */
async function broadcastNumbered(p: Pair, count: number, during?: (i: number) => void | Promise<void>): Promise<void> {
  for (let i = 0; i < count; i++) {
    await during?.(i);
    p.a.inst.hub.broadcast(`m${i}`, { room: 'chat' });
    if (i % 10 === 9) await delay(1);
  }
}

/** Wait until B's pub/sub subscription or stream reader is live (a first message gets through). */
async function warm(p: Pair, ws: WebSocket): Promise<void> {
  const got = collect(ws);
  for (let i = 0; i < 100 && !got.includes('A: warm'); i++) {
    await request(`${p.a.inst.server.url}/say?text=warm`);
    await delay(20);
  }
  if (!got.includes('A: warm')) throw new Error('subscription never became live');
  ws.removeAllListeners('message');
}

describe.each([
  ['redis', 'pubsub'],
  ['redis', 'streams'],
  ['ioredis', 'pubsub'],
  ['ioredis', 'streams'],
] as Array<[Lib, 'pubsub' | 'streams']>)('%s clients, %s mode', (lib, mode) => {
  test('login on A, socket on B, a broadcast from A reaches B, logout on A closes B (4001), the old cookie gets 401', async () => {
    const p = await pair(lib, mode);
    try {
      const cookie = await login(p.a.inst);
      const s = await chat(p.b.inst, cookie);
      expect(s.greeting).toBe('hello alice from B');
      await warm(p, s.ws);
      const got = collect(s.ws);
      await request(`${p.a.inst.server.url}/say?text=hello`);
      await until(() => got.length === 1);
      expect(got).toEqual(['A: hello']);
      await request(`${p.a.inst.server.url}/logout`, { headers: { cookie } });
      expect(await within(s.closed, 3000, 'close on B')).toEqual({ code: 4001, reason: 'session ended' });
      await expect(wsOpen(`${p.b.inst.server.wsUrl}/chat`, { headers: { cookie } })).rejects.toMatchObject({ status: 401 });
    } finally {
      await p.close();
    }
  });

  test('a malformed message on the channel is ignored (counted, logged via debug); the next good one is delivered', async () => {
    const p = await pair(lib, mode);
    try {
      const s = await chat(p.b.inst, await login(p.a.inst));
      await warm(p, s.ws);
      const before = p.b.inst.hub.stats.malformed;
      const channel = `hub-test:${process.pid}-${counter}`;
      for (const junk of ['not json', '{"v":1}', '{"v":1,"o":"x","s":1,"t":"d","r":"chat","c":1006,"e":""}']) {
        if (mode === 'pubsub') await redis.command(['PUBLISH', channel, junk]);
        else await redis.command(['XADD', channel, '*', 'm', junk]);
      }
      if (mode === 'streams') await redis.command(['XADD', channel, '*', 'other-field', 'x']);
      const got = collect(s.ws);
      await request(`${p.a.inst.server.url}/say?text=after`);
      await until(() => got.length === 1);
      expect(got).toEqual(['A: after']);
      expect(p.b.inst.hub.stats.malformed - before).toBe(3);
      expect(s.ws.readyState).toBe(WebSocket.OPEN);
    } finally {
      await p.close();
    }
  });

  test('Redis down at start: local delivery works at once; the instances reach each other once Redis is there', async () => {
    const { a, b, la, close } = await twoHubs(lib, mode, { cutA: true });
    const onA = await wsPair();
    const onB = await wsPair();
    try {
      a.join(onA.server, 'r');
      b.join(onB.server, 'r');
      const gotA = collect(onA.client);
      const gotB = collect(onB.client);
      expect(a.broadcast('while down', { room: 'r' })).toBe(1);
      await until(() => gotA.length === 1);
      await delay(300);
      la.restore();
      await within(Promise.all([a.ready, b.ready]), 5000, 'hubs ready');
      for (let i = 0; i < 100 && !gotB.includes('up'); i++) {
        a.broadcast('up', { room: 'r' });
        await delay(20);
      }
      expect(gotB).toContain('up');
      if (mode === 'streams') expect(gotB[0]).toBe('while down');
    } finally {
      await onA.close();
      await onB.close();
      await close();
    }
  });

  test('an instance killed with sockets open: its clients reconnect to the other instance and keep their session', async () => {
    const p = await pair(lib, mode);
    try {
      const cookie = await login(p.a.inst);
      const s = await chat(p.a.inst, cookie);
      await p.a.inst.kill();
      expect((await within(s.closed, 3000, 'reset')).code).toBe(1006);
      const again = await chat(p.b.inst, cookie);
      expect(again.greeting).toBe('hello alice from B');
      again.ws.close();
    } finally {
      await p.close();
    }
  });
});

/**
 * 1,000 numbered broadcasts from A (`during(p, i)` runs before the i-th): B's WebSocket gets all
 * of them, in order, once each.
 */
async function allArriveInOrder(lib: Lib, mode: 'pubsub' | 'streams', during?: (p: Pair, i: number) => void | Promise<void>): Promise<void> {
  const p = await pair(lib, mode);
  try {
    const s = await chat(p.b.inst, await login(p.a.inst));
    await warm(p, s.ws);
    const got = collect(s.ws);
    await broadcastNumbered(p, 1000, during && ((i) => during(p, i)));
    await until(() => got.length >= 1000, 10_000);
    await delay(100);
    expect(got).toEqual(Array.from({ length: 1000 }, (_, i) => `m${i}`));
  } finally {
    await p.close();
  }
}

/** Cut a link at the 300th broadcast, restore it 500 ms later at the 600th. */
const cutMidBroadcast = (which: (p: Pair) => Link) => async (p: Pair, i: number) => {
  if (i === 300) which(p).cut();
  if (i === 600) {
    await delay(500);
    which(p).restore();
  }
};

describe.each(['redis', 'ioredis'] as Lib[])('streams mode (%s): nothing lost across an outage', (lib) => {
  test("B's link cut for 500 ms in the middle of 1,000 broadcasts: B's client gets all of them, in order, once each", () =>
    allArriveInOrder(lib, 'streams', cutMidBroadcast((p) => p.b.link)));

  test("the publisher's own link cut for 500 ms mid-broadcast: the failed writes are retried in order, none lost or doubled", () =>
    allArriveInOrder(lib, 'streams', cutMidBroadcast((p) => p.a.link)));

  test('a slow subscriber (its event loop blocked for 1 s) still gets every message, in order', () =>
    // Blocking this process blocks both instances; B's reader is the one that falls behind
    // while A keeps writing into the stream from its queued publishes.
    allArriveInOrder(lib, 'streams', (_p, i) => {
      if (i === 500) {
        const end = Date.now() + 1000;
        while (Date.now() < end);
      }
    }));
});

describe.each(['redis', 'ioredis'] as Lib[])('without an outage (%s)', (lib) => {
  test('pub/sub: 1,000 broadcasts arrive in order, once each', () => allArriveInOrder(lib, 'pubsub'));
});

/**
 * Two hubs on their own links to Redis: A publishes with `maxQueue: 10`, B has a WebSocket in
 * room `r` whose messages arrive in `got` (emptied after a warm-up that proved the path works).
 */
async function withMaxQueue10(
  mode: 'pubsub' | 'streams',
  run: (t: { a: ReturnType<typeof createHub>; la: Link; got: string[] }) => Promise<void>,
): Promise<void> {
  const { a, b, la, close } = await twoHubs('redis', mode, { maxQueueA: 10 });
  const onB = await wsPair();
  try {
    await Promise.all([a.ready, b.ready]);
    b.join(onB.server, 'r');
    const got = collect(onB.client);
    for (let i = 0; i < 100 && !got.includes('warm'); i++) {
      a.broadcast('warm', { room: 'r' });
      await delay(20);
    }
    await delay(100);
    got.length = 0;
    await run({ a, la, got });
  } finally {
    await onB.close();
    await close();
  }
}

describe('a Redis that stops answering (connections up, nothing answered)', () => {
  test.each([
    ['pubsub', 'the first maxQueue publishes wait, newer ones are dropped', (): string[] => Array.from({ length: 10 }, (_, i) => `q${i}`)],
    ['streams', 'the batch in flight, then the newest maxQueue messages', (): string[] => ['q0', ...Array.from({ length: 10 }, (_, i) => `q${990 + i}`)]],
  ] as const)('%s: at most maxQueue messages wait (%s); delivery goes on once it answers', async (mode, _what, expected) => {
    await withMaxQueue10(mode, async ({ a, la, got }) => {
      la.freeze();
      for (let i = 0; i < 1000; i++) a.broadcast(`q${i}`, { room: 'r' });
      await delay(200);
      expect(got).toEqual([]);
      la.thaw();
      await until(() => got.length >= expected().length, 5000);
      await delay(300);
      expect(got).toEqual(expected());
      for (let i = 0; i < 100 && !got.includes('after'); i++) {
        a.broadcast('after', { room: 'r' });
        await delay(20);
      }
      expect(got).toContain('after');
    });
  });
});

describe('streams mode limits', () => {
  test('maxQueue: while Redis is away, the oldest waiting messages beyond it are dropped, the newest delivered', async () => {
    await withMaxQueue10('streams', async ({ a, la, got }) => {
      la.cut();
      await delay(50);
      for (let i = 0; i < 30; i++) a.broadcast(`q${i}`, { room: 'r' });
      await delay(100);
      la.restore();
      await until(() => got.includes('q29'), 5000);
      await delay(100);
      // Whatever was in flight when the link dropped may be the first batch; the rest is the newest 10.
      expect(got.slice(-10)).toEqual(Array.from({ length: 10 }, (_, i) => `q${20 + i}`));
      expect(got.length).toBeLessThan(30);
    });
  });

  test('maxLen bounds the stream (approximately, as MAXLEN ~ does)', async () => {
    const cl = await clients('redis', redis.url);
    const channel = `hub-test:${process.pid}-${++counter}`;
    const hub = createHub({ transport: redisTransport({ publisher: cl.publisher, subscriber: cl.subscriber, mode: 'streams', channel, maxLen: 100, blockMs: 1000 }) });
    try {
      await hub.ready;
      for (let i = 0; i < 2000; i++) {
        hub.broadcast(`x${i}`);
        if (i % 50 === 49) await delay(2);
      }
      await until(() => hub.stats.published === 2000, 5000);
      // Let the outbox drain, then look at the stream.
      let last = -1;
      for (let i = 0; i < 100; i++) {
        await delay(20);
        const n = Number(await redis.command(['XLEN', channel]));
        if (n === last) break;
        last = n;
      }
      expect(last).toBeGreaterThan(0);
      expect(last).toBeLessThan(400);
    } finally {
      await hub.close();
      await cl.close();
    }
  });

  test.each(['redis', 'ioredis'] as Lib[])('close() leaves your clients usable (%s): the blocked XREAD is woken, the subscriber answers at once', async (lib) => {
    const cl = await clients(lib, redis.url);
    const hub = createHub({ transport: redisTransport({ publisher: cl.publisher, subscriber: cl.subscriber, mode: 'streams', channel: `c-${++counter}`, blockMs: 5000 }) });
    try {
      await hub.ready;
      await delay(100); // the reader is now inside XREAD BLOCK 5000
      const started = Date.now();
      await hub.close();
      const sub = cl.subscriber as { sendCommand?: (a: string[]) => Promise<unknown>; call?: (...a: string[]) => Promise<unknown> };
      const pong = sub.call ? await sub.call('PING') : await sub.sendCommand!(['PING']);
      expect(pong).toBe('PONG');
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      await cl.close();
    }
  });
});

describe.each(['redis', 'ioredis'] as Lib[])('pub/sub mode across an outage (%s; at most once, documented)', (lib) => {
  test("B's link cut for 500 ms: messages during the cut may be lost; B receives again after it; a logout during the cut still closes B's socket (revalidation)", async () => {
    const p = await pair(lib, 'pubsub');
    try {
      const cookie = await login(p.a.inst);
      const s = await chat(p.b.inst, cookie);
      const bob = await chat(p.b.inst, await login(p.a.inst, 'bob'));
      await warm(p, s.ws);
      const got = collect(s.ws);
      const gotBob = collect(bob.ws);
      p.b.link.cut();
      await broadcastNumbered(p, 100);
      // The revocation is published while B is away: B never hears it on the channel.
      await request(`${p.a.inst.server.url}/logout`, { headers: { cookie } });
      await delay(500);
      p.b.link.restore();
      expect(await within(s.closed, 5000, 'close after reconnect')).toEqual({ code: 4001, reason: 'session ended' });
      // Lost while cut (B was not subscribed): at most once.
      expect(got.length).toBeLessThan(100);
      // And B receives again.
      for (let i = 0; i < 100 && !gotBob.includes('A: back'); i++) {
        await request(`${p.a.inst.server.url}/say?text=back`);
        await delay(20);
      }
      expect(gotBob).toContain('A: back');
      expect(bob.ws.readyState).toBe(WebSocket.OPEN);
    } finally {
      await p.close();
    }
  });
});

describe('sessions that end without destroy()', () => {
  test('keyspace notifications: a session key that expires or is deleted from outside closes its sockets (4001)', async () => {
    await redis.command(['CONFIG', 'SET', 'notify-keyspace-events', 'Exg']);
    const p = await pair('redis', 'streams');
    const keyspace: Array<() => Promise<void>> = [];
    try {
      for (const n of [p.a, p.b]) {
        const sub = n.clients.store.duplicate();
        sub.on('error', () => undefined);
        await sub.connect();
        const stop = await subscribeKeyspace(sub, (sid) => n.inst.hub.endSession(sid), { prefix: p.prefix });
        keyspace.push(async () => {
          await stop();
          sub.destroy();
        });
      }
      const c1 = await login(p.a.inst);
      const c2 = await login(p.a.inst, 'bob');
      const s1 = await chat(p.b.inst, c1);
      const s2 = await chat(p.b.inst, c2);
      // Deleted from outside (an admin's DEL).
      await redis.command(['DEL', `${p.prefix}${sidOf(c1)}`]);
      expect(await within(s1.closed, 3000, 'close after DEL')).toEqual({ code: 4001, reason: 'session ended' });
      // Expired: a TTL that runs out.
      await redis.command(['PEXPIRE', `${p.prefix}${sidOf(c2)}`, '100']);
      expect(await within(s2.closed, 3000, 'close after expiry')).toEqual({ code: 4001, reason: 'session ended' });
    } finally {
      for (const stop of keyspace) await stop();
      await p.close();
      await redis.command(['CONFIG', 'SET', 'notify-keyspace-events', '']);
    }
  });

  test("activity: 'touch' keeps the session of a user active only over WebSocket alive in the store", async () => {
    const p = await pair('redis', 'pubsub', { watch: { activity: 'touch', touchInterval: 0 } });
    try {
      const cookie = await login(p.a.inst);
      const key = `${p.prefix}${sidOf(cookie)}`;
      const s = await chat(p.b.inst, cookie);
      await redis.command(['EXPIRE', key, '5']);
      expect(Number(await redis.command(['TTL', key]))).toBeLessThanOrEqual(5);
      s.ws.send('still here');
      for (let i = 0; i < 100 && Number(await redis.command(['TTL', key])) <= 5; i++) await delay(20);
      expect(Number(await redis.command(['TTL', key]))).toBeGreaterThan(5);
      s.ws.close();
    } finally {
      await p.close();
    }
  });

  test("activity: 'expire' (the default) leaves the TTL alone", async () => {
    const p = await pair('redis', 'pubsub');
    try {
      const cookie = await login(p.a.inst);
      const key = `${p.prefix}${sidOf(cookie)}`;
      const s = await chat(p.b.inst, cookie);
      await redis.command(['EXPIRE', key, '5']);
      s.ws.send('still here');
      await nextOf(s.ws);
      await delay(100);
      expect(Number(await redis.command(['TTL', key]))).toBeLessThanOrEqual(5);
      s.ws.close();
    } finally {
      await p.close();
    }
  });
});

function nextOf(ws: WebSocket): Promise<string> {
  return new Promise((resolve) => ws.once('message', (d) => resolve(String(d))));
}
