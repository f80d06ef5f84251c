/**
 * Test helpers for the session suites: a tiny WebSocket endpoint built exactly as the websocket
 * package builds its own (ws in noServer mode, the 101 written by ws, `res.externalSwitch()` from
 * the 'headers' event), stores that fail on purpose, and a cookie jar.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { EventEmitter } from 'node:events';
import { WebSocketServer, type WebSocket } from 'ws';
import { isUpgradeResponse, supportsUpgrade, type NextFunction } from '@upgradeware/upgrade-response';
import { Store, type GetCallback, type SessionCallback, type StoredSession } from '@upgradeware/session';

declare module '@upgradeware/session' {
  interface SessionData {
    user: string;
    views: number;
    note: string;
  }
}

export type OnConnection = (ws: WebSocket, req: IncomingMessage) => void;

/**
 * A WebSocket endpoint: ordinary requests pass on; an upgrade is handed to ws, whose 101 carries
 * the headers middleware set on `res`. Returns the middleware and a close() for its server.
 */
export function wsEndpoint(onConnection: OnConnection): {
  handle: (req: IncomingMessage, res: ServerResponse, next: NextFunction) => void;
  close(): void;
} {
  const wss = new WebSocketServer({ noServer: true });
  const handle = supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: NextFunction) => {
    if (!isUpgradeResponse(res)) {
      next();
      return;
    }
    const socket = res.socket;
    if (!socket) return;
    const addHeaders = (lines: string[]): void => {
      lines.push(...res.externalSwitch());
    };
    // ws emits 'headers' synchronously inside handleUpgrade (no verifyClient here).
    wss.once('headers', addHeaders);
    wss.handleUpgrade(req, socket, res.upgradeHead, (ws) => onConnection(ws, req));
    wss.removeListener('headers', addHeaders);
  });
  return {
    handle,
    close: () => {
      for (const client of wss.clients) client.terminate();
      wss.close();
    },
  };
}

/** `name=value` of every Set-Cookie line (the part a client sends back). */
export function cookiePairs(setCookie: string | string[] | undefined): string[] {
  if (setCookie === undefined) return [];
  const lines = Array.isArray(setCookie) ? setCookie : [setCookie];
  return lines.map((line) => line.split(';')[0]!);
}

/** The one Set-Cookie line for `name`, or undefined. */
export function setCookieFor(setCookie: string | string[] | undefined, name = 'connect.sid'): string | undefined {
  if (setCookie === undefined) return undefined;
  const lines = Array.isArray(setCookie) ? setCookie : [setCookie];
  return lines.find((line) => line.startsWith(`${name}=`));
}

/** A store whose every operation fails (or only some: `failing`). */
export class FailingStore extends Store {
  readonly data = new Map<string, string>();
  constructor(public failing: Set<'get' | 'set' | 'destroy' | 'touch'> = new Set(['get', 'set', 'destroy', 'touch'])) {
    super();
  }
  private fail(op: 'get' | 'set' | 'destroy' | 'touch'): Error | null {
    return this.failing.has(op) ? Object.assign(new Error(`store ${op} failed`), { status: 503 }) : null;
  }
  override get(sid: string, cb: GetCallback): void {
    const err = this.fail('get');
    const raw = this.data.get(sid);
    setImmediate(() => cb(err, err || raw === undefined ? undefined : (JSON.parse(raw) as StoredSession)));
  }
  override set(sid: string, session: StoredSession, cb?: SessionCallback): void {
    const err = this.fail('set');
    if (!err) this.data.set(sid, JSON.stringify(session));
    setImmediate(() => cb?.(err ?? undefined));
  }
  override destroy(sid: string, cb?: SessionCallback): void {
    const err = this.fail('destroy');
    if (!err) this.data.delete(sid);
    setImmediate(() => cb?.(err ?? undefined));
  }
  override touch(_sid: string, _session: StoredSession, cb?: SessionCallback): void {
    const err = this.fail('touch');
    setImmediate(() => cb?.(err ?? undefined));
  }
}

/** A store that never answers `get` (and, with `hangSet`, `set`): a dead backend. */
export class SilentStore extends Store {
  readonly data = new Map<string, string>();
  hangGet = true;
  hangSet = false;
  override get(sid: string, cb: GetCallback): void {
    if (this.hangGet) return;
    const raw = this.data.get(sid);
    setImmediate(() => cb(null, raw === undefined ? undefined : (JSON.parse(raw) as StoredSession)));
  }
  override set(sid: string, session: StoredSession, cb?: SessionCallback): void {
    if (this.hangSet) return;
    this.data.set(sid, JSON.stringify(session));
    setImmediate(() => cb?.());
  }
  override destroy(sid: string, cb?: SessionCallback): void {
    this.data.delete(sid);
    setImmediate(() => cb?.());
  }
}

/** Resolve with the next `event` of an emitter (bounded). */
export function once(emitter: EventEmitter, event: string, timeoutMs = 3000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.removeListener(event, listener);
      reject(new Error(`no ${event} in time`));
    }, timeoutMs);
    const listener = (...args: unknown[]): void => {
      clearTimeout(timer);
      resolve(args);
    };
    emitter.once(event, listener);
  });
}
