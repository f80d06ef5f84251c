/**
 * First contact (issue 15): every form of `app.listen()` type-checks (ts-jest compiles this file
 * with `strict`) and listens; unknown options are a TypeError naming the option; errors that
 * reach the end of the stack go to `onError` (requests, upgrades, CONNECT). Printing to stderr
 * when NODE_ENV is not `test` is checked in a child process: test/hardening/crash.test.ts.
 */
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { createApp, type AppOptions } from '@upgradeware/dispatcher';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { HOST, rawRequest, request, start, upgradeRequest, wsHandshake } from '../../../test-support';

/** Resolves once `server` has emitted 'listening' (its `listening` flag is set a tick earlier). */
function listening(server: http.Server): Promise<void> {
  return new Promise((resolve, reject) => {
    const settle = () => setImmediate(resolve);
    if (server.listening) return settle();
    server.once('listening', settle);
    server.once('error', reject);
  });
}

function closed(server: http.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

describe('app.listen(): every overload of server.listen()', () => {
  const app = createApp();
  app.use((_req: http.IncomingMessage, res: http.ServerResponse) => res.end('up'));

  async function served(server: http.Server): Promise<void> {
    await listening(server);
    const address = server.address() as net.AddressInfo;
    const res = await request(`http://${HOST}:${address.port}/`);
    expect(res.body).toBe('up');
    await closed(server);
  }

  test('port, host, backlog, callback — and each shorter form', async () => {
    let called = 0;
    const cb = () => void called++;
    await served(app.listen(0, HOST, 16, cb));
    await served(app.listen(0, HOST, cb));
    await served(app.listen(0, HOST));
    const anyHost = [app.listen(0, 16, cb), app.listen(0, cb), app.listen(0), app.listen()];
    for (const server of anyHost) {
      await listening(server);
      expect((server.address() as net.AddressInfo).port).toBeGreaterThan(0);
      await closed(server);
    }
    expect(called).toBe(4);
  });

  test('options, callback', async () => {
    let called = false;
    await served(app.listen({ port: 0, host: HOST }, () => (called = true)));
    expect(called).toBe(true);
  });

  test('a path (a Unix socket), with and without backlog', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'upgradeware-listen-'));
    try {
      for (const server of [app.listen(path.join(dir, 'a.sock'), 8, () => undefined), app.listen(path.join(dir, 'b.sock'), () => undefined)]) {
        await listening(server);
        const body = await new Promise<string>((resolve, reject) => {
          const socket = net.connect(server.address() as string, () => socket.write(`GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
          let text = '';
          socket.on('data', (d: Buffer) => (text += d.toString()));
          socket.on('end', () => resolve(text));
          socket.on('error', reject);
        });
        expect(body).toMatch(/\r\n\r\nup$/);
        await closed(server);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a handle (another server), with and without backlog', async () => {
    for (const withBacklog of [true, false]) {
      const holder = net.createServer();
      await new Promise<void>((r) => holder.listen(0, HOST, r));
      const port = (holder.address() as net.AddressInfo).port;
      const server = withBacklog ? app.listen(holder, 8, () => undefined) : app.listen(holder, () => undefined);
      await listening(server);
      const res = await request(`http://${HOST}:${port}/`);
      expect(res.body).toBe('up');
      await closed(server);
      await new Promise((r) => holder.close(r));
    }
  });
});

describe('options are checked when createApp is called', () => {
  test('an unknown option is a TypeError naming the package and the option', () => {
    expect(() => createApp({ upgradeProtocol: ['websocket'] } as unknown as AppOptions)).toThrow(
      new TypeError('@upgradeware/dispatcher: unknown option upgradeProtocol (known: upgradeProtocols, upgradeTimeout, onError)'),
    );
    expect(() => createApp({ timeout: 5 } as unknown as AppOptions)).toThrow(/unknown option timeout/);
  });

  test('onError must be a function', () => {
    expect(() => createApp({ onError: 'stderr' } as unknown as AppOptions)).toThrow(
      new TypeError('@upgradeware/dispatcher: option onError must be a function (err, req)'),
    );
  });

  test('the known options are accepted', () => {
    expect(typeof createApp({ upgradeProtocols: ['websocket'], upgradeTimeout: 10, onError: () => undefined })).toBe('function');
  });
});

describe('onError receives every error that reaches the end of the stack', () => {
  test('for a request, an upgrade and a CONNECT, with its request; the answer is still its status', async () => {
    const seen: string[] = [];
    const app = createApp({ onError: (err, req) => seen.push(`${req.method} ${req.url} ${(err as Error).message}`) });
    app.use(
      supportsUpgrade((req: http.IncomingMessage) => {
        throw Object.assign(new Error(`bad ${req.headers.upgrade ?? 'request'}`), { status: 418 });
      }),
    );
    const server = await start(app);
    try {
      expect((await request(server.url + '/a')).status).toBe(418);
      expect((await rawRequest(server.port, wsHandshake('/b'))).status).toBe(418);
      expect((await rawRequest(server.port, `CONNECT c:1 HTTP/1.1\r\nHost: c:1\r\n\r\n`)).status).toBe(418);
      expect(seen).toEqual(['GET /a bad request', 'GET /b bad websocket', 'CONNECT c:1 bad request']);
    } finally {
      await server.close();
    }
  });

  test('an onError that throws changes nothing: the error is answered, the server serves on', async () => {
    const app = createApp({
      onError: () => {
        throw new Error('reporter down');
      },
    });
    app.use(supportsUpgrade(() => Promise.reject(new Error('nope'))));
    const server = await start(app);
    try {
      expect((await rawRequest(server.port, upgradeRequest('/x', 'websocket'))).status).toBe(500);
      expect((await request(server.url + '/y')).status).toBe(500);
    } finally {
      await server.close();
    }
  });

  test('a 404 is not an error: onError is not called', async () => {
    let calls = 0;
    const app = createApp({ onError: () => void calls++ });
    const server = await start(app);
    try {
      expect((await request(server.url + '/none')).status).toBe(404);
      expect((await rawRequest(server.port, wsHandshake('/none'))).status).toBe(404);
      expect(calls).toBe(0);
    } finally {
      await server.close();
    }
  });
});
