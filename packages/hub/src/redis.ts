/**
 * The Redis transport, on the user's own clients: `redis` (node-redis v4 and later) or `ioredis`.
 * Two modes:
 * - `'pubsub'`: PUBLISH / SUBSCRIBE. At most once: a message published while an instance's link
 *   is down never reaches it.
 * - `'streams'`: XADD (MAXLEN ~ bounded) / XREAD BLOCK from the last id read. An instance whose
 *   link was down reads on from where it stopped; a publish that failed is retried in order.
 *   Nothing is lost while the outage lasts less than the stream's length in messages (and the
 *   publisher's `maxQueue`).
 */
import createDebug from 'debug';
import type { HubTransport, TransportReceiver } from './index';

const debug = createDebug('upgradeware:hub:redis');
const PKG = '@upgradeware/hub';

/**
 * A node-redis (v4 or later) or ioredis client. Typed loosely on purpose (the two libraries' types
 * differ, and neither is a dependency); checked when the transport is created.
 */
export type RedisLikeClient = object;

export interface RedisTransportOptions {
  /** A connected client for publishing (XADD/PUBLISH). May be shared with the app. */
  publisher: RedisLikeClient;
  /**
   * A client for this transport only: SUBSCRIBE puts it into subscriber mode ('pubsub'), XREAD
   * BLOCK keeps it busy ('streams'). Usually `publisher.duplicate()`.
   */
  subscriber: RedisLikeClient;
  /** `'pubsub'` (default, at most once) or `'streams'` (survives an outage shorter than `maxLen` messages). */
  mode?: 'pubsub' | 'streams';
  /** Channel name (pubsub) or stream key (streams). Default `upgradeware:hub`. */
  channel?: string;
  /** Streams: the stream's approximate bound (XADD MAXLEN ~). Default 10000. */
  maxLen?: number;
  /**
   * Streams: messages waiting to be written while Redis is away; the oldest are dropped beyond it.
   * Pub/sub: PUBLISH commands waiting for Redis's answer; new messages are dropped beyond it.
   * Default 10000.
   */
  maxQueue?: number;
  /** Streams: how long one XREAD blocks (ms). Default 5000. */
  blockMs?: number;
}

type Reply = unknown;

interface Adapter {
  command(args: string[]): Promise<Reply>;
  subscribe(channel: string, listener: (message: string, channel: string) => void): Promise<void>;
  unsubscribe(channel: string, listener: (message: string, channel: string) => void): Promise<void>;
}

type AnyFn = (...args: unknown[]) => unknown;
type Loose = Record<string, unknown>;

function onFn(client: RedisLikeClient): (event: string, fn: AnyFn) => void {
  return (event, fn) => {
    ((client as Loose).on as AnyFn).call(client, event, fn);
  };
}

function offFn(client: RedisLikeClient): (event: string, fn: AnyFn) => void {
  return (event, fn) => {
    const c = client as unknown as Loose;
    if (typeof c.off === 'function') (c.off as AnyFn).call(client, event, fn);
    else if (typeof c.removeListener === 'function') (c.removeListener as AnyFn).call(client, event, fn);
  };
}

/** Wrap a node-redis or ioredis client behind one small interface. */
function adapt(client: RedisLikeClient, name: string): Adapter {
  const c = client as unknown as Loose;
  if (client === null || typeof client !== 'object' || typeof c.on !== 'function') {
    throw new TypeError(`${PKG}: redisTransport: option ${name} must be a redis or ioredis client`);
  }
  // ioredis (told from node-redis by call() and psubscribe()): subscribe(channel) + 'message' events.
  if (typeof c.call === 'function' && typeof c.psubscribe === 'function') {
    const channelListeners = new Map<string, Set<(m: string, ch: string) => void>>();
    let wired = false;
    return {
      command: (args) => (c.call as (...a: string[]) => Promise<Reply>).apply(client, args),
      async subscribe(channel, fn) {
        if (!wired) {
          wired = true;
          onFn(client)('message', (ch, message) => {
            for (const listener of channelListeners.get(String(ch)) ?? []) listener(String(message), String(ch));
          });
        }
        let set = channelListeners.get(channel);
        if (!set) channelListeners.set(channel, (set = new Set()));
        set.add(fn);
        await (c.subscribe as (ch: string) => Promise<unknown>).call(client, channel);
      },
      async unsubscribe(channel, fn) {
        channelListeners.get(channel)?.delete(fn);
        await (c.unsubscribe as (ch: string) => Promise<unknown>).call(client, channel);
      },
    };
  }
  // node-redis v4+ (told by sendCommand() and pSubscribe()): subscribe(channel, listener).
  if (typeof c.sendCommand === 'function' && typeof c.pSubscribe === 'function') {
    // One wrapper per listener, so that subscribing again (after a failed attempt) adds nothing.
    const wrappers = new WeakMap<(m: string, ch: string) => void, AnyFn>();
    const wrap = (fn: (m: string, ch: string) => void): AnyFn => {
      let w = wrappers.get(fn);
      if (!w) wrappers.set(fn, (w = (m: unknown, ch: unknown) => fn(String(m), String(ch))));
      return w;
    };
    return {
      command: (args) => (c.sendCommand as (a: string[]) => Promise<Reply>).call(client, args),
      async subscribe(channel, fn) {
        await (c.subscribe as (ch: string, l: AnyFn) => Promise<unknown>).call(client, channel, wrap(fn));
      },
      async unsubscribe(channel, fn) {
        await (c.unsubscribe as (ch: string, l: AnyFn) => Promise<unknown>).call(client, channel, wrap(fn));
      },
    };
  }
  throw new TypeError(`${PKG}: redisTransport: option ${name} must be a redis (v4 or later) or ioredis client`);
}

const noop = (): void => undefined;

/**
 * Calls `fn` each time `client` is ready again after it was not ('ready' after an 'end', 'error'
 * or 'reconnecting'), not on the first connection. Returns the function that stops it.
 */
function onReconnect(client: RedisLikeClient, fn: () => void): () => void {
  let lost = false;
  const markLost = () => {
    lost = true;
  };
  const ready = () => {
    if (!lost) return;
    lost = false;
    fn();
  };
  const on = onFn(client);
  on('end', markLost);
  on('error', markLost);
  on('reconnecting', markLost);
  on('ready', ready);
  const off = offFn(client);
  return () => {
    off('end', markLost);
    off('error', markLost);
    off('reconnecting', markLost);
    off('ready', ready);
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

/** The first wait before a failed Redis command is tried again; it doubles up to `MAX_BACKOFF_MS`. */
const FIRST_BACKOFF_MS = 20;
const MAX_BACKOFF_MS = 1000;
/** Wait `ms`, then give the next wait. */
async function backOff(ms: number): Promise<number> {
  await sleep(ms);
  return Math.min(ms * 2, MAX_BACKOFF_MS);
}

/** Entries of an XREAD reply (RESP2 arrays, or RESP3 maps): `[id, fields][]`. */
function streamEntries(reply: Reply): Array<[string, unknown[]]> {
  if (reply === null || reply === undefined) return [];
  let streams: unknown[] = [];
  if (Array.isArray(reply)) streams = reply.map((s) => (Array.isArray(s) ? s[1] : undefined));
  else if (reply instanceof Map) streams = Array.from(reply.values());
  else if (typeof reply === 'object') streams = Object.values(reply as Loose);
  const out: Array<[string, unknown[]]> = [];
  for (const entries of streams) {
    if (!Array.isArray(entries)) continue;
    for (const entry of entries) {
      if (Array.isArray(entry) && entry.length >= 2 && Array.isArray(entry[1])) out.push([String(entry[0]), entry[1] as unknown[]]);
    }
  }
  return out;
}

/** The Redis transport for `createHub({ transport })`. */
export function redisTransport(options: RedisTransportOptions): HubTransport {
  if (options === null || typeof options !== 'object') throw new TypeError(`${PKG}: redisTransport: options must be an object`);
  const known = ['publisher', 'subscriber', 'mode', 'channel', 'maxLen', 'maxQueue', 'blockMs'];
  for (const name of Object.keys(options)) if (!known.includes(name)) throw new TypeError(`${PKG}: redisTransport: unknown option ${name}`);
  const pub = adapt(options.publisher, 'publisher');
  const sub = adapt(options.subscriber, 'subscriber');
  if (options.publisher === options.subscriber) throw new TypeError(`${PKG}: redisTransport: publisher and subscriber must be two clients`);
  const mode = options.mode ?? 'pubsub';
  if (mode !== 'pubsub' && mode !== 'streams') throw new TypeError(`${PKG}: redisTransport: option mode must be 'pubsub' or 'streams'`);
  const channel = options.channel ?? 'upgradeware:hub';
  if (typeof channel !== 'string' || channel.length === 0) throw new TypeError(`${PKG}: redisTransport: option channel must be a non-empty string`);
  const positive = (name: 'maxLen' | 'maxQueue' | 'blockMs', fallback: number) => {
    const v = options[name] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new TypeError(`${PKG}: redisTransport: option ${name} must be an integer >= 1`);
    return v;
  };
  const maxLen = positive('maxLen', 10_000);
  const maxQueue = positive('maxQueue', 10_000);
  const blockMs = positive('blockMs', 5000);
  return mode === 'pubsub' ? pubsubTransport(options.subscriber, pub, sub, channel, maxQueue) : streamsTransport(options.subscriber, pub, sub, channel, maxLen, maxQueue, blockMs);
}

function pubsubTransport(subscriber: RedisLikeClient, pub: Adapter, sub: Adapter, channel: string, maxQueue: number): HubTransport {
  let receiver: TransportReceiver | null = null;
  // PUBLISH commands sent and not answered yet. A Redis that stops answering with its connection
  // up (stopped, overloaded, a network that drops without a reset) would otherwise have the client
  // queue every broadcast in memory for as long as it lasts: beyond `maxQueue`, new ones are
  // dropped, as pub/sub drops what is published during an outage.
  let waiting = 0;
  let dropped = 0;
  const answered = (): void => {
    waiting--;
  };
  const lost = (err: unknown): void => {
    waiting--;
    debug('publish lost (pubsub is at most once): %s', errorText(err));
  };
  const listener = (message: string) => receiver?.message(message);
  let unwatch = noop;
  return {
    async start(r) {
      receiver = r;
      unwatch();
      unwatch = onReconnect(subscriber, () => receiver?.reconnected());
      // Redis away at start: keep trying (the clients queue or fail the command meanwhile).
      let backoff = FIRST_BACKOFF_MS;
      for (;;) {
        if (receiver === null) return; // closed meanwhile
        try {
          await sub.subscribe(channel, listener);
          return;
        } catch (err) {
          if (receiver === null) return;
          debug('SUBSCRIBE failed, retrying in %d ms: %s', backoff, errorText(err));
          backoff = await backOff(backoff);
        }
      }
    },
    publish(text) {
      if (waiting >= maxQueue) {
        dropped++;
        if ((dropped & (dropped - 1)) === 0) debug('Redis is not answering: %d publishes waiting, %d messages dropped so far', waiting, dropped);
        return;
      }
      waiting++;
      pub.command(['PUBLISH', channel, text]).then(answered, lost);
    },
    async close() {
      receiver = null;
      unwatch();
      unwatch = noop;
      await sub.unsubscribe(channel, listener).catch((err: unknown) => debug('unsubscribe failed: %s', errorText(err)));
    },
  };
}

function streamsTransport(
  subscriber: RedisLikeClient,
  pub: Adapter,
  sub: Adapter,
  key: string,
  maxLen: number,
  maxQueue: number,
  blockMs: number,
): HubTransport {
  let receiver: TransportReceiver | null = null;
  let closed = false;
  let lastId: string | null = null;
  let readerId: string | null = null;
  let reading: Promise<void> = Promise.resolve();
  const queue: string[] = [];
  let flushing = false;
  let dropped = 0;
  let unwatch = noop;

  /** Keep at most `maxQueue` messages waiting: the oldest go first. */
  function trim(): void {
    const over = queue.length - maxQueue;
    if (over <= 0) return;
    queue.splice(0, over);
    dropped += over;
    debug('outbox full: dropped the %d oldest messages (%d so far)', over, dropped);
  }

  async function flush(): Promise<void> {
    if (flushing) return;
    flushing = true;
    let backoff = FIRST_BACKOFF_MS;
    try {
      while (queue.length > 0 && !closed) {
        // Taken out of the queue while in flight, so that publish() trimming the queue never
        // touches it; put back in front on failure, and sent again in order (receivers drop the
        // repeats of a write that did land).
        const batch = queue.splice(0, 256);
        const args = ['XADD', key, 'MAXLEN', '~', String(maxLen), '*'];
        for (const text of batch) args.push('m', text);
        try {
          await pub.command(args);
          backoff = FIRST_BACKOFF_MS;
        } catch (err) {
          queue.unshift(...batch);
          trim();
          debug('XADD failed, retrying in %d ms: %s', backoff, errorText(err));
          backoff = await backOff(backoff);
        }
      }
    } finally {
      flushing = false;
    }
  }

  let started: () => void = () => undefined;
  const startedPromise = new Promise<void>((resolve) => (started = resolve));

  async function read(): Promise<void> {
    let backoff = FIRST_BACKOFF_MS;
    while (!closed) {
      try {
        if (lastId === null) {
          const last = await sub.command(['XREVRANGE', key, '+', '-', 'COUNT', '1']);
          lastId = Array.isArray(last) && Array.isArray(last[0]) ? String(last[0][0]) : '0-0';
          // From here on nothing written to the stream is missed: the hub is ready.
          started();
        }
        if (readerId === null) readerId = String(await sub.command(['CLIENT', 'ID']));
        if (closed) break;
        const reply = await sub.command(['XREAD', 'COUNT', '512', 'BLOCK', String(blockMs), 'STREAMS', key, lastId]);
        backoff = FIRST_BACKOFF_MS;
        for (const [id, fields] of streamEntries(reply)) {
          lastId = id;
          for (let i = 0; i + 1 < fields.length; i += 2) {
            if (String(fields[i]) !== 'm') continue;
            try {
              receiver?.message(String(fields[i + 1]));
            } catch (err) {
              debug('receiver threw: %o', err);
            }
          }
        }
      } catch (err) {
        if (closed) break;
        readerId = null;
        debug('XREAD failed, retrying from %s in %d ms: %s', lastId, backoff, errorText(err));
        backoff = await backOff(backoff);
      }
    }
  }

  return {
    start(r) {
      receiver = r;
      unwatch();
      unwatch = onReconnect(subscriber, () => receiver?.reconnected());
      reading = read();
      return startedPromise;
    },
    publish(text) {
      if (closed) return;
      queue.push(text);
      trim();
      void flush();
    },
    async close() {
      if (closed) return;
      closed = true;
      receiver = null;
      started();
      unwatch();
      unwatch = noop;
      // Wake the blocked XREAD so the user's subscriber client is free again.
      if (readerId !== null) await pub.command(['CLIENT', 'UNBLOCK', readerId]).catch(() => undefined);
      await Promise.race([reading, sleep(blockMs + 1000)]);
    },
  };
}

export interface KeyspaceOptions {
  /** The store's key prefix (connect-redis: `sess:`). */
  prefix?: string;
  /** The database number of the store's keys. Default 0. */
  db?: number;
}

/**
 * Subscribe to Redis keyspace notifications of expired and deleted session keys (the server must
 * have `notify-keyspace-events` including `E`, `x` and `g`, e.g. `Exg`) and call `onEnd(sid)`.
 * `client` must be free for subscriptions (in 'streams' mode not the transport's subscriber).
 * Resolves with a function that unsubscribes.
 */
export async function subscribeKeyspace(
  client: RedisLikeClient,
  onEnd: (sid: string) => void,
  options: KeyspaceOptions = {},
): Promise<() => Promise<void>> {
  const adapter = adapt(client, 'client');
  if (typeof onEnd !== 'function') throw new TypeError(`${PKG}: subscribeKeyspace: onEnd must be a function`);
  const prefix = options.prefix ?? 'sess:';
  const db = options.db ?? 0;
  if (typeof prefix !== 'string') throw new TypeError(`${PKG}: subscribeKeyspace: option prefix must be a string`);
  if (!Number.isInteger(db) || db < 0) throw new TypeError(`${PKG}: subscribeKeyspace: option db must be an integer >= 0`);
  const events = [`__keyevent@${db}__:expired`, `__keyevent@${db}__:del`];
  const listener = (key: string) => {
    if (!key.startsWith(prefix) || key.length === prefix.length) return;
    try {
      onEnd(key.slice(prefix.length));
    } catch (err) {
      debug('keyspace listener threw: %o', err);
    }
  };
  for (const channel of events) await adapter.subscribe(channel, listener);
  return async () => {
    for (const channel of events) await adapter.unsubscribe(channel, listener).catch(() => undefined);
  };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
