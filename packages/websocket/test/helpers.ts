import type { IncomingMessage, ServerResponse } from 'node:http';
import { createApp, type App } from '@upgradeware/dispatcher';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { websocket, type WebSocketEndpoint, type WebSocketOptions } from '@upgradeware/websocket';
import type { WebSocket } from 'ws';

export interface Logged {
  method: string | undefined;
  url: string | undefined;
  status: number;
  finishes: number;
  closed: boolean;
}

/**
 * An app with a logger-like first layer that records, per request, the status `res` ended with,
 * how many times 'finish' fired and whether 'close' followed; and an echo endpoint at `/chat`.
 */
export function echoApp(options: WebSocketOptions = {}): { app: App; log: Logged[]; endpoint: WebSocketEndpoint } {
  const app = createApp();
  const log: Logged[] = [];
  app.use(
    supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: () => void) => {
      const entry: Logged = { method: req.method, url: req.originalUrl, status: 0, finishes: 0, closed: false };
      res.on('finish', () => {
        entry.finishes++;
        entry.status = res.statusCode;
        log.push(entry);
      });
      res.on('close', () => {
        entry.closed = true;
      });
      next();
    }),
  );
  const endpoint = websocket(echo, options);
  app.use('/chat', endpoint);
  return { app, log, endpoint };
}

export function echo(ws: WebSocket): void {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
}

/** A client-to-server text frame (masked, FIN), for raw sockets. */
export function maskedFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  if (payload.length > 125) throw new Error('short frames only');
  const mask = Buffer.from([1, 2, 3, 4]);
  const out = Buffer.alloc(6 + payload.length);
  out[0] = 0x81;
  out[1] = 0x80 | payload.length;
  mask.copy(out, 2);
  for (let i = 0; i < payload.length; i++) out[6 + i] = payload[i]! ^ mask[i % 4]!;
  return out;
}

/** A server-to-client text frame as ws writes it (unmasked, FIN). */
export function serverFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  return Buffer.concat([Buffer.from([0x81, payload.length]), payload]);
}
