/** Http2UpgradeResponse on its own: an HTTP/2 server's 'connect' event, no dispatcher. */
import * as http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import onHeaders from 'on-headers';
import { Http2UpgradeResponse, abortSwitched, isHttp2UpgradeResponse, isUpgradeResponse } from '@upgradeware/upgrade-response';
import { delay, until } from '../../../test-support';
import { h2Connect, h2Request, TLS } from '../../../test-support/http2';
import type { AddressInfo } from 'node:net';

type Handler = (res: Http2UpgradeResponse, req: http2.Http2ServerRequest) => void;

let server: http2.Http2SecureServer;
let url: string;
let handler: Handler;
let client: http2.ClientHttp2Session;
const warnings: Error[] = [];
const onWarning = (w: Error) => warnings.push(w);

beforeAll(async () => {
  server = http2.createSecureServer({ ...TLS, allowHTTP1: true, settings: { enableConnectProtocol: true } }, (_req, res) => res.end('ordinary'));
  server.on('connect', (req: http2.Http2ServerRequest) => handler(new Http2UpgradeResponse(req), req));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  client = (await h2Connect(url)).session;
  process.on('warning', onWarning);
});
afterAll(async () => {
  process.off('warning', onWarning);
  client.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});
afterEach(() => {
  expect(warnings).toEqual([]);
});

const ws = (path = '/'): http2.OutgoingHttpHeaders => ({ ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': path });

/** Record the response's events, in order. */
function record(res: Http2UpgradeResponse): string[] {
  const events: string[] = [];
  res.on('finish', () => events.push(`finish ${res.statusCode}`));
  res.on('close', () => events.push('close'));
  return events;
}

test('the brand: isUpgradeResponse and isHttp2UpgradeResponse are true, and it is an extended CONNECT, not a tunnel', async () => {
  let seen: unknown[] = [];
  handler = (res) => {
    seen = [isUpgradeResponse(res), isHttp2UpgradeResponse(res), res.isConnect, res.protocol, res.upgradeHead.length, res.release()];
    res.statusCode = 404;
    res.end();
  };
  expect((await h2Request(client, ws())).status).toBe(404);
  expect(seen).toEqual([true, true, false, 'websocket', 0, false]);
});

test('a refusal is a real h2 response: status, body, WWW-Authenticate; connection headers dropped; finish once then close', async () => {
  let events: string[] = [];
  handler = (res) => {
    events = record(res);
    res.statusCode = 401;
    res.statusMessage = 'Unauthorized'; // no reason phrase in HTTP/2: kept, not sent, no warning
    res.setHeader('WWW-Authenticate', 'Basic realm="chat"');
    res.setHeader('Connection', 'close');
    res.write('who ');
    res.end('are you?');
  };
  const r = await h2Request(client, ws());
  expect(r.status).toBe(401);
  expect(r.headers['www-authenticate']).toBe('Basic realm="chat"');
  expect(r.headers.connection).toBeUndefined();
  expect(r.body.toString()).toBe('who are you?');
  // The client never ended its side of the CONNECT: Node closed the stream with NO_ERROR.
  expect(r.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
  await until(() => events.length === 2);
  expect(events).toEqual(['finish 401', 'close']);
});

test('switchProtocols: on-headers hooks once, :status 200 with every header, framing dropped, finish, then cb(stream), then close', async () => {
  const events: string[] = [];
  let stream: Duplex | null = null;
  handler = (res) => {
    res.on('finish', () => events.push('finish'));
    res.on('close', () => events.push('close'));
    onHeaders(res as never, () => {
      events.push('hook');
      res.setHeader('Set-Cookie', ['a=1', 'b=2']);
    });
    res.setHeader('X-Response-Time', '1.000ms');
    res.setHeader('Content-Length', '10');
    res.setHeader('Upgrade', 'websocket');
    res.switchProtocols((s, head) => {
      events.push(`switched ${head.length}`);
      stream = s;
      s.on('data', (c: Buffer) => s.write(c));
    });
    events.push(`after switchProtocols socket=${res.socket === null ? 'null' : 'stream'}`);
  };
  const s = client.request(ws(), { endStream: false });
  const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => s.once('response', resolve));
  expect(headers[':status']).toBe(200);
  expect(headers['set-cookie']).toEqual(['a=1', 'b=2']);
  expect(headers['x-response-time']).toBe('1.000ms');
  expect(headers['content-length']).toBeUndefined();
  expect(headers.upgrade).toBeUndefined();
  s.write('echo me');
  expect(await new Promise<string>((resolve) => s.once('data', (c: Buffer) => resolve(c.toString())))).toBe('echo me');
  await until(() => events.includes('close'));
  expect(events).toEqual(['hook', 'finish', 'switched 0', 'after switchProtocols socket=null', 'close']);
  expect(stream).not.toBeNull();
  s.close();
});

test('the 200 waits for end() wrappers (a session save): nothing is sent before they let it go', async () => {
  let release: (() => void) | null = null;
  let switchedAt = 0;
  handler = (res) => {
    const end = res.end;
    res.end = function (this: Http2UpgradeResponse, ...args: unknown[]) {
      // express-session composes the head at once, and ends after its store answered.
      if (!this._header) this._implicitHeader();
      release = () => (end as (...a: unknown[]) => unknown).apply(this, args);
      return this;
    } as typeof res.end;
    res.switchProtocols(() => {
      switchedAt = Date.now();
    });
  };
  const s = client.request(ws(), { endStream: false });
  let responseAt = 0;
  s.once('response', () => (responseAt = Date.now()));
  await until(() => release !== null);
  await delay(50);
  expect(responseAt).toBe(0);
  release!();
  await until(() => responseAt !== 0);
  expect(switchedAt).toBeGreaterThan(0);
  s.close();
});

test('headers are locked once the head is composed; setHeader then throws ERR_HTTP_HEADERS_SENT', async () => {
  let code: unknown;
  handler = (res) => {
    res.writeHead(403, { 'X-A': '1' });
    try {
      res.setHeader('X-B', '2');
    } catch (err) {
      code = (err as { code?: string }).code;
    }
    res.end('no');
  };
  const r = await h2Request(client, ws());
  expect(r.status).toBe(403);
  expect(r.headers['x-a']).toBe('1');
  expect(code).toBe('ERR_HTTP_HEADERS_SENT');
});

test('a client reset before the answer: close without finish, a late end() is dropped, switchProtocols returns false', async () => {
  let res: Http2UpgradeResponse | null = null;
  let events: string[] = [];
  handler = (r) => {
    res = r;
    events = record(r);
  };
  const s = client.request(ws(), { endStream: false });
  s.on('error', () => undefined);
  await until(() => res !== null);
  s.close(http2.constants.NGHTTP2_CANCEL);
  await until(() => events.includes('close'));
  expect(res!.switchProtocols(() => undefined)).toBe(false);
  res!.statusCode = 500;
  res!.end('late');
  await delay(20);
  expect(events).toEqual(['close']);
  expect((await h2Request(client, { ':path': '/' })).body.toString()).toBe('ordinary');
});

test('externalSwitch: hooks fire, header lines returned, finish and close once, nothing sent by the response', async () => {
  let lines: string[] = [];
  let events: string[] = [];
  handler = (res, req) => {
    events = record(res);
    onHeaders(res as never, () => res.setHeader('X-Hook', 'yes'));
    res.setHeader('Connection', 'x');
    lines = res.externalSwitch();
    req.stream.respond({ ':status': 200, 'x-by': 'library' }, { endStream: false });
    setTimeout(() => req.stream.close(), 20);
  };
  const r = await h2Request(client, ws());
  expect(r.status).toBe(200);
  expect(r.headers['x-by']).toBe('library');
  expect(lines).toEqual(['X-Hook: yes']);
  expect(events).toEqual(['finish 200', 'close']);
});

test.each(['websocket', 'WebSocket'])('abortSwitched on an h2 WebSocket (:protocol %s): a 1011 close frame on the stream, then it ends', async (protocol) => {
  handler = (res, req) => {
    res.switchProtocols(() => {
      abortSwitched(req as never, req.socket as never);
    });
  };
  const r = await h2Request(client, { ...ws(), ':protocol': protocol });
  expect(r.status).toBe(200);
  expect([...r.body]).toEqual([0x88, 0x02, 0x03, 0xf3]);
});

test('switchOnHttp1Head: an HTTP/1.1 101 head written on the stream becomes the 200 with its fields; later writes follow it', async () => {
  let gaveBack = '';
  handler = (res, req) => {
    res.setHeader('X-From-Stack', 'kept');
    const giveBack = res.switchOnHttp1Head(new Set(['sec-websocket-accept']));
    const stream = req.stream;
    stream.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\nSec-WebSocket-Protocol: chat\r\n\r\n');
    stream.write('frame');
    giveBack();
    gaveBack = typeof Object.getOwnPropertyDescriptor(stream, 'write');
    stream.end();
  };
  const r = await h2Request(client, ws());
  expect(r.status).toBe(200);
  expect(r.headers['sec-websocket-protocol']).toBe('chat');
  expect(r.headers['x-from-stack']).toBe('kept');
  expect([r.headers['upgrade'], r.headers['connection'], r.headers['sec-websocket-accept']]).toEqual([undefined, undefined, undefined]);
  expect(r.body.toString()).toBe('frame');
  expect(gaveBack).toBe('undefined');
});

test('a plain CONNECT is a tunnel (isConnect), its target in :authority', async () => {
  let seen: unknown[] = [];
  handler = (res, req) => {
    seen = [res.isConnect, res.protocol, req.headers[':authority']];
    res.switchProtocols((s) => s.end('tunnel bytes'));
  };
  const r = await h2Request(client, { ':method': 'CONNECT', ':authority': 'example.test:443' });
  expect(r.status).toBe(200);
  expect(r.body.toString()).toBe('tunnel bytes');
  expect(seen).toEqual([true, undefined, 'example.test:443']);
});
