/**
 * Issue 13 item 1, against what users run: an ordinary request and an upgrade (or a CONNECT)
 * pipelined in ONE packet, against the demo (`createChatServer`), an Express app through
 * `attachUpgrades`, the HTTP/1.1 side of an HTTP/2 server (`allowHTTP1`, over TLS), and the full
 * stack on a plain http server. The servers run in a child process (stacks-child.cjs, built
 * packages): an uncaught exception ends it, and every test checks that it is alive. Answers come
 * in order; the switched connection then works.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { HOST } from '../../test-support';
import { startStacks, type StackPorts, type Stacks } from './stacks';

const AUTH = `Authorization: Basic ${Buffer.from('alice:wonderland').toString('base64')}\r\n`;
/** A masked client text frame. */
function frame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = Buffer.from([1, 2, 3, 4]);
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!))]);
}
const ws = (url: string, extra = '') =>
  `GET ${url} HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`;
const get = (url: string, extra = '') => `GET ${url} HTTP/1.1\r\nHost: ${HOST}\r\n${extra}\r\n`;
const connect = (target: string, extra = '') => `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${extra}\r\n`;

let stacks: Stacks;
let ports: StackPorts;
let chatCookie = '';

beforeAll(async () => {
  stacks = await startStacks();
  ports = stacks.ports;
  const login = await fetch(`http://${HOST}:${ports.chat}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: `http://${HOST}:${ports.chat}` },
    body: 'user=alice&password=wonderland',
  });
  chatCookie = `Cookie: ${login.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ')}\r\n`;
}, 200_000);

afterAll(() => stacks?.stop());

function alive(): void {
  stacks.alive();
}

type Side = 'chat' | 'express' | 'h2' | 'full';
const dial = (side: Side): net.Socket =>
  side === 'h2' ? tls.connect({ port: ports.h2, host: HOST, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }) : net.connect(ports[side], HOST);

/** Send `bytes` in one write; collect until `done(text)` or the connection closes (bounded). */
function exchange(side: Side, bytes: string, done: (text: string) => boolean, then?: Buffer, thenDone?: (text: string) => boolean): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = dial(side);
    let text = '';
    let closed = false;
    let stage = 0;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ text, closed });
    };
    const timer = setTimeout(finish, 4000);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      finish();
    });
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (stage === 0 && done(text)) {
        if (then === undefined) return finish();
        stage = 1;
        socket.write(then);
      } else if (stage === 1 && thenDone!(text)) finish();
    });
    socket.once(side === 'h2' ? 'secureConnect' : 'connect', () => socket.write(bytes));
  });
}
const statuses = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
const switchedHead = /HTTP\/1\.1 101 [^]*?\r\n\r\n/;

describe.each([
  ['the full stack (plain http)', 'full' as Side],
  ["an HTTP/2 server's HTTP/1.1 side (allowHTTP1, TLS)", 'h2' as Side],
])('%s', (_name, side) => {
  test('GET + WebSocket upgrade in one packet: 200, then 101, then the echo', async () => {
    const r = await exchange(side, get('/', AUTH) + ws('/ws', AUTH), (t) => switchedHead.test(t), frame('hello'), (t) => t.endsWith('hello'));
    expect(statuses(r.text)).toEqual([200, 101]);
    expect(r.text.endsWith('\x81\x05hello')).toBe(true);
    alive();
  });
  test('GET + GET + upgrade + (bytes of the new protocol) in one packet: 200, 200, 101, echo', async () => {
    const r = await exchange(side, get('/', AUTH) + get('/x', AUTH) + ws('/ws', AUTH) + frame('early').toString('latin1'), (t) => t.endsWith('early'));
    expect(statuses(r.text)).toEqual([200, 200, 101]);
    alive();
  });
  test('GET + refused upgrade: 200, then 401, then closed', async () => {
    const r = await exchange(side, get('/', AUTH) + ws('/ws'), () => false);
    expect([statuses(r.text), r.closed]).toEqual([[200, 401], true]);
    alive();
  });
  test('GET + CONNECT in one packet: 200, then 404 (nobody tunnels here), closed', async () => {
    const r = await exchange(side, get('/', AUTH) + connect('example.com:443', AUTH), () => false);
    expect([statuses(r.text), r.closed]).toEqual([[200, 404], true]);
    alive();
  });
});

describe('the demo (createChatServer)', () => {
  test('GET /me + the chat WebSocket in one packet: 200, 101, then the hello frame', async () => {
    const r = await exchange('chat', get('/me', chatCookie) + ws('/chat?room=pipe', chatCookie), (t) => /"type":"hello"/.test(t));
    expect(statuses(r.text)).toEqual([200, 101]);
    expect(r.text).toMatch(/"user":"alice","room":"pipe"/);
    alive();
  });
  test('GET + the admin feed (Basic) in one packet: 200, 101, then the snapshot', async () => {
    const admin = `Authorization: Basic ${Buffer.from('admin:upgradeware').toString('base64')}\r\n`;
    const r = await exchange('chat', get('/admin/', admin) + ws('/admin/feed', admin), (t) => /"type":"snapshot"/.test(t));
    expect(statuses(r.text)).toEqual([200, 101]);
    alive();
  });
  test('GET + an upgrade without a session: 200, then 401, closed', async () => {
    const r = await exchange('chat', get('/me', chatCookie) + ws('/chat'), () => false);
    expect([statuses(r.text), r.closed]).toEqual([[200, 401], true]);
    alive();
  });
  test('GET + CONNECT: 200, then 404, closed', async () => {
    const r = await exchange('chat', get('/me', chatCookie) + connect(`${HOST}:${ports.chat}`), () => false);
    expect([statuses(r.text), r.closed]).toEqual([[200, 404], true]);
    alive();
  });
});

describe('an Express app (attachUpgrades, express-session)', () => {
  test('GET + WebSocket upgrade in one packet: 200, then 101 with the session cookie, then the echo', async () => {
    const r = await exchange('express', get('/') + ws('/ws'), (t) => switchedHead.test(t), frame('hi'), (t) => t.endsWith('hi'));
    expect(statuses(r.text)).toEqual([200, 101]);
    expect(switchedHead.exec(r.text)![0]).toMatch(/\r\nSet-Cookie: connect\.sid=/i);
    alive();
  });
  test('GET + CONNECT: 200, then 404, closed', async () => {
    const r = await exchange('express', get('/') + connect('example.com:443'), () => false);
    expect([statuses(r.text), r.closed]).toEqual([[200, 404], true]);
    alive();
  });
});

test('pipelined packets cut by a client reset at once, a tick later, or after the first answer: 50 on each server, nothing crashes', async () => {
  const cases: Array<[Side, string]> = [
    ['full', get('/', AUTH) + ws('/ws', AUTH)],
    ['full', get('/', AUTH) + connect('example.com:443', AUTH)],
    ['h2', get('/', AUTH) + ws('/ws', AUTH)],
    ['h2', get('/', AUTH) + connect('example.com:443', AUTH)],
    ['chat', get('/me', chatCookie) + ws('/chat', chatCookie)],
    ['chat', get('/me', chatCookie) + connect('x:1')],
    ['express', get('/') + ws('/ws')],
    ['express', get('/') + connect('x:1')],
  ];
  for (let round = 0; round < 50; round++) {
    await Promise.all(
      cases.map(
        ([side, bytes]) =>
          new Promise<void>((resolve) => {
            // TLS sockets cannot be reset themselves: the TCP socket under them is.
            const raw = net.connect(ports[side], HOST);
            const socket = side === 'h2' ? tls.connect({ socket: raw, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }) : raw;
            const timer = setTimeout(() => raw.destroy(), 2000);
            socket.on('error', () => undefined);
            raw.on('error', () => undefined);
            raw.on('close', () => {
              clearTimeout(timer);
              resolve();
            });
            socket.once(side === 'h2' ? 'secureConnect' : 'connect', () => {
              socket.write(bytes);
              const when = round % 3;
              if (when === 0) raw.resetAndDestroy();
              else if (when === 1) setImmediate(() => raw.resetAndDestroy());
              else socket.once('data', () => raw.resetAndDestroy());
            });
          }),
      ),
    );
  }
  await new Promise((r) => setTimeout(r, 100));
  alive();
  const r = await exchange('full', get('/', AUTH) + ws('/ws', AUTH), (t) => switchedHead.test(t));
  expect(statuses(r.text)).toEqual([200, 101]);
}, 60_000);
