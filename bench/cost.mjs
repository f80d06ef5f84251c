#!/usr/bin/env node
// node bench/cost.mjs <server>[#k],<server>,… [--rounds=5] [--duration=2000] [--clients=50] [--prof] [--pin] [--rewarm=ms] [--idle-client]
//
// Server CPU per handshake, for finding what a change costs or saves: each server (servers/<name>.mjs,
// or ours-save-no-<layer> for the full stack with a layer left out) in its own process, measured in
// turn (rotating order) after a 2 s warm-up; the median of the rounds, and each round's figure,
// with the kernel's share (system time) beside it.
// With --prof the servers run with --cpu-prof (profiles in bench/profiles/) and the self time per
// handshake of the first server is compared with the second's, function by function.
// A tool for work on the stack: `pnpm bench` (run.mjs) remains the measure of record.
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { handshakeRun, destroyAll, setPolling } from './lib/load.mjs';
import { spawnServer } from './lib/servers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const value = (name, def) => {
  const a = argv.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? def : a.slice(name.length + 3);
};
const names = (argv.find((x) => !x.startsWith('--')) ?? 'ours-save,ws-raw').split(',');
const rounds = Number(value('rounds', 5));
const duration = Number(value('duration', 2000));
const clients = Number(value('clients', 50));
const prof = argv.includes('--prof');
const pin = argv.includes('--pin');
const rewarm = Number(value('rewarm', 0));
// --idle-client: the load sleeps between events, as it did before it polled (lib/load.mjs `awake`).
setPolling(!argv.includes('--idle-client'));
if (pin) spawnSync('taskset', ['-cp', '1', String(process.pid)], { stdio: 'ignore' });
const profDir = path.join(here, 'profiles');
// `name#2`: a second process of the same server (JIT decisions differ from process to process).
const hardLimit = setTimeout(() => {
  console.error('cost: time limit reached');
  process.exit(1);
}, 10 * 60_000);
hardLimit.unref();

async function start(name) {
  const execArgv = [];
  const profile = prof ? `${name.replace('#', '-')}-${Date.now()}.cpuprofile` : undefined;
  if (profile) {
    mkdirSync(profDir, { recursive: true });
    execArgv.push('--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=${profile}`);
  }
  // --pin: each server on CPU 0 (`taskset`), this process (the load) on CPU 1: less scheduling noise.
  const started = await spawnServer(name, { cwd: here, execArgv, pin });
  return { ...started, profile, handshakes: 0 };
}

const servers = [];
try {
  for (const n of names) servers.push(await start(n));
  for (const s of servers) s.handshakes += (await handshakeRun({ port: s.port, concurrency: clients, duration: 2000 })).count;
  const per = new Map(names.map((n) => [n, []]));
  const sys = new Map(names.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < servers.length; i++) {
      const s = servers[(i + r) % servers.length];
      // --rewarm=ms: unmeasured load right before each measured run (after its idle time while
      // the other servers were measured).
      if (rewarm > 0) s.handshakes += (await handshakeRun({ port: s.port, concurrency: clients, duration: rewarm })).count;
      const before = await s.cpu();
      const { count } = await handshakeRun({ port: s.port, concurrency: clients, duration });
      const after = await s.cpu();
      s.handshakes += count;
      per.get(s.name).push(count > 0 ? (after.total - before.total) / count : NaN);
      sys.get(s.name).push(count > 0 ? (after.system - before.system) / count : NaN);
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const base = median(per.get(names.at(-1)));
  console.log(`server CPU µs per handshake, ${clients} clients, median of ${rounds} rounds of ${duration} ms (× the last one):`);
  for (const n of names) {
    const m = median(per.get(n));
    const k = median(sys.get(n));
    console.log(`  ${n.padEnd(32)} ${m.toFixed(1).padStart(7)}  ${(m / base).toFixed(2)}×   (system ${k.toFixed(1)})   rounds: ${per.get(n).map((x) => x.toFixed(0)).join(' ')}`);
  }
} finally {
  for (const s of servers) {
    if (s.child.exitCode !== null) continue;
    const exited = once(s.child, 'exit');
    s.child.stdin.end();
    await exited;
  }
  destroyAll();
}

if (prof && servers.length >= 2) {
  // Self time per handshake (µs) by function, first server against the second.
  const load = (s) => {
    const p = JSON.parse(readFileSync(path.join(profDir, s.profile), 'utf8'));
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const self = new Map();
    let total = 0;
    for (let i = 0; i < p.samples.length; i++) {
      const cf = byId.get(p.samples[i]).callFrame;
      if (cf.functionName === '(idle)' || cf.functionName === '(program)') continue;
      const where = cf.url.replace(/.*packages\//, '').replace(/.*node_modules\//, '').replace('/dist/', '/');
      const key = `${cf.functionName || '(anonymous)'} ${where}:${cf.lineNumber + 1}`;
      const t = p.timeDeltas[i] ?? 0;
      total += t;
      self.set(key, (self.get(key) ?? 0) + t);
    }
    for (const [k, t] of self) self.set(k, t / s.handshakes);
    return { self, total: total / s.handshakes };
  };
  const [a, b] = servers.map(load);
  console.log(`\nprofiled busy time per handshake (µs, warm-up included): ${servers[0].name} ${a.total.toFixed(1)}, ${servers[1].name} ${b.total.toFixed(1)}`);
  console.log(`handshakes: ${servers.map((s) => `${s.name} ${s.handshakes} (${s.profile})`).join(", ")}`);
  const keys = new Set([...a.self.keys(), ...b.self.keys()]);
  const rows = [...keys].map((k) => [k, a.self.get(k) ?? 0, b.self.get(k) ?? 0]).sort((x, y) => Math.abs(y[1] - y[2]) - Math.abs(x[1] - x[2]));
  console.log(`   diff  ${servers[0].name.slice(0, 7).padStart(7)}  ${servers[1].name.slice(0, 7).padStart(7)}  function`);
  for (const [k, x, y] of rows.slice(0, 30)) console.log(`${(x - y).toFixed(2).padStart(7)}  ${x.toFixed(2).padStart(7)}  ${y.toFixed(2).padStart(7)}  ${k}`);
}
