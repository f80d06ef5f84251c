/**
 * Helpers shared by the ecosystem suites (not a test file: jest only runs *.test.ts).
 */
import type * as http from 'node:http';
import * as crypto from 'node:crypto';
import type { WebSocket } from 'ws';
import { websocket } from '@upgradeware/websocket';

/**
 * Send `text` and resolve with the reply. (A message the server sends on connection can arrive
 * in the same chunk as the 101 and be emitted before the client's 'open' promise resumes; asking
 * first avoids that race.)
 */
export function ask(ws: WebSocket, text = 'ask', timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no reply in time')), timeoutMs);
    ws.once('message', (data) => {
      clearTimeout(timer);
      resolve(String(data));
    });
    ws.send(text);
  });
}

/**
 * A WebSocket endpoint (@upgradeware/websocket: `ws` writes the 101, the response's headers ride
 * on it through `res.externalSwitch()`) that answers every message with `reply(req)`.
 */
export function replyEndpoint(reply: (req: http.IncomingMessage) => string) {
  return websocket((ws, req) => {
    ws.on('message', () => ws.send(reply(req)));
  });
}

/** cookie-signature's `sign()`: what cookie-parser and express-session verify. */
export function signCookie(value: string, secret: string): string {
  const mac = crypto.createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '');
  return `${value}.${mac}`;
}

/** The `name=value` part of each Set-Cookie line. */
export function cookiePairs(setCookie: string | string[] | undefined): string[] {
  if (setCookie === undefined) return [];
  const lines = Array.isArray(setCookie) ? setCookie : [setCookie];
  return lines.map((line) => line.split(';')[0]!.trim());
}

/** A Writable-like stream that collects lines, for morgan's and logger's `stream` option. */
export function lineSink(): { lines: string[]; write(line: string): void } {
  const lines: string[] = [];
  return { lines, write: (line: string) => void lines.push(line.trimEnd()) };
}
