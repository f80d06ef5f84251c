/** CONNECT, client resets, the time limit, and coexistence with the server's own listeners. */
import * as net from 'node:net';
import { createHook } from 'node:async_hooks';
import * as https from 'node:https';
import * as tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { WebSocketServer } from 'ws';
import { createApp } from '@upgradeware/dispatcher';
import { wsEndpoint } from '../../../test-support/endpoints';
import { isUpgradeResponse, supportsUpgrade } from '@upgradeware/upgrade-response';
import {
  HOST,
  start,
  rawRequest,
  rawConnect,
  listenerNames,
  wsHandshake,
  wsOpen,
  wsClose,
  nextMessage,
  request,
  until,
  WsRefused,
  type TestServer,
} from '../../../test-support';

describe('CONNECT through the stack', () => {
  let server: TestServer;
  let echoServer: net.Server;
  let echoPort: number;
  const echoSockets = new Set<net.Socket>();

  beforeAll(async () => {
    echoServer = net.createServer((s) => {
      echoSockets.add(s);
      s.on('close', () => echoSockets.delete(s));
      s.on('error', () => undefined);
      s.pipe(s);
    });
    await new Promise<void>((r) => echoServer.listen(0, HOST, r));
    echoPort = (echoServer.address() as net.AddressInfo).port;

    const app = createApp();
    app.use(
      supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: () => void) => {
        if (req.method !== 'CONNECT') return next();
        if (req.headers['proxy-authorization'] !== 'Basic dTpw') {
          res.statusCode = 407;
          res.setHeader('Proxy-Authenticate', 'Basic realm="proxy"');
          res.end('proxy auth required');
          return;
        }
        next();
      }),
    );
    app.use(
      supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => {
        if (!isUpgradeResponse(res) || !res.isConnect) return next();
        const [host, port] = (req.url ?? '').split(':');
        if (host !== HOST) {
          res.statusCode = 403;
          res.end('only loopback');
          return;
        }
        const upstream = net.connect(Number(port), host, () => {
          res.switchProtocols((socket, head) => {
            upstream.write(head);
            socket.pipe(upstream).pipe(socket);
          });
        });
        upstream.on('error', (err) => next(Object.assign(err, { status: 502 })));
      }),
    );
    server = await start(app);
  });
  afterAll(async () => {
    await server.close();
    for (const s of echoSockets) s.destroy();
    await new Promise((r) => echoServer.close(r));
  });

  test('a CONNECT is tunnelled to a local echo server: 200 Connection Established, no framing headers', async () => {
    const conn = await rawConnect(server.port);
    conn.socket.write(`CONNECT ${HOST}:${echoPort} HTTP/1.1\r\nHost: ${HOST}:${echoPort}\r\nProxy-Authorization: Basic dTpw\r\n\r\nearly`);
    const all = (await conn.waitFor('early')).toString('latin1');
    const head = all.slice(0, all.indexOf('\r\n\r\n') + 4);
    expect(head.startsWith('HTTP/1.1 200 Connection Established\r\n')).toBe(true);
    expect(head).not.toMatch(/Transfer-Encoding|Content-Length|Connection:/i);
    expect(all.slice(head.length)).toBe('early');
    conn.socket.write('-and-more');
    await conn.waitFor('early-and-more');
    expect(conn.received().toString('latin1')).not.toContain('0\r\n\r\n');
    conn.close();
  });

  test('a layer refuses a CONNECT with 407, and a foreign target with 403', async () => {
    const refused = await rawRequest(server.port, `CONNECT ${HOST}:${echoPort} HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(refused.status).toBe(407);
    expect(refused.headers['proxy-authenticate']).toEqual(['Basic realm="proxy"']);
    expect(refused.body).toBe('proxy auth required');
    expect(refused.closed).toBe(true);
    const foreign = await rawRequest(server.port, 'CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic dTpw\r\n\r\n');
    expect(foreign.status).toBe(403);
  });

  test('an upstream that refuses gives 502, and the next CONNECT works', async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, HOST, r));
    const deadPort = (closed.address() as net.AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const res = await rawRequest(server.port, `CONNECT ${HOST}:${deadPort} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic dTpw\r\n\r\n`);
    expect(res.status).toBe(502);
    const conn = await rawConnect(server.port);
    conn.socket.write(`CONNECT ${HOST}:${echoPort} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic dTpw\r\n\r\nok`);
    await conn.waitFor('\r\n\r\nok');
    conn.close();
  });
});

/** `app` with `endpoint` at /now, and at /later behind a layer that goes on asynchronously. */
function nowAndLater(endpoint: (req: IncomingMessage, res: ServerResponse, next: () => void) => void, app: ReturnType<typeof createApp>) {
  app.use(
    '/later',
    supportsUpgrade((_req: IncomingMessage, _res: ServerResponse, next: () => void) => {
      setImmediate(next);
    }),
  );
  app.use('/later', endpoint);
  app.use('/now', endpoint);
  return app;
}

describe('clients that go away, and the time limit', () => {
  test('1,000 client resets during an async layer: the process lives, nothing is left behind', async () => {
    let entered = 0;
    let closed = 0;
    let wrote = 0;
    const app = createApp();
    app.use(
      supportsUpgrade((_req: IncomingMessage, res: ServerResponse, next: () => void) => {
        entered++;
        res.on('close', () => closed++);
        setTimeout(next, 30);
      }),
    );
    app.use(
      supportsUpgrade((_req: IncomingMessage, res: ServerResponse) => {
        wrote++;
        res.statusCode = 403;
        res.end('too late anyway');
      }),
    );
    const server = await start(app);
    const upgradeSockets: net.Socket[] = [];
    let socketsClosed = 0;
    server.server.on('upgrade', (_req, socket: net.Socket) => {
      upgradeSockets.push(socket);
      socket.once('close', () => socketsClosed++);
    });
    try {
      const total = 1000;
      const batch = 100;
      for (let i = 0; i < total; i += batch) {
        await Promise.all(
          Array.from({ length: batch }, () => {
            return new Promise<void>((resolve) => {
              const s = net.connect(server.port, HOST);
              s.on('error', () => undefined);
              s.write(wsHandshake('/x'));
              const started = entered;
              const poll = setInterval(() => {
                if (entered > started || s.destroyed) {
                  clearInterval(poll);
                  s.resetAndDestroy();
                  resolve();
                }
              }, 2);
              setTimeout(() => {
                clearInterval(poll);
                s.resetAndDestroy();
                resolve();
              }, 2000);
            });
          }),
        );
      }
      await until(() => closed >= total, 10000);
      expect(entered).toBe(total);
      expect(closed).toBe(total);
      // Every socket is gone and none kept a listener of ours.
      // ('close' emitted, not only `destroyed`: listeners that end with the socket go on 'close'.)
      await until(() => socketsClosed === total, 5000);
      for (const s of upgradeSockets) {
        expect(s.listenerCount('error')).toBeLessThanOrEqual(1);
        expect(s.listenerCount('data')).toBe(0);
      }
      expect(upgradeSockets).toHaveLength(total);
      // The layers that ran after the reset wrote nothing to a dead socket without crashing.
      expect(wrote).toBeLessThanOrEqual(total);
      const alive = await request(server.url + '/alive');
      expect(alive.status).toBe(403);
      expect(alive.body).toBe('too late anyway');
    } finally {
      await server.close();
    }
  }, 60000);

  test('a chain that neither answers nor switches gets 503 within the time limit; the server goes on', async () => {
    const app = createApp({ upgradeTimeout: 150 });
    let late: unknown = null;
    app.use(
      '/stuck',
      supportsUpgrade((_req: IncomingMessage, res: ServerResponse, next: () => void) => {
        // Answers far too late: the write must not throw or crash.
        setTimeout(() => {
          try {
            next();
          } catch (err) {
            late = err;
          }
        }, 400);
        res.setHeader('X-Kept', 'yes');
      }),
    );
    app.use(
      supportsUpgrade((_req: IncomingMessage, res: ServerResponse) => {
        res.statusCode = 200;
        res.end('fine');
      }),
    );
    const server = await start(app);
    try {
      const started = Date.now();
      const res = await rawRequest(server.port, wsHandshake('/stuck'));
      expect(res.status).toBe(503);
      expect(res.headers['x-kept']).toEqual(['yes']);
      expect(res.headers['connection']).toEqual(['close']);
      expect(res.closed).toBe(true);
      expect(Date.now() - started).toBeLessThan(3000);
      await new Promise((r) => setTimeout(r, 400));
      expect(late).toBeNull();
      const ok = await rawRequest(server.port, wsHandshake('/fine'));
      expect(ok.status).toBe(200);
    } finally {
      await server.close();
    }
  });
  test('the time limit bounds what is still pending after the synchronous part: a handshake switched at once carries no timer', async () => {
    // Timers created on this process while one handshake goes through (the raw client below arms none).
    let created = 0;
    const hook = createHook({
      init(_id, type) {
        if (type === 'Timeout') created++;
      },
    });
    const wss = new WebSocketServer({ noServer: true });
    let opened: (() => void) | null = null;
    const endpoint = supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: () => void) => {
      if (!isUpgradeResponse(res) || !res.socket) return next();
      wss.once('headers', (lines: string[]) => lines.push(...res.externalSwitch()));
      wss.handleUpgrade(req, res.socket, res.upgradeHead, () => opened?.());
    });
    // An asynchronous layer before the endpoint: the handshake waits, so it is bounded.
    const server = await start(nowAndLater(endpoint, createApp({ upgradeTimeout: 60000 })));
    const handshake = async (path: string): Promise<number> => {
      // Bounded; its timer is made before the hook counts.
      const open = new Promise<void>((resolve, reject) => {
        const limit = setTimeout(() => reject(new Error(`${path}: no connection within 5 s`)), 5000);
        opened = () => {
          clearTimeout(limit);
          resolve();
        };
      });
      const client = await rawConnect(server.port);
      created = 0;
      hook.enable();
      try {
        client.socket.write(wsHandshake(path));
        await open;
      } finally {
        hook.disable();
      }
      await client.waitFor('\r\n\r\n');
      expect(client.received().toString('latin1')).toMatch(/^HTTP\/1\.1 101 /);
      client.close();
      return created;
    };
    try {
      expect(await handshake('/now')).toBe(0);
      expect(await handshake('/later')).toBe(1);
      expect(await handshake('/now')).toBe(0);
    } finally {
      wss.close();
      await server.close();
    }
  });
});

describe('the socket listeners of a response: after the synchronous part, when still needed (rule 8)', () => {
  test('a layer sees none of ours within the synchronous part; after an await our error guard and close listener are on; a handshake switched at once never gets them', async () => {
    type Names = { error: string[]; close: string[] };
    const names = (socket: NonNullable<ServerResponse['socket']>): Names => ({
      error: listenerNames(socket, 'error'),
      close: listenerNames(socket, 'close'),
    });
    const seen: Record<string, Names> = {};
    const wss = new WebSocketServer({ noServer: true });
    const endpoint = supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: () => void) => {
      if (!isUpgradeResponse(res) || !res.socket) return next();
      const socket = res.socket;
      seen[`${req.originalUrl} at the endpoint`] = names(socket);
      wss.once('headers', (lines: string[]) => lines.push(...res.externalSwitch()));
      wss.handleUpgrade(req, socket, res.upgradeHead, () => {
        // ws's own listeners only, as on a plain ws server.
        seen[`${req.originalUrl} switched`] = names(socket);
      });
    });
    const server = await start(nowAndLater(endpoint, createApp()));
    try {
      for (const path of ['/now', '/later']) {
        expect((await rawRequest(server.port, wsHandshake(path), { untilHead: true })).status).toBe(101);
      }
      await until(() => Object.keys(seen).length === 4);
      const ours = (n: Names) => [...n.error, ...n.close].filter((name) => name === 'onSocketError' || name === 'onOwnedSocketClose');
      expect(ours(seen['/now at the endpoint']!)).toEqual([]);
      expect(ours(seen['/later at the endpoint']!).sort()).toEqual(['onOwnedSocketClose', 'onSocketError']);
      expect(ours(seen['/now switched']!)).toEqual([]);
      // ws's own 'error' listener stays for the socket's life; on /later ours is there too (this endpoint,
      // unlike @upgradeware/websocket, does not call dropErrorGuard).
      expect(seen['/now switched']!.error).toEqual(seen['/later switched']!.error.filter((name) => name !== 'onSocketError'));
    } finally {
      wss.close();
      await server.close();
    }
  });
});

describe('coexistence with the server\'s own upgrade listeners', () => {
  test('a ws server attached before us keeps its path; our stack keeps ours; refusals stay ours', async () => {
    const theirs = new WebSocketServer({ noServer: true });
    theirs.on('connection', (ws) => ws.on('message', (m) => ws.send(`theirs:${String(m)}`)));
    const app = createApp();
    app.use(
      '/ours',
      supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: () => void) => {
        if (!isUpgradeResponse(res)) return next();
        const wss = new WebSocketServer({ noServer: true });
        wss.on('headers', (lines) => lines.push(...res.externalSwitch()));
        wss.handleUpgrade(req, res.socket!, res.upgradeHead, (ws) => {
          ws.on('message', (m) => ws.send(`ours:${String(m)}`));
        });
      }),
    );
    app.use(
      '/theirs/private',
      supportsUpgrade((_req: IncomingMessage, res: ServerResponse) => {
        res.statusCode = 401;
        res.end();
      }),
    );
    const server = await start(app, (http) => {
      // A hand-written ws server, as many apps have: it was there before attach().
      http.on('upgrade', (req, socket, head) => {
        if (req.url?.startsWith('/theirs')) theirs.handleUpgrade(req, socket, head, (ws) => theirs.emit('connection', ws, req));
        else socket.destroy();
      });
    });
    try {
      const a = await wsOpen(server.wsUrl + '/theirs');
      a.ws.send('1');
      expect(await nextMessage(a.ws)).toBe('theirs:1');
      const b = await wsOpen(server.wsUrl + '/ours');
      b.ws.send('2');
      expect(await nextMessage(b.ws)).toBe('ours:2');
      // A layer of ours that answers wins over the fallback.
      await expect(wsOpen(server.wsUrl + '/theirs/private')).rejects.toMatchObject({ status: 401 });
      await wsClose(a.ws);
      await wsClose(b.ws);
      expect(server.server.listenerCount('upgrade')).toBe(1);
      expect(app.attach(server.server)).toBe(server.server);
      expect(server.server.listenerCount('upgrade')).toBe(1);
    } finally {
      theirs.close();
      await server.close();
    }
  });

  test('without earlier listeners an unanswered upgrade is a 404', async () => {
    const server = await start(createApp());
    try {
      const err = await wsOpen(server.wsUrl + '/none').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WsRefused);
      expect((err as WsRefused).status).toBe(404);
    } finally {
      await server.close();
    }
  });
});

describe('over TLS', () => {
  test('a wss:// handshake goes through the stack: a refusal is a real 401, a switch carries our headers', async () => {
    const fixtures = join(__dirname, '../../../test-support/fixtures');
    const app = createApp();
    const endpoint = wsEndpoint();
    app.use(
      supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: () => void) => {
        res.setHeader('X-Over', 'tls');
        if (!req.url?.includes('token=1')) {
          res.statusCode = 401;
          res.end('no token');
          return;
        }
        next();
      }),
    );
    app.use(endpoint.handle);
    const server = https.createServer({ key: readFileSync(join(fixtures, 'localhost-key.pem')), cert: readFileSync(join(fixtures, 'localhost-cert.pem')) });
    app.attach(server);
    await new Promise<void>((r) => server.listen(0, HOST, r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const refused = await wsOpen(`wss://${HOST}:${port}/ws`, { rejectUnauthorized: false }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(WsRefused);
      expect((refused as WsRefused).status).toBe(401);
      expect((refused as WsRefused).body).toBe('no token');
      const { ws, response } = await wsOpen(`wss://${HOST}:${port}/ws?token=1`, { rejectUnauthorized: false });
      expect(response.headers['x-over']).toBe('tls');
      ws.send('over tls');
      expect(await nextMessage(ws)).toBe('over tls');
      await wsClose(ws);
    } finally {
      endpoint.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  test('an h2c upgrade on an https server is replayed as an ordinary request, body included', async () => {
    const fixtures = join(__dirname, '../../../test-support/fixtures');
    const app = createApp();
    app.use((req: IncomingMessage, res: ServerResponse) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => res.end(`${req.method} ${req.url} body=${body} upgrade=${req.headers.upgrade}`));
    });
    const server = https.createServer(
      { key: readFileSync(join(fixtures, 'localhost-key.pem')), cert: readFileSync(join(fixtures, 'localhost-cert.pem')) },
      app,
    );
    app.attach(server);
    let secureConnections = 0;
    server.on('secureConnection', () => secureConnections++);
    await new Promise<void>((r) => server.listen(0, HOST, r));
    try {
      const port = (server.address() as net.AddressInfo).port;
      const text = await new Promise<string>((resolve, reject) => {
        const socket = tls.connect({ port, host: HOST, rejectUnauthorized: false }, () => {
          socket.write('POST /tls HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, close\r\nContent-Length: 3\r\n\r\nabc');
        });
        let out = '';
        const timer = setTimeout(() => {
          socket.destroy();
          reject(new Error(`no close; got ${out}`));
        }, 3000);
        socket.on('data', (d: Buffer) => (out += d.toString('latin1')));
        socket.on('error', () => undefined);
        socket.on('close', () => {
          clearTimeout(timer);
          resolve(out);
        });
      });
      expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(text).toContain('\r\nConnection: close\r\n');
      expect(text.endsWith('POST /tls body=abc upgrade=h2c')).toBe(true);
      // One TLS connection, one 'secureConnection' event: the replay does not announce it again.
      expect(secureConnections).toBe(1);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
