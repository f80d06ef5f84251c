/**
 * The wire format of hub messages: one JSON object per message. Everything read from a transport
 * is untrusted (anyone with access to the Redis channel can write to it): `decode` checks every
 * field and returns null for anything that is not a well-formed message.
 */

/** A broadcast to a room (or to every member when `room` is null). */
export interface BroadcastMessage {
  type: 'broadcast';
  room: string | null;
  /** Rooms whose members do not get it. */
  except: string[];
  /** The payload: text, or binary (carried as base64). */
  data: string | Buffer;
}

/** Close every member of a room. */
export interface DisconnectMessage {
  type: 'disconnect';
  room: string;
  code: number;
  reason: string;
}

/** Move every member of a room into another (a session regenerated with `keepOnRegenerate`). */
export interface MoveMessage {
  type: 'move';
  room: string;
  to: string;
}

export type HubMessage = BroadcastMessage | DisconnectMessage | MoveMessage;

/** A message with its sender: the instance id and a per-instance sequence number. */
export interface Envelope {
  origin: string;
  seq: number;
  message: HubMessage;
}

/** The longest room name, in characters. */
export const MAX_ROOM = 512;
/** The longest close reason a WebSocket close frame carries, in bytes (RFC 6455 §5.5). */
const MAX_REASON_BYTES = 123;
/** Standard base64, as `Buffer.toString('base64')` writes it. */
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export function encode(envelope: Envelope): string {
  const { origin, seq, message } = envelope;
  if (message.type === 'broadcast') {
    const body: Record<string, unknown> = { v: 1, o: origin, s: seq, t: 'b', r: message.room };
    if (message.except.length > 0) body.x = message.except;
    if (typeof message.data === 'string') body.d = message.data;
    else body.b = message.data.toString('base64');
    return JSON.stringify(body);
  }
  if (message.type === 'move') return JSON.stringify({ v: 1, o: origin, s: seq, t: 'm', r: message.room, n: message.to });
  return JSON.stringify({ v: 1, o: origin, s: seq, t: 'd', r: message.room, c: message.code, e: message.reason });
}

export function isRoom(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_ROOM;
}

/** Parse one message; null when it is not a well-formed hub message. */
export function decode(text: unknown): Envelope | null {
  if (typeof text !== 'string' || text.length === 0 || text.charCodeAt(0) !== 123 /* { */) return null;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return null;
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return null;
  const b = body as Record<string, unknown>;
  if (b.v !== 1 || typeof b.o !== 'string' || b.o.length === 0 || b.o.length > 128) return null;
  if (typeof b.s !== 'number' || !Number.isSafeInteger(b.s) || b.s < 0) return null;
  if (b.t === 'b') {
    if (b.r !== null && !isRoom(b.r)) return null;
    let except: string[] = [];
    if (b.x !== undefined) {
      if (!Array.isArray(b.x) || b.x.length > 1000 || !b.x.every(isRoom)) return null;
      except = b.x as string[];
    }
    let data: string | Buffer;
    if (typeof b.d === 'string' && b.b === undefined) data = b.d;
    else if (typeof b.b === 'string' && b.d === undefined && BASE64.test(b.b)) data = Buffer.from(b.b, 'base64');
    else return null;
    return { origin: b.o, seq: b.s, message: { type: 'broadcast', room: b.r as string | null, except, data } };
  }
  if (b.t === 'm') {
    if (!isRoom(b.r) || !isRoom(b.n)) return null;
    return { origin: b.o, seq: b.s, message: { type: 'move', room: b.r, to: b.n } };
  }
  if (b.t === 'd') {
    if (!isRoom(b.r) || !isCloseCode(b.c) || !isCloseReason(b.e)) return null;
    return { origin: b.o, seq: b.s, message: { type: 'disconnect', room: b.r, code: b.c, reason: b.e } };
  }
  return null;
}

/** A close code an application may send (RFC 6455 §7.4): 1000, 1001, 1008, 1011-1014, 3000-4999. */
export function isCloseCode(code: unknown): code is number {
  return (
    typeof code === 'number' &&
    Number.isInteger(code) &&
    (code === 1000 || code === 1001 || code === 1008 || (code >= 1011 && code <= 1014) || (code >= 3000 && code <= 4999))
  );
}

/** A close reason a close frame can carry: a string of at most 123 bytes. */
export function isCloseReason(reason: unknown): reason is string {
  return typeof reason === 'string' && Buffer.byteLength(reason) <= MAX_REASON_BYTES;
}
