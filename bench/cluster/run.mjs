#!/usr/bin/env node
// The cluster bench (issue 17): two app instances, one redis-server, loopback.
//   - broadcast latency across instances: hub.broadcast() on A until B's WebSocket client has the
//     message, one message at a time, 1,000 messages, p50/p99;
//   - revocation latency: store.destroy() on A (what req.session.destroy() calls) until the
//     client of that session on B sees its close (4001), 200 sessions, p50/p99.
// Both Redis modes. Exits 1 when a p99 misses its target (10 ms).
//
//   npx tsc -b && node bench/cluster/run.mjs [--messages=1000] [--sessions=200] [--target-ms=10]
//
// Instance A runs in this process (so both ends of a measurement read one clock), instance B in
// a child process; a redis-server of our own (Debian's) on a free port.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { startNode } from './node.mjs';

const arg = (name, def) => {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? def : Number(a.slice(name.length + 3));
};
const MESSAGES = arg('messages', 1000);
const SESSIONS = arg('sessions', 200);
const TARGET = arg('target-ms', 10);
const log = (...a) => console.error(...a);

const children = new Set();
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});
setTimeout(() => {
  log('cluster bench: hard time limit (5 min) reached');
  process.exit(2);
}, 5 * 60_000).unref();

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  children.add(child);
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.end('PING\r\n');
        s.once('data', (d) => resolve(String(d).startsWith('+PONG')));
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return { port, url: `redis://127.0.0.1:${port}`, child };
    await sleep(50);
  }
  throw new Error('redis-server did not start');
}

async function startChild(env) {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./node.mjs', import.meta.url))], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  const [line] = await Promise.race([
    once(child.stdout, 'data'),
    sleep(10_000).then(() => {
      throw new Error('instance B did not start');
    }),
  ]);
  return { port: Number(String(line).trim()), child };
}

async function login(port) {
  const res = await fetch(`http://127.0.0.1:${port}/login`);
  await res.text();
  return res.headers.get('set-cookie').split(';')[0];
}

function open(port, cookie) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/chat`, { headers: { cookie } });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
function stats(samples) {
  const s = [...samples].sort((a, b) => a - b);
  return { n: s.length, p50: pct(s, 50), p99: pct(s, 99), max: s[s.length - 1] };
}
const ms = (v) => v.toFixed(3);

async function scenario(redis, mode) {
  const channel = `bench:${mode}`;
  const prefix = `bench-${mode}:`;
  const a = await startNode({ url: redis.url, mode, channel, prefix, name: 'A' });
  const b = await startChild({ REDIS_URL: redis.url, MODE: mode, CHANNEL: channel, PREFIX: prefix });
  try {
    // Broadcast: one client on B; each message sent when the previous one arrived.
    const ws = await open(b.port, await login(b.port));
    const samples = [];
    let waiting = null;
    ws.on('message', (data) => waiting?.(data));
    const next = (text) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`message ${text} not received`)), 5000);
        waiting = (data) => {
          if (String(data) !== text) return;
          clearTimeout(timer);
          waiting = null;
          resolve();
        };
      });
    // Warm-up: until the subscription is live, then 100 more unmeasured.
    for (let i = 0; ; i++) {
      const p = next(`warm${i}`).then(() => true, () => false);
      a.hub.broadcast(`warm${i}`, { room: 'chat' });
      if (await Promise.race([p, sleep(100).then(() => false)])) break;
      if (i > 100) throw new Error('subscription never live');
    }
    for (let i = 0; i < 100; i++) {
      const p = next(`w${i}`);
      a.hub.broadcast(`w${i}`, { room: 'chat' });
      await p;
    }
    for (let i = 0; i < MESSAGES; i++) {
      const text = `m${i}`;
      const p = next(text);
      const t0 = process.hrtime.bigint();
      a.hub.broadcast(text, { room: 'chat' });
      await p;
      samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    ws.close();

    // Revocation: a session with its socket on B, destroyed through A's (watched) store.
    const rev = [];
    for (let i = 0; i < SESSIONS; i++) {
      const cookie = await login(b.port);
      const sid = decodeURIComponent(cookie.slice(cookie.indexOf('=') + 1)).slice(2).split('.')[0];
      const s = await open(b.port, cookie);
      const closed = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('socket not closed')), 5000);
        s.once('close', (code) => {
          clearTimeout(timer);
          resolve(code);
        });
      });
      const t0 = process.hrtime.bigint();
      await new Promise((resolve, reject) => a.store.destroy(sid, (err) => (err ? reject(err) : resolve())));
      const code = await closed;
      rev.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (code !== 4001) throw new Error(`closed with ${code}, expected 4001`);
    }
    return { broadcast: stats(samples), revocation: stats(rev) };
  } finally {
    await a.close();
    b.child.kill('SIGTERM');
    await Promise.race([once(b.child, 'exit'), sleep(3000)]);
  }
}

const redis = await startRedis();
let failed = false;
const rows = [];
try {
  for (const mode of ['pubsub', 'streams']) {
    log(`cluster bench: ${mode} …`);
    const r = await scenario(redis, mode);
    for (const [what, s] of Object.entries(r)) {
      const ok = s.p99 < TARGET;
      if (!ok) failed = true;
      rows.push(`| ${mode} | ${what} | ${s.n} | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.max)} | ${ok ? 'ok' : `MISSED (p99 >= ${TARGET} ms)`} |`);
    }
  }
} finally {
  redis.child.kill('SIGTERM');
}
console.log(`\nTwo instances, one redis-server, loopback (Node ${process.version}, ${new Date().toISOString()})\n`);
console.log('| mode | latency | n | p50 ms | p99 ms | max ms | target p99 < ' + TARGET + ' ms |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const row of rows) console.log(row);
process.exitCode = failed ? 1 : 0;
