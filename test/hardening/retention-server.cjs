'use strict';
// The child process of retention.test.ts: two apps from the built packages (packages/*/dist),
// run with --expose-gc, each counting which of its requests and responses are still reachable.
//
// - "full": dispatcher, logger without closeFormat, logger with closeFormat, response-time,
//   cookie-parser, session (saveUninitialized: true, so every handshake saves a session and
//   sends its cookie on the 101), basic-auth, websocket.
// - "own": dispatcher, basic-auth, websocket only (the packages of one helper, measurable alone).
// Both also serve /held: an endpoint whose connection callback keeps `req` on purpose, so the
// test can show that the counting sees a holder when there is one.
//
// Every req and res is registered in a FinalizationRegistry by the first layer (the control's
// requests apart, and their responses not at all: what a held req reaches is the app's business);
// `count` runs
// gc() several times (letting the registry's callbacks run in between) and reports how many are
// still alive. IPC: sends { type: 'listening', ports }; answers { type: 'count' }, 'snapshot'
// (writes a heap snapshot, replies with its path), 'exit'.
const path = require('node:path');
const v8 = require('node:v8');
const os = require('node:os');
const root = path.join(__dirname, '..', '..');
const pkg = (name) => require(path.join(root, 'packages', name));
const { createApp } = pkg('dispatcher');
const { supportsUpgrade } = pkg('upgrade-response');
const { logger } = pkg('logger');
const { responseTime } = pkg('response-time');
const { cookieParser } = pkg('cookie-parser');
const { session, MemoryStore } = pkg('session');
const { basicAuth } = pkg('basic-auth');
const { websocket } = pkg('websocket');

const SECRET = 'retention-secret';
const ORIGIN = 'http://good.example';

/** Per app: how many requests and responses were seen, and how many are still reachable. */
/** The control's requests (/held) are counted apart: the app itself keeps those. */
function tracker() {
  const state = { seen: 0, aliveReq: 0, aliveRes: 0, heldReq: 0 };
  const registry = new FinalizationRegistry((kind) => state[kind]--);
  // The first layer: registers and goes on. It keeps nothing itself.
  const layer = supportsUpgrade(function track(req, res, next) {
    state.seen++;
    if (req.url.startsWith('/held')) {
      state.heldReq++;
      registry.register(req, 'heldReq');
    } else {
      state.aliveReq++;
      state.aliveRes++;
      registry.register(req, 'aliveReq');
      registry.register(res, 'aliveRes');
    }
    next();
  });
  return { state, layer };
}

let lines = 0;
let closeLines = 0;
const sink = { write: () => { lines++; } };
const closeSink = { write: (line) => { if (line.startsWith('closed ')) closeLines++; else lines++; } };

/** The endpoints; the echo handler holds nothing of the request. */
function echoEndpoint() {
  return websocket((ws) => {
    ws.on('message', (data, binary) => ws.send(data, { binary }));
  }, { origins: [ORIGIN] });
}
/** The control: a connection callback that keeps `req` reachable while the socket is open. */
function holdingEndpoint() {
  return websocket((ws, req) => {
    ws.on('message', () => ws.send(String(req.url)));
  });
}

// For retention-holders.cjs only: RETENTION_WITHOUT=closeFormat,session leaves those layers out
// of the full stack, to find the holders behind the first one. The test never sets it.
const without = new Set((process.env.RETENTION_WITHOUT || '').split(',').filter(Boolean));
const full = tracker();
const fullApp = createApp();
fullApp.use(full.layer);
if (!without.has('logger')) fullApp.use(logger('combined', { stream: sink }));
if (!without.has('closeFormat')) {
  fullApp.use(logger(':method :url :status', { stream: closeSink, closeFormat: 'closed :url :close-code :connection-time' }));
}
if (!without.has('responseTime')) fullApp.use(responseTime());
if (!without.has('cookieParser')) fullApp.use(cookieParser(SECRET));
if (!without.has('session')) {
  fullApp.use(session({ secret: SECRET, store: new MemoryStore({ checkPeriod: 0 }), resave: false, saveUninitialized: true }));
}
fullApp.use('/login', (req, res) => {
  if (req.session) req.session.user = 'alice';
  res.end('ok');
});
fullApp.use(basicAuth('alice', 'wonderland', 'retention'));
const fullWs = echoEndpoint();
const fullHeld = holdingEndpoint();
fullApp.use('/ws', fullWs);
fullApp.use('/held', fullHeld);

const own = tracker();
const ownApp = createApp();
ownApp.use(own.layer);
ownApp.use(basicAuth('alice', 'wonderland', 'retention'));
const ownWs = echoEndpoint();
const ownHeld = holdingEndpoint();
ownApp.use('/ws', ownWs);
ownApp.use('/held', ownHeld);

const apps = { full, own };
const endpoints = [fullWs, fullHeld, ownWs, ownHeld];
const servers = [];

async function settle() {
  for (let i = 0; i < 6; i++) {
    global.gc();
    // FinalizationRegistry callbacks run as tasks after a collection.
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function count() {
  await settle();
  const result = { type: 'count', lines, closeLines, clients: endpoints.map((e) => e.clients.size) };
  for (const [name, t] of Object.entries(apps)) result[name] = { ...t.state };
  return result;
}

let pending = 2;
const ports = {};
for (const [name, app] of [['full', fullApp], ['own', ownApp]]) {
  const server = app.listen(0, '127.0.0.1', () => {
    ports[name] = server.address().port;
    if (--pending === 0) process.send({ type: 'listening', ports });
  });
  servers.push(server);
}

process.on('message', (msg) => {
  if (msg === 'count') {
    count().then((result) => process.send(result));
  } else if (msg === 'snapshot') {
    // For finding holders by hand (test/hardening/retention-holders.cjs reads it).
    settle().then(() => {
      const file = v8.writeHeapSnapshot(path.join(os.tmpdir(), `retention-${process.pid}.heapsnapshot`));
      process.send({ type: 'snapshot', file });
    });
  } else if (msg === 'exit') {
    Promise.all(endpoints.map((e) => e.close())).then(() => {
      for (const server of servers) server.close();
      process.exit(0);
    });
  }
});
process.on('disconnect', () => process.exit(0));
