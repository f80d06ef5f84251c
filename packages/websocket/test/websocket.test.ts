import type { IncomingMessage, ServerResponse } from 'node:http';
import morgan from 'morgan';
import responseTime from 'response-time';
import WebSocket from 'ws';
import { createApp } from '@upgradeware/dispatcher';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { websocket } from '@upgradeware/websocket';
import {
  start,
  rawRequest,
  rawConnect,
  parseResponse,
  wsHandshake,
  wsOpen,
  wsClose,
  nextMessage,
  request,
  until,
  WsRefused,
  type TestServer,
} from '../../../test-support';
import { echo, echoApp, maskedFrame, serverFrame } from './helpers';

let s: TestServer | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

/** The server still serves: a fresh echo round trip on /chat. */
async function stillServes(server: TestServer): Promise<void> {
  const { ws } = await wsOpen(`${server.wsUrl}/chat`);
  const reply = nextMessage(ws);
  ws.send('still here');
  expect(await reply).toBe('still here');
  await wsClose(ws);
}

describe('connections', () => {
  test('echo: text and binary, with the 101 accounted for on res', async () => {
    const { app, log } = echoApp();
    s = await start(app);
    const { ws, response } = await wsOpen(`${s.wsUrl}/chat`);
    expect(response.statusCode).toBe(101);
    let reply = nextMessage(ws);
    ws.send('hello');
    expect(await reply).toBe('hello');
    const binary = new Promise<Buffer>((resolve) => ws.once('message', (d) => resolve(d as Buffer)));
    ws.send(Buffer.from([0, 1, 2, 255]));
    expect([...(await binary)]).toEqual([0, 1, 2, 255]);
    reply = nextMessage(ws);
    ws.send('again');
    expect(await reply).toBe('again');
    await wsClose(ws);
    await until(() => log.length === 1 && log[0]!.closed);
    expect(log).toEqual([{ method: 'GET', url: '/chat', status: 101, finishes: 1, closed: true }]);
  });

  test('bytes sent right behind the handshake are not lost', async () => {
    const { app } = echoApp();
    s = await start(app);
    const conn = await rawConnect(s.port);
    try {
      conn.socket.write(Buffer.concat([Buffer.from(wsHandshake('/chat')), maskedFrame('early')]));
      const all = await conn.waitFor(serverFrame('early'));
      expect(all.toString('latin1').startsWith('HTTP/1.1 101 Switching Protocols\r\n')).toBe(true);
    } finally {
      conn.close();
    }
  });

  test('subprotocol: the first offered by default, handleProtocols decides when given', async () => {
    const app = createApp();
    const seen: Array<[string[], string | undefined]> = [];
    app.use('/first', websocket(echo));
    app.use(
      '/picky',
      websocket(echo, {
        handleProtocols: (protocols, req) => {
          seen.push([[...protocols], req.url]);
          return protocols.has('chat.v2') ? 'chat.v2' : false;
        },
      }),
    );
    s = await start(app);
    const a = await wsOpen(`${s.wsUrl}/first`, { protocols: ['one', 'two'] });
    expect(a.ws.protocol).toBe('one');
    expect(a.response.headers['sec-websocket-protocol']).toBe('one');
    const b = await wsOpen(`${s.wsUrl}/picky`, { protocols: ['chat.v1', 'chat.v2'] });
    expect(b.ws.protocol).toBe('chat.v2');
    expect(seen).toEqual([[['chat.v1', 'chat.v2'], '/']]);
    // Nothing acceptable: no Sec-WebSocket-Protocol in the 101, which the ws client refuses.
    const raw = await rawRequest(s.port, wsHandshake('/picky', { 'Sec-WebSocket-Protocol': 'chat.v1' }), { untilHead: true });
    expect(raw.status).toBe(101);
    expect(raw.headers['sec-websocket-protocol']).toBeUndefined();
    await wsClose(a.ws);
    await wsClose(b.ws);
  });

  test('permessage-deflate when enabled', async () => {
    const { app } = echoApp({ perMessageDeflate: true });
    s = await start(app);
    const { ws, response } = await wsOpen(`${s.wsUrl}/chat`);
    expect(response.headers['sec-websocket-extensions']).toMatch(/^permessage-deflate/);
    expect(ws.extensions).toMatch(/permessage-deflate/);
    const big = 'compress me '.repeat(2000);
    const reply = nextMessage(ws);
    ws.send(big);
    expect(await reply).toBe(big);
    await wsClose(ws);
    // And off by default (ws's default): no extension is negotiated.
    const plain = echoApp();
    const s2 = await start(plain.app);
    try {
      const other = await wsOpen(`${s2.wsUrl}/chat`);
      expect(other.response.headers['sec-websocket-extensions']).toBeUndefined();
      await wsClose(other.ws);
    } finally {
      await s2.close();
    }
  });

  test('req seen by earlier middleware (user, query, url) is the req of the connection callback', async () => {
    const app = createApp();
    let earlier: IncomingMessage | undefined;
    app.use(
      supportsUpgrade((req: IncomingMessage & { user?: string }, _res: ServerResponse, next: () => void) => {
        earlier = req;
        req.user = 'ada';
        next();
      }),
    );
    app.use(
      '/room',
      websocket<IncomingMessage & { user?: string }>((ws, req) => {
        ws.send(JSON.stringify({ same: req === earlier, user: req.user, url: req.url, originalUrl: req.originalUrl }));
      }),
    );
    s = await start(app);
    const ws = new WebSocket(`${s.wsUrl}/room?name=lobby`);
    const msg = await nextMessage(ws);
    // As in any mounted middleware, req.url is relative to the mount path; originalUrl is whole.
    expect(JSON.parse(msg)).toEqual({ same: true, user: 'ada', url: '/?name=lobby', originalUrl: '/room?name=lobby' });
    await wsClose(ws);
  });
});

describe('the 101 carries the stack', () => {
  function stackApp(lines: string[]) {
    const app = createApp();
    app.use(supportsUpgrade(morgan(':method :url :status', { stream: { write: (line: string) => void lines.push(line.trim()) } })));
    app.use(supportsUpgrade(responseTime()));
    app.use(
      supportsUpgrade((_req: IncomingMessage, res: ServerResponse, next: () => void) => {
        res.setHeader('Set-Cookie', ['sid=abc; Path=/; HttpOnly', 'theme=dark']);
        res.setHeader('X-Custom', 'yes');
        // ws owns these: its own values must win, and appear once.
        res.setHeader('Sec-WebSocket-Accept', 'bogus');
        res.setHeader('Upgrade', 'bogus');
        next();
      }),
    );
    app.use('/chat', websocket(echo));
    return app;
  }

  test('a ws client sees Set-Cookie, X-Custom and X-Response-Time; morgan logs 101', async () => {
    const lines: string[] = [];
    s = await start(stackApp(lines));
    const { ws, response } = await wsOpen(`${s.wsUrl}/chat`);
    expect(response.statusCode).toBe(101);
    expect(response.headers['set-cookie']).toEqual(['sid=abc; Path=/; HttpOnly', 'theme=dark']);
    expect(response.headers['x-custom']).toBe('yes');
    expect(response.headers['x-response-time']).toMatch(/^\d+\.\d{3}ms$/);
    await until(() => lines.length === 1);
    expect(lines).toEqual(['GET /chat 101']);
    await wsClose(ws);
  });

  test('raw bytes: every header exactly once, ws owns the handshake headers', async () => {
    const lines: string[] = [];
    s = await start(stackApp(lines));
    const raw = await rawRequest(s.port, wsHandshake('/chat'), { untilHead: true });
    const head = raw.raw.slice(0, raw.raw.indexOf('\r\n\r\n'));
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 101 Switching Protocols');
    const names = head.split('\r\n').slice(1).map((l) => l.slice(0, l.indexOf(':')).toLowerCase());
    const count = (n: string) => names.filter((x) => x === n).length;
    expect(count('upgrade')).toBe(1);
    expect(count('connection')).toBe(1);
    expect(count('sec-websocket-accept')).toBe(1);
    expect(count('set-cookie')).toBe(2);
    expect(count('x-custom')).toBe(1);
    expect(count('x-response-time')).toBe(1);
    expect(count('content-length') + count('transfer-encoding')).toBe(0);
    expect(raw.headers['upgrade']).toEqual(['websocket']);
    expect(raw.headers['connection']).toEqual(['Upgrade']);
    // RFC 6455 example key: the accept value is fixed.
    expect(raw.headers['sec-websocket-accept']).toEqual(['s3pPLMBiTxaQ9kYGzzhZRbK+xOo=']);
    await until(() => lines.length === 1);
    expect(lines).toEqual(['GET /chat 101']);
  });

  test('an on-headers listener that throws before the 101 is an ordinary 500', async () => {
    const app = createApp();
    app.use(
      supportsUpgrade((_req: IncomingMessage, res: ServerResponse, next: () => void) => {
        if (_req.headers['x-break'] !== undefined) {
          const writeHead = res.writeHead;
          res.writeHead = function (this: ServerResponse, ...args: Parameters<ServerResponse['writeHead']>) {
            res.writeHead = writeHead;
            throw new Error('hook failed');
          } as ServerResponse['writeHead'];
        }
        next();
      }),
    );
    app.use('/chat', websocket(echo));
    s = await start(app);
    const raw = await rawRequest(s.port, wsHandshake('/chat', { 'X-Break': '1' }));
    expect(raw.status).toBe(500);
    expect(raw.headers['connection']).toEqual(['close']);
    expect(raw.closed).toBe(true);
    await stillServes(s);
  });
});

describe('routing', () => {
  test('an ordinary GET and sub-paths go to the next layer', async () => {
    const { app } = echoApp();
    app.use('/chat', (_req: IncomingMessage, res: ServerResponse) => {
      res.end('the chat page');
    });
    s = await start(app);
    const page = await request(`${s.url}/chat`);
    expect(page).toMatchObject({ status: 200, body: 'the chat page' });
    // An upgrade to a sub-path is not this endpoint's: nobody else answers it, so 404.
    const sub = await rawRequest(s.port, wsHandshake('/chat/other'));
    expect(sub.status).toBe(404);
    expect(sub.headers['connection']).toEqual(['close']);
    expect(sub.closed).toBe(true);
    // The mount path with a query string or a trailing slash is the endpoint.
    for (const path of ['/chat?room=1', '/chat/', '/CHAT']) {
      const ok = await rawRequest(s.port, wsHandshake(path), { untilHead: true });
      expect(ok.status).toBe(101);
    }
    await stillServes(s);
  });

  test('an auth layer in front answers a real 401 and lets the right client through', async () => {
    const app = createApp();
    app.use(
      '/chat',
      supportsUpgrade((req: IncomingMessage & { user?: string }, res: ServerResponse, next: () => void) => {
        if (req.headers.authorization !== 'Bearer good') {
          res.statusCode = 401;
          res.setHeader('WWW-Authenticate', 'Bearer');
          res.end('login first');
          return;
        }
        req.user = 'ada';
        next();
      }),
    );
    app.use(
      '/chat',
      websocket<IncomingMessage & { user?: string }>((ws, req) => ws.send(`hi ${req.user}`)),
    );
    s = await start(app);
    await expect(wsOpen(`${s.wsUrl}/chat`)).rejects.toMatchObject({ status: 401, body: 'login first' });
    const ws = new WebSocket(`${s.wsUrl}/chat`, { headers: { Authorization: 'Bearer good' } });
    const hello = await nextMessage(ws);
    expect(hello).toBe('hi ada');
    await wsClose(ws);
  });
});
