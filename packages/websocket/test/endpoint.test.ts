import { errorMonitor } from 'node:events';
import * as http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import WebSocket from 'ws';
import { createApp } from '@upgradeware/dispatcher';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { websocket, type WebSocketOptions } from '@upgradeware/websocket';
import {
  start,
  rawRequest,
  rawConnect,
  wsHandshake,
  wsOpen,
  wsClose,
  nextMessage,
  until,
  delay,
  WsRefused,
  type TestServer,
} from '../../../test-support';
import { echo, echoApp } from './helpers';

let s: TestServer | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

/** After a handshake to /chat, an unmasked client frame (a protocol error): ws answers 1002 and closes. */
async function unmaskedFrameCloses1002(port: number): Promise<void> {
  const conn = await rawConnect(port);
  conn.socket.write(wsHandshake('/chat'));
  await conn.waitFor('\r\n\r\n');
  conn.socket.write(Buffer.from([0x81, 0x02, 0x68, 0x69]));
  const all = await conn.waitFor(Buffer.from([0x88, 0x02, 0x03, 0xea]));
  expect(all.includes(Buffer.from([0x88, 0x02, 0x03, 0xea]))).toBe(true);
  expect(await conn.waitClose()).toBe(true);
  conn.close();
}

async function stillServes(server: TestServer, path = '/chat'): Promise<void> {
  const { ws } = await wsOpen(`${server.wsUrl}${path}`);
  const reply = nextMessage(ws);
  ws.send('ping');
  expect(await reply).toBe('ping');
  await wsClose(ws);
}

function closeCode(ws: WebSocket, timeoutMs = 3000): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no close in time')), timeoutMs);
    ws.once('close', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

describe('origin guard', () => {
  test('a list: a foreign Origin is 403 before the switch; listed and absent origins pass', async () => {
    const { app, log } = echoApp({ origins: ['https://chat.example', 'http://127.0.0.1:8080'] });
    s = await start(app);
    const foreign = await rawRequest(s.port, wsHandshake('/chat', { Origin: 'https://evil.example' }));
    expect(foreign.status).toBe(403);
    expect(foreign.body).toBe('Origin not allowed');
    expect(foreign.headers['connection']).toEqual(['close']);
    expect(foreign.headers['sec-websocket-accept']).toBeUndefined();
    expect(foreign.closed).toBe(true);
    await until(() => log.length === 1);
    expect(log[0]!.status).toBe(403);
    // A real ws client sending a foreign origin is refused the same way.
    const refused = await wsOpen(`${s.wsUrl}/chat`, { origin: 'https://evil.example' }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(WsRefused);
    expect((refused as WsRefused).status).toBe(403);
    // "null" (sandboxed frames, file:) is not a listed origin.
    expect((await rawRequest(s.port, wsHandshake('/chat', { Origin: 'null' }))).status).toBe(403);
    for (const origin of ['https://chat.example', 'HTTPS://CHAT.EXAMPLE', 'http://127.0.0.1:8080']) {
      const { ws } = await wsOpen(`${s.wsUrl}/chat`, { origin });
      await wsClose(ws);
    }
    // No Origin header: not a browser, so not a cross-site hijack; accepted.
    await stillServes(s);
  });

  test('a function decides with (origin, req); a throw is an ordinary 500', async () => {
    const seen: Array<string | undefined> = [];
    const { app } = echoApp({
      origins: (origin: string | undefined, req: IncomingMessage) => {
        seen.push(origin);
        if (origin === 'https://boom.example') throw new Error('origin check failed');
        return origin !== undefined && origin === `https://${req.headers.host?.split(':')[0]}`;
      },
    });
    s = await start(app);
    const ok = await rawRequest(s.port, wsHandshake('/chat', { Origin: 'https://127.0.0.1' }), { untilHead: true });
    expect(ok.status).toBe(101);
    expect((await rawRequest(s.port, wsHandshake('/chat', { Origin: 'https://other.example' }))).status).toBe(403);
    expect((await rawRequest(s.port, wsHandshake('/chat'))).status).toBe(403);
    const boom = await rawRequest(s.port, wsHandshake('/chat', { Origin: 'https://boom.example' }));
    expect(boom.status).toBe(500);
    expect(boom.closed).toBe(true);
    expect(seen).toEqual(['https://127.0.0.1', 'https://other.example', undefined, 'https://boom.example']);
    const { ws } = await wsOpen(`${s.wsUrl}/chat`, { origin: 'https://127.0.0.1' });
    await wsClose(ws);
  });
});

describe('hooks that throw before the switch', () => {
  test('handleProtocols throwing is an ordinary 500, nothing switched', async () => {
    const { app, log } = echoApp({
      handleProtocols: () => {
        throw new Error('picker broke');
      },
    });
    s = await start(app);
    const raw = await rawRequest(s.port, wsHandshake('/chat', { 'Sec-WebSocket-Protocol': 'a' }));
    expect(raw.status).toBe(500);
    expect(raw.headers['connection']).toEqual(['close']);
    expect(raw.headers['sec-websocket-accept']).toBeUndefined();
    expect(raw.closed).toBe(true);
    await until(() => log.length === 1);
    expect(log[0]!.status).toBe(500);
    await stillServes(s);
  });
});

describe('verifyClient, run through the stack', () => {
  test('sync: false is 401 through res', async () => {
    const { app, log } = echoApp({ verifyClient: (info) => info.req.headers['x-token'] === 'ok' });
    s = await start(app);
    const raw = await rawRequest(s.port, wsHandshake('/chat'));
    expect(raw.status).toBe(401);
    expect(raw.body).toBe('Unauthorized');
    expect(raw.closed).toBe(true);
    await until(() => log.length === 1);
    expect(log[0]!.status).toBe(401);
    const { ws } = await wsOpen(`${s.wsUrl}/chat`, { headers: { 'X-Token': 'ok' } });
    await wsClose(ws);
  });

  test('async: code, message and headers of the refusal; and acceptance', async () => {
    const { app } = echoApp({
      verifyClient: (info, cb) => {
        setTimeout(() => {
          if (info.req.headers['x-token'] === 'ok') cb(true);
          else cb(false, 429, 'slow down', { 'Retry-After': '5' });
        }, 5);
      },
    });
    s = await start(app);
    const raw = await rawRequest(s.port, wsHandshake('/chat'));
    expect(raw.status).toBe(429);
    expect(raw.body).toBe('slow down');
    expect(raw.headers['retry-after']).toEqual(['5']);
    expect(raw.closed).toBe(true);
    const { ws } = await wsOpen(`${s.wsUrl}/chat`, { headers: { 'X-Token': 'ok' } });
    const reply = nextMessage(ws);
    ws.send('x');
    expect(await reply).toBe('x');
    await wsClose(ws);
  });

  test('a client that leaves while verifyClient decides costs nothing', async () => {
    let release: (() => void) | undefined;
    const { app } = echoApp({
      verifyClient: (info, cb) => {
        if (info.req.headers['x-slow'] === undefined) return cb(true);
        release = () => cb(true);
      },
    });
    s = await start(app);
    const conn = await rawConnect(s.port);
    conn.socket.write(wsHandshake('/chat', { 'X-Slow': '1' }));
    await until(() => release !== undefined);
    conn.close();
    await delay(20);
    release!();
    await stillServes(s);
  });
});

describe('clients, broadcast and close()', () => {
  test('broadcast reaches three clients of this endpoint only', async () => {
    const app = createApp();
    const room = websocket(() => undefined);
    const other = websocket(() => undefined);
    app.use('/room', room);
    app.use('/other', other);
    s = await start(app);
    const clients = await Promise.all([1, 2, 3].map(() => wsOpen(`${s!.wsUrl}/room`)));
    const outsider = await wsOpen(`${s.wsUrl}/other`);
    await until(() => room.clients.size === 3 && other.clients.size === 1);
    const got = clients.map(({ ws }) => nextMessage(ws));
    let outsiderGot = false;
    outsider.ws.on('message', () => {
      outsiderGot = true;
    });
    expect(room.broadcast('news')).toBe(3);
    expect(await Promise.all(got)).toEqual(['news', 'news', 'news']);
    await delay(20);
    expect(outsiderGot).toBe(false);
    await Promise.all([...clients, outsider].map(({ ws }) => wsClose(ws)));
    await until(() => room.clients.size === 0);
  });

  test('close() ends every client with 1001, then refuses new handshakes with 503', async () => {
    const { app, endpoint } = echoApp();
    s = await start(app);
    const clients = await Promise.all([1, 2].map(() => wsOpen(`${s!.wsUrl}/chat`)));
    await until(() => endpoint.clients.size === 2);
    const codes = Promise.all(clients.map(({ ws }) => closeCode(ws)));
    await endpoint.close();
    expect(await codes).toEqual([1001, 1001]);
    expect(endpoint.clients.size).toBe(0);
    const raw = await rawRequest(s.port, wsHandshake('/chat'));
    expect(raw.status).toBe(503);
    expect(raw.headers['connection']).toEqual(['close']);
    expect(raw.closed).toBe(true);
    // close() is idempotent, and the rest of the app still serves.
    await endpoint.close();
    const again = await rawRequest(s.port, wsHandshake('/nowhere'));
    expect(again.status).toBe(404);
  });

  test('with clientTracking: false there is nothing to list; close() resolves', async () => {
    const { app, endpoint } = echoApp({ clientTracking: false });
    s = await start(app);
    const { ws } = await wsOpen(`${s.wsUrl}/chat`);
    expect(endpoint.clients.size).toBe(0);
    expect(endpoint.broadcast('x')).toBe(0);
    await endpoint.close();
    await wsClose(ws);
  });
});

describe('errors after the switch', () => {
  test('a throwing connection callback: 1011 to the client, onError gets it, the next works', async () => {
    const errors: Array<[unknown, boolean, string | undefined]> = [];
    const app = createApp();
    const options: WebSocketOptions = {
      onError: (err, ws, req) => errors.push([err, ws instanceof WebSocket, req.url]),
    };
    app.use(
      '/bad',
      websocket(() => {
        throw new Error('sync boom');
      }, options),
    );
    app.use(
      '/worse',
      websocket(async () => {
        await delay(1);
        throw new Error('async boom');
      }, options),
    );
    app.use('/chat', websocket(echo));
    s = await start(app);
    for (const path of ['/bad', '/worse']) {
      const ws = new WebSocket(`${s.wsUrl}${path}`);
      expect(await closeCode(ws)).toBe(1011);
    }
    expect(errors.map(([e, isWs, url]) => [(e as Error).message, isWs, url])).toEqual([
      ['sync boom', true, '/'],
      ['async boom', true, '/'],
    ]);
    await stillServes(s);
  });

  test('by default the error is emitted on endpoint.server when it has listeners', async () => {
    const app = createApp();
    const endpoint = websocket(() => {
      throw new Error('seen');
    });
    const seen: unknown[] = [];
    endpoint.server.on('error', (err) => seen.push(err));
    app.use('/bad', endpoint);
    s = await start(app);
    const ws = new WebSocket(`${s.wsUrl}/bad`);
    expect(await closeCode(ws)).toBe(1011);
    expect((seen[0] as Error).message).toBe('seen');
  });

  test('without listeners it becomes a process warning, not a crash', async () => {
    const app = createApp();
    app.use(
      '/bad',
      websocket(() => {
        throw new Error('warned');
      }),
    );
    s = await start(app);
    // Jest's sandboxed `process` does not relay 'warning' events: watch the call instead.
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const ws = new WebSocket(`${s.wsUrl}/bad`);
      expect(await closeCode(ws)).toBe(1011);
      expect(warn).toHaveBeenCalledTimes(1);
      const [warning, type] = warn.mock.calls[0]!;
      expect((warning as Error).message).toBe('warned');
      expect(type).toBe('WebSocketConnectionError');
    } finally {
      warn.mockRestore();
    }
  });

  test('protocol errors and resets from a client do not crash; the next connection works', async () => {
    const { app } = echoApp();
    s = await start(app);
    await unmaskedFrameCloses1002(s.port);
    // A reset mid-connection.
    const reset = await rawConnect(s.port);
    reset.socket.write(wsHandshake('/chat'));
    await reset.waitFor('\r\n\r\n');
    reset.socket.resetAndDestroy();
    // A message beyond maxPayload is 1009.
    const small = echoApp({ maxPayload: 16 });
    const s2 = await start(small.app);
    try {
      const { ws } = await wsOpen(`${s2.wsUrl}/chat`);
      const code = closeCode(ws);
      ws.send('x'.repeat(64));
      expect(await code).toBe(1009);
      await stillServes(s2);
    } finally {
      await s2.close();
    }
    await stillServes(s);
  });
});

describe('what an open connection carries', () => {
  type Profile = Record<string, number>;
  const profile = (e: { listenerCount(name: string): number }, names: string[]): Profile =>
    Object.fromEntries(names.map((n) => [n, e.listenerCount(n)]));
  const WS_EVENTS = ['close', 'error', 'message', 'ping', 'pong', 'open'];
  const SOCKET_EVENTS = ['close', 'error', 'end', 'data', 'drain', 'timeout', 'finish'];
  const socketOf = (ws: WebSocket) => (ws as unknown as { _socket: import('node:net').Socket })._socket;

  test('the listeners a plain ws server leaves, no more: none of ours on the WebSocket or its socket', async () => {
    // A plain ws server on an HTTP server that tracks its sockets as the test server does.
    const server = http.createServer();
    server.on('connection', (socket) => socket.once('close', () => undefined));
    const plain = new WebSocket.Server({ server });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const plainSeen = new Promise<[Profile, Profile]>((resolve) =>
      plain.once('connection', (ws) => resolve([profile(ws, WS_EVENTS), profile(socketOf(ws), SOCKET_EVENTS)])),
    );
    const { ws: client } = await wsOpen(`ws://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}/`);
    const expected = await plainSeen;
    await wsClose(client);
    await new Promise((r) => plain.close(r));
    await new Promise((r) => server.close(r));

    const app = createApp();
    const oursSeen = new Promise<[Profile, Profile]>((resolve) => {
      app.use('/chat', websocket((ws) => resolve([profile(ws, WS_EVENTS), profile(socketOf(ws), SOCKET_EVENTS)])));
    });
    s = await start(app);
    const { ws } = await wsOpen(`${s.wsUrl}/chat`);
    expect(await oursSeen).toEqual(expected);
    await wsClose(ws);
  });

  test('an error nobody listens to closes the connection without crashing; a listener of the app still hears it', async () => {
    const errors: string[] = [];
    const monitored: string[] = [];
    const app = createApp();
    let first = true;
    app.use(
      '/chat',
      websocket((ws) => {
        // The first connection has no 'error' listener at all (an errorMonitor one still hears
        // of the error, as Node's emitters do); the second has the app's.
        if (!first) ws.on('error', (err: Error) => errors.push(err.message));
        else ws.on(errorMonitor, (err: Error) => monitored.push(err.message));
        first = false;
      }),
    );
    s = await start(app);
    for (const listened of [false, true]) {
      await unmaskedFrameCloses1002(s.port);
      expect(errors.length).toBe(listened ? 1 : 0);
    }
    expect(errors[0]).toMatch(/MASK must be set/);
    expect(monitored).toEqual([errors[0]]);
    // Still serving.
    const { ws } = await wsOpen(`${s.wsUrl}/chat`);
    await wsClose(ws);
  });

  test('the WebSocket option: connections are of that class, and still record how they closed', async () => {
    class Tagged extends WebSocket {
      tagged = true;
    }
    const app = createApp();
    const seen: Array<{ tagged: boolean; record: IncomingMessage['webSocketClose'] }> = [];
    app.use(
      '/chat',
      websocket(
        (ws, req) => {
          ws.on('close', () => seen.push({ tagged: ws instanceof Tagged && (ws as Tagged).tagged, record: { ...req.webSocketClose } }));
        },
        { WebSocket: Tagged },
      ),
    );
    s = await start(app);
    const { ws } = await wsOpen(`${s.wsUrl}/chat`);
    ws.close(4000, 'bye');
    await until(() => seen.length === 1);
    expect(seen[0]).toEqual({ tagged: true, record: { code: 4000, reason: 'bye' } });
  });
});

describe('options are checked when the factory is called', () => {
  const bad: Array<[string, () => unknown, RegExp]> = [
    ['onConnection', () => websocket(undefined as never), /@upgradeware\/websocket: onConnection must be a function/],
    ['options', () => websocket(echo, null as never), /options must be an object/],
    ['server', () => websocket(echo, { server: {} } as never), /option server is not supported/],
    ['port', () => websocket(echo, { port: 8080 } as never), /option port is not supported/],
    ['path', () => websocket(echo, { path: '/x' } as never), /option path is not supported/],
    ['noServer', () => websocket(echo, { noServer: false } as never), /option noServer must be true/],
    ['unknown', () => websocket(echo, { origin: ['https://a.example'] } as never), /unknown option origin/],
    ['maxPayload', () => websocket(echo, { maxPayload: -1 }), /option maxPayload must be a number >= 0/],
    ['clientTracking', () => websocket(echo, { clientTracking: 'yes' } as never), /option clientTracking must be a boolean/],
    ['perMessageDeflate', () => websocket(echo, { perMessageDeflate: 'on' } as never), /option perMessageDeflate must be a boolean or an object/],
    ['handleProtocols', () => websocket(echo, { handleProtocols: 'chat' } as never), /option handleProtocols must be a function/],
    ['verifyClient', () => websocket(echo, { verifyClient: true } as never), /option verifyClient must be a function/],
    ['onError', () => websocket(echo, { onError: 1 } as never), /option onError must be a function/],
    ['origins type', () => websocket(echo, { origins: 'https://a.example' } as never), /option origins must be an array of origins or a function/],
    ['origins entry', () => websocket(echo, { origins: ['a.example'] }), /option origins must list origins like/],
    ['origins path', () => websocket(echo, { origins: ['https://a.example/chat'] }), /option origins must list origins like/],
  ];
  test.each(bad)('%s', (_name, make, message) => {
    expect(make).toThrow(TypeError);
    // Every message names the package first, then the option.
    expect(make).toThrow(/^@upgradeware\/websocket: /);
    expect(make).toThrow(message);
  });

  test('the middleware is named websocket (the dispatcher DEBUG trace shows it)', () => {
    expect(websocket(echo).name).toBe('websocket');
  });

  test('good options make an upgrade-aware middleware', () => {
    const endpoint = websocket(echo, { noServer: true, maxPayload: 1024, perMessageDeflate: { threshold: 0 }, origins: ['https://a.example/'] });
    expect(endpoint.supportsUpgrade).toBe(true);
    expect(endpoint.server.options.maxPayload).toBe(1024);
    expect(endpoint.clients.size).toBe(0);
  });
});

describe('req.webSocketClose and the logger close line', () => {
  test('the close code of each ending is on req and in the logger line (1000, 1006, 1001)', async () => {
    const { logger } = await import('@upgradeware/logger');
    const lines: string[] = [];
    const seen: Array<IncomingMessage['webSocketClose']> = [];
    const app = createApp();
    logger.token('ws-close-reason', (req) => req.webSocketClose?.reason);
    app.use(
      logger(':url :status', {
        stream: { write: (l: string) => lines.push(l.trimEnd()) },
        closeFormat: ':url closed :close-code ":ws-close-reason" after :connection-time ms',
      }),
    );
    const endpoint = websocket(
      (ws, req) => {
        ws.on('close', () => seen.push(req.webSocketClose));
        ws.on('message', (data) => ws.send(String(data)));
      },
      { maxPayload: 32 },
    );
    app.use('/chat', endpoint);
    s = await start(app);
    // A normal close with a hostile reason: recorded as sent, logged escaped on one line.
    const a = await wsOpen(`${s.wsUrl}/chat?n=1`);
    const closedA = closeCode(a.ws);
    a.ws.close(1000, 'bye\n"x"');
    expect(await closedA).toBe(1000);
    // A message above maxPayload: ws fails the connection with 1009 and stops reading, so the
    // server never reads the client's answer: ws reports 1006 there, as its 'close' event does.
    const b = await wsOpen(`${s.wsUrl}/chat?n=2`);
    const closedB = closeCode(b.ws);
    b.ws.send('x'.repeat(64));
    expect(await closedB).toBe(1009);
    // A reset: no close frame, 1006.
    const c = await rawConnect(s.port);
    c.socket.write(wsHandshake('/chat?n=3'));
    await c.waitFor('\r\n\r\n');
    await until(() => endpoint.clients.size === 1);
    c.socket.resetAndDestroy();
    await until(() => endpoint.clients.size === 0);
    // close(): 1001.
    const d = await wsOpen(`${s.wsUrl}/chat?n=4`);
    const closedD = closeCode(d.ws);
    await endpoint.close();
    expect(await closedD).toBe(1001);

    await until(() => lines.length === 8);
    expect(seen.map((x) => x?.code)).toEqual([1000, 1006, 1006, 1001]);
    expect(seen[0]!.reason).toBe('bye\n"x"');
    const closes = lines.filter((l) => l.includes(' closed '));
    expect(closes.map((l) => l.replace(/after \d+\.\d{3} ms$/, 'after N ms'))).toEqual([
      '/chat?n=1 closed 1000 "bye\\n\\"x\\"" after N ms',
      '/chat?n=2 closed 1006 "-" after N ms',
      '/chat?n=3 closed 1006 "-" after N ms',
      '/chat?n=4 closed 1001 "Going Away" after N ms',
    ]);
    expect(lines.filter((l) => !l.includes(' closed '))).toEqual(['/chat?n=1 101', '/chat?n=2 101', '/chat?n=3 101', '/chat?n=4 101']);
  });

  test('the record is on req from the switch on: kept alone (without req) it gets the code when the connection closes', async () => {
    const kept: Array<{ atFinish: IncomingMessage['webSocketClose'] }> = [];
    const app = createApp();
    // What a logger keeps instead of the request: the small record, taken at the 101.
    app.use(
      supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: () => void) => {
        const entry = { atFinish: undefined as IncomingMessage['webSocketClose'] };
        res.once('finish', () => {
          entry.atFinish = req.webSocketClose;
          kept.push(entry);
        });
        next();
      }),
    );
    const endpoint = websocket((ws, req) => {
      // In the connection callback the record is there and still empty.
      ws.send(JSON.stringify(req.webSocketClose));
    });
    app.use('/chat', endpoint);
    s = await start(app);
    const { ws } = await wsOpen(`${s.wsUrl}/chat`);
    expect(await nextMessage(ws)).toBe('{}');
    await until(() => kept.length === 1);
    const record = kept[0]!.atFinish!;
    // A plain object, as `{}` is (only smaller while the connection is open).
    expect([Object.getPrototypeOf(record) === Object.prototype, record.constructor === Object, Object.keys(record)]).toEqual([true, true, []]);
    expect(record).toStrictEqual({});
    const closed = closeCode(ws);
    ws.close(4000, 'done');
    expect(await closed).toBe(4000);
    await until(() => record.code !== undefined);
    expect(record).toStrictEqual({ code: 4000, reason: 'done' });
    expect(JSON.stringify(record)).toBe('{"code":4000,"reason":"done"}');
    // A refused handshake gets no record.
    const refused = await rawRequest(s.port, wsHandshake('/chat', { 'Sec-WebSocket-Version': '99' }));
    expect(refused.status).toBe(426);
    await until(() => kept.length === 2);
    expect(kept[1]!.atFinish).toBeUndefined();
  });
});
