// Ours, full stack: logger (null stream), response-time, cookie-parser, session (MemoryStore),
// basic-auth, websocket — one stack for ordinary requests and upgrades. A package that is not
// built yet is replaced by its stock peer marked with supportsUpgrade() (and reported as such).
import * as http from 'node:http';
import {
  serve, onConnection, tryRequire, pick, require, addStats,
  USER, PASS, SECRET, SESSION_OPTIONS, LOG_FORMAT, nullStream,
} from '../lib/server-common.mjs';
import { createApp, websocketEndpoint, supportsUpgrade } from '../lib/ours.mjs';

const used = [];
// BENCH_SKIP=logger,session,… leaves middleware out (for finding what costs what).
const skip = new Set((process.env.BENCH_SKIP ?? '').split(',').filter(Boolean));
const pass = (req, res, next) => next();
pass.supportsUpgrade = true;
function middleware(ours, exportName, stock, make) {
  if (skip.has(ours.slice('@upgradeware/'.length))) {
    used.push(`(${ours} skipped)`);
    return pass;
  }
  const mod = tryRequire(ours);
  const factory = pick(mod, exportName);
  if (factory) {
    used.push(ours);
    return make(factory, mod);
  }
  used.push(`${stock} (stock, supportsUpgrade)`);
  const stockMod = require(stock);
  return supportsUpgrade(make(stockMod, stockMod));
}

const app = createApp();
if (typeof globalThis.gc === 'function') {
  // Memory scenario only: count requests and responses still alive after GC. After the switch,
  // nothing of the chain may be: this must read 0 with thousands of sockets open.
  let live = 0;
  const registry = new FinalizationRegistry(() => live--);
  app.use(supportsUpgrade((req, res, next) => {
    live += 2;
    registry.register(req, 0);
    registry.register(res, 0);
    next();
  }));
  addStats(() => ({ liveReqRes: live }));
}
app.use(middleware('@upgradeware/logger', 'logger', 'morgan', (logger) => logger(LOG_FORMAT, { stream: nullStream })));
app.use(middleware('@upgradeware/response-time', 'responseTime', 'response-time', (rt) => rt()));
app.use(middleware('@upgradeware/cookie-parser', 'cookieParser', 'cookie-parser', (cp) => cp(SECRET)));
// BENCH_SESSION_SAVE=1 (servers/ours-save.mjs): a session saved, and its cookie sent, on every handshake.
const saving = process.env.BENCH_SESSION_SAVE === '1';
app.use(middleware('@upgradeware/session', 'session', 'express-session', (session, mod) =>
  session({ ...SESSION_OPTIONS, saveUninitialized: saving, store: new mod.MemoryStore() })));
app.use(middleware('@upgradeware/basic-auth', 'basicAuth', 'basic-auth-connect', (basicAuth) => basicAuth(USER, PASS)));
const { endpoint, impl } = websocketEndpoint(onConnection);
used.push(impl);
app.use('/ws', endpoint);
app.use((req, res) => res.end('ok'));

const server = app.attach(http.createServer(app));
serve(server, { name: saving ? 'ours-save' : 'ours-full', impl: `@upgradeware/dispatcher + ${used.join(', ')}` });
