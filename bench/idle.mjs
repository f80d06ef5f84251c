#!/usr/bin/env node
// node bench/idle.mjs <server>,<server>,… [--warm=8000] [--idle=30000] [--window=250] [--windows=16] [--clients=50]
//
// What a server costs when load comes back after it sat idle: each server (servers/<name>.mjs, one
// process each) gets `--warm` ms of load, one after the other; then all sit idle for `--idle` ms;
// then each, in turn, gets `--windows` windows of `--window` ms of load, and the server CPU per
// handshake (µs) of each window is printed. The first windows after the idle spell cost more (V8
// shrank the young generation while nothing ran: `--trace-gc` shows a scavenge every few ms until it
// has grown back). Why run.mjs loads each server before measuring it, and why groupRuns measures one
// group after the other (bench/README). A tool for work on the bench: it asserts nothing.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { handshakeRun, destroyAll } from './lib/load.mjs';
import { spawnServer } from './lib/servers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const value = (name, def) => {
  const a = argv.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? def : Number(a.slice(name.length + 3));
};
const names = (argv.find((x) => !x.startsWith('--')) ?? 'ws-raw,ours-save').split(',');
const warm = value('warm', 8000);
const idle = value('idle', 30000);
const window = value('window', 250);
const windows = value('windows', 16);
const clients = value('clients', 50);
for (const [name, v] of Object.entries({ warm, idle, window, windows, clients })) {
  if (!Number.isInteger(v) || v < 1) {
    console.error(`idle: --${name} must be a whole number ≥ 1`);
    process.exit(2);
  }
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const hardLimit = setTimeout(() => {
  console.error('idle: time limit reached');
  stopAll();
  process.exit(1);
}, 10 * 60_000);
hardLimit.unref();

const servers = [];
function stopAll() {
  destroyAll();
  for (const s of servers) s.child.kill();
}

/** CPU µs per handshake of `server` in each of `windows` windows of load. */
async function windowsOf(server) {
  const row = [];
  for (let w = 0; w < windows; w++) {
    const before = await server.cpu();
    const run = await handshakeRun({ port: server.port, concurrency: clients, duration: window });
    const after = await server.cpu();
    row.push(run.count > 0 ? Math.round((after.total - before.total) / run.count) : NaN);
  }
  return row;
}

try {
  for (const n of names) servers.push(await spawnServer(n, { cwd: here }));
  for (const s of servers) await handshakeRun({ port: s.port, concurrency: clients, duration: warm });
  await sleep(idle);
  console.log(`server CPU µs per handshake, ${clients} clients, windows of ${window} ms, after ${warm} ms of load and ${idle} ms idle:`);
  for (const s of servers) console.log(`  ${s.name.padEnd(20)} ${(await windowsOf(s)).join(' ')}`);
} finally {
  stopAll();
  clearTimeout(hardLimit);
}
process.exit(0);
