/**
 * HTTP/2 for the dispatcher: a TLS server that also speaks HTTP/1.1 and accepts RFC 8441
 * extended CONNECT, so that WebSockets can be opened over an existing HTTP/2 connection.
 */
import * as http from 'node:http';
import * as http2 from 'node:http2';
import { closeHttp2Session } from '@upgradeware/upgrade-response';

/** Anything `app.attach()` accepts: an HTTP/1.1 server, or an HTTP/2 server (TLS or not). */
export type AttachableServer = http.Server | http2.Http2SecureServer | http2.Http2Server;

/**
 * `http2.createSecureServer()` with what an upgradeware app needs: `allowHTTP1: true` (browsers
 * that pick HTTP/1.1, and HTTP/1.1 upgrades) and `settings.enableConnectProtocol: true` (RFC 8441:
 * without it, nghttp2 resets every extended CONNECT before the server sees it).
 */
export function createHttp2Server(
  options: http2.SecureServerOptions,
  onRequest: (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
): http2.Http2SecureServer {
  if (options === null || typeof options !== 'object') {
    throw new TypeError('@upgradeware/dispatcher: app.listenHttp2(options) needs TLS options (key, cert …)');
  }
  if (options.allowHTTP1 === false) {
    throw new TypeError('@upgradeware/dispatcher: option allowHTTP1 of app.listenHttp2() cannot be false (HTTP/1.1 upgrades and clients need it)');
  }
  if (options.settings?.enableConnectProtocol === false) {
    throw new TypeError('@upgradeware/dispatcher: option settings.enableConnectProtocol of app.listenHttp2() cannot be false (RFC 8441 WebSockets need it)');
  }
  return http2.createSecureServer(
    { ...options, allowHTTP1: true, settings: { ...options.settings, enableConnectProtocol: true } },
    onRequest,
  );
}

/** Is `server` an HTTP/2 server (it emits `'session'`)? */
export function isHttp2Server(server: AttachableServer): server is http2.Http2SecureServer | http2.Http2Server {
  // Node exports no HTTP/2 server class: `updateSettings()` is theirs alone.
  return !(server instanceof http.Server) && typeof (server as { updateSettings?: unknown }).updateSettings === 'function';
}

/**
 * On Node 20, `server.close()` of an HTTP/2 server leaves its sessions open (the callback waits
 * for clients to leave) and switched streams run on. After this, `server.close()` also shuts
 * every open session down (`closeHttp2Session`: GOAWAY, and h2 WebSockets close with 1001).
 */
export function closeSessionsOnClose(server: http2.Http2SecureServer | http2.Http2Server): void {
  const open = new Set<http2.ServerHttp2Session>();
  server.on('session', (session: http2.ServerHttp2Session) => {
    open.add(session);
    session.once('close', () => open.delete(session));
  });
  const close = server.close;
  server.close = function closeWithSessions(this: typeof server, ...args: Parameters<typeof close>) {
    const ret = close.apply(this, args);
    for (const session of open) closeHttp2Session(session);
    return ret;
  } as typeof close;
}
