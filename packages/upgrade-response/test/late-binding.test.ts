/**
 * A response bound late (`createBoundLater` + `bindSocket`, what the dispatcher does): nothing of
 * ours is on the socket while the stack's synchronous part runs, everything is once it has run
 * and the response still owns the socket, and nothing is when the handshake switched within it.
 */
import * as http from 'node:http';
import type { Duplex } from 'node:stream';
import {
  SocketResponse,
  UpgradeResponse,
  bindSocket,
  createBoundLater,
  ownsSocket,
} from '@upgradeware/upgrade-response';
import { listenerNames as names, start, rawConnect, upgradeRequest, until } from '../../../test-support';

/** A function that tells the names of the `event` listeners added to `emitter` since this call. */
function addedSince(emitter: Duplex, event: string): () => string[] {
  const before = names(emitter, event);
  return () => names(emitter, event).filter((name) => !before.includes(name));
}

/** A server whose 'upgrade' listener is `serve`; every upgrade socket and response is kept for the test to look at. */
async function serving(serve: (req: http.IncomingMessage, socket: Duplex, head: Buffer) => SocketResponse) {
  const seen: Array<{ socket: Duplex; res: SocketResponse }> = [];
  const server = await start(null, (s) =>
    s.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      seen.push({ socket, res: serve(req, socket, head) });
    }),
  );
  return { server, seen };
}

describe('createBoundLater / bindSocket', () => {
  test('before bindSocket nothing of ours is on the socket, yet the response writes to it; a refusal made then is bound and closed as usual', async () => {
    const before = { error: [''], close: [''], finish: [''], owns: [false], errorAfter: [''], finishAfter: [''] };
    const { server, seen } = await serving((req, socket, head) => {
      const errors = addedSince(socket, 'error');
      const closes = addedSince(socket, 'close');
      const res = createBoundLater(UpgradeResponse, req, socket, head);
      before.error = errors();
      before.close = closes();
      before.finish = names(res, 'finish');
      before.owns = [ownsSocket(res), res.socket === socket];
      // The stack's synchronous part refuses: the response goes out, 'finish' comes later.
      res.statusCode = 403;
      res.setHeader('Content-Length', 2);
      res.end('no');
      bindSocket(res);
      before.errorAfter = names(socket, 'error');
      before.finishAfter = names(res, 'finish');
      return res;
    });
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(upgradeRequest('/', 'echo'));
      await conn.waitFor('no');
      await until(() => seen.length === 1 && seen[0]!.socket.destroyed, 3000);
      expect(before.error).toEqual([]);
      expect(before.close).toEqual([]);
      expect(before.finish).toEqual([]);
      expect(before.owns).toEqual([true, true]);
      expect(before.errorAfter).toContain('onSocketError');
      // Ours first, as for `new UpgradeResponse()`: the 'finish' listeners of the stack come after it.
      expect(before.finishAfter[0]).toBe('onResponseFinish');
      const text = conn.received().toString('latin1');
      expect(text).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
      expect(text).toMatch(/\r\nConnection: close\r\n/i);
      const { res } = seen[0]!;
      await until(() => res.destroyed, 2000);
    } finally {
      conn.close();
      await server.close();
    }
  });

  test('a stack still waiting when bindSocket runs: a client reset closes the response, with no uncaught error', async () => {
    const closes: string[] = [];
    const { server, seen } = await serving((req, socket, head) => {
      const res = createBoundLater(UpgradeResponse, req, socket, head);
      bindSocket(res);
      bindSocket(res); // once only
      res.on('close', () => closes.push(`close destroyed=${res.destroyed}`));
      return res; // never answered: an asynchronous layer still at work
    });
    // An uncaught error fails the test (jest's own listener; one added here would never be called).
    try {
      const conn = await rawConnect(server.port);
      conn.socket.write(upgradeRequest('/', 'echo'));
      await until(() => seen.length === 1, 2000);
      const { socket } = seen[0]!;
      expect(names(socket, 'error').filter((n) => n === 'onSocketError')).toHaveLength(1);
      expect(names(socket, 'close')[0]).toBe('onOwnedSocketClose');
      conn.socket.resetAndDestroy();
      await until(() => closes.length === 1, 3000);
      expect(closes).toEqual(['close destroyed=true']);
    } finally {
      await server.close();
    }
  });

  test('switched within the synchronous part (a library writes the 101): bindSocket adds nothing, the response ends as a 101', async () => {
    const events: string[] = [];
    let after: Record<string, unknown> = {};
    const { server, seen } = await serving((req, socket, head) => {
      const errors = addedSince(socket, 'error');
      const closes = addedSince(socket, 'close');
      const res = createBoundLater(UpgradeResponse, req, socket, head);
      res.on('finish', () => events.push(`finish ${res.statusCode}`));
      res.on('close', () => events.push('close'));
      res.setHeader('X-Stack', 'yes');
      const lines = res.externalSwitch();
      // What a library writing its own 101 (ws) does with the lines.
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n`);
      bindSocket(res);
      after = {
        ours: errors().length,
        close: closes().length,
        statusMessage: res.statusMessage,
        headersSent: res.headersSent,
        socket: res.socket,
      };
      socket.on('error', () => undefined);
      socket.resume();
      return res;
    });
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(upgradeRequest('/', 'echo'));
      await conn.waitFor('\r\n\r\n');
      await until(() => events.length === 2, 2000);
      expect(conn.received().toString('latin1')).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n[^]*\r\nX-Stack: yes\r\n/);
      expect(events).toEqual(['finish 101', 'close']);
      expect(after).toEqual({ ours: 0, close: 0, statusMessage: 'Switching Protocols', headersSent: true, socket: null });
      expect(seen[0]!.res.destroyed).toBe(true);
    } finally {
      conn.close();
      await server.close();
    }
  });

  test('released within the synchronous part: bindSocket leaves the socket as Node gave it', async () => {
    let after: string[] = ['not run'];
    const { server } = await serving((req, socket, head) => {
      const errors = addedSince(socket, 'error');
      const closes = addedSince(socket, 'close');
      const res = createBoundLater(SocketResponse, req, socket, head);
      expect(res.release()).toBe(true);
      bindSocket(res);
      after = [...errors(), ...closes()];
      socket.destroy();
      return res;
    });
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(upgradeRequest('/', 'echo'));
      await until(() => after[0] !== 'not run', 2000);
      expect(after).toEqual([]);
    } finally {
      conn.close();
      await server.close();
    }
  });

  test('a switch started within the synchronous part is bound, then handed over with only our error listener left', async () => {
    let handed: { error: string[]; close: string[] } | null = null;
    const { server } = await serving((req, socket, head) => {
      const res = createBoundLater(UpgradeResponse, req, socket, head);
      res.switchProtocols((sw) => {
        handed = { error: names(sw, 'error'), close: names(sw, 'close') };
        sw.pipe(sw);
      });
      bindSocket(res);
      return res;
    });
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(upgradeRequest('/', 'echo'));
      await conn.waitFor('\r\n\r\n');
      conn.socket.write('ping');
      await conn.waitFor('ping');
      expect(handed!.error).toContain('onSocketError');
      expect(handed!.close).not.toContain('onOwnedSocketClose');
    } finally {
      conn.close();
      await server.close();
    }
  });

  test('a prototype replaced before bindSocket (as Express does) is still bound: the refusal closes the connection', async () => {
    const { server, seen } = await serving((req, socket, head) => {
      const res = createBoundLater(UpgradeResponse, req, socket, head);
      Object.setPrototypeOf(res, Object.create(http.ServerResponse.prototype) as object);
      bindSocket(res);
      setTimeout(() => {
        res.statusCode = 401;
        res.end('who?');
      }, 20);
      return res;
    });
    const conn = await rawConnect(server.port);
    try {
      conn.socket.write(upgradeRequest('/', 'echo'));
      await conn.waitFor('who?');
      await until(() => seen.length === 1 && seen[0]!.socket.destroyed, 3000);
      expect(conn.received().toString('latin1')).toMatch(/^HTTP\/1\.1 401 Unauthorized\r\n/);
    } finally {
      conn.close();
      await server.close();
    }
  });
});

describe('externalSwitch records the 101 as writeHead() would', () => {
  test("a writeHead() replaced on Node's prototype before this package was loaded (an APM agent) is still called", async () => {
    const proto = http.ServerResponse.prototype;
    const original = proto.writeHead;
    const seen: number[] = [];
    proto.writeHead = function agentWriteHead(this: http.ServerResponse, ...args: unknown[]) {
      seen.push(args[0] as number);
      return (original as (...a: unknown[]) => http.ServerResponse).apply(this, args);
    } as typeof original;
    try {
      // A copy of the package loaded after the agent: the writeHead it finds is not Node's own.
      let Fresh: typeof UpgradeResponse | undefined;
      jest.isolateModules(() => {
        Fresh = (require('@upgradeware/upgrade-response') as { UpgradeResponse: typeof UpgradeResponse }).UpgradeResponse;
      });
      const { server } = await serving((req, socket, head) => {
        const res = new Fresh!(req, socket, head);
        res.externalSwitch();
        socket.destroy();
        return res;
      });
      try {
        const conn = await rawConnect(server.port);
        conn.socket.write(upgradeRequest('/', 'echo'));
        await until(() => seen.length === 1, 2000);
        expect(seen).toEqual([101]);
        conn.close();
      } finally {
        await server.close();
      }
    } finally {
      proto.writeHead = original;
    }
  });

  test('a status message of the stack, or a writeHead() wrapped by a hook, goes through writeHead()', async () => {
    const results: Array<Record<string, unknown>> = [];
    const { server } = await serving((req, socket, head) => {
      const res = new UpgradeResponse(req, socket, head);
      const wrapped = req.url === '/hooked';
      const calls: number[] = [];
      if (wrapped) {
        const original = res.writeHead;
        res.writeHead = function (this: http.ServerResponse, ...args: unknown[]) {
          calls.push(args[0] as number);
          res.setHeader('X-Hook', 'ran');
          return (original as (...a: unknown[]) => http.ServerResponse).apply(this, args);
        } as typeof res.writeHead;
      } else {
        res.statusMessage = 'Moving On';
      }
      const lines = res.externalSwitch();
      results.push({ url: req.url, calls, lines, statusMessage: res.statusMessage, headersSent: res.headersSent, statusCode: res.statusCode });
      socket.destroy();
      return res;
    });
    try {
      for (const path of ['/hooked', '/message']) {
        const conn = await rawConnect(server.port);
        conn.socket.write(upgradeRequest(path, 'echo'));
        await until(() => results.length === (path === '/hooked' ? 1 : 2), 2000);
        conn.close();
      }
      expect(results).toEqual([
        { url: '/hooked', calls: [101], lines: ['X-Hook: ran'], statusMessage: 'Switching Protocols', headersSent: true, statusCode: 101 },
        { url: '/message', calls: [], lines: [], statusMessage: 'Moving On', headersSent: true, statusCode: 101 },
      ]);
    } finally {
      await server.close();
    }
  });
});
