/**
 * HTTP/2 for the dispatcher: a TLS server that also speaks HTTP/1.1 and accepts RFC 8441
 * extended CONNECT, so that WebSockets can be opened over an existing HTTP/2 connection.
 */
import * as http from 'node:http';
import * as http2 from 'node:http2';

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
