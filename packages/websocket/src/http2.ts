/**
 * WebSockets over HTTP/2 (RFC 8441): an extended CONNECT with `:protocol websocket` is served by
 * the same `ws` server as an HTTP/1.1 upgrade.
 *
 * `ws` has no HTTP/2 support of its own, but its documented `handleUpgrade()` takes any Duplex.
 * It gets the request as the HTTP/1.1 upgrade it stands for (GET, `Upgrade: websocket`, a fixed
 * well-formed `Sec-WebSocket-Key`) and the stream itself. ws writes its whole 101 head in a single
 * `write()` before it reads or writes anything else (ws 8.x): upgrade-response takes that one write
 * off the stream (`switchOnHttp1Head`), its negotiated headers (`Sec-WebSocket-Protocol`,
 * `Sec-WebSocket-Extensions` …) go onto the response, and the response switches with `:status 200`. Frames ws writes before the 200 has
 * left (a session save still running) wait in the corked stream.
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { ServerHttp2Stream } from 'node:http2';
import type { WebSocket, WebSocketServer } from 'ws';
import { onHttp2Shutdown, type Http2UpgradeResponse, type NextFunction } from '@upgradeware/upgrade-response';

/**
 * The key of the HTTP/1.1 handshake ws is given: HTTP/2 has none (RFC 8441 §5) and the accept ws
 * computes from it is dropped with the rest of its 101 head, so any well-formed key will do.
 */
const H2_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
/** What ws's 101 head carries that HTTP/2 has no use for (RFC 8441 §5: no key, so no accept). */
const HTTP1_ONLY: ReadonlySet<string> = new Set(['sec-websocket-accept']);

/**
 * The HTTP/1.1 upgrade request an extended CONNECT stands for, for ws: it inherits everything
 * from the real request (session, user, …) and overrides the method and headers only.
 */
export function asHttp1Upgrade(req: IncomingMessage): IncomingMessage {
  const headers: IncomingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) if (name[0] !== ':') headers[name] = value;
  const authority = req.headers[':authority'];
  if (headers.host === undefined && typeof authority === 'string') headers.host = authority;
  headers.upgrade = 'websocket';
  headers.connection = 'Upgrade';
  headers['sec-websocket-key'] = H2_KEY;
  const upgrade = Object.create(req) as IncomingMessage;
  Object.defineProperty(upgrade, 'method', { value: 'GET', writable: true, configurable: true });
  Object.defineProperty(upgrade, 'headers', { value: headers, writable: true, configurable: true });
  return upgrade;
}

/**
 * Hand an extended CONNECT stream to `wss` as `upgrade` (`asHttp1Upgrade(req)`, which ws's
 * 'headers' and 'wsClientError' listeners receive). `connected(ws, req)` receives the real request.
 * Throws what ws or an on-headers listener throws before the switch (the caller answers it).
 * The caller (the endpoint's `accept`) has already checked that the stream is open and that
 * nothing was sent.
 */
export function acceptHttp2(
  wss: WebSocketServer,
  upgrade: IncomingMessage,
  req: IncomingMessage,
  res: Http2UpgradeResponse,
  connected: (ws: WebSocket, req: IncomingMessage) => void,
  next: NextFunction,
): void {
  const stream = res.socket;
  if (stream === null) return;
  // ws's 101 head becomes the response's 200 (its negotiated headers on it).
  const giveBackWrite = res.switchOnHttp1Head(HTTP1_ONLY);
  try {
    wss.handleUpgrade(upgrade, stream, res.upgradeHead, onUpgraded(stream, req, connected));
  } catch (err) {
    if (!res.headersSent) next(err);
    else stream.destroy();
    return;
  } finally {
    // ws refused without writing (it reports that through 'wsClientError') or aborted.
    giveBackWrite();
  }
}

/**
 * ws's callback, made outside `acceptHttp2` so that it keeps nothing of the response reachable
 * for the life of the WebSocket.
 */
function onUpgraded(
  stream: ServerHttp2Stream,
  req: IncomingMessage,
  connected: (ws: WebSocket, req: IncomingMessage) => void,
): (ws: WebSocket) => void {
  return (ws) => {
    // A server shutdown (GOAWAY) does not end an open stream: the WebSocket says goodbye.
    onHttp2Shutdown(stream, () => ws.close(1001, 'Going Away'));
    connected(ws, req);
  };
}
