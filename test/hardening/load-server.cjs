'use strict';
// The full stack from the built packages (packages/*/dist), in a child process started with
// --expose-gc, so the load suite and scripts/soak.mjs can measure the server's heap honestly.
// Talks over IPC: sends { port, echoPort } once listening; answers 'stats', 'heap' and 'exit'.
const path = require('node:path');
const net = require('node:net');
const root = path.join(__dirname, '..', '..');
const pkg = (name) => require(path.join(root, 'packages', name));
const { createApp } = pkg('dispatcher');
const { supportsUpgrade, isUpgradeResponse } = pkg('upgrade-response');
const { logger } = pkg('logger');
const { responseTime } = pkg('response-time');
const { cookieParser } = pkg('cookie-parser');
const { query } = pkg('query');
const { session, MemoryStore } = pkg('session');
const { basicAuth } = pkg('basic-auth');
const { websocket } = pkg('websocket');

const SECRET = 'hardening-secret';
const ORIGIN = 'http://good.example';
let lines = 0;
let bytes = 0;

const echo = net.createServer((s) => {
  s.on('error', () => undefined);
  s.pipe(s);
});

const app = createApp();
app.use(logger('combined', { stream: { write: (line) => { lines++; bytes += line.length; } } }));
app.use(responseTime());
app.use(cookieParser(SECRET));
app.use(query());
app.use(session({ secret: SECRET, store: new MemoryStore({ checkPeriod: 0 }), resave: false, saveUninitialized: false }));
const proxyAuth = basicAuth('proxy', 'pw', { proxy: true });
app.use(supportsUpgrade(function proxy(req, res, next) {
  if (req.method !== 'CONNECT') return next();
  proxyAuth(req, res, (err) => {
    if (err || !isUpgradeResponse(res)) return next(err);
    const upstream = net.connect(echo.address().port, '127.0.0.1', () => {
      try {
        if (!res.switchProtocols((socket, head) => {
          if (head.length) upstream.write(head);
          socket.on('error', () => upstream.destroy());
          upstream.on('close', () => socket.destroy());
          socket.on('close', () => upstream.destroy());
          socket.pipe(upstream).pipe(socket);
        })) upstream.destroy();
      } catch (e) {
        upstream.destroy();
        next(e);
      }
    });
    upstream.on('error', (e) => { if (!res.headersSent) next(e); });
  });
}));
app.use('/login', (req, res) => {
  req.session.user = String(req.query.user || 'load');
  res.end('ok');
});
app.use('/admin', basicAuth('admin', 's3cret'));
app.use('/ws', supportsUpgrade(function guard(req, res, next) {
  if (!req.session || typeof req.session.user !== 'string') {
    res.statusCode = 401;
    return res.end('log in first');
  }
  next();
}));
const chat = websocket((ws) => {
  ws.on('message', (data, binary) => ws.send(data, { binary }));
}, { origins: [ORIGIN] });
app.use('/ws', chat);

const server = app.listen(0, '127.0.0.1', () => {
  echo.listen(0, '127.0.0.1', () => {
    process.send({ type: 'listening', port: server.address().port, echoPort: echo.address().port });
  });
});

function heap() {
  for (let i = 0; i < 4; i++) global.gc();
  return process.memoryUsage().heapUsed;
}

process.on('message', (msg) => {
  if (msg === 'stats') {
    server.getConnections((_err, connections) => {
      process.send({ type: 'stats', connections, clients: chat.clients.size, lines, bytes });
    });
  } else if (msg === 'heap') {
    // Let pending closes and timers settle before collecting.
    setTimeout(() => setImmediate(() => process.send({ type: 'heap', heapUsed: heap() })), 50);
  } else if (msg === 'exit') {
    chat.close().then(() => {
      server.close();
      echo.close();
      process.exit(0);
    });
  }
});
process.on('disconnect', () => process.exit(0));
