/**
 * @upgradeware/hub
 *
 * Rooms of WebSockets that span every instance of an app: `join`, `leave`, `broadcast` and
 * `disconnect` act on the members of this instance at once, then go to the other instances
 * through a transport (in-process, or Redis with the user's own clients). `watchSessions(store)`
 * closes the sockets of a session on every instance when the session is destroyed.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import createDebug from 'debug';
import * as messageModule from './message';
import * as redisModule from './redis';
import { MAX_ROOM, isCloseReason, isRoom, type Envelope, type HubMessage } from './message';

export type { BroadcastMessage, DisconnectMessage, Envelope, HubMessage, MoveMessage } from './message';
export type { RedisTransportOptions, RedisLikeClient, KeyspaceOptions } from './redis';
// Aliases, not `export { … } from` (whose getters would put this module's exports object in V8's
// dictionary mode): plain properties.
export import decode = messageModule.decode;
export import encode = messageModule.encode;
export import isCloseCode = messageModule.isCloseCode;
export import redisTransport = redisModule.redisTransport;
export import subscribeKeyspace = redisModule.subscribeKeyspace;

const debug = createDebug('upgradeware:hub');
const PKG = '@upgradeware/hub';

/** The room every socket of a session joins (`websocket()` does it): `session:<id>`. */
export const SESSION_ROOM_PREFIX = 'session:';

/** What the hub needs of a socket: `ws`'s `WebSocket` fits. */
export interface HubMember {
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: string | Buffer | ArrayBuffer | ArrayBufferView, cb?: (err?: Error) => void): void;
  close(code?: number, reason?: string): void;
  /** As an EventEmitter's: listeners are called with the member as `this`. */
  on(event: 'close', listener: () => void): unknown;
  on(event: 'message', listener: () => void): unknown;
  once(event: 'close', listener: () => void): unknown;
  off(event: 'close', listener: () => void): unknown;
  off(event: 'message', listener: () => void): unknown;
}

/** What a transport hands back to the hub. */
export interface TransportReceiver {
  /** A message published by some instance (possibly this one: the hub drops its own). */
  message(text: string): void;
  /** The link to the other instances came back after a loss: messages may have been missed. */
  reconnected(): void;
}

/**
 * Carries encoded messages between instances. `publish` must not throw; a transport that loses
 * messages says so in its documentation.
 */
export interface HubTransport {
  start(receiver: TransportReceiver): void | Promise<void>;
  publish(text: string): void;
  close(): void | Promise<void>;
}

const OPEN = 1;

export type BroadcastData = string | Buffer | ArrayBuffer | ArrayBufferView;
export type Except = HubMember | string | ReadonlyArray<HubMember | string>;

export interface BroadcastOptions {
  /** The room to reach; every member of the hub when left out. */
  room?: string;
  /** Sockets (this instance's) and rooms (on every instance) that do not get the message. */
  except?: Except;
}

export interface DisconnectOptions {
  /** Close code (1000, 1001, 1008, 1011-1014, 3000-4999). Default 1000. */
  code?: number;
  /** Close reason, at most 123 bytes. Default ''. */
  reason?: string;
}

export interface HubOptions {
  /** Carries messages to the other instances. Default: `inProcessTransport()` (this process only). */
  transport?: HubTransport;
  /**
   * A member whose unsent bytes exceed this (ws's `bufferedAmount`) when a broadcast reaches it is
   * closed with 1013 "Try Again Later" instead of buffering without bound. Default 16 MiB.
   */
  maxBufferedAmount?: number;
  /** This instance's id on the wire (default: random). */
  instanceId?: string;
}

export interface HubStats {
  /** Messages handed to the transport. */
  published: number;
  /** Messages from other instances acted upon. */
  received: number;
  /** Messages ignored because they were not well-formed. */
  malformed: number;
  /** Messages ignored because they were seen already (a retried publish). */
  duplicates: number;
  /** Members closed because they did not read fast enough. */
  slowClosed: number;
}

/** A store as `watchSessions` uses it: express-session's Store interface. */
export interface WatchedStore {
  get(sid: string, callback: (err: unknown, session?: unknown) => void): unknown;
  destroy(sid: string, callback?: (err?: unknown) => void): unknown;
  touch?(sid: string, session: never, callback?: (err?: unknown) => void): unknown;
  set?(sid: string, session: never, callback?: (err?: unknown) => void): unknown;
}

export interface WatchSessionsOptions {
  /** Close code for the sockets of an ended session. Default 4001. */
  code?: number;
  /** Close reason. Default "session ended". */
  reason?: string;
  /**
   * A user active only over WebSocket: `'expire'` (default) lets the session expire at its TTL,
   * which closes the sockets (see `keyspace` and revalidation); `'touch'` touches the session in
   * the store on socket activity (at most once per `touchInterval`), so it lives while used.
   */
  activity?: 'expire' | 'touch';
  /** With `activity: 'touch'`: at most one touch per session per this many ms. Default 60000. */
  touchInterval?: number;
  /** Check every live session against the store this often (ms; 0 = only after a reconnect). Default 0. */
  revalidateInterval?: number;
}

/** The middleware of `hub.keepOnRegenerate()` (Connect-style, upgrade-aware). */
export interface KeepOnRegenerate {
  (req: RegeneratingRequest, res: unknown, next: (err?: unknown) => void): void;
  readonly supportsUpgrade: true;
}

/** What `keepOnRegenerate` reads of a request: express-session's `req.session` and `req.sessionID`. */
export interface RegeneratingRequest {
  sessionID?: string;
  session?: { regenerate?: unknown } | null;
}

export interface Hub extends EventEmitter {
  /** Put `ws` into `room` (it leaves every room by itself when it closes). */
  join(ws: HubMember, room: string): void;
  /** Take `ws` out of `room`. */
  leave(ws: HubMember, room: string): void;
  /** Send to every member of a room on every instance (this instance's first); returns how many here. */
  broadcast(data: BroadcastData, options?: BroadcastOptions): number;
  /** Close every member of `room` on every instance; returns how many here. */
  disconnect(room: string, options?: DisconnectOptions): number;
  /** The rooms `ws` is in. */
  roomsOf(ws: HubMember): ReadonlySet<string>;
  /** This instance's members of `room`. */
  members(room: string): ReadonlySet<HubMember>;
  /** Every member on this instance. */
  readonly size: number;
  readonly instanceId: string;
  readonly stats: Readonly<HubStats>;
  /** Resolves once the transport started (rejects if it failed to). */
  readonly ready: Promise<void>;
  /**
   * Close the sockets of a session on every instance when `store.destroy(sid)` succeeds
   * (`req.session.destroy()` and `regenerate()` both call it). Returns a function that undoes it.
   */
  watchSessions(store: WatchedStore, options?: WatchSessionsOptions): () => void;
  /** Check this instance's session rooms against the watched stores; resolves with how many sessions ended. */
  revalidate(): Promise<number>;
  /** Close every local member of the session room of `sid` (e.g. from a keyspace notification). */
  endSession(sid: string): number;
  /**
   * A middleware to mount right after the session middleware: a `req.session.regenerate()` (a login
   * on top of an anonymous session) then keeps the sockets of the old session open and moves them,
   * on every instance, into the new session's room, so that a later logout still closes them.
   * Without it, `watchSessions` closes them like a `destroy()`.
   */
  keepOnRegenerate(): KeepOnRegenerate;
  /** Stop the transport. Sockets stay open. */
  close(): Promise<void>;
}

/**
 * Session ids being regenerated through `keepOnRegenerate` in this process: their `destroy` closes
 * nothing, whichever hub wrapped the store (session ids are unique, so one set serves every hub).
 */
const KEEPING = new Set<string>();

const EMPTY_ROOMS: ReadonlySet<string> = new Set();
const EMPTY_MEMBERS: ReadonlySet<HubMember> = new Set();

function checkRoom(room: unknown, where: string): asserts room is string {
  if (!isRoom(room)) {
    throw new TypeError(`${PKG}: ${where}: room must be a non-empty string of at most ${MAX_ROOM} characters`);
  }
}

function isMember(value: unknown): value is HubMember {
  return (
    value !== null &&
    typeof value === 'object' &&
    typeof (value as HubMember).send === 'function' &&
    typeof (value as HubMember).close === 'function' &&
    typeof (value as HubMember).on === 'function'
  );
}

function hasAny(set: ReadonlySet<string>, values: readonly string[]): boolean {
  for (let i = 0; i < values.length; i++) if (set.has(values[i]!)) return true;
  return false;
}

function toBuffer(data: BroadcastData): string | Buffer {
  if (typeof data === 'string' || Buffer.isBuffer(data)) return data;
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError(`${PKG}: broadcast data must be a string, Buffer, ArrayBuffer or typed array`);
}

/** Create a hub. */
export function createHub(options: HubOptions = {}): Hub {
  if (options === null || typeof options !== 'object') throw new TypeError(`${PKG}: options must be an object`);
  for (const name of Object.keys(options)) {
    if (!['transport', 'maxBufferedAmount', 'instanceId'].includes(name)) throw new TypeError(`${PKG}: unknown option ${name}`);
  }
  // Alone (no transport given), nothing reaches another instance: messages are not even encoded.
  const alone = options.transport === undefined;
  const transport = options.transport ?? inProcessTransport();
  if (
    transport === null ||
    typeof transport !== 'object' ||
    typeof transport.start !== 'function' ||
    typeof transport.publish !== 'function' ||
    typeof transport.close !== 'function'
  ) {
    throw new TypeError(`${PKG}: option transport must have start(), publish() and close()`);
  }
  const maxBuffered = options.maxBufferedAmount ?? 16 * 1024 * 1024;
  if (typeof maxBuffered !== 'number' || !(maxBuffered > 0)) throw new TypeError(`${PKG}: option maxBufferedAmount must be a number > 0`);
  const instanceId = options.instanceId ?? randomBytes(9).toString('base64url');
  if (typeof instanceId !== 'string' || instanceId.length === 0 || instanceId.length > 128) {
    throw new TypeError(`${PKG}: option instanceId must be a non-empty string of at most 128 characters`);
  }

  const hub = new EventEmitter() as Hub;
  const rooms = new Map<string, Set<HubMember>>();
  /** Each member's rooms. */
  const memberRooms = new Map<HubMember, Set<string>>();
  const lastSeq = new Map<string, number>();
  const stats: HubStats = { published: 0, received: 0, malformed: 0, duplicates: 0, slowClosed: 0 };
  const joinHooks = new Set<(ws: HubMember, room: string) => void>();
  const revalidators = new Set<() => Promise<number>>();
  let seq = 0;
  let closed = false;

  /** Every member's 'close' listener: one for the hub, no closure per member. */
  function onMemberClose(this: HubMember): void {
    removeMember(this);
  }

  function removeMember(ws: HubMember): void {
    const mine = memberRooms.get(ws);
    if (!mine) return;
    memberRooms.delete(ws);
    ws.off('close', onMemberClose);
    for (const room of mine) dropFromRoom(room, ws);
  }

  /** The session room `ws` is in (`session:<id>`, the first such room), if any. */
  function sessionRoomOf(ws: HubMember): string | undefined {
    const mine = memberRooms.get(ws);
    if (mine) for (const room of mine) if (room.startsWith(SESSION_ROOM_PREFIX)) return room;
    return undefined;
  }

  function dropFromRoom(room: string, ws: HubMember): void {
    const set = rooms.get(room);
    if (!set) return;
    set.delete(ws);
    if (set.size === 0) rooms.delete(room);
  }

  hub.join = (ws, room) => {
    if (!isMember(ws)) throw new TypeError(`${PKG}: join: ws must be a WebSocket`);
    checkRoom(room, 'join');
    if (ws.readyState > OPEN) return; // closing or closed: its 'close' may have fired already
    const gone = ended.get(room);
    if (gone !== undefined && Date.now() - gone.at < ENDED_MS) {
      debug('join of %s, which ended %d ms ago: closing', room, Date.now() - gone.at);
      ws.close(gone.code, gone.reason);
      return;
    }
    let mine = memberRooms.get(ws);
    if (!mine) {
      mine = new Set();
      memberRooms.set(ws, mine);
      ws.on('close', onMemberClose);
    }
    if (mine.has(room)) return;
    mine.add(room);
    let set = rooms.get(room);
    if (!set) rooms.set(room, (set = new Set()));
    set.add(ws);
    for (const hook of joinHooks) hook(ws, room);
  };

  hub.leave = (ws, room) => {
    const mine = memberRooms.get(ws);
    if (!mine || !mine.delete(room)) return;
    dropFromRoom(room, ws);
    if (mine.size === 0) removeMember(ws);
  };

  hub.roomsOf = (ws) => memberRooms.get(ws) ?? EMPTY_ROOMS;
  hub.members = (room) => rooms.get(room) ?? EMPTY_MEMBERS;
  Object.defineProperty(hub, 'size', { enumerable: true, get: () => memberRooms.size });
  Object.defineProperty(hub, 'instanceId', { enumerable: true, value: instanceId });
  Object.defineProperty(hub, 'stats', { enumerable: true, value: stats });

  function deliver(data: BroadcastData, room: string | null, exceptRooms: readonly string[], exceptSockets: ReadonlySet<HubMember>): number {
    const targets = room === null ? memberRooms.keys() : (rooms.get(room) ?? EMPTY_MEMBERS).values();
    let sent = 0;
    // Slow members are closed after the walk (a close may change the sets walked): no copy of the
    // room per message.
    let slow: HubMember[] | null = null;
    for (const ws of targets) {
      if (ws.readyState !== OPEN || exceptSockets.has(ws)) continue;
      if (exceptRooms.length > 0) {
        const mine = memberRooms.get(ws);
        if (mine && hasAny(mine, exceptRooms)) continue;
      }
      if (ws.bufferedAmount > maxBuffered) {
        stats.slowClosed++;
        debug('member too slow (%d bytes buffered): closing with 1013', ws.bufferedAmount);
        (slow ??= []).push(ws);
        continue;
      }
      ws.send(data);
      sent++;
    }
    if (slow !== null) for (const ws of slow) ws.close(1013, 'Try Again Later');
    return sent;
  }

  /**
   * Session rooms closed recently: a session id is never reused, so a socket that joins one of
   * them afterwards belongs to a session that has ended — its upgrade loaded the session just
   * before the revocation arrived. It is closed at once (bounded: 10,000 rooms, 60 s).
   */
  const ended = new Map<string, { at: number; code: number; reason: string }>();
  const ENDED_MS = 60_000;
  function remember(room: string, code: number, reason: string): void {
    if (!room.startsWith(SESSION_ROOM_PREFIX)) return;
    const now = Date.now();
    ended.delete(room);
    ended.set(room, { at: now, code, reason });
    for (const [r, e] of ended) {
      if (ended.size <= 10_000 && now - e.at < ENDED_MS) break;
      ended.delete(r);
    }
  }

  function closeLocal(room: string, code: number, reason: string): number {
    remember(room, code, reason);
    const set = rooms.get(room);
    if (!set) return 0;
    let n = 0;
    for (const ws of Array.from(set)) {
      if (ws.readyState <= OPEN) {
        ws.close(code, reason);
        n++;
      }
    }
    return n;
  }

  function moveLocal(from: string, to: string): number {
    const set = rooms.get(from);
    if (!set) return 0;
    let n = 0;
    for (const ws of Array.from(set)) {
      hub.leave(ws, from);
      if (ws.readyState <= OPEN) {
        hub.join(ws, to);
        n++;
      }
    }
    return n;
  }

  function publish(message: HubMessage): void {
    if (closed) return;
    if (alone) {
      stats.published++;
      return;
    }
    let text: string;
    try {
      text = encode({ origin: instanceId, seq: ++seq, message });
    } catch (err) {
      debug('cannot encode: %o', err);
      return;
    }
    stats.published++;
    transport.publish(text);
  }

  hub.broadcast = (data, opts = {}) => {
    const payload = toBuffer(data);
    const room = opts.room ?? null;
    if (room !== null) checkRoom(room, 'broadcast');
    const exceptRooms: string[] = [];
    let exceptSockets: ReadonlySet<HubMember> = EMPTY_MEMBERS;
    const except = opts.except;
    if (except !== undefined) {
      const sockets = new Set<HubMember>();
      exceptSockets = sockets;
      for (const item of Array.isArray(except) ? except : [except]) {
        if (typeof item === 'string') {
          checkRoom(item, 'broadcast except');
          exceptRooms.push(item);
        } else if (isMember(item)) sockets.add(item);
        else throw new TypeError(`${PKG}: broadcast: except must be sockets and room names`);
      }
    }
    const sent = deliver(data, room, exceptRooms, exceptSockets);
    publish({ type: 'broadcast', room, except: exceptRooms, data: payload });
    return sent;
  };

  hub.disconnect = (room, opts = {}) => {
    checkRoom(room, 'disconnect');
    const code = opts.code ?? 1000;
    const reason = opts.reason ?? '';
    if (!isCloseCode(code)) throw new TypeError(`${PKG}: disconnect: code must be 1000, 1001, 1008, 1011-1014 or 3000-4999`);
    if (!isCloseReason(reason)) throw new TypeError(`${PKG}: disconnect: reason must be a string of at most 123 bytes`);
    const n = closeLocal(room, code, reason);
    publish({ type: 'disconnect', room, code, reason });
    return n;
  };

  function receive(text: string): void {
    const envelope: Envelope | null = decode(text);
    if (envelope === null) {
      stats.malformed++;
      debug('malformed message ignored: %s', text.length > 200 ? `${text.slice(0, 200)}…` : text);
      return;
    }
    if (envelope.origin === instanceId) return;
    const last = lastSeq.get(envelope.origin);
    if (last !== undefined && envelope.seq <= last) {
      stats.duplicates++;
      return;
    }
    if (last === undefined && lastSeq.size >= 10_000) lastSeq.delete(lastSeq.keys().next().value as string);
    lastSeq.set(envelope.origin, envelope.seq);
    stats.received++;
    const m = envelope.message;
    try {
      if (m.type === 'broadcast') deliver(m.data, m.room, m.except, EMPTY_MEMBERS);
      else if (m.type === 'move') moveLocal(m.room, m.to);
      else closeLocal(m.room, m.code, m.reason);
    } catch (err) {
      debug('delivery failed: %o', err);
    }
  }

  hub.revalidate = async () => {
    let ended = 0;
    for (const check of Array.from(revalidators)) ended += await check();
    return ended;
  };

  const receiver: TransportReceiver = {
    message: (text) => {
      if (!closed) receive(text);
    },
    reconnected: () => {
      if (closed) return;
      debug('transport reconnected: revalidating sessions');
      hub.emit('reconnect');
      hub.revalidate().then(
        (n) => n > 0 && debug('%d sessions ended while disconnected', n),
        (err: unknown) => debug('revalidation failed: %o', err),
      );
    },
  };

  let readyPromise: Promise<void>;
  try {
    readyPromise = Promise.resolve(transport.start(receiver));
  } catch (err) {
    readyPromise = Promise.reject(err);
  }
  readyPromise.catch((err: unknown) => debug('transport failed to start: %o', err));
  Object.defineProperty(hub, 'ready', { enumerable: false, value: readyPromise });

  const watched: Array<{ code: number; reason: string }> = [];

  type Regenerate = (this: unknown, fn?: (err?: unknown) => void) => unknown;

  /** `regenerate` of `sess` (whose `original` it was), keeping the sockets of `req`'s old session. */
  function keepRegenerate(req: RegeneratingRequest, original: Regenerate, sess: unknown, fn?: (err?: unknown) => void): unknown {
    const oldSid = req.sessionID;
    if (typeof oldSid === 'string') KEEPING.add(oldSid);
    const done = (err?: unknown) => {
      if (typeof oldSid === 'string') KEEPING.delete(oldSid);
      const newSid = req.sessionID;
      if (!err && typeof oldSid === 'string' && typeof newSid === 'string' && newSid !== oldSid) {
        const from = SESSION_ROOM_PREFIX + oldSid;
        const to = SESSION_ROOM_PREFIX + newSid;
        moveLocal(from, to);
        publish({ type: 'move', room: from, to });
      }
    };
    if (typeof fn === 'function') {
      return original.call(sess, (err?: unknown) => {
        done(err);
        fn(err);
      });
    }
    const ret = original.call(sess);
    if (ret !== null && typeof ret === 'object' && typeof (ret as Promise<void>).then === 'function') {
      return (ret as Promise<void>).then(
        () => done(),
        (err: unknown) => {
          done(err ?? new Error('regenerate failed'));
          throw err;
        },
      );
    }
    return ret;
  }

  /**
   * For sessions that know their request (`session.req`, as @upgradeware/session's and
   * express-session's do): one wrapper per original `regenerate`, made once, not per request.
   */
  const keepingDescriptors = new WeakMap<Regenerate, PropertyDescriptor>();
  function keepingDescriptor(original: Regenerate): PropertyDescriptor {
    let descriptor = keepingDescriptors.get(original);
    if (descriptor === undefined) {
      const value = function regenerate(this: { req: RegeneratingRequest }, fn?: (err?: unknown) => void): unknown {
        return keepRegenerate(this.req, original, this, fn);
      };
      descriptor = { value, configurable: true, writable: true, enumerable: false };
      keepingDescriptors.set(original, descriptor);
    }
    return descriptor;
  }

  hub.keepOnRegenerate = () => {
    const middleware = function keepOnRegenerate(req: RegeneratingRequest, _res: unknown, next: (err?: unknown) => void): void {
      const sess = req.session;
      if (sess && typeof sess.regenerate === 'function') {
        const original = sess.regenerate as Regenerate;
        const descriptor =
          (sess as { req?: unknown }).req === req
            ? keepingDescriptor(original)
            : {
                value: function regenerate(this: unknown, fn?: (err?: unknown) => void): unknown {
                  return keepRegenerate(req, original, this, fn);
                },
                configurable: true,
                writable: true,
                enumerable: false,
              };
        Object.defineProperty(sess, 'regenerate', descriptor);
      }
      next();
    } as KeepOnRegenerate;
    Object.defineProperty(middleware, 'supportsUpgrade', { value: true, enumerable: true });
    return middleware;
  };
  hub.endSession = (sid) => {
    const how = watched[0] ?? { code: 4001, reason: 'session ended' };
    return closeLocal(SESSION_ROOM_PREFIX + sid, how.code, how.reason);
  };

  hub.watchSessions = (store, opts = {}) => {
    if (store === null || typeof store !== 'object' || typeof store.destroy !== 'function' || typeof store.get !== 'function') {
      throw new TypeError(`${PKG}: watchSessions: store must have get() and destroy()`);
    }
    const code = opts.code ?? 4001;
    const reason = opts.reason ?? 'session ended';
    if (!isCloseCode(code)) throw new TypeError(`${PKG}: watchSessions: option code must be a close code an application may send`);
    if (!isCloseReason(reason)) throw new TypeError(`${PKG}: watchSessions: option reason must be at most 123 bytes`);
    const activity = opts.activity ?? 'expire';
    if (activity !== 'expire' && activity !== 'touch') throw new TypeError(`${PKG}: watchSessions: option activity must be 'expire' or 'touch'`);
    const touchInterval = opts.touchInterval ?? 60_000;
    if (typeof touchInterval !== 'number' || !(touchInterval >= 0)) throw new TypeError(`${PKG}: watchSessions: option touchInterval must be a number >= 0`);
    const revalidateInterval = opts.revalidateInterval ?? 0;
    if (typeof revalidateInterval !== 'number' || !(revalidateInterval >= 0)) {
      throw new TypeError(`${PKG}: watchSessions: option revalidateInterval must be a number >= 0`);
    }
    const how = { code, reason };
    watched.push(how);

    const original = store.destroy;
    const wrapped = function destroy(this: unknown, sid: string, callback?: (err?: unknown) => void): unknown {
      return original.call(this, sid, (err?: unknown) => {
        if (!err && typeof sid === 'string' && sid.length > 0 && !KEEPING.has(sid)) {
          try {
            hub.disconnect(SESSION_ROOM_PREFIX + sid, how);
          } catch (e) {
            debug('revocation of %s failed: %o', sid, e);
          }
        }
        if (typeof callback === 'function') callback(err);
      });
    };
    store.destroy = wrapped;

    /** Is session `sid` still in the store? (An error counts as yes: never close on a store hiccup.) */
    function alive(sid: string): Promise<boolean> {
      return new Promise((resolve) => {
        let done = false;
        const finish = (v: boolean) => {
          if (!done) {
            done = true;
            clearTimeout(timer);
            resolve(v);
          }
        };
        const timer = setTimeout(() => finish(true), 5000);
        try {
          store.get(sid, (err, data) => finish(Boolean(err) || (data !== null && data !== undefined)));
        } catch (err) {
          debug('store.get threw: %o', err);
          finish(true);
        }
      });
    }

    async function revalidate(): Promise<number> {
      const sids: string[] = [];
      for (const room of rooms.keys()) if (room.startsWith(SESSION_ROOM_PREFIX)) sids.push(room.slice(SESSION_ROOM_PREFIX.length));
      let ended = 0;
      for (let i = 0; i < sids.length; i += 32) {
        const batch = sids.slice(i, i + 32);
        const results = await Promise.all(batch.map(alive));
        batch.forEach((sid, k) => {
          if (!results[k] && closeLocal(SESSION_ROOM_PREFIX + sid, code, reason) > 0) ended++;
        });
      }
      return ended;
    }
    revalidators.add(revalidate);

    // When each session room was last touched, and the sockets whose messages touch theirs. The two
    // listeners are made once per watch, not per socket; the session is looked up per message, as
    // keepOnRegenerate may have moved the socket to a new one since it joined. Keyed by room name:
    // a message inside the interval builds no string.
    const touched = new Map<string, number>();
    const touching = new Set<HubMember>();
    function onTouchMessage(this: HubMember): void {
      const room = sessionRoomOf(this);
      if (room === undefined) return;
      const now = Date.now();
      if (now - (touched.get(room) ?? 0) < touchInterval) return;
      touched.set(room, now);
      touchSession(room.slice(SESSION_ROOM_PREFIX.length));
    }
    function onTouchClose(this: HubMember): void {
      this.off('message', onTouchMessage);
      this.off('close', onTouchClose);
      touching.delete(this);
      // Forget sessions with no socket left here, now and then (amortised: not a walk per close).
      if (touched.size > 2 * touching.size + 16) {
        for (const room of touched.keys()) if (!rooms.has(room)) touched.delete(room);
      }
    }
    const onJoin = (ws: HubMember, room: string) => {
      if (!room.startsWith(SESSION_ROOM_PREFIX) || touching.has(ws)) return;
      touching.add(ws);
      ws.on('message', onTouchMessage);
      ws.on('close', onTouchClose);
    };
    function touchSession(sid: string): void {
      try {
        store.get(sid, (err, data) => {
          if (err) return debug('touch: get failed: %o', err);
          if (data === null || data === undefined) {
            closeLocal(SESSION_ROOM_PREFIX + sid, code, reason);
            return;
          }
          const cb = (e?: unknown) => e && debug('touch failed: %o', e);
          if (typeof store.touch === 'function') store.touch(sid, data as never, cb);
          else if (typeof store.set === 'function') store.set(sid, data as never, cb);
        });
      } catch (err) {
        debug('touch threw: %o', err);
      }
    }
    // Only 'touch' acts on joins: with 'expire' every join would call a hook that does nothing.
    if (activity === 'touch') joinHooks.add(onJoin);

    let timer: NodeJS.Timeout | null = null;
    if (revalidateInterval > 0) {
      timer = setInterval(() => {
        revalidate().catch((err: unknown) => debug('revalidation failed: %o', err));
      }, revalidateInterval);
      timer.unref();
    }

    return () => {
      if (store.destroy === wrapped) store.destroy = original;
      revalidators.delete(revalidate);
      joinHooks.delete(onJoin);
      for (const ws of touching) {
        ws.off('message', onTouchMessage);
        ws.off('close', onTouchClose);
      }
      touching.clear();
      const i = watched.indexOf(how);
      if (i !== -1) watched.splice(i, 1);
      if (timer) clearInterval(timer);
    };
  };

  hub.close = async () => {
    if (closed) return;
    closed = true;
    await transport.close();
  };

  return hub;
}

/** A channel shared by the hubs of one process (tests, or several apps in one process). */
export interface InProcessChannel {
  readonly receivers: Set<TransportReceiver>;
}

/** Make a channel for `inProcessTransport` to share between hubs. */
export function createChannel(): InProcessChannel {
  return { receivers: new Set() };
}

/**
 * A transport inside one process: with no channel, a single instance (nothing leaves the
 * process); hubs given the same channel reach each other. Delivery is asynchronous and in order.
 */
export function inProcessTransport(channel: InProcessChannel = createChannel()): HubTransport {
  let me: TransportReceiver | null = null;
  return {
    start(receiver) {
      me = receiver;
      channel.receivers.add(receiver);
    },
    publish(text) {
      for (const r of channel.receivers) if (r !== me) queueMicrotask(() => channel.receivers.has(r) && r.message(text));
    },
    close() {
      if (me) channel.receivers.delete(me);
      me = null;
    },
  };
}
