/**
 * Real Redis for the hub's suites: a redis-server of our own on a free loopback port (Debian's
 * `redis-server`), and a TCP link per app instance that a test can cut and restore — an outage of
 * one instance's Redis link, as a network sees it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import { createClient } from 'redis';
import IORedis from 'ioredis';
import type { RedisLikeClient } from '@upgradeware/hub';
import { delay, freePort } from '../../../test-support';

export type NodeRedis = ReturnType<typeof createClient>;

export interface RedisServer {
  port: number;
  url: string;
  /** A plain command through a short-lived connection. */
  command(args: string[]): Promise<unknown>;
  stop(): Promise<void>;
}

/** Start a redis-server of our own (no persistence), bounded wait for it to answer. */
export async function startRedis(): Promise<RedisServer> {
  const port = await freePort();
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  const url = `redis://127.0.0.1:${port}`;
  const command = async (args: string[]): Promise<unknown> => {
    const c = createClient({ url, socket: { connectTimeout: 1000, reconnectStrategy: false } });
    c.on('error', () => undefined);
    await c.connect();
    try {
      return await c.sendCommand(args);
    } finally {
      c.destroy();
    }
  };
  for (let i = 0; i < 100; i++) {
    if (exited) throw new Error('redis-server exited at start');
    try {
      if ((await command(['PING'])) === 'PONG') break;
    } catch {
      await delay(50);
    }
    if (i === 99) throw new Error('redis-server did not answer');
  }
  return {
    port,
    url,
    command,
    stop: () =>
      new Promise<void>((resolve) => {
        if (exited) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** A TCP link to Redis that can be cut (every connection reset, new ones refused) and restored. */
export interface Link {
  port: number;
  url: string;
  cut(): void;
  restore(): void;
  /** Redis stops answering: the connections stay up, nothing the clients send gets through. */
  freeze(): void;
  /** What was held goes through, and the answers come back. */
  thaw(): void;
  close(): Promise<void>;
}

export async function link(target: number): Promise<Link> {
  let up = true;
  let frozen = false;
  const pairs = new Set<net.Socket>();
  const upstreamOf = new Map<net.Socket, net.Socket>();
  const server = net.createServer((client) => {
    client.on('error', () => undefined);
    if (!up) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    pairs.add(client);
    pairs.add(upstream);
    upstreamOf.set(client, upstream);
    client.once('close', () => {
      pairs.delete(client);
      upstreamOf.delete(client);
    });
    upstream.once('close', () => pairs.delete(upstream));
    if (!frozen) client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    cut() {
      up = false;
      for (const s of pairs) s.resetAndDestroy();
    },
    restore() {
      up = true;
    },
    freeze() {
      frozen = true;
      for (const [client, upstream] of upstreamOf) {
        client.unpipe(upstream);
        client.pause();
      }
    },
    thaw() {
      frozen = false;
      for (const [client, upstream] of upstreamOf) client.pipe(upstream);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of pairs) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export type Lib = 'redis' | 'ioredis';

export interface Clients {
  publisher: RedisLikeClient;
  subscriber: RedisLikeClient;
  /** A node-redis client for the session store (connect-redis speaks node-redis). */
  store: NodeRedis;
  close(): Promise<void>;
}

/** Quick reconnects (every 50 ms) so that tests of an outage stay short. */
export async function clients(lib: Lib, url: string, options: { wait?: boolean } = {}): Promise<Clients> {
  const wait = options.wait ?? true;
  const nodeRedis = () => {
    const c = createClient({ url, socket: { connectTimeout: 1000, reconnectStrategy: () => 50 } });
    c.on('error', () => undefined);
    return c;
  };
  const store = nodeRedis();
  const connecting: Array<Promise<unknown>> = [store.connect()];
  let publisher: RedisLikeClient;
  let subscriber: RedisLikeClient;
  let closeAll: () => Promise<void>;
  if (lib === 'redis') {
    const pub = nodeRedis();
    const sub = nodeRedis();
    connecting.push(pub.connect(), sub.connect());
    publisher = pub;
    subscriber = sub;
    closeAll = async () => {
      for (const c of [pub, sub, store]) if (c.isOpen) c.destroy();
    };
  } else {
    const { port } = new URL(url);
    const make = () => {
      const c = new IORedis({ host: '127.0.0.1', port: Number(port), retryStrategy: () => 50, connectTimeout: 1000, maxRetriesPerRequest: null });
      c.on('error', () => undefined);
      return c;
    };
    const pub = make();
    const sub = make();
    connecting.push(
      new Promise((resolve) => pub.once('ready', resolve)),
      new Promise((resolve) => sub.once('ready', resolve)),
    );
    publisher = pub;
    subscriber = sub;
    closeAll = async () => {
      pub.disconnect();
      sub.disconnect();
      if (store.isOpen) store.destroy();
    };
  }
  if (wait) await Promise.all(connecting);
  else for (const p of connecting) p.catch(() => undefined);
  return { publisher, subscriber, store: store as unknown as NodeRedis, close: closeAll };
}
