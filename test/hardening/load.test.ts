/**
 * Load: 5,000 concurrent WebSockets through the full stack (logger, response-time, cookies,
 * query, session lookup, session guard, Origin check, ws), opened and closed in waves. Every
 * handshake is answered; after the waves the server's heap (measured after GC in a child process
 * started with --expose-gc, running the built packages) is back at its baseline.
 */
import { spawnSync, fork, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { HOST, rawSwitch, request } from '../../test-support';
import { ORIGIN, CLOSE_FRAME } from './stack';

const root = path.join(__dirname, '..', '..');
const SOCKETS = 5000;
const OPEN_BATCH = 500;
const WAVES = 3;

let child: ChildProcess;
let port = 0;
const waiting = new Map<string, (msg: Record<string, unknown>) => void>();

function ask(what: 'stats' | 'heap'): Promise<Record<string, number>> {
  return new Promise((resolve) => {
    waiting.set(what, resolve as never);
    child.send(what);
  });
}

beforeAll(async () => {
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
  const build = spawnSync(process.execPath, [tsc, '-b', 'packages/dispatcher', 'packages/websocket', 'packages/logger', 'packages/response-time', 'packages/cookie-parser', 'packages/query', 'packages/session', 'packages/basic-auth'], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (build.status !== 0) throw new Error(`tsc -b failed: ${build.stdout}${build.stderr}`);
  child = fork(path.join(__dirname, 'load-server.cjs'), [], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const listening = new Promise<void>((resolve) => {
    child.on('message', (msg: Record<string, unknown>) => {
      if (msg.type === 'listening') {
        port = msg.port as number;
        resolve();
      } else {
        const w = waiting.get(msg.type as string);
        waiting.delete(msg.type as string);
        w?.(msg);
      }
    });
  });
  await listening;
}, 150_000);

afterAll(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.send('exit');
    const timer = setTimeout(() => child.kill(), 3000);
    await exited;
    clearTimeout(timer);
  }
});

/** Open one WebSocket with a raw handshake; resolves with the socket once the 101 is in. */
function openOne(cookie: string): Promise<net.Socket | string> {
  return rawSwitch(net.connect(port, HOST), '/ws', `Origin: ${ORIGIN}\r\nCookie: ${cookie}\r\n`);
}

async function wave(cookie: string): Promise<{ opened: number; failures: string[] }> {
  const sockets: net.Socket[] = [];
  const failures: string[] = [];
  for (let n = 0; n < SOCKETS; n += OPEN_BATCH) {
    const results = await Promise.all(Array.from({ length: OPEN_BATCH }, () => openOne(cookie)));
    for (const r of results) typeof r === 'string' ? failures.push(r) : sockets.push(r);
  }
  const stats = await ask('stats');
  const opened = stats.clients!;
  // Close: half of them cleanly (a close frame), half by reset.
  const closed = sockets.map(
    (s, i) =>
      new Promise<void>((resolve) => {
        s.once('close', () => resolve());
        s.on('data', () => undefined);
        if (i % 2 === 0) s.end(CLOSE_FRAME);
        else s.resetAndDestroy();
      }),
  );
  await Promise.all(closed);
  for (let t = 0; t < 200; t++) {
    const s = await ask('stats');
    if (s.connections === 0 && s.clients === 0) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  return { opened, failures };
}

test(`${WAVES} waves of ${SOCKETS} concurrent WebSockets: every handshake answered, heap back at its baseline`, async () => {
  const login = await request(`http://${HOST}:${port}/login?user=load`);
  const cookie = (login.headers['set-cookie'] ?? [])[0]!.split(';')[0]!;

  // Warm-up wave: JIT, pools and ws internals reach their steady state.
  const warm = await wave(cookie);
  expect(warm.failures.slice(0, 5)).toEqual([]);
  expect(warm.opened).toBe(SOCKETS);
  const baseline = (await ask('heap')).heapUsed!;

  for (let w = 0; w < WAVES; w++) {
    const { opened, failures } = await wave(cookie);
    expect({ wave: w, failures: failures.slice(0, 5), failed: failures.length }).toEqual({ wave: w, failures: [], failed: 0 });
    expect(opened).toBe(SOCKETS);
    const after = await ask('stats');
    expect({ connections: after.connections, clients: after.clients }).toEqual({ connections: 0, clients: 0 });
  }
  const stats = await ask('stats');
  // One log line per handshake (and the login).
  expect(stats.lines).toBe(1 + SOCKETS * (WAVES + 1));
  const final = (await ask('heap')).heapUsed!;
  // Back at the baseline: what 5,000 sockets held (tens of MB) is gone; a little slack for
  // allocator noise.
  const grownMB = (final - baseline) / 1048576;
  // The figures travel with the assertion (shown when it fails), not on the test run's output.
  const heap = `heap after GC: baseline ${(baseline / 1048576).toFixed(1)} MB, after ${WAVES} waves ${(final / 1048576).toFixed(1)} MB`;
  expect({ heap, grewLessThan2MB: grownMB < 2 }).toEqual({ heap, grewLessThan2MB: true });
}, 90_000);
