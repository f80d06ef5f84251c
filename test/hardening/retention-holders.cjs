'use strict';
// Names what keeps a handshake's req and res reachable while its WebSocket is open: starts
// retention-server.cjs (on the built packages: run `npx tsc -b` first), opens WebSockets through
// the full stack, takes a heap snapshot and prints, for the IncomingMessage and UpgradeResponse
// objects still in it, their shortest retaining paths from the GC roots, grouped and counted.
// A diagnostic for people, not a test:  node test/hardening/retention-holders.cjs [sockets]
const { fork } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const SOCKETS = Number(process.argv[2] || 100);
const TARGETS = new Set(['IncomingMessage', 'UpgradeResponse']);
const AUTH = 'Basic ' + Buffer.from('alice:wonderland').toString('base64');

function open(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const timer = setTimeout(() => reject(new Error('no 101')), 10_000);
    socket.on('error', reject);
    socket.once('data', (chunk) => {
      clearTimeout(timer);
      socket.on('data', () => undefined);
      if (!chunk.toString('latin1').startsWith('HTTP/1.1 101 ')) reject(new Error(chunk.toString('latin1').slice(0, 60)));
      else resolve(socket);
    });
    socket.write(
      'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://good.example\r\n' +
        `Authorization: ${AUTH}\r\n\r\n`,
    );
  });
}

/** Shortest retaining paths (strong edges only) from the roots to every object named in TARGETS. */
function analyse(file) {
  const snap = JSON.parse(fs.readFileSync(file, 'utf8'));
  const { node_fields: nf, edge_fields: ef, node_types: nt, edge_types: et } = snap.snapshot.meta;
  const N = nf.length;
  const E = ef.length;
  const nodeTypes = nt[0];
  const edgeTypes = et[0];
  const { nodes, edges, strings } = snap;
  const count = nodes.length / N;
  const firstEdge = new Uint32Array(count + 1);
  for (let i = 0, e = 0; i < count; i++) {
    firstEdge[i] = e;
    e += nodes[i * N + nf.indexOf('edge_count')] * E;
    firstEdge[i + 1] = e;
  }
  const nameOf = (i) => strings[nodes[i * N + nf.indexOf('name')]];
  const typeOf = (i) => nodeTypes[nodes[i * N + nf.indexOf('type')]];
  const parent = new Int32Array(count).fill(-1);
  const via = new Int32Array(count).fill(-1);
  const seen = new Uint8Array(count);
  const queue = new Uint32Array(count);
  let head = 0;
  let tail = 0;
  queue[tail++] = 0;
  seen[0] = 1;
  while (head < tail) {
    const from = queue[head++];
    for (let e = firstEdge[from]; e < firstEdge[from + 1]; e += E) {
      const type = edgeTypes[edges[e]];
      if (type === 'weak' || type === 'shortcut') continue;
      const to = edges[e + 2] / N;
      if (seen[to]) continue;
      seen[to] = 1;
      parent[to] = from;
      via[to] = e;
      queue[tail++] = to;
    }
  }
  const edgeName = (e) => {
    const type = edgeTypes[edges[e]];
    const n = edges[e + 1];
    return type === 'element' || type === 'hidden' ? `[${n}]` : String(strings[n]);
  };
  const groups = new Map();
  for (let i = 0; i < count; i++) {
    if (typeOf(i) !== 'object' || !TARGETS.has(nameOf(i)) || !seen[i]) continue;
    const steps = [];
    for (let n = i; parent[n] !== -1 && steps.length < 40; n = parent[n]) {
      steps.unshift(`${typeOf(parent[n]) === 'closure' ? 'ƒ ' : ''}${nameOf(parent[n]).slice(0, 40)} .${edgeName(via[n])}`);
    }
    // The part of the path near the object says who holds it; the root end is Node's plumbing.
    const key = `${nameOf(i)} <- ${steps.slice(-8).join(' -> ')}`;
    groups.set(key, (groups.get(key) || 0) + 1);
  }
  return [...groups].sort((a, b) => b[1] - a[1]);
}

const child = fork(path.join(__dirname, 'retention-server.cjs'), [], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
child.on('message', async (msg) => {
  if (msg.type === 'listening') {
    const sockets = [];
    for (let i = 0; i < SOCKETS; i++) sockets.push(await open(msg.ports.full));
    child.send('count');
    child.once('message', (count) => {
      console.log(`open: ${SOCKETS}; alive in the full stack: req ${count.full.aliveReq}, res ${count.full.aliveRes}`);
      child.send('snapshot');
      child.once('message', (snap) => {
        for (const [key, n] of analyse(snap.file)) console.log(`${String(n).padStart(5)}  ${key}`);
        fs.rmSync(snap.file, { force: true });
        for (const s of sockets) s.destroy();
        child.send('exit');
      });
    });
  }
});
