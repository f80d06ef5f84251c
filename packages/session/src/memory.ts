/**
 * `MemoryStore`: sessions in this process's memory, for development and tests. Unlike
 * express-session's, it does not grow without bound: expired sessions are pruned on a timer
 * (unref'd, so it never keeps the process alive) and sessions with no expiry are dropped after
 * `ttl` milliseconds without a save or touch.
 */
import type { SessionCallback, StoredSession } from './session';
import { Store, type GetCallback } from './store';

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

function later<A extends unknown[]>(callback: ((...args: A) => void) | undefined, ...args: A): void {
  if (typeof callback === 'function') setImmediate(() => callback(...args));
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
    later(callback, null, this.read(sid));
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
    later(callback, null, sessions);
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
    this.entries.set(sid, { json, expiresAt: this.expiryOf(JSON.parse(json) as StoredSession) });
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
