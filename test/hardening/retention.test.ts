/**
 * Retention (issue 13 item 10): while WebSockets are open, nothing of their handshake's chain
 * stays reachable — no `req`, no `res`. 2,000 WebSockets through the full stack (dispatcher,
 * logger without and with closeFormat, response-time, cookie-parser, session saving every
 * handshake's session, basic-auth, websocket), in a child process started with --expose-gc on
 * the built packages, where every req and res is registered in a FinalizationRegistry.
 *
 * A control endpoint whose connection callback keeps `req` on purpose shows that the counting
 * sees a holder when there is one; closing every socket shows that it sees them all go.
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { HOST, rawSwitch, request } from '../../test-support';

const root = path.join(__dirname, '..', '..');
const FULL_SOCKETS = 2000;
const OWN_SOCKETS = 500;
const HELD = 50;
const BATCH = 250;
const ORIGIN = 'http://good.example';
const AUTH = 'Basic ' + Buffer.from('alice:wonderland').toString('base64');
/** A masked client close frame with code 1000. */
const CLOSE_FRAME = Buffer.from([0x88, 0x82, 0x01, 0x02, 0x03, 0x04, 0x03 ^ 0x01, 0xe8 ^ 0x02]);

interface Tracked {
  seen: number;
  /** Requests and responses of /ws still reachable. */
  aliveReq: number;
  aliveRes: number;
  /** Requests of the control endpoint (/held, whose callback keeps req) still reachable. */
  heldReq: number;
}
interface Count {
  full: Tracked;
  own: Tracked;
  lines: number;
  closeLines: number;
  clients: number[];
}

let child: ChildProcess;
let ports: { full: number; own: number };
const replies = new Map<string, (msg: never) => void>();

function ask<T>(what: 'count' | 'snapshot'): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} answer from the child`)), 30_000);
    replies.set(what, ((msg: T) => {
      clearTimeout(timer);
      resolve(msg);
    }) as never);
    child.send(what);
  });
}

beforeAll(async () => {
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
  const packages = ['dispatcher', 'websocket', 'logger', 'response-time', 'cookie-parser', 'session', 'basic-auth'];
  const build = spawnSync(process.execPath, [tsc, '-b', ...packages.map((p) => `packages/${p}`)], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (build.status !== 0) throw new Error(`tsc -b failed: ${build.stdout}${build.stderr}`);
  child = fork(path.join(__dirname, 'retention-server.cjs'), [], {
    execArgv: ['--expose-gc'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  ports = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the child did not start listening')), 30_000);
    child.on('message', (msg: { type: string; ports?: { full: number; own: number } }) => {
      if (msg.type === 'listening') {
        clearTimeout(timer);
        resolve(msg.ports!);
        return;
      }
      const reply = replies.get(msg.type);
      replies.delete(msg.type);
      reply?.(msg as never);
    });
  });
}, 150_000);

afterAll(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.send('exit');
    const timer = setTimeout(() => child.kill(), 5000);
    await exited;
    clearTimeout(timer);
  }
});

/** A raw WebSocket handshake; resolves with the open socket once the 101 is in, or a reason. */
function openOne(port: number, url: string, cookie: string | undefined): Promise<net.Socket | string> {
  return rawSwitch(net.connect(port, HOST), url, `Origin: ${ORIGIN}\r\nAuthorization: ${AUTH}\r\n${cookie ? `Cookie: ${cookie}\r\n` : ''}`);
}

async function openMany(port: number, url: string, n: number, cookie?: string): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  const failures: string[] = [];
  for (let done = 0; done < n; done += BATCH) {
    const size = Math.min(BATCH, n - done);
    // Half with the login's session cookie (a loaded session), half without (a new one, saved).
    const results = await Promise.all(Array.from({ length: size }, (_, i) => openOne(port, url, i % 2 === 0 ? cookie : undefined)));
    for (const r of results) typeof r === 'string' ? failures.push(r) : sockets.push(r);
  }
  expect({ failed: failures.length, first: failures.slice(0, 3) }).toEqual({ failed: 0, first: [] });
  return sockets;
}

/** Close half by a close frame, half by reset; resolves once every socket closed. */
async function closeAll(sockets: net.Socket[]): Promise<void> {
  await Promise.all(
    sockets.map(
      (s, i) =>
        new Promise<void>((resolve) => {
          if (s.destroyed) return resolve();
          const timer = setTimeout(() => s.destroy(), 5000);
          s.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
          if (i % 2 === 0) s.end(CLOSE_FRAME);
          else s.resetAndDestroy();
        }),
    ),
  );
}

/** Poll the child until `done(count)` or about five seconds. */
async function countUntil(done: (c: Count) => boolean): Promise<Count> {
  let c = await ask<Count>('count');
  for (let i = 0; i < 50 && !done(c); i++) {
    await new Promise((r) => setTimeout(r, 100));
    c = await ask<Count>('count');
  }
  return c;
}

test(`${OWN_SOCKETS} WebSockets through dispatcher + basic-auth + websocket: no req or res reachable while open`, async () => {
  const before = (await ask<Count>('count')).own;
  const open = await openMany(ports.own, '/ws', OWN_SOCKETS);
  const held = await openMany(ports.own, '/held', HELD);
  try {
    const c = await ask<Count>('count');
    // Nothing of /ws is reachable; the control's requests are (its callback keeps req).
    expect({ open: c.clients[2], seen: c.own.seen - before.seen, req: c.own.aliveReq, res: c.own.aliveRes, held: c.own.heldReq }).toEqual({
      open: OWN_SOCKETS,
      seen: OWN_SOCKETS + HELD,
      req: 0,
      res: 0,
      held: HELD,
    });
  } finally {
    await closeAll([...open, ...held]);
  }
  const after = await countUntil((c) => c.own.heldReq === 0 && c.clients[2] === 0 && c.clients[3] === 0);
  expect({ req: after.own.aliveReq, res: after.own.aliveRes, held: after.own.heldReq }).toEqual({ req: 0, res: 0, held: 0 });
}, 60_000);

test(`${FULL_SOCKETS} WebSockets through the full stack (loggers with and without closeFormat, response-time, cookie-parser, session saving, basic-auth, websocket): no req or res reachable while open`, async () => {
  const login = await request(`http://${HOST}:${ports.full}/login`, { headers: { Authorization: AUTH } });
  expect(login.status).toBe(200);
  const cookie = (login.headers['set-cookie'] ?? [])[0]!.split(';')[0]!;
  const before = await ask<Count>('count');
  const open = await openMany(ports.full, '/ws', FULL_SOCKETS, cookie);
  const held = await openMany(ports.full, '/held', HELD, cookie);
  let during: Count;
  try {
    during = await ask<Count>('count');
  } finally {
    await closeAll([...open, ...held]);
  }
  // Every socket open and through the whole stack (both loggers wrote a line per handshake);
  // nothing of /ws reachable, the control's requests reachable.
  expect({
    open: during.clients[0],
    seen: during.full.seen - before.full.seen,
    lines: during.lines - before.lines,
    req: during.full.aliveReq,
    res: during.full.aliveRes,
    held: during.full.heldReq,
  }).toEqual({ open: FULL_SOCKETS, seen: FULL_SOCKETS + HELD, lines: 2 * (FULL_SOCKETS + HELD), req: 0, res: 0, held: HELD });

  // Once closed: every close line written, and every req and res collected.
  const done = (c: Count) => ({
    closeLines: c.closeLines - before.closeLines,
    req: c.full.aliveReq,
    res: c.full.aliveRes,
    held: c.full.heldReq,
  });
  const expected = { closeLines: FULL_SOCKETS + HELD, req: 0, res: 0, held: 0 };
  const after = await countUntil((c) => JSON.stringify(done(c)) === JSON.stringify(expected));
  expect(done(after)).toEqual(expected);
}, 90_000);
