'use strict';
/**
 * The child of crash.test.ts: servers whose crash the parent must be able to observe. It runs the
 * built packages (paths in UPGRADEWARE_PATHS), prints one JSON line with its ports, and exits 0
 * when its stdin closes. An uncaught exception ends it with a non-zero code and a stack on stderr.
 *
 *   echo     the root README's example, verbatim
 *   proxy    the basic-auth README's CONNECT proxy example, tunnelling to a local echo server
 *   limits   the time limit meeting an end() that throws (on-headers hook, session with a BigInt)
 *   errors   an error reaching the end of the stack (printed to stderr: NODE_ENV is not 'test')
 *   h2       app.attach() on http2.createSecureServer({ allowHTTP1: true })
 */
const fs = require('node:fs');
const http2 = require('node:http2');
const net = require('node:net');
const paths = JSON.parse(process.env.UPGRADEWARE_PATHS);
const { createApp } = require(paths.dispatcher);
const { isUpgradeResponse, supportsUpgrade } = require(paths.upgradeResponse);
const { basicAuth } = require(paths.basicAuth);
const { session } = require(paths.session);
const onHeaders = require(paths.onHeaders);

const servers = [];
function listen(app) {
  return new Promise((resolve) => {
    const server = app.listen(0, '127.0.0.1', () => resolve(server.address().port));
    servers.push(server);
  });
}

// --- the root README's example ---------------------------------------------------------------
function readmeEcho() {
  const app = createApp();
  app.use(supportsUpgrade((req, res, next) => {          // runs for requests and upgrades alike
    if (req.headers.authorization !== 'Bearer s3cret') {
      res.statusCode = 401;                              // a real, logged 401 on the socket
      return res.end('who are you?');
    }
    next();
  }));
  app.use('/echo', supportsUpgrade((req, res, next) => {
    if (!isUpgradeResponse(res)) return next();          // an ordinary GET goes on
    res.switchProtocols((socket, head) => socket.pipe(socket)); // 101, then the raw socket
  }));
  return app;
}

// --- the basic-auth README's CONNECT proxy ---------------------------------------------------
function readmeProxy(port, host) {
  const checkProxyUser = (user, pass) => user === 'proxy' && pass === 'pw';
  const app = createApp();
  app.use(basicAuth(checkProxyUser, { proxy: true, realm: 'Proxy' }));
  app.use(supportsUpgrade((req, res, next) => {
    if (!isUpgradeResponse(res) || req.method !== 'CONNECT') return next();
    const upstream = net.connect(port, host, () => res.switchProtocols((socket, head) => {
      upstream.write(head);
      socket.pipe(upstream).pipe(socket);
    }));
    upstream.once('error', next);
  }));
  return app;
}

// --- the time limit meeting an end() that throws ------------------------------------------------
function limits() {
  const app = createApp({ upgradeTimeout: 100 });
  app.use(session({ secret: 'child', resave: false, saveUninitialized: true }));
  app.use('/hook', supportsUpgrade((req, res) => {
    onHeaders(res, () => {
      throw new Error('on-headers hook fails');
    });
    // never answers: the time limit does
  }));
  app.use('/bigint', supportsUpgrade((req) => {
    req.session.big = 10n; // the session cannot be serialised when the response ends
  }));
  app.use(supportsUpgrade((req, res) => res.end('served')));
  return app;
}

// --- errors at the end of the stack ------------------------------------------------------------
function errors() {
  const app = createApp();
  app.use(supportsUpgrade(function failing(req) {
    throw new Error(`kaboom-${req.method}-${req.headers.upgrade ?? 'request'}`);
  }));
  return app;
}

async function main() {
  const upstream = net.createServer((s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  servers.push(upstream);

  const h2app = createApp();
  h2app.use((req, res) => res.end('h2 page'));
  const h2 = http2.createSecureServer(
    { allowHTTP1: true, key: fs.readFileSync(paths.key), cert: fs.readFileSync(paths.cert) },
    h2app,
  );
  h2app.attach(h2);
  await new Promise((resolve) => h2.listen(0, '127.0.0.1', resolve));
  servers.push(h2);

  const ports = {
    echo: await listen(readmeEcho()),
    proxy: await listen(readmeProxy(upstream.address().port, '127.0.0.1')),
    upstream: upstream.address().port,
    limits: await listen(limits()),
    errors: await listen(errors()),
    h2: h2.address().port,
  };
  process.stdout.write(JSON.stringify(ports) + '\n');
  process.stdin.resume();
  process.stdin.on('end', () => {
    for (const s of servers) {
      if (typeof s.closeAllConnections === 'function') s.closeAllConnections();
      s.close();
    }
    setTimeout(() => process.exit(0), 200).unref();
  });
}

main();
