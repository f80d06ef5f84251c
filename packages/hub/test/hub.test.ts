/**
 * The hub's core with the in-process transport: rooms, broadcast, disconnect, session revocation
 * across two app instances sharing one MemoryStore, malformed messages, slow members, options.
 */
import WebSocket from 'ws';
import { MemoryStore } from '@upgradeware/session';
import { websocket } from '@upgradeware/websocket';
import {
  createChannel,
  createHub,
  decode,
  encode,
  inProcessTransport,
  type HubMember,
  type HubTransport,
  type TransportReceiver,
} from '@upgradeware/hub';
import { createApp } from '@upgradeware/dispatcher';
import { delay, request, start, until, wsOpen, WsRefused } from '../../../test-support';
import { chat, collect, instance, login, sidOf, within, wsPair, type Instance } from './cluster';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { supportsUpgrade, type NextFunction } from '@upgradeware/upgrade-response';

const pair = wsPair;

describe('rooms on one instance', () => {
  test('broadcast reaches the room, not the others; except skips sockets and rooms; leave and close leave', async () => {
    const hub = createHub();
    const a = await pair();
    const b = await pair();
    const c = await pair();
    try {
      hub.join(a.server, 'red');
      hub.join(b.server, 'red');
      hub.join(b.server, 'muted');
      hub.join(c.server, 'blue');
      const ga = collect(a.client);
      const gb = collect(b.client);
      const gc = collect(c.client);
      expect(hub.broadcast('one', { room: 'red' })).toBe(2);
      expect(hub.broadcast('two', { room: 'red', except: a.server })).toBe(1);
      expect(hub.broadcast('three', { room: 'red', except: ['muted'] })).toBe(1);
      expect(hub.broadcast(Buffer.from('four'))).toBe(3);
      await until(() => ga.length === 3 && gb.length === 3 && gc.length === 1);
      expect(ga).toEqual(['one', 'three', 'four']);
      expect(gb).toEqual(['one', 'two', 'four']);
      expect(gc).toEqual(['four']);
      hub.leave(b.server, 'red');
      expect([...hub.members('red')]).toEqual([a.server]);
      expect([...hub.roomsOf(b.server)]).toEqual(['muted']);
      a.client.close();
      await until(() => hub.members('red').size === 0);
      expect(hub.roomsOf(a.server).size).toBe(0);
      expect(hub.size).toBe(2);
    } finally {
      await Promise.all([a.close(), b.close(), c.close()]);
      await hub.close();
    }
  });

  test('disconnect closes the members of a room with the code and reason given', async () => {
    const hub = createHub();
    const a = await pair();
    const b = await pair();
    try {
      hub.join(a.server, 'r');
      hub.join(b.server, 'other');
      const closed = new Promise<[number, string]>((resolve) => a.client.once('close', (code, reason) => resolve([code, String(reason)])));
      expect(hub.disconnect('r', { code: 4002, reason: 'bye' })).toBe(1);
      expect(await within(closed, 2000, 'close')).toEqual([4002, 'bye']);
      expect(b.client.readyState).toBe(WebSocket.OPEN);
    } finally {
      await Promise.all([a.close(), b.close()]);
      await hub.close();
    }
  });

  test('bad arguments are TypeErrors naming the package', async () => {
    expect(() => createHub({ transport: {} as HubTransport })).toThrow(/@upgradeware\/hub: option transport/);
    expect(() => createHub({ maxBufferedAmount: -1 })).toThrow(/maxBufferedAmount/);
    expect(() => createHub({ nope: 1 } as never)).toThrow(/unknown option nope/);
    const hub = createHub();
    const a = await pair();
    try {
      expect(() => hub.join(a.server, '')).toThrow(/room must be/);
      expect(() => hub.join({} as HubMember, 'r')).toThrow(/ws must be a WebSocket/);
      expect(() => hub.broadcast({} as never)).toThrow(/broadcast data/);
      expect(() => hub.broadcast('x', { except: [5 as never] })).toThrow(/except/);
      expect(() => hub.disconnect('r', { code: 1006 })).toThrow(/code/);
      expect(() => hub.disconnect('r', { reason: 'x'.repeat(124) })).toThrow(/reason/);
      expect(() => hub.watchSessions({} as never)).toThrow(/watchSessions: store/);
      expect(() => hub.watchSessions(new MemoryStore(), { activity: 'never' as never })).toThrow(/activity/);
    } finally {
      await a.close();
      await hub.close();
    }
  });

  test('a member that does not read is closed with 1013 instead of buffering without bound', async () => {
    const hub = createHub({ maxBufferedAmount: 64 * 1024 });
    const a = await pair();
    const b = await pair();
    try {
      hub.join(a.server, 'r');
      hub.join(b.server, 'r');
      // a's client stops reading: its socket fills, then the server side's buffer grows.
      (a.client as unknown as { _socket: import('node:net').Socket })._socket.pause();
      const got = collect(b.client);
      const big = 'x'.repeat(256 * 1024);
      const closed = new Promise<number>((resolve) => a.server.once('close', (code) => resolve(code)));
      for (let i = 0; i < 100 && hub.stats.slowClosed === 0; i++) {
        hub.broadcast(big, { room: 'r' });
        await delay(5);
      }
      expect(hub.stats.slowClosed).toBe(1);
      expect(a.server.readyState).toBeGreaterThanOrEqual(WebSocket.CLOSING);
      a.client.terminate();
      await within(closed, 3000, 'slow member closed');
      // The reader still gets every message.
      const sent = hub.broadcast('last', { room: 'r' });
      expect(sent).toBe(1);
      await until(() => got[got.length - 1] === 'last', 5000);
    } finally {
      await Promise.all([a.close(), b.close()]);
      await hub.close();
    }
  });
});

describe('more of the core', () => {
  test('a socket that is closing or closed is not added', async () => {
    const hub = createHub();
    const a = await pair();
    try {
      a.server.close();
      hub.join(a.server, 'r');
      expect(hub.members('r').size).toBe(0);
      expect(hub.size).toBe(0);
    } finally {
      await a.close();
      await hub.close();
    }
  });

  test('across instances: binary stays binary, text stays text, except rooms apply on every instance', async () => {
    const channel = createChannel();
    const h1 = createHub({ transport: inProcessTransport(channel) });
    const h2 = createHub({ transport: inProcessTransport(channel) });
    const x = await pair();
    const y = await pair();
    try {
      h2.join(x.server, 'r');
      h2.join(y.server, 'r');
      h2.join(y.server, 'quiet');
      const got: Array<[string, boolean]> = [];
      x.client.on('message', (data, isBinary) => got.push([String(data), isBinary]));
      const gotY: string[] = collect(y.client);
      h1.broadcast(Buffer.from('bin'), { room: 'r' });
      h1.broadcast('text', { room: 'r', except: 'quiet' });
      await until(() => got.length === 2);
      expect(got).toEqual([
        ['bin', true],
        ['text', false],
      ]);
      await delay(20);
      expect(gotY).toEqual(['bin']);
    } finally {
      await x.close();
      await y.close();
      await h1.close();
      await h2.close();
    }
  });

  test('revalidation: a store error counts as "still there"; revalidateInterval checks on a timer', async () => {
    const hub = createHub();
    let failing = true;
    let exists = true;
    const store = {
      get: (_sid: string, cb: (err: unknown, s?: unknown) => void) => setImmediate(() => (failing ? cb(new Error('down')) : cb(null, exists ? { cookie: {} } : null))),
      destroy: (_sid: string, cb?: (err?: unknown) => void) => cb?.(),
    };
    hub.watchSessions(store, { revalidateInterval: 30 });
    const a = await pair();
    try {
      hub.join(a.server, 'session:s1');
      expect(await hub.revalidate()).toBe(0);
      failing = false;
      expect(await hub.revalidate()).toBe(0);
      expect(a.client.readyState).toBe(WebSocket.OPEN);
      const closed = new Promise<number>((resolve) => a.client.once('close', (code) => resolve(code)));
      exists = false; // the timer finds it gone
      expect(await within(closed, 2000, 'closed by the timer')).toBe(4001);
    } finally {
      await a.close();
      await hub.close();
    }
  });
});

describe('races and leaks', () => {
  test('a socket that joins a session room just after the session was revoked (its upgrade raced the logout) is closed at once', async () => {
    const channel = createChannel();
    const h1 = createHub({ transport: inProcessTransport(channel) });
    const h2 = createHub({ transport: inProcessTransport(channel) });
    const late = await pair();
    const other = await pair();
    try {
      h1.disconnect('session:gone', { code: 4001, reason: 'session ended' });
      await delay(10); // delivered to h2, which had no member yet
      const closed = new Promise<[number, string]>((resolve) => late.client.once('close', (code, r) => resolve([code, String(r)])));
      h2.join(late.server, 'session:gone');
      expect(await within(closed, 2000, 'late joiner closed')).toEqual([4001, 'session ended']);
      // Other rooms are not remembered: a room name may be used again.
      h2.disconnect('lobby');
      h2.join(other.server, 'lobby');
      expect(h2.members('lobby').size).toBe(1);
    } finally {
      await late.close();
      await other.close();
      await h1.close();
      await h2.close();
    }
  });

  test('nothing stays reachable from the hub or the sockets once 50 connections through websocket() closed', async () => {
    const hub = createHub();
    const store = new MemoryStore();
    hub.watchSessions(store, { activity: 'touch' });
    const app = createApp();
    const endpoint = websocket((ws) => ws.send('hi'), { hub, rooms: () => ['a', 'b'] });
    app.use(
      supportsUpgrade((req: IncomingMessage, _res: ServerResponse, next: NextFunction) => {
        (req as { sessionID?: string }).sessionID = `s${req.headers['x-n']}`;
        next();
      }),
    );
    app.use('/ws', endpoint);
    const server = await start(app);
    try {
      const clients: WebSocket[] = [];
      for (let i = 0; i < 50; i++) clients.push((await wsOpen(`${server.wsUrl}/ws`, { headers: { 'x-n': String(i) } })).ws);
      await until(() => hub.size === 50);
      expect(hub.members('a').size).toBe(50);
      const serverSide = [...endpoint.clients];
      for (const c of clients) c.terminate();
      await until(() => hub.size === 0 && endpoint.clients.size === 0);
      expect(hub.members('a').size + hub.members('b').size + hub.members('session:s1').size).toBe(0);
      for (const ws of serverSide) {
        expect(ws.listenerCount('message')).toBe(0);
        // What is left is ws's own and the endpoint's bookkeeping, not the hub's.
        expect(ws.listeners('close').map((f) => f.name)).not.toContain('onClose');
      }
    } finally {
      await endpoint.close();
      await server.close();
      await hub.close();
    }
  });
});

describe("activity: 'touch' after keepOnRegenerate moved a socket", () => {
  test('messages touch the session the socket is in now, not the one it joined', async () => {
    const hub = createHub();
    const touched: string[] = [];
    const store = {
      get: (_sid: string, cb: (err: unknown, s?: unknown) => void) => cb(null, { cookie: {} }),
      destroy: (_sid: string, cb?: (err?: unknown) => void) => cb?.(),
      touch: (sid: string, _s: unknown, cb?: (err?: unknown) => void) => {
        touched.push(sid);
        cb?.();
      },
    };
    hub.watchSessions(store, { activity: 'touch', touchInterval: 0 });
    const member = await pair();
    try {
      hub.join(member.server, 'session:old');
      member.client.send('before');
      await until(() => touched.length === 1);
      // A login on top of the session: regenerate gives it a new id, the socket moves with it.
      const req = { sessionID: 'old', session: { regenerate: (fn: (err?: unknown) => void) => { req.sessionID = 'new'; fn(); } } };
      hub.keepOnRegenerate()(req as never, {}, () => undefined);
      await new Promise<void>((resolve, reject) => req.session.regenerate((err) => (err ? reject(err) : resolve())));
      expect([...hub.roomsOf(member.server)]).toEqual(['session:new']);
      member.client.send('after');
      await until(() => touched.length === 2);
      expect(touched).toEqual(['old', 'new']);
    } finally {
      await member.close();
      await hub.close();
    }
  });
});

describe('watchSessions and a store that fails', () => {
  test('a destroy that fails closes nothing (the session still exists); the returned function restores the store', async () => {
    const channel = createChannel();
    const h1 = createHub({ transport: inProcessTransport(channel) });
    const h2 = createHub({ transport: inProcessTransport(channel) });
    let fail = true;
    const original = (sid: string, cb?: (err?: unknown) => void) => setImmediate(() => cb?.(fail ? new Error(`cannot destroy ${sid}`) : undefined));
    const store = { get: (_sid: string, cb: (err: unknown, s?: unknown) => void) => cb(null, { cookie: {} }), destroy: original };
    const unwatch = h1.watchSessions(store);
    expect(store.destroy).not.toBe(original);
    const member = await pair();
    try {
      h2.join(member.server, 'session:s1');
      const errors: unknown[] = [];
      await new Promise<void>((resolve) => store.destroy('s1', (err) => (errors.push(err), resolve())));
      expect(String(errors[0])).toMatch(/cannot destroy s1/);
      await delay(30);
      expect(member.client.readyState).toBe(WebSocket.OPEN);
      fail = false;
      const closed = new Promise<number>((resolve) => member.client.once('close', (code) => resolve(code)));
      await new Promise<void>((resolve) => store.destroy('s1', () => resolve()));
      expect(await within(closed, 2000, 'closed once destroyed')).toBe(4001);
      unwatch();
      expect(store.destroy).toBe(original);
    } finally {
      await member.close();
      await h1.close();
      await h2.close();
    }
  });
});

describe('the wire format', () => {
  test('encode/decode round trip, text and binary', () => {
    const text = encode({ origin: 'a', seq: 1, message: { type: 'broadcast', room: 'r', except: ['x'], data: 'hi' } });
    expect(decode(text)).toEqual({ origin: 'a', seq: 1, message: { type: 'broadcast', room: 'r', except: ['x'], data: 'hi' } });
    const bin = encode({ origin: 'a', seq: 2, message: { type: 'broadcast', room: null, except: [], data: Buffer.from([0, 255]) } });
    expect(decode(bin)?.message).toEqual({ type: 'broadcast', room: null, except: [], data: Buffer.from([0, 255]) });
    const d = encode({ origin: 'a', seq: 3, message: { type: 'disconnect', room: 'r', code: 4001, reason: 'session ended' } });
    expect(decode(d)?.message).toEqual({ type: 'disconnect', room: 'r', code: 4001, reason: 'session ended' });
    const m = encode({ origin: 'a', seq: 4, message: { type: 'move', room: 'session:x', to: 'session:y' } });
    expect(decode(m)?.message).toEqual({ type: 'move', room: 'session:x', to: 'session:y' });
  });

  test.each([
    ['not json', 'hello'],
    ['json but not an object', '[1,2]'],
    ['wrong version', '{"v":2,"o":"a","s":1,"t":"b","r":null,"d":"x"}'],
    ['no origin', '{"v":1,"s":1,"t":"b","r":null,"d":"x"}'],
    ['bad seq', '{"v":1,"o":"a","s":-1,"t":"b","r":null,"d":"x"}'],
    ['both payloads', '{"v":1,"o":"a","s":1,"t":"b","r":null,"d":"x","b":"eA=="}'],
    ['bad base64', '{"v":1,"o":"a","s":1,"t":"b","r":null,"b":"!!"}'],
    ['empty room', '{"v":1,"o":"a","s":1,"t":"b","r":"","d":"x"}'],
    ['reserved close code', '{"v":1,"o":"a","s":1,"t":"d","r":"x","c":1006,"e":""}'],
    ['long reason', `{"v":1,"o":"a","s":1,"t":"d","r":"x","c":4001,"e":"${'x'.repeat(124)}"}`],
    ['unknown type', '{"v":1,"o":"a","s":1,"t":"z","r":"x"}'],
    ['a move without its target', '{"v":1,"o":"a","s":1,"t":"m","r":"x"}'],
  ])('decode refuses %s', (_name, text) => {
    expect(decode(text)).toBeNull();
  });

  test('a malformed message on the channel is ignored and counted; the next good one is delivered', async () => {
    let receiver: TransportReceiver | null = null;
    const transport: HubTransport = {
      start: (r) => {
        receiver = r;
      },
      publish: () => undefined,
      close: () => undefined,
    };
    const hub = createHub({ transport });
    const a = await pair();
    try {
      hub.join(a.server, 'r');
      const got = collect(a.client);
      receiver!.message('{"v":1,"o":"x","s":1,"t":"b","r":"r"}');
      receiver!.message('garbage');
      receiver!.message(encode({ origin: 'other', seq: 5, message: { type: 'broadcast', room: 'r', except: [], data: 'ok' } }));
      // The same message again (a retried publish) and an older one: dropped as duplicates.
      receiver!.message(encode({ origin: 'other', seq: 5, message: { type: 'broadcast', room: 'r', except: [], data: 'ok' } }));
      receiver!.message(encode({ origin: 'other', seq: 4, message: { type: 'broadcast', room: 'r', except: [], data: 'old' } }));
      // Its own messages coming back are not delivered twice.
      receiver!.message(encode({ origin: hub.instanceId, seq: 1, message: { type: 'broadcast', room: 'r', except: [], data: 'mine' } }));
      await until(() => got.length === 1);
      await delay(30);
      expect(got).toEqual(['ok']);
      expect(hub.stats).toMatchObject({ malformed: 2, received: 1, duplicates: 2 });
    } finally {
      await a.close();
      await hub.close();
    }
  });
});

describe('two instances through the in-process transport', () => {
  let store: MemoryStore;
  let a: Instance;
  let b: Instance;

  beforeEach(async () => {
    store = new MemoryStore();
    const channel = createChannel();
    a = await instance('A', store, inProcessTransport(channel));
    b = await instance('B', store, inProcessTransport(channel));
  });
  afterEach(async () => {
    await a.close();
    await b.close();
  });

  test('a broadcast on A reaches the clients of B; a client on B reaches A', async () => {
    const cookie = await login(a);
    const onB = await chat(b, cookie);
    expect(onB.greeting).toBe('hello alice from B');
    const onA = await chat(a, await login(b, 'bob'));
    const gotB = collect(onB.ws);
    const gotA = collect(onA.ws);
    expect((await request(`${a.server.url}/say?text=hi`)).body).toBe('1');
    await until(() => gotB.length === 1);
    expect(gotB).toEqual(['A: hi']);
    onB.ws.send('from b');
    await until(() => gotA.length === 2 && gotB.length === 2);
    expect(gotA).toEqual(['A: hi', 'alice: from b']);
    expect(gotB).toEqual(['A: hi', 'alice: from b']);
    onA.ws.close();
    onB.ws.close();
  });

  test('logout on A closes the socket of that session on B (4001 "session ended"); the old cookie gets 401; others stay', async () => {
    const cookie = await login(a);
    const other = await chat(b, await login(a, 'bob'));
    const s1 = await chat(b, cookie);
    const s2 = await chat(a, cookie);
    expect(await request(`${a.server.url}/logout`, { headers: { cookie } })).toMatchObject({ status: 200 });
    expect(await within(s1.closed, 2000, 'close on B')).toEqual({ code: 4001, reason: 'session ended' });
    expect(await within(s2.closed, 2000, 'close on A')).toEqual({ code: 4001, reason: 'session ended' });
    await expect(wsOpen(`${b.server.wsUrl}/chat`, { headers: { cookie } })).rejects.toMatchObject({ status: 401 });
    expect(other.ws.readyState).toBe(WebSocket.OPEN);
    other.ws.close();
  });

  test('regenerate() (a new login on the same cookie) closes the sockets of the old session too', async () => {
    const cookie = await login(a);
    const s = await chat(b, cookie);
    const res = await request(`${a.server.url}/login?user=carol`, { headers: { cookie } });
    expect(res.status).toBe(200);
    expect(await within(s.closed, 2000, 'close on B')).toEqual({ code: 4001, reason: 'session ended' });
  });

  test('keepOnRegenerate(): a login on top of a session keeps its sockets, moved to the new session on every instance; the later logout closes them', async () => {
    const channel = createChannel();
    const c = await instance('C', store, inProcessTransport(channel), {}, false, true);
    const d = await instance('D', store, inProcessTransport(channel), {}, false, true);
    try {
      const cookie = await login(c);
      const s = await chat(d, cookie);
      const res = await request(`${c.server.url}/login?user=carol`, { headers: { cookie } });
      expect(res.status).toBe(200);
      const fresh = String(res.headers['set-cookie']).split(';')[0]!;
      expect(sidOf(fresh)).not.toBe(sidOf(cookie));
      await until(() => d.hub.members(`session:${sidOf(fresh)}`).size === 1);
      expect(d.hub.members(`session:${sidOf(cookie)}`).size).toBe(0);
      expect(s.ws.readyState).toBe(WebSocket.OPEN);
      await request(`${c.server.url}/logout`, { headers: { cookie: fresh } });
      expect(await within(s.closed, 2000, 'closed by the later logout')).toEqual({ code: 4001, reason: 'session ended' });
    } finally {
      await c.close();
      await d.close();
    }
  });

  test('a session that ended without a word (expired, deleted elsewhere) is closed by revalidate()', async () => {
    const cookie = await login(a);
    const s = await chat(b, cookie);
    // Gone from the store behind the hub's back (as a TTL expiry would): the store's own destroy.
    await new Promise<void>((resolve) => MemoryStore.prototype.destroy.call(store, sidOf(cookie), () => resolve()));
    expect(await a.hub.revalidate()).toBe(0);
    expect(await b.hub.revalidate()).toBe(1);
    expect(await within(s.closed, 2000, 'close')).toEqual({ code: 4001, reason: 'session ended' });
  });

  test('an instance killed with sockets open: its clients reconnect to the other and keep their session', async () => {
    const cookie = await login(a);
    const s = await chat(a, cookie);
    await a.kill();
    const closed = await within(s.closed, 2000, 'reset');
    expect(closed.code).toBe(1006);
    const again = await chat(b, cookie);
    expect(again.greeting).toBe('hello alice from B');
    again.ws.close();
  });
});

describe('websocket() options hub and rooms', () => {
  test('every connection joins its rooms before the callback runs and leaves them on close', async () => {
    const hub = createHub();
    const seen: string[][] = [];
    const app = createApp();
    app.use(
      supportsUpgrade((req: IncomingMessage, _res: ServerResponse, next: NextFunction) => {
        (req as { sessionID?: string }).sessionID = 'abc';
        next();
      }),
    );
    const endpoint = websocket((ws) => seen.push([...hub.roomsOf(ws)]), { hub, rooms: (req) => [`user:${req.url}`, 'all'] });
    app.use('/ws', endpoint);
    const server = await start(app);
    try {
      const { ws } = await wsOpen(`${server.wsUrl}/ws`);
      await until(() => seen.length === 1);
      expect(seen[0]).toEqual(['session:abc', 'user:/', 'all']);
      expect(hub.members('all').size).toBe(1);
      ws.close();
      await until(() => hub.size === 0);
    } finally {
      await endpoint.close();
      await server.close();
      await hub.close();
    }
  });

  test('a rooms(req) that throws or returns nonsense closes the socket with 1011; the server keeps serving', async () => {
    const hub = createHub();
    const errors: unknown[] = [];
    let bad = true;
    const app = createApp();
    const endpoint = websocket((ws) => ws.send('ok'), { hub, rooms: () => (bad ? (42 as never) : 'fine'), onError: (err) => errors.push(err) });
    app.use('/ws', endpoint);
    const server = await start(app);
    try {
      const { ws } = await wsOpen(`${server.wsUrl}/ws`);
      const code = await new Promise<number>((resolve) => ws.once('close', resolve));
      expect(code).toBe(1011);
      expect(String(errors[0])).toMatch(/rooms\(req\) must return/);
      bad = false;
      const { ws: ws2 } = await wsOpen(`${server.wsUrl}/ws`);
      await until(() => hub.members('fine').size === 1);
      ws2.close();
    } finally {
      await endpoint.close();
      await server.close();
      await hub.close();
    }
  });

  test('option checks', () => {
    expect(() => websocket(() => undefined, { hub: {} as never })).toThrow(/@upgradeware\/websocket: option hub must have join/);
    expect(() => websocket(() => undefined, { rooms: () => 'x' })).toThrow(/option rooms needs option hub/);
    expect(() => websocket(() => undefined, { hub: createHub(), rooms: 'x' as never })).toThrow(/option rooms must be a function/);
  });
});

test('refusals are real responses (WsRefused carries the status)', async () => {
  // Guards the helper this suite relies on for "401 with the old cookie".
  const app = createApp();
  const server = await start(app);
  try {
    await expect(wsOpen(`${server.wsUrl}/nothing`)).rejects.toBeInstanceOf(WsRefused);
  } finally {
    await server.close();
  }
});
