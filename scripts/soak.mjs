#!/usr/bin/env node
// The soak variant of test/hardening/load.test.ts: many waves of concurrent WebSockets through
// the full stack (built packages, child process with --expose-gc), printing the server's heap
// after GC per wave. Run `npx tsc -b` first. Options (env): SOAK_WAVES (default 20),
// SOAK_SOCKETS (default 5000), SOAK_BATCH (default 500). Exits 1 on an unanswered handshake or
// when the heap ends more than SOAK_SLACK_MB (default 4) above the first wave's.
import { fork } from 'node:child_process';
import * as net from 'node:net';
import * as http from 'node:http';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const WAVES = Number(process.env.SOAK_WAVES ?? 20);
const SOCKETS = Number(process.env.SOAK_SOCKETS ?? 5000);
const BATCH = Number(process.env.SOAK_BATCH ?? 500);
const SLACK = Number(process.env.SOAK_SLACK_MB ?? 4);
const CLOSE = Buffer.from([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2]);

const child = fork(join(here, '..', 'test', 'hardening', 'load-server.cjs'), [], { execArgv: ['--expose-gc'] });
const waiting = new Map();
let port = 0;
const ready = new Promise((resolve) => {
  child.on('message', (msg) => {
    if (msg.type === 'listening') {
      port = msg.port;
      resolve();
    } else {
      waiting.get(msg.type)?.(msg);
      waiting.delete(msg.type);
    }
  });
});
const ask = (what) => new Promise((resolve) => { waiting.set(what, resolve); child.send(what); });

function openOne(cookie) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => { socket.destroy(); resolve('timeout'); }, 15000);
    socket.on('error', (e) => { clearTimeout(timer); resolve(e.message); });
    socket.on('data', function onData(chunk) {
      got += chunk.toString('latin1');
      if (!got.includes('\r\n\r\n')) return;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.on('data', () => undefined);
      if (got.startsWith('HTTP/1.1 101 ')) resolve(socket);
      else { socket.destroy(); resolve(got.slice(0, 40)); }
    });
    socket.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://good.example\r\nCookie: ${cookie}\r\n\r\n`);
  });
}

await ready;
const cookie = await new Promise((resolve, reject) => {
  http.get(`http://127.0.0.1:${port}/login?user=soak`, (res) => {
    res.resume();
    resolve(res.headers['set-cookie'][0].split(';')[0]);
  }).on('error', reject);
});

let first = 0;
let failed = 0;
for (let w = 0; w < WAVES; w++) {
  const sockets = [];
  for (let n = 0; n < SOCKETS; n += BATCH) {
    for (const r of await Promise.all(Array.from({ length: Math.min(BATCH, SOCKETS - n) }, () => openOne(cookie)))) {
      if (typeof r === 'string') failed++;
      else sockets.push(r);
    }
  }
  await Promise.all(sockets.map((s, i) => new Promise((resolve) => {
    s.once('close', resolve);
    if (i % 2) s.resetAndDestroy();
    else s.end(CLOSE);
  })));
  for (let t = 0; t < 400; t++) {
    const s = await ask('stats');
    if (s.connections === 0 && s.clients === 0) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  const { heapUsed } = await ask('heap');
  if (w === 0) first = heapUsed;
  console.log(`wave ${w + 1}/${WAVES}: ${sockets.length} open, ${failed} failed so far, heap ${(heapUsed / 1048576).toFixed(1)} MB`);
}
const { heapUsed } = await ask('heap');
child.send('exit');
const grown = (heapUsed - first) / 1048576;
console.log(`heap grew ${grown.toFixed(2)} MB over ${WAVES} waves; ${failed} handshakes unanswered`);
process.exitCode = failed === 0 && grown < SLACK ? 0 : 1;
