// WebSockets over HTTP/2 (RFC 8441) against HTTP/1.1 upgrades, both over TLS, on one server
// (servers/ours-h2.mjs): what a browser saves by opening its WebSockets on the page's connection.
//
//   open:     h2 — a new extended CONNECT stream on an already open session, until :status 200;
//             HTTP/1.1 — a new TLS connection, the upgrade request, until the 101. Either way the
//             socket is then closed (a close frame on h2, a dropped connection on HTTP/1.1).
//   messages: N WebSockets (N streams of one h2 session, or N TLS connections), 1 KiB echo, one
//             message in flight per socket.
import * as http2 from 'node:http2';
import * as tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { awake } from './load.mjs';

const require = createRequire(import.meta.url);
const WebSocket = require('ws');
const MESSAGE = Buffer.alloc(1024, 0x61);
const TIMEOUT_MS = 10_000;
/** A client's close frame (masked, code 1000). */
const CLOSE_FRAME = Buffer.from([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2]);

export const H2_LABELS = { 'h2-stream': 'h2 (stream on an open session)', 'h1-tls': 'HTTP/1.1 (new TLS connection)' };

/** An h2 client session that saw the server's SETTINGS with enableConnectProtocol. */
function h2Session(port) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
    const timer = setTimeout(() => reject(new Error('no SETTINGS in time')), TIMEOUT_MS);
    session.once('error', reject);
    session.once('remoteSettings', (s) => {
      clearTimeout(timer);
      session.off('error', reject);
      session.on('error', () => {});
      if (!s.enableConnectProtocol) reject(new Error('the server does not advertise extended CONNECT'));
      else resolve(session);
    });
  });
}

const CONNECT = { ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/ws', 'sec-websocket-version': '13' };

/** Opening rate over one open h2 session: `concurrency` streams at a time (the load polling: see load.mjs `awake`). */
export const h2OpenRun = (options) => awake(() => h2Open(options));
async function h2Open({ port, concurrency, duration }) {
  const session = await h2Session(port);
  const lat = [];
  const errors = {};
  let count = 0;
  const end = Date.now() + duration;
  const loop = async () => {
    while (Date.now() < end) {
      const t0 = process.hrtime.bigint();
      const status = await new Promise((resolve) => {
        const stream = session.request(CONNECT, { endStream: false });
        const timer = setTimeout(() => resolve('timeout'), TIMEOUT_MS);
        stream.on('error', () => {});
        let status = 'closed';
        stream.once('response', (h) => {
          status = h[':status'];
          if (status === 200) lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
          // A WebSocket close, not a reset: Node's HTTP/2 server answers a flood of client
          // resets with GOAWAY (its rapid-reset limit, measured: GOAWAY after 1,000 resets).
          stream.end(CLOSE_FRAME);
        });
        stream.resume();
        stream.once('close', () => {
          clearTimeout(timer);
          resolve(status);
        });
      });
      if (status === 200) count++;
      else errors[String(status)] = (errors[String(status)] ?? 0) + 1;
    }
  };
  const t = Date.now();
  await Promise.all(Array.from({ length: concurrency }, loop));
  const seconds = (Date.now() - t) / 1000;
  session.destroy();
  return { rate: count / seconds, lat, count, errors };
}

/** Opening rate with a new TLS connection and an HTTP/1.1 upgrade each time (polling, as above). */
export const h1OpenRun = (options) => awake(() => h1Open(options));
async function h1Open({ port, concurrency, duration }) {
  const lat = [];
  const errors = {};
  let count = 0;
  const end = Date.now() + duration;
  const once = () =>
    new Promise((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'], servername: 'localhost' });
      const timer = setTimeout(() => done('timeout'), TIMEOUT_MS);
      let got = '';
      const done = (what) => {
        clearTimeout(timer);
        socket.destroy();
        resolve(what);
      };
      socket.on('error', (e) => done(e.code ?? 'error'));
      socket.once('secureConnect', () => {
        socket.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
      });
      socket.on('data', (d) => {
        got += d.toString('latin1');
        if (got.includes('\r\n\r\n')) done(got.startsWith('HTTP/1.1 101') ? 101 : got.slice(9, 12));
      });
    });
  const loop = async () => {
    while (Date.now() < end) {
      const t0 = process.hrtime.bigint();
      const status = await once();
      if (status === 101) {
        count++;
        lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
      } else errors[String(status)] = (errors[String(status)] ?? 0) + 1;
    }
  };
  const t = Date.now();
  await Promise.all(Array.from({ length: concurrency }, loop));
  return { rate: count / ((Date.now() - t) / 1000), lat, count, errors };
}

/** A ws client on an extended CONNECT stream (what a browser does over RFC 8441). */
function h2WebSocket(session) {
  return new Promise((resolve, reject) => {
    const stream = session.request(CONNECT, { endStream: false });
    stream.on('error', () => {});
    stream.once('close', () => reject(new Error('stream closed before the switch')));
    stream.once('response', (h) => {
      if (h[':status'] !== 200) return reject(new Error(`status ${h[':status']}`));
      const ws = new WebSocket(null, undefined, { autoPong: true, closeTimeout: 30_000 });
      ws._isServer = false; // a client: masks its frames
      ws.setSocket(stream, Buffer.alloc(0), { maxPayload: 0 });
      resolve(ws);
    });
  });
}

function h1WebSocket(port) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://127.0.0.1:${port}/ws`, { rejectUnauthorized: false, perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

/** Echo round trips per second over `sockets`, one message in flight per socket (polling, as above). */
function messageRun(sockets, duration) {
  return awake(() => new Promise((resolve) => {
    let count = 0;
    let stop = false;
    const lat = [];
    for (const ws of sockets) {
      let t0 = 0n;
      const send = () => {
        t0 = process.hrtime.bigint();
        ws.send(MESSAGE);
      };
      ws.removeAllListeners('message');
      ws.on('message', () => {
        count++;
        if (count % 64 === 0) lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
        if (!stop) send();
      });
      send();
    }
    const t = Date.now();
    setTimeout(() => {
      stop = true;
      const seconds = (Date.now() - t) / 1000;
      // Let the messages in flight land before the next run.
      setTimeout(() => resolve({ rate: count / seconds, lat, count, errors: {} }), 100);
    }, duration);
  }));
}

/**
 * The whole section, with run.mjs's machinery: `startServer(name)`, `rounds(title, names,
 * measure)` (medians of rotating runs), `withCpu(server, load)`.
 */
export async function h2Scenario({ startServer, rounds, withCpu, cfg, log }) {
  log('\n== WebSockets over HTTP/2 (RFC 8441) vs HTTP/1.1 upgrades, TLS both, one server');
  const server = await startServer('ours-h2');
  const out = {};
  try {
    const c = 20;
    const open = { 'h2-stream': (o) => h2OpenRun(o), 'h1-tls': (o) => h1OpenRun(o) };
    for (const run of Object.values(open)) await run({ port: server.port, concurrency: c, duration: cfg.warmup });
    out.open = await rounds(`ws open c=${c}`, Object.keys(open), (n) =>
      withCpu(server, () => open[n]({ port: server.port, concurrency: c, duration: cfg.duration })));
    out.openConcurrency = c;

    const n = cfg.messageConnections;
    const session = await h2Session(server.port);
    const sockets = { 'h2-stream': [], 'h1-tls': [] };
    for (let i = 0; i < n; i++) sockets['h2-stream'].push(await h2WebSocket(session));
    for (let i = 0; i < n; i++) sockets['h1-tls'].push(await h1WebSocket(server.port));
    for (const list of Object.values(sockets)) await messageRun(list, cfg.warmup);
    out.messages = await rounds(`messages ${n} sockets, 1 KiB echo`, Object.keys(sockets), (k) =>
      withCpu(server, () => messageRun(sockets[k], cfg.duration)));
    out.messageConnections = n;
    for (const list of Object.values(sockets)) for (const ws of list) ws.terminate();
    session.destroy();
  } finally {
    await server.stop();
  }
  return out;
}

const f = (x, d = 0) => (Number.isFinite(x) ? x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }) : '–');
const r = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : '–');

/** The section of RESULTS.md. */
export function h2Report(res) {
  const out = ['## WebSockets over HTTP/2 (RFC 8441) vs HTTP/1.1 upgrades', ''];
  out.push('One server (`servers/ours-h2.mjs`: the dispatcher and the WebSocket endpoint on `http2.createSecureServer({ allowHTTP1: true, settings: { enableConnectProtocol: true } })`), TLS for both transports. **Open**: h2 = a new extended CONNECT stream on an already open session until `:status 200` — what a browser does for a page loaded over HTTP/2; HTTP/1.1 = a new TLS connection and an upgrade until the 101 — what it does otherwise. Each socket is then closed (h2: a close frame and END_STREAM — a reset per stream would trip the rapid-reset limit of Node’s HTTP/2 server, which ends a session with GOAWAY after about 1,000 client RST_STREAMs in a burst; HTTP/1.1: the connection is dropped), so the rate counts whole cycles while the latency is the opening alone. Latency = request sent (h2) or connect started (HTTP/1.1) → switch received. **Messages**: 1 KiB echo, one in flight per socket; h2 = all sockets as streams of one session.', '');
  const h = ['figure', 'h2', 'HTTP/1.1', 'h2 / HTTP/1.1'];
  const rows = [];
  if (res.open) {
    const a = res.open['h2-stream'];
    const b = res.open['h1-tls'];
    rows.push([`WebSockets opened/s, ${res.openConcurrency} at a time`, f(a.rate), f(b.rate), r(a.rate, b.rate)]);
    rows.push(['p50 open time (ms)', f(a.p50, 2), f(b.p50, 2), r(a.p50, b.p50)]);
    rows.push(['p99 open time (ms)', f(a.p99, 2), f(b.p99, 2), r(a.p99, b.p99)]);
    rows.push(['server CPU µs / open', f(a.cpu), f(b.cpu), r(a.cpu, b.cpu)]);
  }
  if (res.messages) {
    const a = res.messages['h2-stream'];
    const b = res.messages['h1-tls'];
    rows.push([`messages/s, ${res.messageConnections} sockets`, f(a.rate), f(b.rate), r(a.rate, b.rate)]);
    rows.push(['server CPU µs / message', f(a.cpu, 1), f(b.cpu, 1), r(a.cpu, b.cpu)]);
  }
  out.push(`| ${h.join(' | ')} |`, `| ${h.map(() => '---').join(' | ')} |`, ...rows.map((x) => `| ${x.join(' | ')} |`), '');
  if (res.open) out.push(`Per-run open rates: h2 ${res.open['h2-stream'].runs.join(' / ')}; HTTP/1.1 ${res.open['h1-tls'].runs.join(' / ')}.`, '');
  return out;
}
