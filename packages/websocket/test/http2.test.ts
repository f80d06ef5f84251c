/**
 * WebSockets over HTTP/2 (RFC 8441 extended CONNECT) through the stack: Node's http2 client over
 * real TLS, a `ws` client on the stream, the same endpoint and options as for HTTP/1.1.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as http2 from 'node:http2';
import { basicAuth } from '@upgradeware/basic-auth';
import { createApp, type App } from '@upgradeware/dispatcher';
import { responseTime } from '@upgradeware/response-time';
import { MemoryStore, session, type SessionData, type StoredSession } from '@upgradeware/session';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { websocket, type WebSocketOptions } from '@upgradeware/websocket';
import WebSocket, { WebSocketServer } from 'ws';
import { delay, until, wsAsk, wsClose } from '../../../test-support';
import { H2Refused, h2Connect, h2Request, h2WebSocket, startHttp2, type H2Response, type Http2TestServer } from '../../../test-support/http2';
import { echoApp, type Logged } from './helpers';

const servers: Http2TestServer[] = [];
const sessions: http2.ClientHttp2Session[] = [];
afterEach(async () => {
  for (const s of sessions.splice(0)) s.destroy();
  for (const s of servers.splice(0)) await s.close();
});

async function serve(app: App): Promise<Http2TestServer> {
  const s = await startHttp2(app as unknown as Parameters<typeof startHttp2>[0]);
  servers.push(s);
  return s;
}

async function connect(url: string): Promise<http2.ClientHttp2Session> {
  const { session: client } = await h2Connect(url);
  sessions.push(client);
  return client;
}

async function refused(promise: Promise<unknown>): Promise<H2Response> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof H2Refused) return err.response;
    throw err;
  }
  throw new Error('the WebSocket was accepted');
}

function nextMessage(ws: WebSocket, timeoutMs = 5000): Promise<{ data: Buffer; binary: boolean }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message in time')), timeoutMs);
    ws.once('message', (data: Buffer, binary: boolean) => {
      clearTimeout(timer);
      resolve({ data, binary });
    });
  });
}

function closed(ws: WebSocket, timeoutMs = 5000): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve({ code: -1, reason: 'already closed' });
    const timer = setTimeout(() => reject(new Error('no close in time')), timeoutMs);
    ws.once('close', (code: number, reason: Buffer) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString() });
    });
  });
}

async function echoServer(options: WebSocketOptions = {}) {
  const { app, log, endpoint } = echoApp(options);
  const s = await serve(app);
  return { s, log, endpoint, client: await connect(s.url) };
}

describe('WebSockets over HTTP/2', () => {
  test('echo over an extended CONNECT: :status 200 (never 101), logged once as 200, close after finish', async () => {
    const { log, client } = await echoServer();
    const { ws, headers } = await h2WebSocket(client, '/chat');
    expect(headers[':status']).toBe(200);
    expect(headers['sec-websocket-accept']).toBeUndefined();
    expect(headers.upgrade).toBeUndefined();
    ws.send('hello over h2');
    const reply = await nextMessage(ws);
    expect(reply.data.toString()).toBe('hello over h2');
    expect(reply.binary).toBe(false);
    expect(log).toEqual<Logged[]>([{ method: 'CONNECT', url: '/chat', status: 200, finishes: 1, closed: true }]);
    ws.close(1000, 'bye');
    expect((await closed(ws)).code).toBe(1000);
  });

  test('the same endpoint serves an HTTP/1.1 upgrade on the same server', async () => {
    const { s, log } = await echoServer();
    const reply = await wsAsk(`wss://127.0.0.1:${s.port}/chat`, 'over 1.1', { rejectUnauthorized: false });
    expect(reply).toBe('over 1.1');
    expect(log.map((e) => `${e.method} ${e.status}`)).toEqual(['GET 101']);
  });

  test('4 MiB binary both ways (flow control)', async () => {
    const { client } = await echoServer();
    const { ws } = await h2WebSocket(client, '/chat');
    const big = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i);
    ws.send(big);
    const reply = await nextMessage(ws, 15000);
    expect(reply.binary).toBe(true);
    expect(reply.data.equals(big)).toBe(true);
    await wsClose(ws);
  });

  test('subprotocols: handleProtocols picks from the offer, the 200 names it', async () => {
    const { client } = await echoServer({ handleProtocols: (offered) => (offered.has('chat.v2') ? 'chat.v2' : false) });
    const { ws, headers } = await h2WebSocket(client, '/chat', { protocols: ['chat.v1', 'chat.v2'] });
    expect(headers['sec-websocket-protocol']).toBe('chat.v2');
    expect(ws.protocol).toBe('chat.v2');
    await wsClose(ws);
  });

  test('permessage-deflate is negotiated on the 200 and messages round-trip compressed', async () => {
    const { client } = await echoServer({ perMessageDeflate: { threshold: 0 } });
    const { ws, headers } = await h2WebSocket(client, '/chat', { perMessageDeflate: true });
    expect(headers['sec-websocket-extensions']).toMatch(/^permessage-deflate/);
    const text = 'compress me '.repeat(1000);
    ws.send(text);
    expect((await nextMessage(ws)).data.toString()).toBe(text);
    await wsClose(ws);
  });

  test('refusals are real h2 responses: version 426/400, origin 403, verifyClient 401 with WWW-Authenticate', async () => {
    const app = createApp();
    app.use(
      '/chat',
      websocket((ws) => ws.close(), {
        origins: ['https://localhost'],
        verifyClient: (info, cb) => {
          if (info.req.headers.authorization === 'Bearer ok') cb(true);
          else cb(false, 401, 'Who are you?', { 'WWW-Authenticate': 'Bearer realm="chat"' });
        },
      }),
    );
    const s = await serve(app);
    const client = await connect(s.url);
    const v = await refused(h2WebSocket(client, '/chat', { headers: { 'sec-websocket-version': '12' } }));
    expect(v.status).toBe(426);
    expect(v.headers['sec-websocket-version']).toBe('13, 8');
    expect((await refused(h2WebSocket(client, '/chat', { headers: { 'sec-websocket-version': 'x' } }))).status).toBe(400);
    const o = await refused(h2WebSocket(client, '/chat', { headers: { origin: 'https://evil.example' } }));
    expect(o.status).toBe(403);
    const a = await refused(h2WebSocket(client, '/chat'));
    expect(a.status).toBe(401);
    expect(a.headers['www-authenticate']).toBe('Bearer realm="chat"');
    expect(a.body.toString()).toBe('Who are you?');
    const { ws } = await h2WebSocket(client, '/chat', { headers: { authorization: 'Bearer ok' } });
    expect((await closed(ws)).code).toBe(1005);
  });

  test("a handshake ws itself refuses (a malformed Sec-WebSocket-Protocol) gets a real 400, as over HTTP/1.1", async () => {
    const app = createApp();
    app.use('/chat', websocket((ws) => ws.close()));
    const s = await serve(app);
    const client = await connect(s.url);
    const r = await refused(h2WebSocket(client, '/chat', { headers: { 'sec-websocket-protocol': 'a b' } }));
    expect(r.status).toBe(400);
    expect(r.body.toString()).toMatch(/Sec-WebSocket-Protocol/);
    // The session serves on.
    const { ws } = await h2WebSocket(client, '/chat');
    expect((await closed(ws)).code).toBe(1005);
  });

  test("ws's 'headers' listeners reach the 200; handleProtocols and onConnection see the stack's request", async () => {
    const seen: string[] = [];
    const app = createApp();
    app.use(
      supportsUpgrade((req: IncomingMessage & { user?: string }, _res: ServerResponse, next: () => void) => {
        req.user = 'alice';
        next();
      }),
    );
    const endpoint = websocket(
      (ws, req: IncomingMessage & { user?: string }) => {
        seen.push(`connection ${req.method} ${req.user}`);
        ws.close();
      },
      {
        handleProtocols: (protocols, req: IncomingMessage & { user?: string }) => {
          seen.push(`protocols ${[...protocols].join(',')} ${req.user}`);
          return 'p2';
        },
      },
    );
    endpoint.server.on('headers', (headers: string[]) => headers.push('X-From-Headers: yes'));
    app.use('/chat', endpoint);
    const s = await serve(app);
    const client = await connect(s.url);
    const { ws, headers } = await h2WebSocket(client, '/chat', { protocols: ['p1', 'p2'] });
    expect(headers['x-from-headers']).toBe('yes');
    expect(headers['sec-websocket-protocol']).toBe('p2');
    await closed(ws);
    expect(seen).toEqual(['protocols p1,p2 alice', 'connection CONNECT alice']);
  });

  test('@upgradeware/basic-auth in front: 401 with WWW-Authenticate and a body over h2, 200 with credentials', async () => {
    const app = createApp();
    app.use('/chat', basicAuth('alice', 'secret'));
    app.use('/chat', websocket((ws) => ws.close(1000)));
    const s = await serve(app);
    const client = await connect(s.url);
    const no = await refused(h2WebSocket(client, '/chat'));
    expect(no.status).toBe(401);
    expect(no.headers['www-authenticate']).toMatch(/^Basic realm=/);
    expect(no.body.toString()).toBe('Unauthorized');
    const { ws } = await h2WebSocket(client, '/chat', { headers: { authorization: `Basic ${Buffer.from('alice:secret').toString('base64')}` } });
    expect((await closed(ws)).code).toBe(1000);
  });

  test('the 200 carries every header the stack set: a new session cookie (saved first) and X-Response-Time', async () => {
    const saves: string[] = [];
    class SlowStore extends MemoryStore {
      override set(sid: string, data: StoredSession, cb?: (err?: unknown) => void): void {
        saves.push('started');
        setTimeout(() => {
          super.set(sid, data, (err?: unknown) => {
            saves.push('saved');
            cb?.(err);
          });
        }, 50);
      }
    }
    const store = new SlowStore();
    const app = createApp();
    app.use(responseTime());
    app.use(session({ secret: 's3cret', resave: false, saveUninitialized: true, store, cookie: { secure: true } }));
    app.use(
      '/chat',
      websocket((ws, req) => {
        const data = (req as IncomingMessage & { session: SessionData & { visits?: number } }).session;
        ws.send(`session ${saves.join(',')} ${typeof data.cookie}`);
      }),
    );
    const s = await serve(app);
    const client = await connect(s.url);
    const { ws, headers } = await h2WebSocket(client, '/chat');
    expect(saves).toEqual(['started', 'saved']);
    const cookie = headers['set-cookie'];
    expect(Array.isArray(cookie) ? cookie[0] : cookie).toMatch(/^connect\.sid=s%3A[^;]+; Path=\/; HttpOnly; Secure/);
    expect(headers['x-response-time']).toMatch(/^\d+\.\d{3}ms$/);
    // onConnection ran before the save completed; its first frame waited behind the 200.
    expect((await nextMessage(ws)).data.toString()).toBe('session started object');
    await wsClose(ws);
  });

  test('a session store that fails before the switch: no 200, the stream is reset, the session serves on', async () => {
    class FailingStore extends MemoryStore {
      override set(_sid: string, _data: StoredSession, cb?: (err?: unknown) => void): void {
        setTimeout(() => cb?.(new Error('store down')), 10);
      }
    }
    const app = createApp();
    app.use(session({ secret: 's', resave: false, saveUninitialized: true, store: new FailingStore() }));
    app.use('/chat', websocket(() => undefined));
    app.use('/ok', (_req: IncomingMessage, res: ServerResponse) => res.end('ok'));
    const s = await serve(app);
    const client = await connect(s.url);
    const r = await refused(h2WebSocket(client, '/chat'));
    expect(r.status).toBe(0);
    expect((await h2Request(client, { ':path': '/ok' })).status).toBe(200);
  });

  test('a session store that never answers: the time limit resets the stream, no 200 ever leaves', async () => {
    class HangingStore extends MemoryStore {
      override set(): void {
        // never calls back
      }
    }
    const app = createApp({ upgradeTimeout: 150 });
    app.use('/ok', (_req: IncomingMessage, res: ServerResponse) => res.end('ok'));
    app.use(session({ secret: 's', resave: false, saveUninitialized: true, store: new HangingStore() }));
    app.use('/chat', websocket((ws) => ws.send('too early')));
    const s = await serve(app);
    const client = await connect(s.url);
    const r = await refused(h2WebSocket(client, '/chat'));
    expect(r.status).toBe(0);
    expect(r.body.length).toBe(0);
    expect((await h2Request(client, { ':path': '/ok' })).status).toBe(200);
  });

  test('200 concurrent WebSockets on one session, interleaved with GETs', async () => {
    const { app } = echoApp();
    app.use('/ping', (_req: IncomingMessage, res: ServerResponse) => res.end('pong'));
    const s = await serve(app);
    const client = await connect(s.url);
    const opened = await Promise.all(Array.from({ length: 200 }, () => h2WebSocket(client, '/chat', { timeoutMs: 15000 })));
    const gets = Array.from({ length: 20 }, () => h2Request(client, { ':path': '/ping' }));
    const replies = await Promise.all(
      opened.map(async ({ ws }, i) => {
        const reply = nextMessage(ws, 15000);
        ws.send(`n${i}`);
        return (await reply).data.toString();
      }),
    );
    expect(replies).toEqual(opened.map((_, i) => `n${i}`));
    expect((await Promise.all(gets)).every((r) => r.status === 200)).toBe(true);
    await Promise.all(opened.map(({ ws }) => wsClose(ws, 5000)));
  }, 30000);

  test('a client RST_STREAM ends the server WebSocket with 1006; the session keeps serving', async () => {
    const serverCloses: number[] = [];
    const app = createApp();
    app.use('/chat', websocket((ws) => ws.on('close', (code) => serverCloses.push(code))));
    const s = await serve(app);
    const client = await connect(s.url);
    const { stream } = await h2WebSocket(client, '/chat');
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await until(() => serverCloses.length === 1);
    expect(serverCloses).toEqual([1006]);
    const again = await h2WebSocket(client, '/chat');
    await wsClose(again.ws);
  });

  test('a destroyed client session ends every server WebSocket on it with 1006', async () => {
    const serverCloses: number[] = [];
    const app = createApp();
    app.use('/chat', websocket((ws) => ws.on('close', (code) => serverCloses.push(code))));
    const s = await serve(app);
    const client = await connect(s.url);
    await Promise.all([h2WebSocket(client, '/chat'), h2WebSocket(client, '/chat'), h2WebSocket(client, '/chat')]);
    client.destroy();
    await until(() => serverCloses.length === 3);
    expect(serverCloses).toEqual([1006, 1006, 1006]);
  });

  test('a client GOAWAY leaves open WebSockets running; endpoint.close() closes them with 1001', async () => {
    const { client, endpoint } = await echoServer();
    const { ws } = await h2WebSocket(client, '/chat');
    client.goaway();
    await delay(50);
    ws.send('still here');
    expect((await nextMessage(ws)).data.toString()).toBe('still here');
    const done = closed(ws);
    await endpoint.close();
    expect((await done).code).toBe(1001);
  });

  test('a server shutdown ends h2 WebSockets: server.close() sends GOAWAY, they close with 1001, the callback fires', async () => {
    const { app } = echoApp();
    app.use('/ok', (_req: IncomingMessage, res: ServerResponse) => res.end('ok'));
    const s = await startHttp2(app as unknown as Parameters<typeof startHttp2>[0]);
    const client = await connect(s.url);
    const idle = await connect(s.url);
    expect((await h2Request(idle, { ':path': '/ok' })).status).toBe(200);
    const sockets = await Promise.all([h2WebSocket(client, '/chat'), h2WebSocket(client, '/chat')]);
    const goaway = new Promise<void>((resolve) => client.once('goaway', () => resolve()));
    const codes = Promise.all(sockets.map(({ ws }) => closed(ws)));
    const serverClosed = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 5000);
      s.server.close(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    await goaway;
    expect((await codes).map((c) => c.code)).toEqual([1001, 1001]);
    expect(await serverClosed).toBe(true);
  });

  test('endpoint.close() refuses new h2 WebSockets with 503', async () => {
    const { client, endpoint } = await echoServer();
    await endpoint.close();
    expect((await refused(h2WebSocket(client, '/chat'))).status).toBe(503);
  });

  test('1,000 streams reset at every moment: no crash, nothing left open, the server still serves', async () => {
    const { app, endpoint } = echoApp();
    app.use('/ok', (_req: IncomingMessage, res: ServerResponse) => res.end('ok'));
    const s = await serve(app);
    for (let round = 0; round < 10; round++) {
      const client = await connect(s.url);
      const streams = Array.from({ length: 100 }, (_, i) => {
        const stream = client.request(
          { ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/chat', 'sec-websocket-version': '13' },
          { endStream: false },
        );
        stream.on('error', () => undefined);
        // Reset before the response, right after it, or after a frame was sent.
        if (i % 3 === 0) stream.close(http2.constants.NGHTTP2_CANCEL);
        else stream.once('response', () => {
          if (i % 3 === 2) stream.write(Buffer.from([0x81, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2]));
          stream.close(http2.constants.NGHTTP2_CANCEL);
        });
        return new Promise<void>((resolve) => stream.once('close', () => resolve()));
      });
      await Promise.all(streams);
      if (round % 2 === 0) client.destroy();
      else client.close();
    }
    await until(() => endpoint.clients.size === 0, 5000);
    const client = await connect(s.url);
    expect((await h2Request(client, { ':path': '/ok' })).status).toBe(200);
    const { ws } = await h2WebSocket(client, '/chat');
    await wsClose(ws);
  }, 30000);

  test('hostile streams: END_STREAM with the CONNECT, frames before the 200, a flood of data before the switch', async () => {
    const { app, endpoint } = echoApp();
    app.use('/ok', (_req: IncomingMessage, res: ServerResponse) => res.end('ok'));
    const s = await serve(app);
    const client = await connect(s.url);
    // The client ends its side at once: ws switches (the end is not read yet), then reads the end
    // and closes; the stream completes, nothing crashes.
    const ended = await h2Request(client, { ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/chat', 'sec-websocket-version': '13' }, '');
    expect(ended.status).toBe(200);
    // A masked text frame pipelined right behind the request: read by ws after the switch.
    const stream = client.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/chat', 'sec-websocket-version': '13' }, { endStream: false });
    stream.on('error', () => undefined);
    stream.write(Buffer.from([0x81, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2]));
    const echoed = await new Promise<string>((resolve) => stream.once('data', (c: Buffer) => resolve(c.toString('latin1'))));
    expect(echoed).toBe('\x81\x02hi');
    stream.close(http2.constants.NGHTTP2_CANCEL);
    // 1 MiB of garbage before the switch is bounded by HTTP/2 flow control, then read as frames:
    // ws fails the connection with a 1002 close frame, the session lives on.
    const flood = client.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/chat', 'sec-websocket-version': '13' }, { endStream: false });
    flood.on('error', () => undefined);
    flood.write(Buffer.alloc(1024 * 1024, 0x42));
    const closeFrame = await new Promise<Buffer>((resolve) => flood.once('data', (c: Buffer) => resolve(c)));
    expect([...closeFrame.subarray(0, 4)]).toEqual([0x88, 0x02, 0x03, 0xea]); // close 1002
    flood.close(http2.constants.NGHTTP2_CANCEL);
    await until(() => endpoint.clients.size === 0);
    expect((await h2Request(client, { ':path': '/ok' })).status).toBe(200);
  });

  test("a reset flood on one session: Node's rapid-reset limit ends that session with GOAWAY, other sessions serve on", async () => {
    const { app } = echoApp();
    app.use('/ok', (_req: IncomingMessage, res: ServerResponse) => res.end('ok'));
    const s = await serve(app);
    const flooder = await connect(s.url);
    const goaway = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 15000);
      flooder.once('goaway', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    let reset = 0;
    for (let i = 0; i < 1500 && !flooder.closed && !flooder.destroyed; i++) {
      await new Promise<void>((resolve) => {
        const stream = flooder.request({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/chat', 'sec-websocket-version': '13' }, { endStream: false });
        stream.on('error', () => undefined);
        stream.once('response', () => {
          reset++;
          stream.close(http2.constants.NGHTTP2_CANCEL);
        });
        stream.once('close', () => resolve());
      });
    }
    expect(await goaway).toBe(true);
    expect(reset).toBeGreaterThanOrEqual(1000);
    expect(reset).toBeLessThan(1500);
    const other = await connect(s.url);
    expect((await h2Request(other, { ':path': '/ok' })).status).toBe(200);
    const { ws } = await h2WebSocket(other, '/chat');
    await wsClose(ws);
  }, 30000);

  test('ws writes its handshake head in one write() before anything else (the assumption h2 relies on)', async () => {
    // A plain ws server in noServer mode, on a Duplex that records every write.
    const { Duplex } = await import('node:stream');
    const writes: string[] = [];
    const duplex = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        writes.push(chunk.toString('latin1'));
        cb();
      },
    });
    const wss = new WebSocketServer({ noServer: true, perMessageDeflate: true });
    const req = {
      method: 'GET',
      url: '/',
      headers: { host: 'x', upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13', 'sec-websocket-protocol': 'a, b', 'sec-websocket-extensions': 'permessage-deflate' },
      socket: duplex,
    } as unknown as IncomingMessage;
    let writesAtConnection = -1;
    wss.handleUpgrade(req, duplex, Buffer.alloc(0), (ws) => {
      writesAtConnection = writes.length;
      ws.send('first frame');
    });
    expect(writesAtConnection).toBe(1);
    expect(writes[0]).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n[\s\S]*Sec-WebSocket-Protocol: a\r\n[\s\S]*Sec-WebSocket-Extensions: permessage-deflate[^\r]*\r\n\r\n$/);
    await until(() => writes.length >= 2);
    expect(writes.slice(1).join('')).not.toContain('HTTP/1.1');
    duplex.destroy();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  });
});
