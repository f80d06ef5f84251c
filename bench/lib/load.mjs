// The load generator: raw `net` clients that speak just enough HTTP/1.1 and WebSocket framing.
// Written by hand so that the client costs far less per handshake than the server under test
// (a `ws` client costs about as much as a `ws` server, and would flatten every ratio).
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';

const HOST = '127.0.0.1';
export const AUTH = `Basic ${Buffer.from('bench:bench-pass').toString('base64')}`;
// RFC 6455's sample key and its accept value: the 101 must carry this exact accept.
const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=';
/** A masked close frame (mask 0000), status 1000. */
const CLOSE_FRAME = Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
const MSG_SIZE = 32;
/** A masked text frame of MSG_SIZE bytes (mask 0000); the server echoes it unmasked. */
const MSG_FRAME = Buffer.concat([Buffer.from([0x81, 0x80 | MSG_SIZE, 0, 0, 0, 0]), Buffer.alloc(MSG_SIZE, 'x')]);
const ECHO_SIZE = 2 + MSG_SIZE;
const CRLF2 = Buffer.from('\r\n\r\n');

/** Every client socket still open, so that nothing outlives a measurement. */
export const liveSockets = new Set();
function track(socket) {
  liveSockets.add(socket);
  socket.once('close', () => liveSockets.delete(socket));
  return socket;
}
export function destroyAll() {
  for (const s of liveSockets) s.destroy();
}

/**
 * The load generator does not sleep while it measures: during a timed run its event loop polls
 * (a `setImmediate` chain) instead of waiting in `epoll_wait`. Over loopback, a server's write to
 * a client whose thread sleeps wakes that thread inside the server's own system call, and on a
 * virtual machine that wakes a halted CPU with an interrupt (measured here: `perf` puts 3 µs per
 * handshake of ours bare, 12 µs of ours full, on that wake-up inside the 101's write). The client
 * sleeps the more often, the slower the server, so it taxed the slower server more per handshake:
 * server CPU measured a cost of the load generator. Over a real network no server write pays for
 * waking its client. `setPolling(false)` (run.mjs and cost.mjs `--idle-client`) measures the old way.
 */
let polling = true;
export function setPolling(on) {
  polling = on;
}

/** Run `run()` (a timed run, returning a promise) with the event loop polling until it settles. */
export async function awake(run) {
  if (!polling) return run();
  let on = true;
  const poll = () => {
    if (on) setImmediate(poll);
  };
  setImmediate(poll);
  try {
    return await run();
  } finally {
    on = false;
  }
}

export function upgradeRequest(port, { path = '/ws', auth = true } = {}) {
  return Buffer.from(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n` +
      (auth ? `Authorization: ${AUTH}\r\n` : '') +
      'User-Agent: upgradeware-bench\r\n\r\n',
    'latin1',
  );
}

/**
 * Open one connection, send the handshake and resolve with the response head once it arrives.
 * `ok` is true for a 101 with the right accept value. The socket is left open.
 */
export function handshake(port, opts = {}) {
  const request = opts.request ?? upgradeRequest(port, opts);
  return new Promise((resolve) => {
    const t0 = performance.now();
    const socket = track(net.connect({ port, host: HOST, noDelay: true }));
    let buf = null;
    let done = false;
    const finish = (result) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ socket, ...result });
    };
    const timer = setTimeout(() => finish({ ok: false, head: null, error: 'timeout' }), opts.timeout ?? 10_000);
    socket.write(request);
    socket.on('error', (err) => finish({ ok: false, head: null, error: err.message }));
    socket.on('close', () => finish({ ok: false, head: buf?.toString('latin1') ?? null, error: 'closed' }));
    const onData = (chunk) => {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
      const end = buf.indexOf(CRLF2);
      if (end === -1) return;
      socket.removeListener('data', onData);
      const head = buf.toString('latin1', 0, end);
      const ok = head.startsWith('HTTP/1.1 101') && head.includes(ACCEPT);
      const rest = buf.subarray(end + 4);
      finish({ ok, head, rest, ms: performance.now() - t0 });
    };
    socket.on('data', onData);
  });
}

function statusOf(head) {
  return head ? head.slice(9, 12) : 'none';
}

/**
 * Handshake rate: `concurrency` clients, each in a loop of connect → 101 → close (close frame,
 * server's close frame and FIN). Counts cycles completed within `duration` ms; latency is
 * connect → 101 received.
 */
export function handshakeRun({ port, concurrency, duration }) {
  const request = upgradeRequest(port);
  return awake(() => new Promise((resolve) => {
    const lat = [];
    const errors = {};
    let count = 0;
    let active = 0;
    let stopped = false;
    const start = performance.now();
    const end = start + duration;
    const finish = () => {
      clearTimeout(grace);
      resolve({ count, rate: (count * 1000) / duration, lat, errors });
    };
    const launch = () => {
      active++;
      const t0 = performance.now();
      const socket = track(net.connect({ port, host: HOST, noDelay: true }));
      let buf = null;
      let ok = false;
      let answered = false;
      socket.write(request);
      socket.on('data', (chunk) => {
        if (answered) return;
        buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
        const i = buf.indexOf(CRLF2);
        if (i === -1) return;
        answered = true;
        const head = buf.toString('latin1', 0, i);
        buf = null;
        if (head.startsWith('HTTP/1.1 101') && head.includes(ACCEPT)) {
          ok = true;
          lat.push(performance.now() - t0);
          socket.write(CLOSE_FRAME);
        } else {
          const key = `HTTP ${statusOf(head)}`;
          errors[key] = (errors[key] ?? 0) + 1;
          socket.destroy();
        }
      });
      socket.on('error', (err) => {
        if (!answered) errors[err.code ?? err.message] = (errors[err.code ?? err.message] ?? 0) + 1;
        answered = true;
      });
      socket.on('close', () => {
        active--;
        const now = performance.now();
        if (ok && now <= end) count++;
        if (!answered) errors['closed before 101'] = (errors['closed before 101'] ?? 0) + 1;
        if (!stopped && now < end) launch();
        else if (stopped && active === 0) finish();
      });
    };
    const grace = setTimeout(() => {
      // Stragglers after the end: give them 5 s, then cut them off.
      for (const s of liveSockets) s.destroy();
    }, duration + 5000);
    setTimeout(() => {
      stopped = true;
      if (active === 0) finish();
    }, duration);
    for (let i = 0; i < concurrency; i++) launch();
  }));
}

/**
 * Ordinary request rate: `concurrency` keep-alive connections, one request in flight on each
 * (GET / with valid Basic credentials, no cookie). Responses must be 200 with a Content-Length.
 */
export function requestRun({ port, concurrency, duration, path = '/' }) {
  const request = Buffer.from(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: ${AUTH}\r\nUser-Agent: upgradeware-bench\r\nAccept: */*\r\n\r\n`,
    'latin1',
  );
  return awake(() => new Promise((resolve) => {
    const lat = [];
    const errors = {};
    let count = 0;
    let active = 0;
    let stopped = false;
    const end = performance.now() + duration;
    const fail = (key) => (errors[key] = (errors[key] ?? 0) + 1);
    const finish = () => {
      clearTimeout(grace);
      resolve({ count, rate: (count * 1000) / duration, lat, errors });
    };
    const connection = () => {
      active++;
      const socket = track(net.connect({ port, host: HOST, noDelay: true }));
      let buf = null;
      let t0 = 0;
      let need = -1; // total bytes of the current response, once its head is parsed
      const send = () => {
        t0 = performance.now();
        socket.write(request);
      };
      socket.on('data', (chunk) => {
        buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
        for (;;) {
          if (need === -1) {
            const i = buf.indexOf(CRLF2);
            if (i === -1) return;
            const head = buf.toString('latin1', 0, i).toLowerCase();
            const m = /\r\ncontent-length: *(\d+)/.exec(head);
            if (!head.startsWith('http/1.1 200') || !m) {
              fail(`HTTP ${statusOf(head)}${m ? '' : ' without content-length'}`);
              socket.destroy();
              return;
            }
            need = i + 4 + Number(m[1]);
          }
          if (buf.length < need) return;
          const now = performance.now();
          lat.push(now - t0);
          if (now <= end) count++;
          buf = buf.length === need ? null : buf.subarray(need);
          need = -1;
          if (stopped || now >= end) {
            socket.end();
            return;
          }
          send();
          if (buf === null) return;
        }
      });
      socket.on('error', (err) => fail(err.code ?? err.message));
      socket.on('close', () => {
        active--;
        if (!stopped && performance.now() < end) connection();
        else if (stopped && active === 0) finish();
      });
      send();
    };
    const grace = setTimeout(() => {
      for (const s of liveSockets) s.destroy();
    }, duration + 5000);
    setTimeout(() => {
      stopped = true;
      if (active === 0) finish();
    }, duration);
    for (let i = 0; i < concurrency; i++) connection();
  }));
}

/** Open `n` WebSockets, `concurrency` handshakes at a time. Resolves with the open sockets. */
export async function openMany(port, n, concurrency = 100) {
  const sockets = [];
  const errors = {};
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      const r = await handshake(port);
      if (r.ok) sockets.push(r.socket);
      else {
        const key = r.error ?? `HTTP ${statusOf(r.head)}`;
        errors[key] = (errors[key] ?? 0) + 1;
        r.socket.destroy();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return { sockets, errors };
}

/** Close WebSockets the polite way (close frame, wait for the server's FIN); cut off after 10 s. */
export function closeMany(sockets) {
  return new Promise((resolve) => {
    let left = sockets.length;
    if (left === 0) return resolve();
    const timer = setTimeout(() => {
      for (const s of sockets) s.destroy();
    }, 10_000);
    for (const s of sockets) {
      s.once('close', () => {
        if (--left === 0) {
          clearTimeout(timer);
          resolve();
        }
      });
      s.on('error', () => {});
      s.resume();
      if (s.destroyed) continue;
      s.write(CLOSE_FRAME);
    }
  });
}

/**
 * Message throughput after the switch: on each of `sockets`, one 32-byte text message in flight,
 * echoed by the server; counts echoes received within `duration` ms and their round-trip times.
 */
export function messageRun({ sockets, duration }) {
  return awake(() => new Promise((resolve) => {
    const lat = [];
    let count = 0;
    let stopped = false;
    let inFlight = 0;
    const end = performance.now() + duration;
    const finish = () => {
      clearTimeout(grace);
      for (const s of sockets) s.removeAllListeners('data');
      resolve({ count, rate: (count * 1000) / duration, lat, errors: {} });
    };
    for (const socket of sockets) {
      let pending = 0;
      let t0 = 0;
      const send = () => {
        t0 = performance.now();
        inFlight++;
        socket.write(MSG_FRAME);
      };
      socket.removeAllListeners('data');
      socket.on('data', (chunk) => {
        pending += chunk.length;
        while (pending >= ECHO_SIZE) {
          pending -= ECHO_SIZE;
          inFlight--;
          const now = performance.now();
          lat.push(now - t0);
          if (now <= end) count++;
          if (!stopped) send();
          else if (inFlight === 0) finish();
        }
      });
      send();
    }
    const grace = setTimeout(finish, duration + 5000);
    setTimeout(() => {
      stopped = true;
      if (inFlight === 0) finish();
    }, duration);
  }));
}
