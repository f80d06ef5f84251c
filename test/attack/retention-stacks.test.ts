/**
 * Issue 13 item 10, in the configurations the first retention suite does not reach: while
 * WebSockets are open, no handshake `req` or `res` stays reachable —
 * (a) HTTP/2 WebSockets (RFC 8441) through the full stack, session included, and HTTP/1.1 ones on
 *     the same `allowHTTP1` server;
 * (b) Express upgrades (`attachUpgrades`) with express-session saving every handshake's session;
 * (c) the demo's own chat sockets (`createChatServer`, untouched).
 * A child process on the built packages, started with --expose-gc, registers every handshake's
 * req and res in a FinalizationRegistry (stacks-child.cjs). A control endpoint whose connection
 * callback keeps `req` shows that the counting sees a holder when there is one.
 */
import type * as http2 from 'node:http2';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { HOST, rawSwitch } from '../../test-support';
import { h2Connect, h2WebSocket } from '../../test-support/http2';
import { startStacks, type StackPorts, type Stacks } from './stacks';

const AUTH = 'Basic ' + Buffer.from('alice:wonderland').toString('base64');
const H2_SESSIONS = 6;
const H2_PER_SESSION = 50;
const H1_ON_H2 = 100;
const EXPRESS_SOCKETS = 300;
const CHAT_SOCKETS = 200;
const HELD = 20;
const BATCH = 50;

interface Tracked {
  seen: number;
  req: number;
  res: number;
  heldReq: number;
}
interface Count {
  chat: Tracked;
  express: Tracked;
  h2: Tracked;
  full: Tracked;
  clients: number;
  chatClients: number;
}

let stacks: Stacks;
let ports: StackPorts;
const waiting: Array<(c: Count) => void> = [];

function count(): Promise<Count> {
  stacks.alive();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no count from the child')), 30_000);
    waiting.push((c) => {
      clearTimeout(timer);
      resolve(c);
    });
    stacks.child.send('count');
  });
}

beforeAll(async () => {
  stacks = await startStacks(['--expose-gc']);
  ports = stacks.ports;
  stacks.child.on('message', (msg: { type: string }) => {
    if (msg.type === 'count') waiting.shift()?.(msg as unknown as Count);
  });
}, 200_000);

afterAll(() => stacks?.stop());

/** A raw handshake on `connect()`'s socket; resolves with the socket after the 101, or a reason. */
function handshake(socket: net.Socket, url: string, headers: string): Promise<net.Socket | string> {
  return rawSwitch(socket, url, headers);
}

async function openMany(n: number, open: () => Promise<net.Socket | string>): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  const failures: string[] = [];
  for (let done = 0; done < n; done += BATCH) {
    const results = await Promise.all(Array.from({ length: Math.min(BATCH, n - done) }, open));
    for (const r of results) typeof r === 'string' ? failures.push(r) : sockets.push(r);
  }
  expect({ failed: failures.length, first: failures.slice(0, 3) }).toEqual({ failed: 0, first: [] });
  return sockets;
}

const plain = (port: number) => net.connect(port, HOST);
const secure = (port: number) => tls.connect({ port, host: HOST, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });

function closeAll(sockets: net.Socket[]): Promise<void> {
  return Promise.all(
    sockets.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.destroyed) return resolve();
          s.once('close', () => resolve());
          s.destroy();
        }),
    ),
  ).then(() => undefined);
}

/** Count until `done` holds or about five seconds passed. */
async function countUntil(done: (c: Count) => boolean): Promise<Count> {
  let c = await count();
  for (let i = 0; i < 50 && !done(c); i++) {
    await new Promise((r) => setTimeout(r, 100));
    c = await count();
  }
  return c;
}

async function login(port: number, path: string, body?: string, headers: Record<string, string> = {}): Promise<string> {
  const res = await fetch(`http://${HOST}:${port}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    redirect: 'manual',
    headers: body === undefined ? headers : { 'content-type': 'application/x-www-form-urlencoded', origin: `http://${HOST}:${port}`, ...headers },
    body,
  });
  const cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  expect(cookie).not.toBe('');
  return cookie;
}

test(`(a) ${H2_SESSIONS * H2_PER_SESSION} HTTP/2 WebSockets and ${H1_ON_H2} HTTP/1.1 ones through the full stack with session: no res reachable while open; only Node's own stream keeps an h2 req`, async () => {
  const before = (await count()).h2;
  const sessions: http2.ClientHttp2Session[] = [];
  const wss: Array<{ close(): void }> = [];
  let open: net.Socket[] = [];
  try {
    for (let s = 0; s < H2_SESSIONS; s++) {
      const { session, connectProtocol } = await h2Connect(`https://${HOST}:${ports.h2}`);
      sessions.push(session);
      expect(connectProtocol).toBe(true);
      // Half of the sessions' sockets come with a logged-in session cookie, half get a new one.
      const opened = await Promise.all(
        Array.from({ length: H2_PER_SESSION }, () => h2WebSocket(session, '/ws', { headers: { authorization: AUTH } }).then((w) => w.ws)),
      );
      wss.push(...opened);
    }
    const held = await Promise.all(Array.from({ length: HELD }, () => h2WebSocket(sessions[0]!, '/held', { headers: { authorization: AUTH } }).then((w) => w.ws)));
    wss.push(...held);
    open = await openMany(H1_ON_H2, () => handshake(secure(ports.h2), '/ws', `Authorization: ${AUTH}\r\n`));
    const during = await count();
    // No res at all. The requests still reachable are exactly the HTTP/2 ones: Node's
    // compatibility layer keeps each Http2ServerRequest on its stream (stream[kRequest]) until the
    // stream closes, whatever the app does; the HTTP/1.1 ones on the same server are all gone.
    expect({ seen: during.h2.seen - before.seen, req: during.h2.req, res: during.h2.res, held: during.h2.heldReq }).toEqual({
      seen: H2_SESSIONS * H2_PER_SESSION + HELD + H1_ON_H2,
      req: H2_SESSIONS * H2_PER_SESSION,
      res: 0,
      held: HELD,
    });
  } finally {
    for (const ws of wss) ws.close();
    await closeAll(open);
    for (const s of sessions) s.destroy();
  }
  const after = await countUntil((c) => c.h2.heldReq === 0 && c.h2.req === 0 && c.h2.res === 0);
  expect({ req: after.h2.req, res: after.h2.res, held: after.h2.heldReq }).toEqual({ req: 0, res: 0, held: 0 });
}, 90_000);

test(`(b) ${EXPRESS_SOCKETS} Express upgrades (attachUpgrades) with express-session saving each: no req or res reachable while open`, async () => {
  const before = (await count()).express;
  const cookie = await login(ports.express, '/');
  let open: net.Socket[] = [];
  try {
    let i = 0;
    open = await openMany(EXPRESS_SOCKETS, () => handshake(plain(ports.express), '/ws', i++ % 2 ? `Cookie: ${cookie}\r\n` : ''));
    const during = await count();
    expect({ seen: during.express.seen - before.seen, req: during.express.req, res: during.express.res }).toEqual({ seen: EXPRESS_SOCKETS, req: 0, res: 0 });
  } finally {
    await closeAll(open);
  }
}, 60_000);

test(`(c) ${CHAT_SOCKETS} sockets of the demo's chat (createChatServer): no req or res reachable while open`, async () => {
  const before = (await count()).chat;
  const cookie = await login(ports.chat, '/login', 'user=alice&password=wonderland');
  let open: net.Socket[] = [];
  try {
    let i = 0;
    open = await openMany(CHAT_SOCKETS, () => handshake(plain(ports.chat), `/chat?room=r${i++ % 5}`, `Cookie: ${cookie}\r\n`));
    const during = await count();
    expect({ open: during.chatClients, seen: during.chat.seen - before.seen, req: during.chat.req, res: during.chat.res }).toEqual({
      open: CHAT_SOCKETS,
      seen: CHAT_SOCKETS,
      req: 0,
      res: 0,
    });
  } finally {
    await closeAll(open);
  }
  const after = await countUntil((c) => c.chatClients === 0);
  expect({ open: after.chatClients, req: after.chat.req, res: after.chat.res }).toEqual({ open: 0, req: 0, res: 0 });
}, 60_000);

