/**
 * HTTP/2 test helpers: an upgradeware app on an HTTP/2 TLS server (the self-signed fixture
 * certificate), a compliant client that waits for SETTINGS_ENABLE_CONNECT_PROTOCOL, plain
 * requests, and `ws` WebSockets run over extended CONNECT streams (RFC 8441). Every helper is
 * bounded in time and closes what it opens.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { dirname, join } from 'node:path';
import WebSocket from 'ws';

const fixtures = join(__dirname, 'fixtures');
/** The self-signed `localhost`/`127.0.0.1` certificate of the test fixtures. */
export const TLS = {
  key: readFileSync(join(fixtures, 'localhost-key.pem')),
  cert: readFileSync(join(fixtures, 'localhost-cert.pem')),
};

export interface Http2App {
  (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): void;
  listenHttp2?: unknown;
  attach(server: http2.Http2SecureServer): http2.Http2SecureServer;
}

export interface Http2TestServer {
  server: http2.Http2SecureServer;
  port: number;
  /** `https://127.0.0.1:<port>` */
  url: string;
  /** Close the server, every session and every TLS socket it accepted. */
  close(): Promise<void>;
}

/** Start `app` on an HTTP/2 TLS server (allowHTTP1, enableConnectProtocol) on 127.0.0.1:0. */
export async function startHttp2(
  app: Http2App,
  options: Partial<http2.SecureServerOptions> = {},
  setup?: (server: http2.Http2SecureServer) => void,
): Promise<Http2TestServer> {
  const server = http2.createSecureServer(
    { ...TLS, allowHTTP1: true, ...options, settings: { enableConnectProtocol: true, ...options.settings } },
    app as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  );
  const sockets = new Set<Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('secureConnection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  setup?.(server);
  app.attach(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    port,
    url: `https://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.destroy();
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * Connect an HTTP/2 client and wait for the server's SETTINGS (a compliant RFC 8441 client sends
 * no extended CONNECT before it saw `enableConnectProtocol`). Resolves with the session and
 * whether the server advertised the setting.
 */
export function h2Connect(url: string, timeoutMs = 5000): Promise<{ session: http2.ClientHttp2Session; connectProtocol: boolean }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, { ca: TLS.cert, servername: 'localhost', rejectUnauthorized: false });
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error('no SETTINGS from the server in time'));
    }, timeoutMs);
    session.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    session.once('remoteSettings', (settings) => {
      clearTimeout(timer);
      session.removeAllListeners('error');
      session.on('error', () => undefined);
      resolve({ session, connectProtocol: settings.enableConnectProtocol === true });
    });
  });
}

export interface H2Response {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
  /** The RST_STREAM code the stream closed with (0: NO_ERROR). */
  rstCode: number;
}

/** One request on `session`; resolves once the stream closed (bounded). */
export function h2Request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer | string, timeoutMs = 5000): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined && headers[':method'] !== 'CONNECT' });
    let status = 0;
    let responseHeaders: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(new Error(`h2 request timed out (status ${status})`));
    }, timeoutMs);
    stream.on('response', (h) => {
      status = Number(h[':status']);
      responseHeaders = h;
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => undefined);
    stream.on('close', () => {
      clearTimeout(timer);
      resolve({ status, headers: responseHeaders, body: Buffer.concat(chunks), rstCode: stream.rstCode ?? 0 });
    });
    if (body !== undefined) stream.end(body);
  });
}

export interface H2WebSocketOptions {
  protocols?: string[];
  /** Offer permessage-deflate. */
  perMessageDeflate?: boolean;
  headers?: http2.OutgoingHttpHeaders;
  timeoutMs?: number;
}

export interface H2WebSocket {
  ws: WebSocket;
  stream: http2.ClientHttp2Stream;
  /** The response headers of the switch (`:status` 200). */
  headers: http2.IncomingHttpHeaders;
}

/** Thrown by `h2WebSocket` when the server answered anything but 200. */
export class H2Refused extends Error {
  constructor(readonly response: H2Response) {
    super(`extended CONNECT refused with ${response.status}`);
  }
}

interface PerMessageDeflateLike {
  offer(): Record<string, unknown>;
  accept(params: unknown[]): unknown;
}
// ws's own permessage-deflate and header parser, for the client side of an RFC 8441 stream.
// (Not in ws's `exports` map: loaded by path, next to the ws the tests use.)
const wsLib = join(dirname(require.resolve('ws')), 'lib');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const PerMessageDeflate = require(join(wsLib, 'permessage-deflate.js')) as { new (options: object, isServer: boolean, maxPayload: number): PerMessageDeflateLike; extensionName: string };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const extension = require(join(wsLib, 'extension.js')) as { parse(header: string): Record<string, unknown[]>; format(ext: Record<string, unknown>): string };

/**
 * Open a WebSocket over an extended CONNECT stream of `session` (RFC 8441) and run a `ws` client
 * on it. Rejects with `H2Refused` when the server answers anything but 200.
 */
export function h2WebSocket(session: http2.ClientHttp2Session, path: string, options: H2WebSocketOptions = {}): Promise<H2WebSocket> {
  const headers: http2.OutgoingHttpHeaders = {
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':scheme': 'https',
    ':path': path,
    'sec-websocket-version': '13',
    origin: 'https://localhost',
    ...options.headers,
  };
  if (options.protocols) headers['sec-websocket-protocol'] = options.protocols.join(', ');
  let pmd: PerMessageDeflateLike | null = null;
  if (options.perMessageDeflate) {
    pmd = new PerMessageDeflate({}, false, 0);
    headers['sec-websocket-extensions'] = extension.format({ [PerMessageDeflate.extensionName]: pmd.offer() });
  }
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: false });
    const chunks: Buffer[] = [];
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(new Error('extended CONNECT timed out'));
    }, options.timeoutMs ?? 5000);
    const onData = (c: Buffer) => chunks.push(c);
    stream.on('error', () => undefined);
    stream.on('data', onData);
    stream.once('close', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const status = Number(responseHeaders?.[':status'] ?? 0);
      reject(new H2Refused({ status, headers: responseHeaders ?? {}, body: Buffer.concat(chunks), rstCode: stream.rstCode ?? 0 }));
    });
    let responseHeaders: http2.IncomingHttpHeaders | undefined;
    stream.once('response', (h) => {
      responseHeaders = h;
      if (h[':status'] !== 200) return; // the body and the close follow
      settled = true;
      clearTimeout(timer);
      stream.removeListener('data', onData);
      const ws = new WebSocket(null as unknown as string, undefined, { autoPong: true, closeTimeout: 30_000 } as WebSocket.ClientOptions);
      // (closeTimeout: ws reads it for every WebSocket; its client types leave it out.)
      // A client: masks its frames, expects unmasked ones (ws sets this for `new WebSocket(url)`).
      (ws as unknown as { _isServer: boolean })._isServer = false;
      const protocol = h['sec-websocket-protocol'];
      if (typeof protocol === 'string') (ws as unknown as { _protocol: string })._protocol = protocol;
      const accepted = h['sec-websocket-extensions'];
      if (pmd !== null && typeof accepted === 'string') {
        const offers = extension.parse(accepted)[PerMessageDeflate.extensionName];
        if (offers) {
          pmd.accept(offers);
          (ws as unknown as { _extensions: Record<string, unknown> })._extensions = { [PerMessageDeflate.extensionName]: pmd };
        }
      }
      (ws as unknown as { setSocket(s: unknown, head: Buffer, o: object): void }).setSocket(stream, Buffer.concat(chunks), {
        maxPayload: 0,
        skipUTF8Validation: false,
      });
      resolve({ ws, stream, headers: h });
    });
  });
}

/** A random 16-byte key, base64 (for hand-made HTTP/1.1 handshakes next to h2 ones). */
export function wsKey(): string {
  return randomBytes(16).toString('base64');
}
