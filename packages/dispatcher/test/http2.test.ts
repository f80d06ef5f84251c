/**
 * The dispatcher on an HTTP/2 TLS server (allowHTTP1, enableConnectProtocol): ordinary h2 and
 * HTTP/1.1 requests, HTTP/1.1 upgrades, plain h2 CONNECT tunnels and extended CONNECT all go
 * through the one stack.
 */
import * as http2 from 'node:http2';
import * as https from 'node:https';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { createApp, type App } from '@upgradeware/dispatcher';
import { supportsUpgrade, isUpgradeResponse } from '@upgradeware/upgrade-response';
import { TLS, h2Connect, h2Request, startHttp2, type Http2TestServer } from '../../../test-support/http2';
import { delay, until } from '../../../test-support';

const servers: Http2TestServer[] = [];
const sessions: http2.ClientHttp2Session[] = [];
afterEach(async () => {
  for (const s of sessions.splice(0)) s.destroy();
  for (const s of servers.splice(0)) await s.close();
});

async function serve(app: App, options: Partial<http2.SecureServerOptions> = {}): Promise<Http2TestServer> {
  const s = await startHttp2(app as unknown as Parameters<typeof startHttp2>[0], options);
  servers.push(s);
  return s;
}

async function connect(url: string): Promise<http2.ClientHttp2Session> {
  const { session, connectProtocol } = await h2Connect(url);
  sessions.push(session);
  expect(connectProtocol).toBe(true);
  return session;
}

/** An app that records every request the stack saw: method, url, whether it was an upgrade. */
function recordingApp(options: Parameters<typeof createApp>[0] = {}): { app: App; seen: string[] } {
  const seen: string[] = [];
  const app = createApp(options);
  app.use(
    supportsUpgrade((req, res, next) => {
      seen.push(`${req.method} ${req.url} ${req.httpVersion} ${isUpgradeResponse(res) ? 'upgrade' : 'ordinary'}`);
      next();
    }),
  );
  return { app, seen };
}

function httpsGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path, ca: TLS.cert, servername: 'localhost', rejectUnauthorized: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
  });
}

/** A raw TLS connection that speaks HTTP/1.1 (ALPN http/1.1). */
function tlsRaw(port: number, text: string, until: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => socket.write(text));
    let got = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(got);
    }, timeoutMs);
    socket.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      if (got.includes(until)) {
        clearTimeout(timer);
        socket.destroy();
        resolve(got);
      }
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
    socket.on('error', reject);
  });
}

describe('dispatcher on an HTTP/2 server', () => {
  test('ordinary h2 and HTTP/1.1 requests go through the one stack', async () => {
    const { app, seen } = recordingApp();
    app.use('/hello', (req, res) => res.end(`hi ${req.httpVersion}`));
    const s = await serve(app);
    const session = await connect(s.url);
    const r = await h2Request(session, { ':path': '/hello' });
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('hi 2.0');
    const r1 = await httpsGet(s.port, '/hello');
    expect(r1).toEqual({ status: 200, body: 'hi 1.1' });
    expect(seen).toEqual(['GET /hello 2.0 ordinary', 'GET /hello 1.1 ordinary']);
  });

  test('an HTTP/1.1 WebSocket-style upgrade on the same server is an upgrade', async () => {
    const { app, seen } = recordingApp();
    const s = await serve(app);
    const raw = await tlsRaw(s.port, 'GET /x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n', '</html>');
    expect(raw).toMatch(/^HTTP\/1\.1 404 /);
    expect(seen).toEqual(['GET /x 1.1 upgrade']);
  });

  test('rule 7 on the HTTP/2 server: an HTTP/1.1 upgrade to h2c is replayed as an ordinary request', async () => {
    const { app, seen } = recordingApp();
    app.use('/page', (_req, res) => res.end('the page'));
    const s = await serve(app);
    // Served as Node serves an ordinary request: the client's own `close` is honoured.
    const raw = await tlsRaw(s.port, 'GET /page HTTP/1.1\r\nHost: localhost\r\nUpgrade: h2c\r\nConnection: Upgrade, close\r\n\r\n', 'the page');
    expect(raw).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(raw).toMatch(/\r\nConnection: close\r\n/i);
    expect(raw.endsWith('the page')).toBe(true);
    expect(seen).toEqual(['GET /page 1.1 ordinary']);
  });

  test('an HTTP/1.1 CONNECT on the HTTP/2 server goes through the stack with its socket', async () => {
    const { app, seen } = recordingApp();
    const s = await serve(app);
    const raw = await tlsRaw(s.port, 'CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n', '</html>');
    expect(raw).toMatch(/^HTTP\/1\.1 404 /);
    expect(seen).toEqual(['CONNECT example.test:443 1.1 upgrade']);
  });

  test('an unknown :protocol is refused with 501, and the session keeps serving', async () => {
    const { app, seen } = recordingApp();
    app.use('/ok', (_req, res) => res.end('ok'));
    const s = await serve(app);
    const session = await connect(s.url);
    const r = await h2Request(session, { ':method': 'CONNECT', ':protocol': 'chat-v9', ':scheme': 'https', ':path': '/chat' });
    expect(r.status).toBe(501);
    expect(r.body.toString()).toContain('Not Implemented');
    expect(seen).toEqual([]);
    const ok = await h2Request(session, { ':path': '/ok' });
    expect(ok.status).toBe(200);
  });

  test('an extended CONNECT nobody answers gets 404 through the stack, with the headers middleware set (rules 2 and 6)', async () => {
    const { app, seen } = recordingApp();
    // Rule 2: a layer that did not opt in is passed over for an HTTP/2 CONNECT too.
    app.use((_req: unknown, res: { statusCode: number; end(body: string): void }) => {
      res.statusCode = 500;
      res.end('a plain layer ran');
    });
    app.use(
      supportsUpgrade((_req, res, next) => {
        res.setHeader('X-Seen', 'yes');
        next();
      }),
    );
    const s = await serve(app);
    const session = await connect(s.url);
    const r = await h2Request(session, { ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/nowhere', 'sec-websocket-version': '13' });
    expect(r.status).toBe(404);
    expect(r.headers['x-seen']).toBe('yes');
    expect(r.body.toString()).toContain('Cannot CONNECT /nowhere');
    expect(seen).toEqual(['CONNECT /nowhere 2.0 upgrade']);
    expect((await h2Request(session, { ':path': '/plain' })).body.toString()).toBe('a plain layer ran');
  });

  test('a plain h2 CONNECT is a tunnel through the stack: root layers only, 200 then bytes both ways', async () => {
    // An echo server as the tunnel's target.
    const target = net.createServer((socket) => socket.pipe(socket));
    await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
    const targetPort = (target.address() as AddressInfo).port;
    const { app, seen } = recordingApp();
    app.use('/mounted', supportsUpgrade((_req, _res, next) => next(new Error('a mounted layer ran for a CONNECT'))));
    app.use(
      supportsUpgrade((req, res) => {
        const upstream = net.connect(targetPort, '127.0.0.1', () => {
          res.setHeader('X-Tunnel', req.url ?? '');
          (res as unknown as { switchProtocols(cb: (s: NodeJS.ReadWriteStream) => void): boolean }).switchProtocols((stream) => {
            stream.pipe(upstream).pipe(stream);
          });
        });
        upstream.on('error', () => undefined);
      }),
    );
    const s = await serve(app);
    try {
      const session = await connect(s.url);
      const stream = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${targetPort}` }, { endStream: false });
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once('response', resolve));
      expect(headers[':status']).toBe(200);
      expect(headers['x-tunnel']).toBe(`127.0.0.1:${targetPort}`);
      stream.write('ping through the tunnel');
      const echoed = await new Promise<string>((resolve) => stream.once('data', (c: Buffer) => resolve(c.toString())));
      expect(echoed).toBe('ping through the tunnel');
      stream.close();
      expect(seen).toEqual([`CONNECT 127.0.0.1:${targetPort} 2.0 upgrade`]);
    } finally {
      await new Promise<void>((resolve) => target.close(() => resolve()));
    }
  });

  test('an error in the chain is answered on the stream with its status and headers, no stack in production', async () => {
    const reported: unknown[] = [];
    const app = createApp({ onError: (err) => void reported.push(err) });
    app.use(
      supportsUpgrade(() => {
        throw Object.assign(new Error('go away'), { status: 403, headers: { 'X-Reason': 'policy' } });
      }),
    );
    const s = await serve(app);
    const session = await connect(s.url);
    const before = process.env.NODE_ENV;
    process.env.NODE_ENV = 'production';
    try {
      const r = await h2Request(session, { ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/x' });
      expect(r.status).toBe(403);
      expect(r.headers['x-reason']).toBe('policy');
      expect(r.body.toString()).toContain('Forbidden');
      expect(r.body.toString()).not.toContain('go away');
      // Reported where onError sends it (by default: stderr, outside NODE_ENV=test).
      expect(reported.map((e) => (e as Error).message)).toEqual(['go away']);
    } finally {
      process.env.NODE_ENV = before;
    }
  });

  test('the time limit answers 503 on the stream', async () => {
    const app = createApp({ upgradeTimeout: 100 });
    app.use(supportsUpgrade((_req, res, next) => (isUpgradeResponse(res) ? undefined : next()))); // never answers an upgrade
    app.use('/ok', (_req, res) => res.end('ok'));
    const s = await serve(app);
    const session = await connect(s.url);
    const r = await h2Request(session, { ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/slow' });
    expect(r.status).toBe(503);
    expect((await h2Request(session, { ':path': '/ok' })).status).toBe(200);
  });

  test('a client reset while middleware waits: no crash, close without finish, the session serves on', async () => {
    const events: string[] = [];
    const app = createApp();
    let release: (() => void) | null = null;
    app.use(
      supportsUpgrade((_req, res, next) => {
        if (!isUpgradeResponse(res)) return next();
        res.on('finish', () => events.push('finish'));
        res.on('close', () => events.push('close'));
        release = () => next();
      }),
    );
    app.use('/ok', (_req, res) => res.end('ok'));
    const s = await serve(app);
    const session = await connect(s.url);
    const stream = session.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/x' }, { endStream: false });
    stream.on('error', () => undefined);
    await until(() => release !== null);
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await until(() => events.includes('close'));
    release!();
    await delay(20);
    expect(events).toEqual(['close']);
    expect((await h2Request(session, { ':path': '/ok' })).status).toBe(200);
  });

  test("app.handleConnect(req, res) serves an HTTP/2 server's 'connect' wired by hand", async () => {
    const app = createApp();
    app.use(supportsUpgrade((_req, res) => {
      res.statusCode = 418;
      res.end('by hand');
    }));
    const server = http2.createSecureServer({ ...TLS, settings: { enableConnectProtocol: true } }, (_req, res) => res.end());
    server.on('connect', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => app.handleConnect(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const session = await connect(`https://127.0.0.1:${(server.address() as AddressInfo).port}`);
      const r = await h2Request(session, { ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/x' });
      expect(r.status).toBe(418);
      expect(r.body.toString()).toBe('by hand');
      session.destroy();
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  test('listenHttp2() sets allowHTTP1 and enableConnectProtocol, and refuses turning them off', async () => {
    const app = createApp();
    app.use('/x', (_req, res) => res.end('x'));
    const server = app.listenHttp2({ ...TLS }, 0, '127.0.0.1');
    try {
      await new Promise<void>((resolve) => server.once('listening', resolve));
      const port = (server.address() as AddressInfo).port;
      const session = await connect(`https://127.0.0.1:${port}`);
      expect((await h2Request(session, { ':path': '/x' })).body.toString()).toBe('x');
      expect(await httpsGet(port, '/x')).toEqual({ status: 200, body: 'x' });
      session.destroy();
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    expect(() => app.listenHttp2({ ...TLS, allowHTTP1: false })).toThrow(/allowHTTP1/);
    expect(() => app.listenHttp2({ ...TLS, settings: { enableConnectProtocol: false } })).toThrow(/enableConnectProtocol/);
  });
});
