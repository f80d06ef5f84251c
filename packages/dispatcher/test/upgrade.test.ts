/** Upgrades through the stack: DESIGN.md rules 1–7, on the wire. */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import onHeaders from 'on-headers';
import { WebSocketServer } from 'ws';
import { createApp } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade, type UpgradeResponse } from '@upgradeware/upgrade-response';
import {
  start,
  rawRequest,
  rawConnect,
  wsHandshake,
  upgradeRequest,
  wsOpen,
  wsClose,
  nextMessage,
  request,
  until,
  delay,
  type TestServer,
} from '../../../test-support';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const accept = (key: string) => createHash('sha1').update(key + GUID).digest('base64');

/** An echo protocol: after the switch, every byte comes back. */
const echo = supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: (e?: unknown) => void) => {
  if (!isUpgradeResponse(res)) return next();
  res.switchProtocols((socket, head) => {
    socket.on('error', () => undefined);
    socket.write(head);
    socket.pipe(socket);
  });
});

describe('upgrades through one stack', () => {
  let server: TestServer;
  const seen: string[] = [];
  const events: string[] = [];
  /** Errors that reached the end of the stack (onError: not printed on the test run's stderr). */
  const reported: unknown[] = [];

  beforeAll(async () => {
    const app = createApp({ upgradeProtocols: ['websocket', 'echo'], onError: (err) => void reported.push(err) });
    // Not opted in: passed over on upgrades, run on ordinary requests.
    app.use((req, _res, next) => {
      seen.push(`plain ${req.url}`);
      next();
    });
    app.use(
      supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: () => void) => {
        seen.push(`aware ${req.url}`);
        res.setHeader('X-Stack', 'yes');
        res.setHeader('Set-Cookie', ['a=1; Path=/', 'b=2; Path=/']);
        if (req.url?.startsWith('/hooks')) {
          onHeaders(res, () => {
            events.push(`headers ${res.statusCode}`);
            res.setHeader('X-From-Hook', 'late');
          });
          res.on('finish', () => events.push(`finish ${res.statusCode}`));
          res.on('close', () => events.push('close'));
        }
        next();
      }),
    );
    app.use(
      '/deny',
      supportsUpgrade((_req: IncomingMessage, res: ServerResponse) => {
        res.statusCode = 401;
        res.setHeader('WWW-Authenticate', 'Basic realm="test"');
        res.end('Unauthorized, really');
      }),
    );
    app.use(
      '/slow',
      supportsUpgrade((_req: IncomingMessage, _res: ServerResponse, next: () => void) => {
        setTimeout(next, 60);
      }),
    );
    app.use('/slow', echo);
    app.use('/hooks', echo);
    app.use('/echo', echo);
    app.use(
      '/boom',
      supportsUpgrade(() => {
        throw new Error('kaboom');
      }),
    );
    app.use(
      '/teapot',
      supportsUpgrade((_req: IncomingMessage, _res: ServerResponse, next: (e?: unknown) => void) => {
        next(Object.assign(new Error('short and stout'), { status: 418 }));
      }),
    );
    app.use(
      '/recover',
      supportsUpgrade((_req: IncomingMessage, _res: ServerResponse, next: (e?: unknown) => void) => {
        next(new Error('recoverable'));
      }),
    );
    // Error layers: only opted-in ones run on upgrades.
    app.use((err: unknown, _req: IncomingMessage, res: ServerResponse, _next: (e?: unknown) => void) => {
      res.statusCode = 599;
      res.end('plain error layer ran: ' + String(err));
    });
    app.use(
      supportsUpgrade((err: unknown, req: IncomingMessage, res: ServerResponse, next: (e?: unknown) => void) => {
        if (req.url !== '/recover') return next(err);
        res.statusCode = 409;
        res.end('recovered: ' + (err as Error).message);
      }),
    );
    // A mounted sub-app with its own WebSocket endpoint on ws (externalSwitch path).
    const wss = new WebSocketServer({ noServer: true });
    wss.on('connection', (ws, req) => {
      ws.on('message', (m) => ws.send(`${req.url}|${String(m)}`));
    });
    let current: UpgradeResponse | null = null;
    wss.on('headers', (lines) => {
      lines.push(...current!.externalSwitch());
    });
    const sub = createApp();
    sub.use(
      '/room',
      supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: () => void) => {
        if (!isUpgradeResponse(res)) return next();
        seen.push(`sub ${req.url} ${req.originalUrl}`);
        current = res;
        wss.handleUpgrade(req, res.socket!, res.upgradeHead, (ws) => wss.emit('connection', ws, req));
        current = null;
      }),
    );
    app.use('/sub', sub);
    app.use('/page', (_req: IncomingMessage, res: ServerResponse) => {
      res.end('an ordinary page');
    });
    app.use('/body', (req: IncomingMessage, res: ServerResponse) => {
      let body = '';
      req.setEncoding('latin1');
      req.on('data', (chunk: string) => (body += chunk));
      req.on('end', () => res.end(`body=${JSON.stringify(body)} upgrade=${req.headers.upgrade}`));
    });
    server = await start(app);
  });
  afterAll(() => server.close());
  beforeEach(() => {
    seen.length = 0;
    events.length = 0;
  });

  test('layers that did not opt in are passed over on upgrades and run on requests', async () => {
    const res = await rawRequest(server.port, upgradeRequest('/deny', 'echo'));
    expect(res.status).toBe(401);
    expect(seen).toEqual(['aware /deny']);
    seen.length = 0;
    await request(server.url + '/deny');
    expect(seen).toEqual(['plain /deny', 'aware /deny']);
  });

  test('a refusal is a well-formed HTTP/1.1 response with Connection: close, then the socket closes', async () => {
    const res = await rawRequest(server.port, wsHandshake('/deny'));
    expect(res.raw.startsWith('HTTP/1.1 401 Unauthorized\r\n')).toBe(true);
    expect(res.headers['connection']).toEqual(['close']);
    expect(res.headers['www-authenticate']).toEqual(['Basic realm="test"']);
    expect(res.headers['x-stack']).toEqual(['yes']);
    expect(res.headers['content-length']).toEqual([String('Unauthorized, really'.length)]);
    expect(res.body).toBe('Unauthorized, really');
    expect(res.closed).toBe(true);
  });

  test('a switch writes 101 with every header set earlier; on-headers and finish fire once, then close', async () => {
    const conn = await rawConnect(server.port);
    conn.socket.write(upgradeRequest('/hooks', 'echo'));
    const head = (await conn.waitFor('\r\n\r\n')).toString('latin1');
    expect(head.startsWith('HTTP/1.1 101 Switching Protocols\r\n')).toBe(true);
    expect(head).toContain('\r\nX-Stack: yes\r\n');
    expect(head).toContain('\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; Path=/\r\n');
    expect(head).toContain('\r\nX-From-Hook: late\r\n');
    expect(head).toContain('\r\nUpgrade: echo\r\n');
    expect(head).toContain('\r\nConnection: Upgrade\r\n');
    expect(head).not.toMatch(/Content-Length|Transfer-Encoding|keep-alive/i);
    expect(head.match(/X-Stack/g)).toHaveLength(1);
    await until(() => events.includes('close'));
    expect(events).toEqual(['headers 101', 'finish 101', 'close']);
    conn.socket.write('ping');
    await conn.waitFor('ping');
    conn.close();
  });

  test('head bytes and bytes sent while an async layer waits arrive intact and in order', async () => {
    const conn = await rawConnect(server.port);
    const tail = Buffer.from([0, 1, 2, 255, 254, 13, 10, 13, 10]);
    conn.socket.write(Buffer.concat([Buffer.from(upgradeRequest('/slow', 'echo')), Buffer.from('HEAD-BYTES|'), tail]));
    await delay(10); // the async layer is still waiting
    conn.socket.write('|DURING-WAIT|');
    await delay(10);
    conn.socket.write(Buffer.alloc(64 * 1024, 0x61)); // more than one chunk, still waiting
    const expected = Buffer.concat([Buffer.from('HEAD-BYTES|'), tail, Buffer.from('|DURING-WAIT|'), Buffer.alloc(64 * 1024, 0x61)]);
    const all = await conn.waitFor(Buffer.concat([Buffer.from('|DURING-WAIT|'), Buffer.alloc(64 * 1024, 0x61)]), 5000);
    const body = all.subarray(all.indexOf('\r\n\r\n') + 4);
    expect(body.equals(expected)).toBe(true);
    conn.close();
  });

  test('an upgrade no layer answers gets 404, and the next request is served', async () => {
    const res = await rawRequest(server.port, wsHandshake('/nowhere'));
    expect(res.status).toBe(404);
    expect(res.body).toContain('Cannot GET /nowhere');
    expect(res.headers['connection']).toEqual(['close']);
    expect(res.closed).toBe(true);
    expect((await request(server.url + '/page')).body).toBe('an ordinary page');
  });

  test('a thrown error gives 500, err.status is used, no plain error layer runs', async () => {
    const boom = await rawRequest(server.port, wsHandshake('/boom'));
    expect(boom.status).toBe(500);
    expect(boom.body).toContain('kaboom');
    expect(boom.body).not.toContain('plain error layer');
    expect(boom.closed).toBe(true);
    const teapot = await rawRequest(server.port, wsHandshake('/teapot'));
    expect(teapot.status).toBe(418);
    expect(teapot.headers['connection']).toEqual(['close']);
  });

  test('no stack trace in production', async () => {
    const before = process.env.NODE_ENV;
    process.env.NODE_ENV = 'production';
    try {
      const count = reported.length;
      const res = await rawRequest(server.port, wsHandshake('/boom'));
      expect(res.status).toBe(500);
      expect(res.body).toContain('<pre>Internal Server Error</pre>');
      expect(res.body).not.toContain('kaboom');
      expect(reported.slice(count).map((e) => (e as Error).message)).toEqual(['kaboom']);
    } finally {
      process.env.NODE_ENV = before;
    }
  });

  test('an opted-in error layer answers an upgrade error', async () => {
    const res = await rawRequest(server.port, wsHandshake('/recover'));
    expect(res.status).toBe(409);
    expect(res.body).toBe('recovered: recoverable');
  });

  test('a mounted sub-app handles the upgrade with its url stripped; ws sees the 101 with our headers', async () => {
    const { ws, response } = await wsOpen(server.wsUrl + '/sub/room/42?x=1');
    expect(response.statusCode).toBe(101);
    expect(response.headers['x-stack']).toBe('yes');
    expect(response.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/']);
    expect(seen).toEqual(['aware /sub/room/42?x=1', 'sub /42?x=1 /sub/room/42?x=1']);
    ws.send('hi');
    expect(await nextMessage(ws)).toBe('/42?x=1|hi');
    await wsClose(ws);
  });

  test('the 101 written by ws carries the headers exactly once (raw bytes)', async () => {
    const key = 'AQIDBAUGBwgJCgsMDQ4PEA==';
    const res = await rawRequest(server.port, wsHandshake('/sub/room/1', { 'Sec-WebSocket-Key': key }), { untilHead: true });
    expect(res.status).toBe(101);
    expect(res.headers['sec-websocket-accept']).toEqual([accept(key)]);
    expect(res.headers['x-stack']).toEqual(['yes']);
    expect(res.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/']);
    expect(res.headers['upgrade']).toEqual(['websocket']);
    expect(res.headers['connection']).toEqual(['Upgrade']);
  });

  test('an upgrade to a protocol the app does not serve (h2c) is an ordinary request, on a connection kept as the client asked', async () => {
    // As Node serves it without an 'upgrade' listener: HTTP/1.1 keeps the connection alive…
    const kept = await rawRequest(server.port, upgradeRequest('/page', 'h2c', { 'HTTP2-Settings': 'AAMAAABkAARAAAAAAAIAAAAA' }), {
      untilHead: true,
    });
    expect(kept.status).toBe(200);
    expect(kept.headers['connection']).toEqual(['keep-alive']);
    expect(seen).toEqual(['plain /page', 'aware /page']);
    // … and a client's own `close` token is kept.
    const res = await rawRequest(server.port, upgradeRequest('/page', 'h2c', { Connection: 'Upgrade, close' }));
    expect(res.status).toBe(200);
    expect(res.body).toBe('an ordinary page');
    expect(res.headers['connection']).toEqual(['close']);
    expect(res.closed).toBe(true);
  });

  test('an h2c POST is served as an ordinary request with its whole body, even bytes sent later', async () => {
    const conn = await rawConnect(server.port);
    conn.socket.write(
      'POST /body HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings, close\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 11\r\n\r\nhello',
    );
    await delay(30);
    conn.socket.write(' world');
    const all = (await conn.waitFor('world"')).toString('latin1');
    expect(all).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(all).toContain('\r\nConnection: close\r\n');
    expect(all.endsWith('body="hello world" upgrade=h2c')).toBe(true);
    expect(await conn.waitClose()).toBe(true);
    expect(seen).toEqual(['plain /body', 'aware /body']);
  });

  test('bad input: a garbage Upgrade header and a POST upgrade get clear answers; the server keeps serving', async () => {
    const garbage = await rawRequest(server.port, upgradeRequest('/echo', '\x01\x02'));
    expect(garbage.status).toBe(400); // Node's parser refuses the control characters
    const post = await rawRequest(
      server.port,
      'POST /nowhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 5\r\n\r\nhello',
    );
    expect(post.status).toBe(404);
    expect(post.closed).toBe(true);
    expect((await request(server.url + '/page')).status).toBe(200);
  });
});

describe("what the dispatcher reads once: a layer's opt-in and arity (when added), the usual Upgrade header", () => {
  let server: TestServer | undefined;
  afterEach(() => server?.close());

  test('a mark put on after app.use() counts: the layer runs for the next upgrade', async () => {
    const app = createApp({ upgradeProtocols: ['echo'] });
    const lateMarked = (_req: IncomingMessage, res: ServerResponse) => {
      res.statusCode = 403;
      res.end('late');
    };
    app.use(lateMarked);
    server = await start(app);
    expect((await rawRequest(server.port, upgradeRequest('/', 'echo'))).status).toBe(404);
    supportsUpgrade(lateMarked);
    const after = await rawRequest(server.port, upgradeRequest('/', 'echo'));
    expect(after.status).toBe(403);
    expect(after.body).toBe('late');
  });

  test('upgradeProtocols decides for websocket too: an app that serves only echo gets a WebSocket handshake as an ordinary request', async () => {
    const app = createApp({ upgradeProtocols: ['echo'] });
    app.use((req: IncomingMessage, res: ServerResponse) => res.end(`ordinary ${isUpgradeResponse(res)} ${req.headers.upgrade}`));
    server = await start(app);
    for (const protocol of ['websocket', 'WebSocket']) {
      const res = await rawRequest(server.port, upgradeRequest('/', protocol));
      expect(res.status).toBe(200);
      expect(res.body).toBe(`ordinary false ${protocol}`);
    }
  });

  test('a layer pushed onto app.stack by hand is run by its own opt-in and arity', async () => {
    const app = createApp({ upgradeProtocols: ['echo'], onError: () => undefined });
    const ran: string[] = [];
    app.stack.push({
      route: '',
      handle: supportsUpgrade((_req: IncomingMessage, _res: ServerResponse, next: (err?: unknown) => void) => {
        ran.push('fails');
        next(new Error('handmade'));
      }),
    });
    app.stack.push({
      route: '',
      handle: supportsUpgrade((_err: unknown, _req: IncomingMessage, res: ServerResponse, _next: () => void) => {
        ran.push('error layer');
        res.statusCode = 409;
        res.end('handled');
      }),
    });
    server = await start(app);
    const res = await rawRequest(server.port, upgradeRequest('/', 'echo'));
    expect(res.status).toBe(409);
    expect(ran).toEqual(['fails', 'error layer']);
  });
});
