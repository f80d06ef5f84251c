/**
 * Upgrades through the dispatcher: the line of a switch (both ways of writing the 101), of a
 * rejection, of an unanswered upgrade, of an immediate logger, of a client that vanished, and of
 * a hostile handshake.
 */
import type * as http from 'node:http';
import morgan from 'morgan';
import { createApp } from '@upgradeware/dispatcher';
import { supportsUpgrade, type Middleware } from '@upgradeware/upgrade-response';
import { logger, type LoggerOptions } from '@upgradeware/logger';
import { websocket } from '@upgradeware/websocket';
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
  WsRefused,
  type TestServer,
} from '../../../test-support';
import { collector } from './helpers';
import { switchEndpoint, wsEndpoint } from '../../../test-support/endpoints';

const FMT = ':method :url :status :res[content-length] :response-time :upgrade :res[x-seen]';

const open: Array<{ close(): unknown }> = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

async function serve(routes: Array<[string, Middleware]>, format: string = FMT, options: LoggerOptions = {}) {
  const c = collector();
  const app = createApp();
  app.use(logger(format, { stream: c.stream, ...options }));
  app.use(supportsUpgrade((_req: http.IncomingMessage, res: http.ServerResponse, next: () => void) => {
    res.setHeader('X-Seen', 'yes');
    next();
  }));
  for (const [path, fn] of routes) app.use(path, fn);
  app.use('/plain', (_req, res) => res.end('plain'));
  const s: TestServer = await start(app);
  open.push(s);
  return { ...c, s };
}

const deny = supportsUpgrade((_req: http.IncomingMessage, res: http.ServerResponse) => {
  res.statusCode = 401;
  res.setHeader('WWW-Authenticate', 'Basic realm="chat"');
  res.end('Unauthorized');
});

describe('a switch is logged as 101, with the time until the switch', () => {
  test.each([
    ['res.switchProtocols()', switchEndpoint],
    ['ws writes the 101 (res.externalSwitch())', wsEndpoint],
  ])('%s', async (_name, endpoint) => {
    const ep = endpoint();
    open.push(ep);
    const slow = supportsUpgrade(async (_req: http.IncomingMessage, _res: http.ServerResponse, next: () => void) => {
      await delay(40);
      next();
    });
    const { s, lines } = await serve([['/ws', slow], ['/ws', ep.handle]]);
    const { ws, response } = await wsOpen(s.wsUrl + '/ws?room=1');
    expect(response.statusCode).toBe(101);
    expect(response.headers['x-seen']).toBe('yes');
    // Logged at the switch, while the WebSocket is still open.
    await until(() => lines().length === 1);
    const [method, url, status, length, time, upgrade, seen] = lines()[0]!.split(' ');
    expect([method, url, status, length, upgrade, seen]).toEqual(['GET', '/ws?room=1', '101', '-', 'websocket', 'yes']);
    expect(time).toMatch(/^\d+\.\d{3}$/);
    expect(Number(time)).toBeGreaterThanOrEqual(39);
    if (endpoint === wsEndpoint) {
      const reply = nextMessage(ws);
      ws.send('ping');
      expect(await reply).toBe('ping');
    } else {
      const reply = nextMessage(ws);
      ws.send('ping');
      expect(await reply).toBe('hello');
    }
    await wsClose(ws);
    // One line per upgrade: nothing more when the WebSocket ends.
    await delay(20);
    expect(lines()).toHaveLength(1);
  });

  test('dev and combined formats on a 101', async () => {
    const ep = wsEndpoint();
    open.push(ep);
    for (const format of ['dev', 'combined']) {
      const { s, lines } = await serve([['/ws', ep.handle]], format);
      const { ws } = await wsOpen(s.wsUrl + '/ws', { headers: { 'User-Agent': 'ua/1', Referer: 'http://127.0.0.1/chat' } });
      await until(() => lines().length === 1);
      if (format === 'dev') expect(lines()[0]).toMatch(/^\x1b\[0mGET \/ws \x1b\[0m101\x1b\[0m \d+\.\d{3} ms - -\x1b\[0m$/);
      else expect(lines()[0]).toMatch(/^127\.0\.0\.1 - - \[[^\]]+\] "GET \/ws HTTP\/1\.1" 101 - "http:\/\/127\.0\.0\.1\/chat" "ua\/1"$/);
      await wsClose(ws);
    }
  });

  test('skip(req, res) sees the 101', async () => {
    const ep = switchEndpoint();
    open.push(ep);
    const { s, lines } = await serve([['/ws', ep.handle]], ':url :status', { skip: (_req, res) => res.statusCode === 101 });
    const { ws } = await wsOpen(s.wsUrl + '/ws');
    await wsClose(ws);
    expect((await rawRequest(s.port, wsHandshake('/missing'))).status).toBe(404);
    await until(() => lines().length === 1);
    expect(lines()).toEqual(['/missing 404']);
  });
});

describe('an upgrade that does not switch is logged with its real status', () => {
  test('401 from an auth layer, then the server serves on', async () => {
    const { s, lines } = await serve([['/ws', deny]]);
    const r = await rawRequest(s.port, wsHandshake('/ws'));
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toEqual(['Basic realm="chat"']);
    expect(r.body).toBe('Unauthorized');
    expect(r.closed).toBe(true);
    await until(() => lines().length === 1);
    expect(lines()[0]).toMatch(/^GET \/ws 401 - \d+\.\d{3} websocket yes$/);

    await expect(wsOpen(s.wsUrl + '/ws')).rejects.toBeInstanceOf(WsRefused);
    expect((await request(s.url + '/plain')).body).toBe('plain');
    await until(() => lines().length === 3);
    expect(lines()[1]).toMatch(/^GET \/ws 401 - /);
    expect(lines()[2]).toMatch(/^GET \/plain 200 - \d+\.\d{3} - yes$/);
  });

  test('404 for an upgrade nobody answered, 500 for one that failed', async () => {
    const fail = supportsUpgrade(() => {
      throw Object.assign(new Error('kaput'), { status: 500 });
    });
    const { s, lines } = await serve([['/fail', fail]]);
    const missing = await rawRequest(s.port, wsHandshake('/nowhere'));
    expect(missing.status).toBe(404);
    expect(missing.body).toContain('Cannot GET /nowhere');
    const failed = await rawRequest(s.port, wsHandshake('/fail'));
    expect(failed.status).toBe(500);
    await until(() => lines().length === 2);
    expect(lines()[0]).toBe(`GET /nowhere 404 ${missing.headers['content-length']![0]} ${lines()[0]!.split(' ')[4]} websocket yes`);
    expect(lines()[1]).toMatch(/^GET \/fail 500 \d+ \d+\.\d{3} websocket yes$/);
  });

  test('an upgrade to a protocol the app does not serve is an ordinary request; :upgrade names it', async () => {
    const { s, lines } = await serve([]);
    const r = await rawRequest(s.port, upgradeRequest('/plain', 'h2c'));
    expect(r.status).toBe(200);
    expect(r.body).toBe('plain');
    await until(() => lines().length === 1);
    expect(lines()[0]).toMatch(/^GET \/plain 200 - \d+\.\d{3} h2c yes$/);
  });
});

describe('immediate and vanished clients', () => {
  test('immediate logs the upgrade when it arrives, once', async () => {
    const ep = switchEndpoint();
    open.push(ep);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let reached = false;
    const wait = supportsUpgrade(async (_req: http.IncomingMessage, _res: http.ServerResponse, next: () => void) => {
      reached = true;
      await gate;
      next();
    });
    const { s, lines } = await serve([['/ws', wait], ['/ws', ep.handle]], FMT, { immediate: true });
    const opening = wsOpen(s.wsUrl + '/ws');
    await until(() => reached);
    expect(lines()).toEqual(['GET /ws - - - websocket -']);
    release();
    const { ws, response } = await opening;
    expect(response.statusCode).toBe(101);
    await wsClose(ws);
    expect(lines()).toHaveLength(1);
  });

  test('a client that resets mid-chain is logged with status -, and the server serves on', async () => {
    let reached = false;
    const hang = supportsUpgrade((_req: http.IncomingMessage, _res: http.ServerResponse) => {
      reached = true; // never answers: the client gives up first
    });
    const { s, lines } = await serve([['/hang', hang]], ':method :url :status :response-time :total-time :upgrade');
    const conn = await rawConnect(s.port);
    conn.socket.write(wsHandshake('/hang'));
    await until(() => reached);
    conn.socket.resetAndDestroy();
    await until(() => lines().length === 1);
    expect(lines()[0]).toBe('GET /hang - - - websocket');
    const ok = await rawRequest(s.port, wsHandshake('/plain-nothing'));
    expect(ok.status).toBe(404);
  });
});

describe('hostile values cannot forge or colour log lines', () => {
  test('an escaped handshake, on a 101 and on a 401', async () => {
    const ep = switchEndpoint();
    open.push(ep);
    const { s, lines } = await serve([['/ws', ep.handle], ['/deny', deny]], ':status ":url" ":user-agent" ":remote-user" ":req[sec-websocket-protocol]"');
    const user = Buffer.from('eve\n127.0.0.1 - - "GET /admin" 200\r\x1b[31m\u2028:pw', 'utf8').toString('base64');
    const extra = {
      'User-Agent': 'x"\t\\\x9b2J',
      Authorization: `Basic ${user}`,
      'Sec-WebSocket-Protocol': 'chat\x85',
    };
    for (const path of ['/ws?a="b"', '/deny?a="b"']) {
      const conn = await rawConnect(s.port);
      conn.socket.write(Buffer.from(wsHandshake(path, extra), 'latin1'));
      if (path.startsWith('/ws')) {
        await conn.waitFor('\r\n\r\n');
        expect(conn.received().toString('latin1')).toMatch(/^HTTP\/1\.1 101 /);
        conn.close();
      } else {
        expect(await conn.waitClose()).toBe(true);
        expect(conn.received().toString('latin1')).toMatch(/^HTTP\/1\.1 401 /);
      }
    }
    await until(() => lines().length === 2);
    const escaped = '":url" "x\\"\\t\\\\\\u009b2J" "eve\\n127.0.0.1 - - \\"GET /admin\\" 200\\r\\u001b[31m\\u2028" "chat\\u0085"';
    expect(lines()).toEqual([
      '101 ' + escaped.replace(':url', '/ws?a=\\"b\\"'),
      '401 ' + escaped.replace(':url', '/deny?a=\\"b\\"'),
    ]);
    // Exactly two lines were written, each ending in the one newline the logger adds.
    expect(lines().join('')).not.toMatch(/[\n\r\x1b\x85\x9b\u2028]/);
    expect((await request(s.url + '/plain')).status).toBe(200);
  });
});

describe('errors at request time', () => {
  test('with immediate, a throwing format goes to next(err): a 500 for a request and for an upgrade', async () => {
    const errors: unknown[] = [];
    const app = createApp();
    app.use(logger(() => { throw new Error('bad format'); }, { immediate: true, stream: collector().stream }));
    app.use('/plain', (_req, res) => res.end('plain'));
    app.use(supportsUpgrade((err: unknown, _req: http.IncomingMessage, res: http.ServerResponse, _next: () => void) => {
      errors.push(err);
      res.statusCode = 500;
      res.end('logged error');
    }));
    const s = await start(app);
    open.push(s);
    expect(await request(s.url + '/plain')).toMatchObject({ status: 500, body: 'logged error' });
    const r = await rawRequest(s.port, wsHandshake('/plain'));
    expect(r.status).toBe(500);
    expect(r.body).toBe('logged error');
    expect(errors.map((e) => (e as Error).message)).toEqual(['bad format', 'bad format']);
  });

  test('after the response, a throwing skip, format or stream loses the line, not the process', async () => {
    const ep = wsEndpoint();
    open.push(ep);
    const app = createApp();
    const thrower = () => { throw new Error('late'); };
    app.use(logger('tiny', { skip: thrower, stream: collector().stream }));
    app.use(logger(thrower, { stream: collector().stream }));
    app.use(logger('tiny', { stream: { write: thrower } }));
    const c = collector();
    app.use(logger(':method :url :status', { stream: c.stream }));
    app.use('/ws', ep.handle);
    app.use('/plain', (_req, res) => res.end('plain'));
    const s = await start(app);
    open.push(s);
    expect((await request(s.url + '/plain')).body).toBe('plain');
    const { ws } = await wsOpen(s.wsUrl + '/ws');
    await wsClose(ws);
    expect((await rawRequest(s.port, wsHandshake('/nope'))).status).toBe(404);
    await until(() => c.lines().length === 3);
    expect(c.lines()).toEqual(['GET /plain 200', 'GET /ws 101', 'GET /nope 404']);
  });
});

describe('the same lines as morgan marked with supportsUpgrade', () => {
  test('101 (both ways), 401 and 404', async () => {
    const [sw, ex] = [switchEndpoint(), wsEndpoint()];
    open.push(sw, ex);
    const fmt = ':method :url :status :res[content-length] :res[x-seen] :req[upgrade]';
    const [stock, ours] = [collector(), collector()];
    const app = createApp();
    app.use(supportsUpgrade(morgan(fmt, { stream: stock.stream }) as Middleware));
    app.use(logger(fmt, { stream: ours.stream }));
    app.use(supportsUpgrade((_req: http.IncomingMessage, res: http.ServerResponse, next: () => void) => {
      res.setHeader('X-Seen', 'yes');
      next();
    }));
    app.use('/sw', sw.handle);
    app.use('/ex', ex.handle);
    app.use('/deny', deny);
    const s = await start(app);
    open.push(s);
    for (const path of ['/sw', '/ex']) await wsClose((await wsOpen(s.wsUrl + path)).ws);
    expect((await rawRequest(s.port, wsHandshake('/deny'))).status).toBe(401);
    expect((await rawRequest(s.port, wsHandshake('/none'))).status).toBe(404);
    await until(() => stock.lines().length === 4 && ours.lines().length === 4);
    expect(ours.lines()).toEqual(stock.lines());
    expect(ours.lines().map((l) => l.split(' ')[2])).toEqual(['101', '101', '401', '404']);
  });
});

describe('closeFormat: a second line when a switched connection closes', () => {
  const CLOSE = 'closed :method :url :status :connection-time :close-code';

  test.each([
    ['res.switchProtocols()', switchEndpoint],
    ['ws writes the 101 (res.externalSwitch())', wsEndpoint],
  ])('%s: one line at the switch, one at the close, none for a refusal', async (_name, endpoint) => {
    const ep = endpoint();
    open.push(ep);
    const { s, lines } = await serve([['/ws', ep.handle], ['/deny', deny]], ':method :url :status :connection-time', { closeFormat: CLOSE });
    const { ws } = await wsOpen(s.wsUrl + '/ws?room=1');
    await until(() => lines().length === 1);
    expect(lines()[0]).toBe('GET /ws?room=1 101 -');
    await delay(30);
    expect(lines()).toHaveLength(1);
    await wsClose(ws);
    await until(() => lines().length === 2);
    const [word, method, url, status, time, code] = lines()[1]!.split(' ');
    // No close code: these endpoints do not record one (the websocket package does).
    expect([word, method, url, status, code]).toEqual(['closed', 'GET', '/ws?room=1', '101', '-']);
    expect(time).toMatch(/^\d+\.\d{3}$/);
    expect(Number(time)).toBeGreaterThanOrEqual(25);
    // A refused upgrade and an ordinary request have one line only.
    expect((await rawRequest(s.port, wsHandshake('/deny'))).status).toBe(401);
    expect((await request(s.url + '/plain')).status).toBe(200);
    await until(() => lines().length === 4);
    await delay(20);
    expect(lines().slice(2)).toEqual(['GET /deny 401 -', 'GET /plain 200 -']);
  });

  test('a connection reset right after the switch is logged closed; a format function, skip and immediate apply', async () => {
    const ep = switchEndpoint();
    open.push(ep);
    const skipped: number[] = [];
    const { s, lines } = await serve([['/ws', ep.handle]], ':method :url :status', {
      immediate: true,
      skip: (req) => {
        skipped.push(1);
        return req.headers['x-quiet'] !== undefined;
      },
      closeFormat: (tokens, req, res) => `gone ${tokens.url!(req, res)} after ${tokens['connection-time']!(req, res, '0')} ms`,
    });
    const conn = await rawConnect(s.port);
    conn.socket.write(wsHandshake('/ws'));
    await conn.waitFor('\r\n\r\n');
    conn.socket.resetAndDestroy();
    await until(() => lines().length === 2);
    expect(lines()[0]).toBe('GET /ws -');
    expect(lines()[1]).toMatch(/^gone \/ws after \d+ ms$/);
    // skip() decides for both lines.
    const quiet = await rawConnect(s.port);
    quiet.socket.write(wsHandshake('/ws', { 'X-Quiet': '1' }));
    await quiet.waitFor('\r\n\r\n');
    // (A FIN would leave this hand-written endpoint's socket half-open: reset it.)
    quiet.socket.resetAndDestroy();
    await until(() => skipped.length === 4);
    await delay(20);
    expect(lines()).toHaveLength(2);
    expect((await rawRequest(s.port, wsHandshake('/nope'))).status).toBe(404);
  });

  test('a CONNECT answered 204 opens no tunnel: one line, no close line (as :switched says)', async () => {
    const c = collector();
    const app = createApp();
    app.use(logger(':method :url :status :switched', { stream: c.stream, closeFormat: 'closed :method :url' }));
    app.use(
      supportsUpgrade((req: http.IncomingMessage, res: http.ServerResponse, next: () => void) => {
        if (req.method !== 'CONNECT') return next();
        res.statusCode = 204;
        res.end();
      }),
    );
    const s = await start(app);
    open.push(s);
    const res = await rawRequest(s.port, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    expect(res.status).toBe(204);
    expect(res.closed).toBe(true);
    await until(() => c.lines().length === 1);
    await delay(50);
    expect(c.lines()).toEqual(['CONNECT example.com:443 204 -']);
  });

  test('a close format that throws loses its line, not the process', async () => {
    const ep = wsEndpoint();
    open.push(ep);
    const { s, lines } = await serve([['/ws', ep.handle]], ':url :status', {
      closeFormat: () => {
        throw new Error('late');
      },
    });
    await wsClose((await wsOpen(s.wsUrl + '/ws')).ws);
    await wsClose((await wsOpen(s.wsUrl + '/ws')).ws);
    await until(() => lines().length === 2);
    await delay(20);
    expect(lines()).toEqual(['/ws 101', '/ws 101']);
  });

  test('@upgradeware/websocket: the close code recorded at the close; plain values set on req are on the close line', async () => {
    const ep = websocket((ws) => ws.on('message', (m) => ws.send(String(m))));
    open.push({ close: () => ep.close() });
    logger.token('test-user', (req) => (req as http.IncomingMessage & { user?: string }).user);
    const setUser = supportsUpgrade((req: http.IncomingMessage & { user?: string }, _res: http.ServerResponse, next: () => void) => {
      req.user = 'ann';
      next();
    });
    const { s, lines } = await serve([['/ws', setUser], ['/ws', ep]], ':url :status', {
      closeFormat: 'closed :url :status :test-user :close-code :res[x-seen] :req[x-who]',
    });
    const { ws } = await wsOpen(s.wsUrl + '/ws', { headers: { 'X-Who': 'me' } });
    const reply = nextMessage(ws);
    ws.send('hi');
    expect(await reply).toBe('hi');
    ws.close(4001, 'bye');
    await until(() => lines().length === 2);
    expect(lines()).toEqual(['/ws 101', 'closed /ws 101 ann 4001 yes me']);
  });

  test('the close line gets copies: plain values and headers, not objects nor request methods', async () => {
    const ep = switchEndpoint();
    open.push(ep);
    const seen: Array<Record<string, unknown>> = [];
    const decorate = supportsUpgrade((req: http.IncomingMessage & { cart?: object; user?: string }, _res: http.ServerResponse, next: () => void) => {
      req.cart = { big: 'object' };
      req.user = 'bo';
      next();
    });
    const { s, lines } = await serve([['/ws', decorate], ['/ws', ep.handle]], ':url :status', {
      closeFormat: (_tokens, req, res) => {
        const r = req as http.IncomingMessage & { cart?: object; user?: string };
        seen.push({
          cart: r.cart,
          user: r.user,
          method: req.method,
          headerHost: req.headers.host,
          on: typeof (req as unknown as { on?: unknown }).on,
          status: res.statusCode,
          sent: res.headersSent,
          seenHeader: res.getHeader('X-Seen'),
          names: res.getHeaderNames().includes('x-seen'),
          has: res.hasHeader('x-seen'),
        });
        return 'closed';
      },
    });
    const conn = await rawConnect(s.port);
    conn.socket.write(wsHandshake('/ws'));
    await conn.waitFor('\r\n\r\n');
    conn.socket.resetAndDestroy();
    await until(() => lines().length === 2);
    expect(seen).toEqual([
      { cart: undefined, user: 'bo', method: 'GET', headerHost: expect.stringMatching(/^127\.0\.0\.1/), on: 'undefined', status: 101, sent: true, seenHeader: 'yes', names: true, has: true },
    ]);
  });

  test('closeFormat is checked when logger() is called', () => {
    const call = () => logger('tiny', { closeFormat: 42 as never });
    expect(call).toThrow(TypeError);
    expect(call).toThrow('@upgradeware/logger: option closeFormat must be a format name, a format string or a function');
  });
});

describe("the peer's address of an upgrade is read without Node's cache of it", () => {
  // Node keeps the answer of the first `socket.remoteAddress` on the socket for its whole life; a
  // WebSocket open for hours would carry it for the logger's sake. Lines are the same as ever.
  test('logged, and nothing of it left on the socket ws holds; later reads still answer', async () => {
    const sockets: Array<import('node:net').Socket> = [];
    const ep = websocket((_ws, req) => {
      sockets.push(req.socket as import('node:net').Socket);
    });
    open.push(ep);
    const { s, lines } = await serve([['/ws', ep]], ':remote-addr :method :url :status');
    const { ws } = await wsOpen(s.wsUrl + '/ws');
    await until(() => lines().length === 1 && sockets.length === 1);
    expect(lines()).toEqual(['127.0.0.1 GET /ws 101']);
    const socket = sockets[0]!;
    expect(Object.keys(socket)).not.toContain('_peername');
    expect([socket.remoteAddress, socket.remoteFamily, typeof socket.remotePort]).toEqual(['127.0.0.1', 'IPv4', 'number']);
    await wsClose(ws);
  });

  test('an ordinary request is logged as morgan logs it', async () => {
    const { s, lines } = await serve([], ':remote-addr :method :url :status');
    const res = await request(s.url + '/plain');
    expect(res.status).toBe(200);
    await until(() => lines().length === 1);
    expect(lines()).toEqual(['127.0.0.1 GET /plain 200']);
  });
});
