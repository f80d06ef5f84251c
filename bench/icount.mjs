#!/usr/bin/env node
// node bench/icount.mjs <server>[#k],<server>,… [--warm=60000] [--measure=12000] [--windows=4] [--clients=1] [--functions[=25]] [--callers=<name>,…] [--cache-sim]
//
// User-space instructions per handshake, counted by valgrind's callgrind (install `valgrind`): a
// measure of what a change costs that does not move with the machine's load, the kernel's share or
// the CPU's clock, where server CPU time (cost.mjs) moves by ±5 % from process to process. Each
// server runs under callgrind with V8's `--predictable` (no background threads: compiling and
// collecting happen on the main thread, in the count); after the warm-up, `--windows` windows of
// `--measure` ms are counted one by one. Windows still differ (a full collection falls in one and
// not the next): compare the means of several windows, and of two processes (`name#2`).
// Kernel time (the syscalls, the loopback TCP path) is not counted. Under valgrind a server runs
// ~50× slower: a server takes ~2 minutes. It asserts nothing; `pnpm bench` stays the measure of record.
//
// `--functions[=N]` also says where the instructions go: by group (JavaScript, V8's builtins, garbage
// collection, compiling, native code) and, for each server after the first, the N functions whose
// self instructions per handshake differ most from the first server's. V8's code is named through
// its perf map (`--perf-basic-prof`); callgrind records every instruction's address
// (`--dump-instr=yes`), which makes the dumps larger and the run a little slower.
//
// `--callers=<name>,…` says who calls the functions whose names contain one of those strings, and what
// those calls cost per handshake (the callee and what it calls), the caller named by the address of
// its call: `--callers=Builtins_LoadIC` finds the property reads V8 could not inline, where they are.
//
// `--cache-sim` also simulates the caches and the branch predictor (callgrind's `--cache-sim=yes
// --branch-sim=yes`) and prints, per handshake, the L1 instruction and data misses and the
// mispredicted branches: what instructions do not show when code run once per handshake is cold. A
// model of a machine, not this one; a server runs about twice as slowly again, so warm up for longer.
// With `--functions` it also lists the functions whose misses differ most from the first server's.
import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { handshakeRun, destroyAll } from './lib/load.mjs';
import { groups, readDump } from './lib/callgrind.mjs';
import { serverOf } from './lib/servers.mjs';

const argv = process.argv.slice(2);
const value = (name, def) => {
  const a = argv.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? def : Number(a.slice(name.length + 3));
};
const names = (argv.find((x) => !x.startsWith('--')) ?? 'ws-raw,ours-bare').split(',');
const warm = value('warm', 60000);
const measure = value('measure', 12000);
const windows = value('windows', 4);
const clients = value('clients', 1);
const functions = value('functions', argv.includes('--functions') ? 25 : 0);
const callers = (argv.find((x) => x.startsWith('--callers='))?.slice('--callers='.length) ?? '').split(',').filter((x) => x !== '');
const cacheSim = argv.includes('--cache-sim');
/** With `--cache-sim`: callgrind's names of the events printed beside the instructions, and ours. */
const SIMULATED = [['I1mr', 'L1 instruction misses'], ['D1mr', 'L1 data read misses'], ['D1mw', 'L1 data write misses'], ['Bcm', 'mispredicted branches'], ['Bim', 'mispredicted indirect branches']];
/** Both need every instruction's address in the dumps, and V8's perf map to name them. */
const named = functions > 0 || callers.length > 0;
const dir = path.join(tmpdir(), `upgradeware-icount-${process.pid}`);
mkdirSync(dir, { recursive: true });
/** The perf maps V8 writes for `--functions` and `--callers`, removed at the end whatever happens. */
const perfMaps = new Set();
function cleanUp() {
  destroyAll();
  rmSync(dir, { recursive: true, force: true });
  for (const map of perfMaps) rmSync(map, { force: true });
}
// Reading a window's dump with every instruction's address (--functions, --callers) takes up to a minute.
const hardLimit = setTimeout(() => {
  console.error('icount: time limit reached');
  cleanUp();
  process.exit(1);
}, names.length * (warm + windows * (measure + (named ? 60_000 : 0)) + 120_000));
hardLimit.unref();

/** What callgrind counted in one dump (its `totals:` or `summary:` line), by event name: `Ir` is instructions. */
function totals(file) {
  const text = readFileSync(file, 'utf8');
  const events = /^events: (.+)$/m.exec(text);
  const match = /^(?:totals|summary): (.+)$/m.exec(text);
  if (events === null || match === null) throw new Error(`no totals in ${file}`);
  const counts = match[1].trim().split(/\s+/).map(Number);
  return Object.fromEntries(events[1].trim().split(/\s+/).map((name, i) => [name, counts[i] ?? 0]));
}

async function count(name) {
  const server = serverOf(name);
  // The dumps of `name#2` are `name-2.<pid>.<k>`.
  const label = name.replace('#', '-');
  const out = path.join(dir, `${label}.%p`);
  const node = named ? ['--predictable', '--perf-basic-prof'] : ['--predictable'];
  const child = spawn(
    'valgrind',
    ['--tool=callgrind', `--callgrind-out-file=${out}`, `--dump-instr=${named ? 'yes' : 'no'}`, ...(cacheSim ? ['--cache-sim=yes', '--branch-sim=yes'] : []), process.execPath, ...node, server.file, '0'],
    // In the scratch directory: --perf-basic-prof also writes V8's log to the working directory.
    { cwd: dir, stdio: ['pipe', 'pipe', 'ignore'], env: { ...process.env, NODE_ENV: 'production', ...server.env } },
  );
  const perfMap = `/tmp/perf-${child.pid}.map`;
  if (named) perfMaps.add(perfMap);
  try {
    let text = '';
    await new Promise((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`${name} exited with ${code} (is valgrind installed?)`)));
      child.once('error', reject);
      child.stdout.on('data', (d) => {
        text += d;
        if (text.split('\n').length > 2) resolve();
      });
    });
    const port = Number(text.split('\n')[0]);
    const warmed = await handshakeRun({ port, concurrency: clients, duration: warm });
    const per = [];
    const simulated = [];
    const dumps = [];
    let handshakes = 0;
    for (let k = 1; k <= windows; k++) {
      execFileSync('callgrind_control', ['--zero', String(child.pid)], { stdio: 'ignore' });
      const run = await handshakeRun({ port, concurrency: clients, duration: measure });
      execFileSync('callgrind_control', ['--dump', String(child.pid)], { stdio: 'ignore' });
      const dump = path.join(dir, `${label}.${child.pid}.${k}`);
      const counted = totals(dump);
      per.push(counted.Ir / run.count / 1000);
      if (cacheSim) simulated.push(Object.fromEntries(SIMULATED.map(([event]) => [event, (counted[event] ?? 0) / run.count])));
      dumps.push(dump);
      handshakes += run.count;
    }
    // Read after the last window, so that every window follows the one before without a pause.
    const byFunction = new Map();
    const byCall = new Map();
    /** With `--cache-sim`: function → the `SIMULATED` events per handshake, in that order. */
    const missesByFunction = new Map();
    if (named) {
      for (const dump of dumps) {
        const { self, calls, events, selfEvents } = readDump(dump, perfMap);
        for (const [fn, cost] of self) byFunction.set(fn, (byFunction.get(fn) ?? 0) + cost / handshakes);
        const columns = SIMULATED.map(([event]) => events.indexOf(event));
        for (const [fn, costs] of selfEvents) {
          let sum = missesByFunction.get(fn);
          if (sum === undefined) missesByFunction.set(fn, (sum = SIMULATED.map(() => 0)));
          columns.forEach((column, i) => {
            if (column !== -1) sum[i] += costs[column] / handshakes;
          });
        }
        for (const [call, cost] of calls) {
          if (callers.some((c) => call.slice(0, call.indexOf(' <- ')).includes(c))) byCall.set(call, (byCall.get(call) ?? 0) + cost / handshakes);
        }
      }
    }
    return { warmed: warmed.count, per, simulated, byFunction, byCall, missesByFunction };
  } finally {
    // Valgrind writes its last dump as the server exits: wait for it before the next server.
    const exited = child.exitCode === null ? once(child, 'exit') : null;
    child.stdin.end();
    child.kill('SIGTERM');
    await exited;
    rmSync(perfMap, { force: true });
  }
}

/** Per handshake: the calls to `--callers` functions, by call site, for every server side by side. */
function printCallers(results) {
  const keys = new Set(results.flatMap(([, r]) => [...r.byCall.keys()]));
  const rows = [...keys].map((k) => [k, results.map(([, r]) => r.byCall.get(k) ?? 0)]);
  // The largest differences from the first server first (with one server: the largest costs).
  const weight = ([, v]) => (v.length > 1 ? Math.max(...v.slice(1).map((x) => Math.abs(x - v[0]))) : v[0]);
  rows.sort((a, b) => weight(b) - weight(a));
  const limit = functions > 0 ? functions : 25;
  console.log(`\ninstructions per handshake in calls to ${callers.join(', ')}, by caller (the ${limit} largest${results.length > 1 ? ' differences' : ''}):`);
  console.log(`  ${results.map(([n]) => n.slice(0, 10).padStart(10)).join(' ')}  callee <- caller`);
  for (const [k, v] of rows.slice(0, limit)) console.log(`  ${v.map((x) => x.toFixed(0).padStart(10)).join(' ')}  ${k.slice(0, 160)}`);
}

/** Per handshake: the groups of each server, and the functions that differ most from the first server's. */
function printFunctions(results) {
  console.log('\nk instructions per handshake by group:');
  for (const [name, r] of results) console.log(`  ${name.padEnd(24)} ${Object.entries(groups(r.byFunction)).map(([g, v]) => `${g} ${(v / 1000).toFixed(1)}`).join(' · ')}`);
  const [base, first] = results[0];
  for (const [name, r] of results.slice(1)) {
    const fns = new Set([...first.byFunction.keys(), ...r.byFunction.keys()]);
    const rows = [...fns].map((fn) => [fn, first.byFunction.get(fn) ?? 0, r.byFunction.get(fn) ?? 0]).sort((a, b) => Math.abs(b[2] - b[1]) - Math.abs(a[2] - a[1]));
    console.log(`\nself instructions per handshake, ${name} against ${base} (the ${functions} largest differences):`);
    console.log(`  ${'difference'.padStart(10)} ${base.slice(0, 10).padStart(10)} ${name.slice(0, 10).padStart(10)}  function`);
    for (const [fn, a, b] of rows.slice(0, functions)) console.log(`  ${(b - a).toFixed(0).padStart(10)} ${a.toFixed(0).padStart(10)} ${b.toFixed(0).padStart(10)}  ${fn.slice(0, 140)}`);
    if (!cacheSim) continue;
    // Misses and mispredictions together, as a rough cost: each is worth a dozen cycles or so.
    const total = (m, fn) => (m.get(fn) ?? []).reduce((x, y) => x + y, 0);
    const missRows = [...new Set([...first.missesByFunction.keys(), ...r.missesByFunction.keys()])]
      .map((fn) => [fn, total(first.missesByFunction, fn), total(r.missesByFunction, fn)])
      .sort((a, b) => Math.abs(b[2] - b[1]) - Math.abs(a[2] - a[1]));
    const sums = (m) => SIMULATED.map((_, i) => [...m.values()].reduce((x, v) => x + v[i], 0));
    const [before, after] = [sums(first.missesByFunction), sums(r.missesByFunction)];
    console.log(`\nsimulated misses per handshake (${SIMULATED.map(([e]) => e).join(' + ')}), ${name} against ${base}:`);
    console.log(`  in all: ${SIMULATED.map(([e], i) => `${e} ${before[i].toFixed(0)} → ${after[i].toFixed(0)}`).join(' · ')}`);
    console.log(`  the ${functions} functions whose misses differ most:`);
    console.log(`  ${'difference'.padStart(10)} ${base.slice(0, 10).padStart(10)} ${name.slice(0, 10).padStart(10)}  function`);
    for (const [fn, a, b] of missRows.slice(0, functions)) console.log(`  ${(b - a).toFixed(0).padStart(10)} ${a.toFixed(0).padStart(10)} ${b.toFixed(0).padStart(10)}  ${fn.slice(0, 140)}`);
  }
}

try {
  console.log(`k instructions per handshake (user space, callgrind), ${clients} client(s), after ${warm} ms of warm-up, ${windows} windows of ${measure} ms:`);
  const results = [];
  for (const name of names) {
    const result = await count(name);
    const { warmed, per, simulated } = result;
    const mean = per.reduce((a, b) => a + b, 0) / per.length;
    console.log(`  ${name.padEnd(24)} ${mean.toFixed(1).padStart(7)}   windows: ${per.map((x) => x.toFixed(1)).join(' ')}   (${warmed} handshakes of warm-up)`);
    for (const [event, label] of SIMULATED) {
      if (simulated.length === 0) break;
      const values = simulated.map((w) => w[event]);
      const avg = values.reduce((a, b) => a + b, 0) / values.length;
      console.log(`  ${''.padEnd(24)} ${label} per handshake: ${avg.toFixed(0)}   windows: ${values.map((x) => x.toFixed(0)).join(' ')}`);
    }
    results.push([name, result]);
  }
  if (functions > 0) printFunctions(results);
  if (callers.length > 0) printCallers(results);
} finally {
  cleanUp();
}
