/**
 * Socket handling under attack (issue 13), with no dispatcher: pipelined requests ahead of an
 * upgrade (`whenSocketFree`), the error listener that stays after a hand-over, the hard limits
 * of the linger after a refusal, and the replay of an upgrade as an ordinary request.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { UpgradeResponse, peerOf, replayAsRequest, whenSocketFree } from '@upgradeware/upgrade-response';
import { start, rawConnect, upgradeRequest, until, delay, HOST } from '../../../test-support';

const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n${extra}\r\n`;

describe('whenSocketFree: an upgrade pipelined behind ordinary requests', () => {
  test('the upgrade is answered after the earlier responses, in order, even slow ones', async () => {
    const server = await start(
      (req, res) => {
        // The first answers late, the second at once: both go out before the switch.
        setTimeout(() => res.end(`page ${req.url}`), req.url === '/slow' ? 80 : 0);
      },
      (s) =>
        s.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
          expect((socket as Duplex & { _httpMessage?: unknown })._httpMessage).toBeTruthy();
          whenSocketFree(socket, () => {
            const res = new UpgradeResponse(req, socket, head);
            res.switchProtocols((sw, rest) => {
              sw.write(`rest=${rest.toString()};`);
              sw.pipe(sw);
            });
          });
        }),
    );
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(get('/slow') + get('/fast') + upgradeRequest('/up', 'echo') + 'early');
      const all = (await conn.waitFor('rest=early;')).toString('latin1');
      const order = [...all.matchAll(/HTTP\/1\.1 (\d{3})|page \/(?:slow|fast)|rest=early/g)].map((m) => m[0]);
      expect(order).toEqual(['HTTP/1.1 200', 'page /slow', 'HTTP/1.1 200', 'page /fast', 'HTTP/1.1 101', 'rest=early']);
      conn.socket.write('echoed');
      await conn.waitFor('rest=early;echoed');
    } finally {
      conn.close();
      await server.close();
    }
  });

  test('an earlier response that never finishes: the socket is closed at the limit, the upgrade never served', async () => {
    let served = 0;
    let closedAt = 0;
    const started = Date.now();
    const server = await start(
      () => undefined, // never answers
      (s) =>
        s.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
          socket.on('close', () => (closedAt = Date.now()));
          whenSocketFree(socket, () => served++, 150);
        }),
    );
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(get('/hang') + upgradeRequest('/up', 'echo'));
      await until(() => closedAt !== 0, 3000);
      expect(closedAt - started).toBeGreaterThanOrEqual(140);
      expect(served).toBe(0);
      // A reset while waiting is harmless: the 'error' listener is on the socket.
      const other = await rawConnect(server.port);
      other.socket.write(get('/hang') + upgradeRequest('/up', 'echo'));
      await delay(20);
      other.socket.resetAndDestroy();
      await delay(20);
      expect(served).toBe(0);
    } finally {
      conn.close();
      await server.close();
    }
  });

  test('without it, a response cannot be bound to a socket an earlier response owns', async () => {
    let code: unknown;
    const server = await start(
      (_req, res) => setTimeout(() => res.end('page'), 20),
      (s) =>
        s.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
          try {
            new UpgradeResponse(req, socket, head);
          } catch (err) {
            code = (err as { code?: unknown }).code;
          }
          socket.destroy();
        }),
    );
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(get('/') + upgradeRequest('/up', 'echo'));
      await until(() => code !== undefined);
      expect(code).toBe('ERR_HTTP_SOCKET_ASSIGNED');
    } finally {
      conn.close();
      await server.close();
    }
  });

  test('a free socket is served at once (synchronously)', async () => {
    let sync = false;
    const server = await start(null, (s) =>
      s.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
        let inside = false;
        whenSocketFree(socket, () => (inside = true));
        sync = inside;
        new UpgradeResponse(req, socket, head).end('no');
      }),
    );
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(upgradeRequest('/', 'echo'));
      await conn.waitFor('no');
      expect(sync).toBe(true);
    } finally {
      conn.close();
      await server.close();
    }
  });
});

describe('after a hand-over', () => {
  test.each([
    ['socket.pipe(socket)', (socket: Duplex) => socket.pipe(socket)],
    ['socket.pipe(other).pipe(socket)', (socket: Duplex) => {
      const other = new (require('node:stream').PassThrough)();
      socket.pipe(other).pipe(socket);
    }],
    ['a write after the peer went, with no error listener of its own', (socket: Duplex) => {
      socket.resume();
      socket.on('end', () => setTimeout(() => socket.write('late'), 5));
    }],
  ])('a reset after %s is no uncaught error; our listener is the only thing of ours left', async (_name, take) => {
    const sockets: Duplex[] = [];
    const server = await start(null, (s) =>
      s.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
        sockets.push(socket);
        new UpgradeResponse(req, socket, head).switchProtocols((sw) => take(sw));
      }),
    );
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      for (let i = 0; i < 20; i++) {
        const conn = await rawConnect(server.port);
        conn.socket.write(upgradeRequest('/', 'echo'));
        await conn.waitFor('\r\n\r\n');
        conn.socket.write('x'.repeat(1024));
        conn.socket.resetAndDestroy();
      }
      await until(() => sockets.length === 20 && sockets.every((s) => s.destroyed));
      expect(uncaught).toEqual([]);
      for (const s of sockets) {
        expect(s.listeners('error').some((l) => l.name === 'onSocketError')).toBe(true);
        expect((s as Duplex & { _httpMessage?: unknown })._httpMessage ?? null).toBeNull();
      }
    } finally {
      process.removeListener('uncaughtException', onUncaught);
      await server.close();
    }
  });
});

describe('the linger after a refusal has hard limits', () => {
  /** A server that refuses every upgrade; records when each of its sockets closed. */
  async function refuser() {
    const closed: number[] = [];
    const server = await start(null, (s) =>
      s.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
        socket.on('close', () => closed.push(Date.now()));
        const res = new UpgradeResponse(req, socket, head);
        res.statusCode = 403;
        res.end('no');
      }),
    );
    return { server, closed };
  }

  test('a client trickling a byte every 800 ms is cut within the 5 s deadline', async () => {
    const { server, closed } = await refuser();
    const socket = net.connect({ port: server.port, host: HOST, allowHalfOpen: true });
    socket.on('error', () => undefined);
    const started = Date.now();
    socket.write(upgradeRequest('/', 'echo'));
    const trickle = setInterval(() => socket.writable && socket.write('.'), 800);
    try {
      await until(() => closed.length === 1, 7000);
      const took = closed[0]! - started;
      expect(took).toBeGreaterThanOrEqual(4500);
      expect(took).toBeLessThan(6500);
    } finally {
      clearInterval(trickle);
      socket.destroy();
      await server.close();
    }
  }, 15_000);

  test('a client sending more than 64 KiB after the refusal is cut at once', async () => {
    const { server, closed } = await refuser();
    const socket = net.connect({ port: server.port, host: HOST, allowHalfOpen: true });
    socket.on('error', () => undefined);
    const started = Date.now();
    socket.write(upgradeRequest('/', 'echo'));
    try {
      await delay(50);
      for (let i = 0; i < 10 && socket.writable; i++) socket.write(Buffer.alloc(16 * 1024, 0x61));
      await until(() => closed.length === 1, 3000);
      expect(closed[0]! - started).toBeLessThan(2000);
    } finally {
      socket.destroy();
      await server.close();
    }
  });

  test('a client that closes its side at once leaves nothing behind', async () => {
    const { server, closed } = await refuser();
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(upgradeRequest('/', 'echo'));
      await conn.waitFor('no');
      conn.socket.end();
      await until(() => closed.length === 1, 2000);
    } finally {
      conn.close();
      await server.close();
    }
  });
});

describe('replayAsRequest', () => {
  async function replayer() {
    let connections = 0;
    const server = await start(
      (req, res) => {
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => res.end(`${req.method} ${req.url} [${body}] connection=${req.headers.connection}`));
      },
      (s) => {
        s.on('connection', () => connections++);
        s.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
          whenSocketFree(socket, () => replayAsRequest(req, socket, head));
        });
      },
    );
    return { server, connections: () => connections };
  }

  test('an h2c upgrade with an ordinary request pipelined behind it: both answered, one connection', async () => {
    const { server, connections } = await replayer();
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(
        `POST /first HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 3\r\n\r\nabc` +
          get('/second'),
      );
      const all = (await conn.waitFor('GET /second')).toString('latin1');
      expect([...all.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1])).toEqual(['200', '200']);
      expect(all).toContain('POST /first [abc] connection=HTTP2-Settings');
      expect(connections()).toBe(1);
    } finally {
      conn.close();
      await server.close();
    }
  });

  test('an ordinary request pipelined before an h2c upgrade: both answered, in order', async () => {
    const { server, connections } = await replayer();
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(get('/before') + upgradeRequest('/after', 'h2c', { Connection: 'close' }));
      const all = (await conn.waitFor('GET /after')).toString('latin1');
      expect(all.indexOf('GET /before')).toBeLessThan(all.indexOf('GET /after'));
      expect(await conn.waitClose()).toBe(true);
      expect(connections()).toBe(1);
    } finally {
      conn.close();
      await server.close();
    }
  });

  test('on a server without Node\'s own connection listener, the documented event is emitted', async () => {
    const { EventEmitter } = await import('node:events');
    const target = new EventEmitter();
    const got: unknown[] = [];
    target.on('request', () => undefined);
    target.on('connection', (s: unknown) => got.push(s));
    const server = await start(null, (s) =>
      s.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
        expect(replayAsRequest(req, socket, head, target)).toBe(true);
        socket.destroy();
      }),
    );
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(upgradeRequest('/', 'h2c'));
      await until(() => got.length === 1);
    } finally {
      conn.close();
      await server.close();
    }
  });
});

describe('peerOf: the peer without the cache Node keeps on the socket', () => {
  /** A TCP (or TLS) server on loopback, and the server side of one connection to it. */
  async function accepted(secure: boolean): Promise<{ server: net.Server; socket: net.Socket; client: net.Socket }> {
    const fixtures = path.join(__dirname, '..', '..', '..', 'test-support', 'fixtures');
    const server = secure
      ? tls.createServer({ key: readFileSync(path.join(fixtures, 'localhost-key.pem')), cert: readFileSync(path.join(fixtures, 'localhost-cert.pem')) })
      : net.createServer();
    const got = new Promise<net.Socket>((resolve) => server.once(secure ? 'secureConnection' : 'connection', resolve));
    await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
    const port = (server.address() as net.AddressInfo).port;
    const client = secure ? tls.connect({ port, host: HOST, rejectUnauthorized: false }) : net.connect(port, HOST);
    client.on('error', () => undefined);
    return { server, socket: await got, client };
  }

  test.each([false, true])('what remoteAddress, remoteFamily and remotePort say, nothing kept (TLS: %s)', async (secure) => {
    const { server, socket, client } = await accepted(secure);
    try {
      const keys = Object.keys(socket);
      const peer = peerOf(socket);
      expect(Object.keys(socket)).toEqual(keys);
      expect(peer).toEqual({ address: HOST, family: 'IPv4', port: client.localPort });
      // Node's own read (which keeps its answer) agrees; from then on peerOf gives that answer.
      expect([socket.remoteAddress, socket.remoteFamily, socket.remotePort]).toEqual([HOST, 'IPv4', client.localPort]);
      expect(peerOf(socket)).toEqual(peer);
    } finally {
      client.destroy();
      socket.destroy();
      server.close();
    }
  });

  test('a closed socket: what Node would say, nothing unless it was read while open; no socket: nothing', async () => {
    const a = await accepted(false);
    const b = await accepted(false);
    const port = b.client.localPort;
    expect(b.socket.remotePort).toBe(port); // read while open: Node keeps it
    for (const c of [a, b]) {
      c.client.destroy();
      await new Promise((resolve) => c.socket.once('close', resolve));
      c.server.close();
    }
    expect([peerOf(a.socket), a.socket.remoteAddress]).toEqual([{}, undefined]);
    expect(peerOf(b.socket)).toEqual({ address: HOST, family: 'IPv4', port });
    expect([peerOf(null), peerOf(undefined)]).toEqual([{}, {}]);
  });
});
