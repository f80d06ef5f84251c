/** UpgradeResponse on its own: a Node server's 'upgrade'/'connect' events, no dispatcher. */
import * as http from 'node:http';
import type { Duplex } from 'node:stream';
import createDebug from 'debug';
import { UpgradeResponse, SocketResponse, abortSwitched, dropErrorGuard, enabledReader, headersComplete, isUpgradeResponse, ownsSocket, replayAsRequest, supportsUpgrade } from '@upgradeware/upgrade-response';
import { start, rawRequest, rawConnect, upgradeRequest, until, delay, HOST, type TestServer } from '../../../test-support';

type Handler = (res: UpgradeResponse, req: http.IncomingMessage, socket: Duplex) => void;

let server: TestServer;
let handler: Handler;

beforeAll(async () => {
  server = await start(null, (s) => {
    const serve = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => handler(new UpgradeResponse(req, socket, head), req, socket);
    s.on('upgrade', serve);
    s.on('connect', serve);
  });
});
afterAll(() => server.close());

test('a chunked refusal is well-formed, ends with Connection: close, and the socket closes', async () => {
  handler = (res) => {
    res.statusCode = 403;
    res.write('part one, ');
    setTimeout(() => res.end('part two'), 5);
  };
  const res = await rawRequest(server.port, upgradeRequest('/', 'echo'));
  expect(res.raw.startsWith('HTTP/1.1 403 Forbidden\r\n')).toBe(true);
  expect(res.headers['transfer-encoding']).toEqual(['chunked']);
  expect(res.headers['connection']).toEqual(['close']);
  expect(res.body).toBe('a\r\npart one, \r\n8\r\npart two\r\n0\r\n\r\n');
  expect(res.closed).toBe(true);
});

test('a refusal to a HEAD request has no body', async () => {
  handler = (res) => {
    res.statusCode = 401;
    res.end('not sent');
  };
  const res = await rawRequest(server.port, 'HEAD / HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
  expect(res.status).toBe(401);
  expect(res.body).toBe('');
  expect(res.closed).toBe(true);
});

test('the client reads the whole refusal even when it sent a body nobody read', async () => {
  handler = (res) => {
    res.statusCode = 413;
    res.end('x'.repeat(50_000));
  };
  const body = 'y'.repeat(200_000);
  const res = await rawRequest(
    server.port,
    `POST / HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
  );
  expect(res.status).toBe(413);
  expect(res.body).toBe('x'.repeat(50_000));
});

test('switchProtocols: 101 with our headers, finish then cb then close; a second switch throws', async () => {
  const order: string[] = [];
  let second: unknown;
  handler = (res) => {
    res.setHeader('X-Custom-Case', 'kept');
    res.on('finish', () => order.push(`finish ${res.statusCode}`));
    res.on('close', () => order.push('close'));
    res.switchProtocols((socket, head) => {
      order.push(`cb ${head.toString()}`);
      socket.on('error', () => undefined);
      socket.end('bye');
    });
    try {
      res.switchProtocols(() => undefined);
    } catch (err) {
      second = err;
    }
  };
  const res = await rawRequest(server.port, upgradeRequest('/', 'echo') + 'early');
  expect(res.raw).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\nX-Custom-Case: kept\r\nUpgrade: echo\r\nConnection: Upgrade\r\n/);
  expect(res.body).toBe('bye');
  await until(() => order.length === 3);
  expect(order).toEqual(['finish 101', 'cb early', 'close']);
  expect(second).toBeInstanceOf(Error);
});

test('after the hand-off our error listener stays beside the new owner\'s, and no reference is kept', async () => {
  let res!: UpgradeResponse;
  let listeners = -1;
  handler = (r) => {
    res = r;
    r.switchProtocols((socket) => {
      socket.on('error', () => undefined);
      setImmediate(() => {
        listeners = socket.listenerCount('error');
        socket.destroy();
      });
    });
  };
  await rawRequest(server.port, upgradeRequest('/', 'echo'));
  await until(() => listeners !== -1);
  // Ours (a plain function, holding nothing of the chain) and the new owner's.
  expect(listeners).toBe(2);
  expect(res.socket).toBeNull();
  expect(res.upgradeHead.length).toBe(0);
});

test('dropErrorGuard: an owner that keeps its own error listener takes ours off; alone, ours stays', async () => {
  const seen: Array<[boolean, number, boolean, number]> = [];
  let owner = true;
  handler = (r) => {
    const withOwner = owner;
    owner = false;
    r.switchProtocols((socket) => {
      if (withOwner) socket.on('error', () => undefined);
      const dropped = dropErrorGuard(socket);
      // Asked twice: nothing more to drop.
      seen.push([dropped, socket.listenerCount('error'), dropErrorGuard(socket), socket.listenerCount('error')]);
      socket.on('close', () => closed++);
      socket.resume();
    });
  };
  let closed = 0;
  for (let i = 0; i < 2; i++) {
    const conn = await rawConnect(server.port);
    conn.socket.write(upgradeRequest('/', 'echo'));
    await conn.waitFor('\r\n\r\n');
    // A reset after the switch (ECONNRESET on the server's socket): with only the owner's listener
    // or only ours, no uncaught error.
    conn.socket.resetAndDestroy();
    await until(() => closed === i + 1);
  }
  expect(seen).toEqual([
    [true, 1, false, 1],
    [false, 1, false, 1],
  ]);
  expect((await rawRequest(server.port, upgradeRequest('/', 'echo'))).raw).toMatch(/^HTTP\/1\.1 101 /);
});

test('ownsSocket: the response owns its connection until the switch; headersComplete: false past maxHeadersCount', async () => {
  const seen: boolean[] = [];
  handler = (res, req, socket) => {
    seen.push(ownsSocket(res), headersComplete(req, socket), headersComplete(req, socket, Object.assign(new http.Server(), { maxHeadersCount: 2 })));
    res.switchProtocols((s) => {
      seen.push(ownsSocket(res));
      s.end();
    });
  };
  const res = await rawRequest(server.port, upgradeRequest('/', 'echo'));
  expect(res.status).toBe(101);
  // The request has more than 2 header lines: a server keeping only 2 would have dropped some.
  expect(seen).toEqual([true, true, false, false]);
});

test('switchProtocols after the client went away returns false and never calls back', async () => {
  let result: boolean | undefined;
  let called = false;
  let closed = false;
  handler = (res) => {
    res.on('close', () => (closed = true));
    setTimeout(() => {
      result = res.switchProtocols(() => (called = true));
    }, 50);
  };
  const conn = await rawConnect(server.port);
  conn.socket.write(upgradeRequest('/', 'echo'));
  await delay(10);
  conn.socket.resetAndDestroy();
  await until(() => result !== undefined);
  expect(result).toBe(false);
  expect(called).toBe(false);
  expect(closed).toBe(true);
});

test('a late end() after the client went away is dropped: no throw, no error event', async () => {
  let outcome = '';
  handler = (res) => {
    res.on('error', (err) => (outcome = `error ${err.message}`));
    setTimeout(() => {
      try {
        res.end('too late');
        outcome ||= 'dropped';
      } catch (err) {
        outcome = `threw ${(err as Error).message}`;
      }
    }, 50);
  };
  const conn = await rawConnect(server.port);
  conn.socket.write(upgradeRequest('/', 'echo'));
  await delay(10);
  conn.socket.resetAndDestroy();
  await until(() => outcome !== '');
  await delay(20);
  expect(outcome).toBe('dropped');
});

test('externalSwitch returns the headers as lines (case kept, owned ones left out) and ends without writing', async () => {
  let lines: string[] = [];
  const events: string[] = [];
  handler = (res, _req, socket) => {
    res.setHeader('Set-Cookie', ['a=1', 'b=2']);
    res.setHeader('X-Mixed-Case', 'v');
    res.setHeader('Connection', 'keep-alive');
    res.setHeader('Content-Length', '5');
    res.on('finish', () => events.push(`finish ${res.statusCode}`));
    res.on('close', () => events.push('close'));
    lines = res.externalSwitch();
    events.push(`returned ${res.writableEnded}`);
    // The library writes its own 101.
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n' + lines.map((l) => l + '\r\n').join('') + '\r\n');
    socket.end();
  };
  const res = await rawRequest(server.port, upgradeRequest('/', 'echo'));
  expect(lines).toEqual(['Set-Cookie: a=1', 'Set-Cookie: b=2', 'X-Mixed-Case: v']);
  expect(res.raw.match(/HTTP\/1\.1/g)).toHaveLength(1);
  await until(() => events.length === 3);
  expect(events).toEqual(['returned true', 'finish 101', 'close']);
});

test('externalSwitch marks the head as sent without writing it; what Node checks as it writes a head is still checked', async () => {
  const seen: string[] = [];
  handler = (res, _req, socket) => {
    socket.on('error', () => undefined);
    const mode = res.req.url;
    if (mode === '/trailer') res.setHeader('Trailer', 'X-Sum');
    if (mode === '/bad-arg') {
      // Headers given to writeHead() itself (here by a wrapper, before any setHeader) are checked by Node.
      const writeHead = res.writeHead;
      res.writeHead = ((status: number) => writeHead.call(res, status, { 'X-Bad': 'a\nb' })) as typeof res.writeHead;
    }
    try {
      const lines = res.externalSwitch();
      seen.push(`${mode} switched ${res.headersSent} ${lines.length}`);
      socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
    } catch (err) {
      seen.push(`${mode} ${(err as { code?: string }).code} ${res.headersSent}`);
      socket.destroy();
    }
  };
  for (const path of ['/plain', '/trailer', '/bad-arg']) await rawRequest(server.port, upgradeRequest(path, 'echo'));
  expect(seen).toEqual(['/plain switched true 0', '/trailer ERR_HTTP_TRAILER_INVALID false', '/bad-arg ERR_INVALID_CHAR false']);
});

test('CONNECT: 200 Connection Established with no framing or Connection header', async () => {
  handler = (res) => {
    expect(res.isConnect).toBe(true);
    res.setHeader('X-Proxy', 'ours');
    res.switchProtocols((socket, head) => {
      socket.on('error', () => undefined);
      socket.end(`tunnel:${head.toString()}`);
    });
  };
  const res = await rawRequest(server.port, `CONNECT ${HOST}:9 HTTP/1.1\r\nHost: ${HOST}:9\r\n\r\nhi`);
  expect(res.raw).toMatch(/^HTTP\/1\.1 200 Connection Established\r\nX-Proxy: ours\r\nDate: [^\r]+\r\n\r\ntunnel:hi$/);
});

test('release() leaves the socket untouched for someone else', async () => {
  handler = (res, req, socket) => {
    const head = res.upgradeHead;
    expect(res.release()).toBe(true);
    expect(res.release()).toBe(false);
    socket.on('error', () => undefined);
    socket.end(`HTTP/1.1 418 I'm a teapot\r\nConnection: close\r\n\r\n${req.url}|${head.toString()}`);
  };
  const res = await rawRequest(server.port, upgradeRequest('/mine', 'echo') + 'rest');
  expect(res.status).toBe(418);
  expect(res.body).toBe('/mine|rest');
});

test('brand, not instanceof; SocketResponse is not an upgrade response; supportsUpgrade marks and checks', () => {
  const fake = { [Symbol.for('upgradeware.UpgradeResponse')]: true };
  expect(isUpgradeResponse(fake)).toBe(true);
  expect(isUpgradeResponse({})).toBe(false);
  expect(isUpgradeResponse(null)).toBe(false);
  expect(isUpgradeResponse(Object.create(SocketResponse.prototype))).toBe(false);
  const fn = supportsUpgrade((_req: http.IncomingMessage, _res: http.ServerResponse, next: () => void) => next());
  expect(fn.supportsUpgrade).toBe(true);
  expect(() => supportsUpgrade(42 as unknown as () => void)).toThrow(TypeError);
});

test('replayAsRequest hands the request to the server as an ordinary one; without a request handler it touches nothing', async () => {
  // This server has no 'request' listener: nothing is replayed.
  let replayed: boolean | undefined;
  handler = (res, req, socket) => {
    replayed = replayAsRequest(req, socket, res.upgradeHead);
    res.statusCode = 426;
    res.end();
  };
  const refused = await rawRequest(server.port, upgradeRequest('/', 'h2c'));
  expect(replayed).toBe(false);
  expect(refused.status).toBe(426);

  // One with a request handler serves it, body included, and does not see an upgrade again.
  let upgrades = 0;
  const other = await start(
    (req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => res.end(`${req.method} ${req.url} ${req.headers.connection} ${body}`));
    },
    (s) =>
      s.on('upgrade', (req, socket, head) => {
        upgrades++;
        replayAsRequest(req, socket, head);
      }),
  );
  try {
    const res = await rawRequest(other.port, 'PUT /r?q HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: upgrade, close\r\nContent-Length: 4\r\n\r\nbody');
    expect(res.status).toBe(200);
    // The `upgrade` token is gone, the client's `close` is kept.
    expect(res.body).toBe('PUT /r?q close body');
    expect(res.closed).toBe(true);
    expect(upgrades).toBe(1);
  } finally {
    await other.close();
  }
});

test('a switch callback that throws closes that connection and is reported, not thrown', async () => {
  const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
  try {
    handler = (res) => {
      res.switchProtocols(() => {
        throw new Error('callback boom');
      });
    };
    const res = await rawRequest(server.port, upgradeRequest('/', 'echo'));
    expect(res.status).toBe(101);
    expect(res.closed).toBe(true);
    expect(warn).toHaveBeenCalledWith(expect.objectContaining({ message: 'callback boom' }), 'UpgradewareSwitchError');
    handler = (r) => {
      r.statusCode = 204;
      r.end();
    };
    expect((await rawRequest(server.port, upgradeRequest('/', 'echo'))).status).toBe(204);
  } finally {
    warn.mockRestore();
  }
});

test('an on-headers listener that throws during a switch leaves an ordinary response to answer', async () => {
  for (const request of [upgradeRequest('/', 'echo'), `CONNECT ${HOST}:9 HTTP/1.1\r\nHost: x\r\n\r\n`]) {
    handler = (res) => {
      res.setHeader('X-Before', 'kept');
      const writeHead = res.writeHead;
      res.writeHead = function (this: UpgradeResponse, ...args: Parameters<typeof writeHead>) {
        if (args[0] === 101 || args[0] === 200) throw new Error('hook boom');
        return writeHead.apply(this, args);
      } as typeof writeHead;
      try {
        res.switchProtocols(() => undefined);
      } catch {
        res.statusCode = 500;
        res.end('failed');
      }
    };
    const res = await rawRequest(server.port, request);
    expect(res.status).toBe(500);
    expect(res.headers['connection']).toEqual(['close']);
    expect(res.headers['upgrade']).toBeUndefined();
    // Node generates the framing again: the switch's removal of it was undone.
    expect(res.headers['content-length']).toEqual(['6']);
    expect(res.headers['x-before']).toEqual(['kept']);
    expect(res.body).toBe('failed');
    expect(res.closed).toBe(true);
  }
});

test('a socket destroyed while the switch is flushed is not handed over; the response still closes once', async () => {
  let called = false;
  let closes = 0;
  let done = false;
  handler = (res, _req, socket) => {
    res.on('close', () => {
      closes++;
      setTimeout(() => (done = true), 20);
    });
    res.switchProtocols(() => (called = true));
    socket.destroy();
  };
  await rawRequest(server.port, upgradeRequest('/', 'echo'));
  await until(() => done);
  expect(called).toBe(false);
  expect(closes).toBe(1);
});

test('abortSwitched: a WebSocket gets a 1011 close frame after its 101, then the connection ends', async () => {
  handler = (res, req) => {
    res.switchProtocols((socket) => {
      socket.on('error', () => undefined);
      abortSwitched(req, socket);
    });
  };
  const res = await rawRequest(server.port, Buffer.from(upgradeRequest('/', 'websocket')));
  expect(res.status).toBe(101);
  expect(Buffer.from(res.body, 'latin1').equals(Buffer.from([0x88, 0x02, 0x03, 0xf3]))).toBe(true);
  expect(res.closed).toBe(true);
  expect(() => abortSwitched({ headers: {} } as http.IncomingMessage, null)).not.toThrow();
});

describe('enabledReader (debug.enabled as a call)', () => {
  test('answers as debug.enabled does: after enable() and disable() at run time, and after the enabled setter', () => {
    const saved = createDebug.disable();
    try {
      const trace = createDebug('upgradeware:enabled-reader-test');
      const tracing = enabledReader(trace);
      expect(tracing()).toBe(false);
      createDebug.enable('upgradeware:*');
      expect([tracing(), trace.enabled]).toEqual([true, true]);
      createDebug.enable('upgradeware:*,-upgradeware:enabled-reader-test');
      expect([tracing(), trace.enabled]).toEqual([false, false]);
      trace.enabled = true;
      expect([tracing(), trace.enabled]).toEqual([true, true]);
    } finally {
      createDebug.disable();
      if (saved) createDebug.enable(saved);
    }
  });

  test('a debug function without the getter is read as a property', () => {
    const fake = Object.assign(() => undefined, { enabled: true });
    const tracing = enabledReader(fake);
    expect(tracing()).toBe(true);
    fake.enabled = false;
    expect(tracing()).toBe(false);
  });
});
