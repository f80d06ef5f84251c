/**
 * `MemoryStore`: sessions in this process's memory, for development and tests. Unlike
 * express-session's, it does not grow without bound: expired sessions are pruned on a timer
 * (unref'd, so it never keeps the process alive) and sessions with no expiry are dropped after
 * `ttl` milliseconds without a save or touch.
 */
import type { SessionCallback, StoredSession } from './session';
import { Store, type GetCallback } from './store';
import { Cookie } from './cookie';

export interface MemoryStoreOptions {
  /** Milliseconds between sweeps for expired sessions (default 60 000; 0 for no timer). */
  checkPeriod?: number;
  /** Milliseconds a session whose cookie has no expiry is kept after its last save or touch (default 86 400 000). */
  ttl?: number;
}

interface Entry {
  /** The session as JSON, so callers never share objects with the store. */
  json: string;
  /** Epoch ms after which the entry is gone. */
  expiresAt: number;
}

const DEFAULT_CHECK_PERIOD = 60_000;
const DEFAULT_TTL = 86_400_000;

/**
 * Callbacks run asynchronously — never from inside the call — on the next tick: a response whose
 * end waits for its session to be saved ends right after the code that ended it, rather than in
 * the event loop's next check phase with everything it holds kept alive until then (with
 * `setImmediate`, as express-session's MemoryStore defers, that costs a handshake about 5% more
 * CPU, in garbage collection). So that a chain of store calls made from store callbacks (a loop
 * polling the store) can never starve I/O, at most `TICKS_PER_TURN` callbacks are deferred that
 * way per turn of the event loop; beyond, they wait for the check phase (`setImmediate`).
 */
const TICKS_PER_TURN = 1000;
let ticksThisTurn = 0;
let turnWatched = false;

function newTurn(): void {
  ticksThisTurn = 0;
  turnWatched = false;
}

/** True when this callback may go on the next tick; otherwise it waits for the check phase. */
function onNextTick(): boolean {
  if (!turnWatched) {
    turnWatched = true;
    setImmediate(newTurn);
  }
  return ++ticksThisTurn <= TICKS_PER_TURN;
}

function later(callback: ((...args: never[]) => void) | undefined): void {
  if (typeof callback !== 'function') return;
  if (onNextTick()) process.nextTick(callback);
  else setImmediate(callback);
}

function laterWith<A, B>(callback: ((a: A, b: B) => void) | undefined, a: A, b: B): void {
  if (typeof callback !== 'function') return;
  if (onNextTick()) process.nextTick(callback, a, b);
  else setImmediate(callback, a, b);
}

const hasOwn = Object.prototype.hasOwnProperty;
const isEnumerable = Object.prototype.propertyIsEnumerable;

/**
 * The expiry, in epoch ms, that the session's JSON holds (`null`: none), read from the session
 * itself when that is sure to give what parsing the JSON back would: a session without `toJSON`
 * whose own `cookie` is a plain `Cookie` (its `toJSON` writes `expires` from the Date behind it).
 * `undefined` when anything else may be involved: the JSON is parsed back then.
 */
function knownExpiry(session: StoredSession): number | null | undefined {
  if (typeof (session as { toJSON?: unknown }).toJSON === 'function') return undefined;
  if (!isEnumerable.call(session, 'cookie')) return undefined;
  const cookie = session.cookie as unknown;
  if (!(cookie instanceof Cookie) || Object.getPrototypeOf(cookie) !== Cookie.prototype || hasOwn.call(cookie, 'toJSON')) return undefined;
  const expires = cookie._expires;
  if (expires === null || expires === undefined) return null;
  if (Object.getPrototypeOf(expires) !== Date.prototype || hasOwn.call(expires, 'toJSON') || hasOwn.call(expires, 'toISOString')) return undefined;
  // JSON writes a valid date as its ISO form, which parses back to the same millisecond, and an
  // invalid one as null.
  const at = expires.getTime();
  return Number.isNaN(at) ? null : at;
}

function checkMs(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw new TypeError(`@upgradeware/session: MemoryStore option ${name} must be a number of milliseconds >= 0`);
  }
  return value;
}

export class MemoryStore extends Store {
  private entries = new Map<string, Entry>();
  private timer: NodeJS.Timeout | undefined;
  private readonly ttl: number;

  constructor(options: MemoryStoreOptions = {}) {
    super();
    if (options === null || typeof options !== 'object') {
      throw new TypeError('@upgradeware/session: MemoryStore options must be an object');
    }
    const period = checkMs('checkPeriod', options.checkPeriod, DEFAULT_CHECK_PERIOD);
    this.ttl = checkMs('ttl', options.ttl, DEFAULT_TTL);
    if (period > 0 && period !== Infinity) {
      this.timer = setInterval(() => this.prune(), period);
      this.timer.unref();
    }
  }

  /** Remove every expired session now. Returns how many were removed. */
  prune(): number {
    const now = Date.now();
    let removed = 0;
    for (const [sid, entry] of this.entries) {
      if (entry.expiresAt <= now) {
        this.entries.delete(sid);
        removed++;
      }
    }
    return removed;
  }

  /** Stop the pruning timer (the store keeps working; expired sessions are still never returned). */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  override get(sid: string, callback: GetCallback): void {
    laterWith(callback, null, this.read(sid));
  }

  override set(sid: string, session: StoredSession, callback?: SessionCallback): void {
    this.write(sid, session);
    later(callback);
  }

  override destroy(sid: string, callback?: SessionCallback): void {
    this.entries.delete(sid);
    later(callback);
  }

  override touch(sid: string, session: StoredSession, callback?: SessionCallback): void {
    const current = this.read(sid);
    if (current) {
      current.cookie = session.cookie;
      // Not through this.set(): a subclass or wrapper counting writes sees a touch as a touch.
      this.write(sid, current);
    }
    later(callback);
  }

  override all(callback: (err: unknown, sessions?: Record<string, StoredSession>) => void): void {
    const sessions: Record<string, StoredSession> = Object.create(null) as Record<string, StoredSession>;
    for (const sid of [...this.entries.keys()]) {
      const session = this.read(sid);
      if (session) sessions[sid] = session;
    }
    laterWith(callback, null, sessions);
  }

  override length(callback: (err: unknown, length?: number) => void): void {
    this.all((err, sessions) => callback(err, sessions ? Object.keys(sessions).length : 0));
  }

  override clear(callback?: SessionCallback): void {
    this.entries.clear();
    later(callback);
  }

  private write(sid: string, session: StoredSession): void {
    const json = JSON.stringify(session);
    const known = knownExpiry(session);
    const expiresAt = known === undefined ? this.expiryOf(JSON.parse(json) as StoredSession) : known === null ? Date.now() + this.ttl : known;
    this.entries.set(sid, { json, expiresAt });
  }

  private read(sid: string): StoredSession | undefined {
    const entry = this.entries.get(sid);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.entries.delete(sid);
      return undefined;
    }
    return JSON.parse(entry.json) as StoredSession;
  }

  private expiryOf(session: StoredSession): number {
    const expires = session.cookie?.expires;
    if (expires !== undefined && expires !== null) {
      const at = new Date(expires).getTime();
      if (!Number.isNaN(at)) return at;
    }
    return Date.now() + this.ttl;
  }
}
