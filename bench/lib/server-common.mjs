// Shared by every scenario server: configuration that must be the same across stacks, the
// WebSocket endpoint behaviour (count + echo), and the process contract with run.mjs.
//
//   node servers/<name>.mjs <port>   → prints the port on the first stdout line once listening,
//                                      then one JSON line describing the implementation.
// The server exits when its stdin ends (run.mjs closes it), when the IPC channel goes away, on
// SIGTERM/SIGINT, or after BENCH_MAX_LIFETIME_MS (default 15 min) whatever happens.
import { createRequire } from 'node:module';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';

export const require = createRequire(import.meta.url);

export const USER = 'bench';
export const PASS = 'bench-pass';
export const SECRET = 'bench cookie and session secret';
/** The session options, identical for express-session and @upgradeware/session. */
export const SESSION_OPTIONS = { secret: SECRET, resave: false, saveUninitialized: false, name: 'sid' };
/** The logger format, identical for morgan and @upgradeware/logger. */
export const LOG_FORMAT = 'combined';
/** A stream that discards: the log line is formatted, then dropped. */
export const nullStream = { write() { return true; } };

export let open = 0;
function echo(data, isBinary) {
  this.send(data, { binary: isBinary });
}
function onClose() {
  open--;
}
/** The one WebSocket behaviour of every server: count the connection, echo messages. */
export function onConnection(ws) {
  open++;
  ws.on('message', echo);
  ws.on('close', onClose);
}

/** Load a module, or null when it is not there (an unfinished workspace package). */
export function tryRequire(name) {
  try {
    return require(name);
  } catch (err) {
    if (process.env.BENCH_DEBUG) console.error(`[server] cannot load ${name}: ${err.message}`);
    return null;
  }
}

/** The named export of a module, or its default, or the module itself when it is a function. */
export function pick(mod, name) {
  if (!mod) return null;
  if (typeof mod[name] === 'function') return mod[name];
  if (typeof mod.default === 'function') return mod.default;
  if (mod.default && typeof mod.default[name] === 'function') return mod.default[name];
  return typeof mod === 'function' ? mod : null;
}

const extraStats = [];
/** Add a function whose result goes into every 'mem' answer. */
export function addStats(fn) {
  extraStats.push(fn);
}

/** Listen on 127.0.0.1, announce the port, and obey run.mjs. */
export function serve(server, info) {
  const port = Number(process.argv[2] ?? 0);
  const exit = () => process.exit(0);
  setTimeout(exit, Number(process.env.BENCH_MAX_LIFETIME_MS ?? 15 * 60_000)).unref();
  process.on('SIGTERM', exit);
  process.on('SIGINT', exit);
  process.on('disconnect', exit);
  if (!process.stdin.isTTY) {
    process.stdin.on('end', exit);
    process.stdin.on('close', exit);
    process.stdin.resume();
  }
  process.on('message', async (msg) => {
    if (msg?.cmd === 'mem') process.send({ id: msg.id, ...(await memory()) });
    else if (msg?.cmd === 'cpu') process.send({ id: msg.id, ...process.cpuUsage() });
    else if (msg?.cmd === 'trace-compiles') {
      // From now on V8 writes to stdout the source of each function TurboFan compiles, and a line
      // per garbage collection (run.mjs's compile scenario counts what is compiled again).
      setFlagsFromString('--print-opt-source');
      setFlagsFromString('--trace-gc');
      process.send({ id: msg.id });
    } else if (msg?.cmd === 'exit') exit();
  });
  server.listen(port, '127.0.0.1', 4096, () => {
    process.stdout.write(`${server.address().port}\n${JSON.stringify({ pid: process.pid, ...info })}\n`);
  });
  return server;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** Heap after full GCs (run with --expose-gc), and what the server knows it holds. */
async function memory() {
  if (typeof globalThis.gc === 'function') {
    for (let i = 0; i < 3; i++) {
      globalThis.gc();
      await tick(); // let FinalizationRegistry callbacks run
    }
    globalThis.gc();
  }
  const m = process.memoryUsage();
  // Compiled code (V8's code spaces) grows while the first thousands of handshakes make functions
  // hot: once per process, not per socket — counted apart from the objects.
  let code = 0;
  for (const space of getHeapSpaceStatistics()) if (space.space_name.startsWith('code_')) code += space.space_used_size;
  const stats = { open, gc: typeof globalThis.gc === 'function', heapUsed: m.heapUsed, codeUsed: code, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss };
  for (const fn of extraStats) Object.assign(stats, fn());
  return stats;
}
