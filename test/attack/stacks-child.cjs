'use strict';
// The child process of the attack suites (pipelining.test.ts, retention-stacks.test.ts): four
// servers on the built packages (packages/*/dist), each counting which of its handshakes'
// requests and responses are still reachable (run it with --expose-gc for `count`).
//
// - "chat": the demo itself, createChatServer() from examples/chat/chat.mjs, untouched. Its
//   requests are registered by an 'upgrade' listener put first on its server, its upgrade
//   responses by the first setHeader() they get (the demo's security headers run for every
//   handshake).
// - "express": an Express 5 app with express-session (every handshake saves a session and sends
//   its cookie on the 101) and a WebSocket route, served by attachUpgrades().
// - "h2": an upgradeware app on http2.createSecureServer({ allowHTTP1, enableConnectProtocol }):
//   logger (closeFormat: see below), response-time, cookie-parser, session (saving every
//   handshake's session), basic-auth, websocket. Reached over HTTP/2 (RFC 8441) and HTTP/1.1.
// - "full": the same stack on a plain http server.
// For "express", "h2" and "full" the first layer registers req and res. /held on "h2" is the
// control: a connection callback that keeps req on purpose.
//
// For finding a holder by hand (the tests never set it): ATTACK_WITHOUT=logger,closeFormat,
// responseTime,cookieParser,session leaves those layers out of the "h2" and "full" stacks.
// Every server's socket errors are left to the packages: an uncaught exception ends this process
// (the parent checks it is alive). IPC: sends { type: 'listening', ports }; answers 'count' with
// { type: 'count', <name>: { seen, req, res, heldReq } , clients }, and 'exit'.
const path = require('node:path');
const fs = require('node:fs');
const http = require('node:http');
const http2 = require('node:http2');
const root = path.join(__dirname, '..', '..');
const pkg = (name) => require(path.join(root, 'packages', name));
const { createApp } = pkg('dispatcher');
const upr = pkg('upgrade-response');
const { supportsUpgrade, isUpgradeResponse, UpgradeResponse, Http2UpgradeResponse } = upr;
const { logger } = pkg('logger');
const { responseTime } = pkg('response-time');
const { cookieParser } = pkg('cookie-parser');
const { session, MemoryStore } = pkg('session');
const { basicAuth } = pkg('basic-auth');
const { websocket } = pkg('websocket');
const { attachUpgrades } = pkg('express');
const express = require('express');
const expressSession = require('express-session');

const SECRET = 'attack-secret';
const fixtures = path.join(root, 'test-support', 'fixtures');

function tracker() {
  const state = { seen: 0, req: 0, res: 0, heldReq: 0 };
  const registry = new FinalizationRegistry((kind) => state[kind]--);
  const seenReq = new WeakSet();
  const seenRes = new WeakSet();
  return {
    state,
    req(req) {
      if (seenReq.has(req)) return;
      seenReq.add(req);
      state.seen++;
      const kind = String(req.url).startsWith('/held') ? 'heldReq' : 'req';
      state[kind]++;
      registry.register(req, kind);
    },
    res(res, req) {
      if (seenRes.has(res) || (req && String(req.url).startsWith('/held'))) return;
      seenRes.add(res);
      state.res++;
      registry.register(res, 'res');
    },
  };
}
const trackers = { chat: tracker(), express: tracker(), h2: tracker(), full: tracker() };
/** The first layer of a stack: registers the handshake's req and res, keeps nothing. */
const trackLayer = (t) =>
  supportsUpgrade(function track(req, res, next) {
    if (isUpgradeResponse(res)) {
      t.req(req);
      t.res(res, req);
    }
    next();
  });

const sink = { write: () => undefined };
const endpoints = [];
function echo(options) {
  const e = websocket((ws) => ws.on('message', (data, binary) => ws.send(data, { binary })), options);
  endpoints.push(e);
  return e;
}

const without = new Set((process.env.ATTACK_WITHOUT || '').split(','));
function upgradewareStack(t) {
  const app = createApp();
  app.use(trackLayer(t));
  if (!without.has('logger')) app.use(logger('combined', { stream: sink }));
  // The close line too: what it needs is copied at the switch, nothing of the chain is kept.
  if (!without.has('closeFormat')) app.use(logger(':method :url :status', { stream: sink, closeFormat: 'closed :url :close-code :connection-time' }));
  if (!without.has('responseTime')) app.use(responseTime());
  if (!without.has('cookieParser')) app.use(cookieParser(SECRET));
  if (!without.has('session')) app.use(session({ secret: SECRET, store: new MemoryStore({ checkPeriod: 0 }), resave: false, saveUninitialized: true }));
  app.use('/login', (req, res) => {
    req.session.user = 'alice';
    res.end('ok');
  });
  app.use(basicAuth('alice', 'wonderland', 'attack'));
  app.use('/ws', echo({ origins: (origin) => origin === undefined || /^(https?:\/\/localhost|http:\/\/127\.0\.0\.1)/.test(origin) }));
  const held = websocket((ws, req) => ws.on('message', () => ws.send(String(req.url))));
  endpoints.push(held);
  app.use('/held', held);
  app.use((req, res) => res.end('page'));
  return app;
}

async function main() {
  const servers = {};
  // chat
  const { createChatServer } = await import(path.join(root, 'examples', 'chat', 'chat.mjs'));
  // The demo's upgrade responses, registered on their first header (its security headers).
  // (Only those whose req came through the chat's server: a WeakSet, which keeps nothing.)
  const chatRequests = new WeakSet();
  for (const Res of [UpgradeResponse, Http2UpgradeResponse]) {
    const setHeader = Res.prototype.setHeader;
    Res.prototype.setHeader = function trackedSetHeader(...args) {
      if (chatRequests.has(this.req)) trackers.chat.res(this);
      return setHeader.apply(this, args);
    };
  }
  const chat = await createChatServer({ port: 0, host: '127.0.0.1', log: sink, secret: SECRET });
  chat.server.prependListener('upgrade', (req) => {
    chatRequests.add(req);
    trackers.chat.req(req);
  });
  servers.chat = chat;
  // express
  const eapp = express();
  eapp.use((req, res, next) => {
    if (isUpgradeResponse(res)) {
      trackers.express.req(req);
      trackers.express.res(res, req);
    }
    next();
  });
  eapp.use(expressSession({ secret: SECRET, resave: false, saveUninitialized: true }));
  eapp.get('/ws', echo({ origins: () => true }));
  eapp.get('/', (req, res) => res.send('page'));
  const eserver = attachUpgrades(http.createServer(eapp), eapp);
  // h2 and full
  const h2app = upgradewareStack(trackers.h2);
  const h2server = http2.createSecureServer(
    {
      key: fs.readFileSync(path.join(fixtures, 'localhost-key.pem')),
      cert: fs.readFileSync(path.join(fixtures, 'localhost-cert.pem')),
      allowHTTP1: true,
      settings: { enableConnectProtocol: true },
    },
    h2app,
  );
  h2app.attach(h2server);
  const fullApp = upgradewareStack(trackers.full);
  const fullServer = fullApp.attach(http.createServer(fullApp));
  const listen = (s) => new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s.address().port)));
  const ports = { chat: chat.port, express: await listen(eserver), h2: await listen(h2server), full: await listen(fullServer) };
  process.send({ type: 'listening', ports });

  async function count() {
    for (let i = 0; i < 6; i++) {
      global.gc();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const result = { type: 'count', clients: endpoints.reduce((n, e) => n + e.clients.size, 0), chatClients: chat.chat.clients.size };
    for (const [name, t] of Object.entries(trackers)) result[name] = { ...t.state };
    return result;
  }
  process.on('message', (msg) => {
    if (msg === 'count') count().then((r) => process.send(r));
    else if (msg === 'exit') process.exit(0);
  });
  process.on('disconnect', () => process.exit(0));
}
main();
