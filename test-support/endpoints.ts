/**
 * Two tiny WebSocket endpoints for the upgrade tests: one writes the 101 through
 * `res.switchProtocols()`, the other lets `ws` write it (`res.externalSwitch()`), as the
 * websocket package does. The second echoes text messages.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { isUpgradeResponse, supportsUpgrade, type UpgradeResponse } from '@upgradeware/upgrade-response';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/**
 * Accepts the handshake itself through `res.switchProtocols()`, then speaks just enough
 * WebSocket by hand: answers every frame from the client with a text frame `hello`, and a
 * close frame with a close frame, then ends.
 */
export function switchEndpoint() {
  const sockets = new Set<Duplex>();
  const handle = supportsUpgrade((req, res, next) => {
    if (!isUpgradeResponse(res)) return next();
    const key = String(req.headers['sec-websocket-key'] ?? '');
    res.setHeader('Sec-WebSocket-Accept', createHash('sha1').update(key + GUID).digest('base64'));
    res.switchProtocols((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('data', (chunk: Buffer) => {
        // A masked close frame from the client: answer it and end.
        if ((chunk[0]! & 0x0f) === 0x8) socket.end(Buffer.from([0x88, 0x00]));
        else socket.write(Buffer.concat([Buffer.from([0x81, 5]), Buffer.from('hello')]));
      });
    });
  });
  return { handle, close: () => { for (const s of sockets) s.destroy(); } };
}

/** Lets `ws` write the 101, with the response's headers added from its 'headers' event. */
export function wsEndpoint() {
  const wss = new WebSocketServer({ noServer: true });
  const handle = supportsUpgrade((req, res, next) => {
    if (!isUpgradeResponse(res) || !res.socket) return next();
    const onHeaders = (lines: string[]) => lines.push(...res.externalSwitch());
    wss.once('headers', onHeaders);
    wss.handleUpgrade(req, res.socket, res.upgradeHead, (ws) => {
      ws.on('message', (data) => ws.send(String(data)));
    });
  });
  return { handle, close: () => { for (const ws of wss.clients) ws.terminate(); wss.close(); } };
}

/**
 * A WebSocket endpoint built the way @upgradeware/websocket builds one (ws writes the 101),
 * counting how often it ran (`state.runs`, to prove a guard kept it from running) and answering
 * every message with `reply(req)`.
 */
export function replyingWsEndpoint(reply: (req: IncomingMessage) => string) {
  const wss = new WebSocketServer({ noServer: true });
  const responses = new WeakMap<IncomingMessage, UpgradeResponse>();
  const state = { runs: 0 };
  wss.on('headers', (lines, req) => {
    const res = responses.get(req);
    if (res) lines.push(...res.externalSwitch());
  });
  const handle = supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => {
    if (!isUpgradeResponse(res)) return next();
    state.runs++;
    responses.set(req, res);
    wss.handleUpgrade(req, res.socket!, res.upgradeHead, (ws) => {
      ws.on('message', () => ws.send(reply(req)));
    });
  });
  return { wss, handle, state };
}

/**
 * A guard for the session suites: a request whose session has a `user` goes on; any other, an
 * upgrade included, gets `401 login first`.
 */
export const loginRequired = supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: () => void) => {
  if ((req as IncomingMessage & { session?: { user?: unknown } }).session?.user) return next();
  res.statusCode = 401;
  res.end('login first');
});
