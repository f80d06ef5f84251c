// The upgradeware demo: an auth-protected chat. Every package in one stack, composed the way a
// user would compose them. WebSocket handshakes go through the same layers as the page requests:
// the logger prints `GET /chat 101`, a handshake without a session is a real 401, a handshake
// from a foreign page a real 403, and the admin feed sits behind Basic auth.
//
// createChatServer({ port, host, log }) starts it; server.mjs is the command-line entry.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { EventEmitter } from 'node:events';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The built packages, by path: the demo runs from the repository after `tsc -b`.
import { createApp } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade } from '@upgradeware/upgrade-response';
import { logger } from '@upgradeware/logger';
import { responseTime } from '@upgradeware/response-time';
import { cookieParser } from '@upgradeware/cookie-parser';
import { query } from '@upgradeware/query';
import { session } from '@upgradeware/session';
import { basicAuth } from '@upgradeware/basic-auth';
import { websocket } from '@upgradeware/websocket';
import { trustProxy } from '@upgradeware/trust-proxy';

const here = dirname(fileURLToPath(import.meta.url));

/** The demo's users. The passwords are shown on the login page: this is a demo. */
export const DEMO_USERS = Object.freeze({ alice: 'wonderland', bob: 'builder', carol: 'singer' });
/** Basic credentials of the /admin area. */
export const DEMO_ADMIN = Object.freeze({ user: 'admin', password: 'upgradeware' });

const MAX_FORM_BYTES = 4 * 1024;
const MAX_MESSAGE_CHARS = 500;
const HISTORY = 50;
const MAX_ROOMS = 100;
const FEED_HISTORY = 200;
const ROOM = /^[a-z0-9-]{1,24}$/;
const NAME_COOKIE = 'chat.name';
const SESSION_COOKIE = 'chat.sid';
const CLEAR_SESSION_COOKIE = `${SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax`;

const STATIC = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/admin.js': ['admin.js', 'text/javascript; charset=utf-8'],
  '/style.css': ['style.css', 'text/css; charset=utf-8'],
  '/favicon.svg': ['favicon.svg', 'image/svg+xml'],
  '/favicon.ico': ['favicon.svg', 'image/svg+xml'],
};
const files = Object.fromEntries(
  Object.entries(STATIC).map(([path, [file, type]]) => [path, { body: readFileSync(join(here, 'public', file)), type }]),
);

const CSP = [
  "default-src 'self'",
  "connect-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

/**
 * Start the chat. `port` 0 picks a free one; `log` is where the request log goes (anything with
 * `write(string)`). Resolves once listening, with the URL and a `close()` that ends everything.
 */
export async function createChatServer(options = {}) {
  const { port = 3000, host = '127.0.0.1', log = process.stdout, secret = randomBytes(32).toString('base64url') } = options;
  // options.tls ({ key, cert }): serve over HTTPS with HTTP/2 (and HTTP/1.1 for who asks for it),
  // so browsers open the chat WebSocket over the page's own HTTP/2 connection (RFC 8441).
  const tls = options.tls ?? null;
  const users = options.users ?? DEMO_USERS;
  const admin = options.admin ?? DEMO_ADMIN;
  // Several instances (cluster.mjs): a shared session store, a hub, the proxy in front.
  const { store, hub, trust, publicOrigins = [], instance = '' } = options;
  const extraOrigins = new Set(publicOrigins.map((o) => o.toLowerCase()));

  const app = createApp();
  if (trust !== undefined) app.use(trustProxy(trust));
  app.use(logger('dev', { stream: log }));
  app.use(responseTime());
  app.use(cookieParser(secret));
  app.use(query());
  app.use(
    session({
      secret,
      name: SESSION_COOKIE,
      resave: false,
      saveUninitialized: false,
      cookie: { httpOnly: true, sameSite: 'lax', path: '/' },
      ...(store ? { store } : {}),
    }),
  );
  app.use(supportsUpgrade(securityHeaders));

  // ---- Who may open a socket: a session user, from one of our own pages -------------------
  // "Our own pages" are those served from the address this request came to (its Host header):
  // 127.0.0.1, localhost, the machine's LAN address when HOST=0.0.0.0, a name in /etc/hosts …
  // Behind a proxy (cluster.mjs) the public origins are named too.
  const isOwnOrigin = (origin, req) => origin === undefined || origin.toLowerCase() === ownOrigin(req) || extraOrigins.has(origin.toLowerCase());

  // The admin feed: every connection event of the chat, live.
  const feedLog = [];
  const feed = websocket(
    (ws) => {
      ws.send(JSON.stringify({ type: 'snapshot', instance, connections: snapshot(), events: feedLog }));
      // With a hub, the other instances send theirs: the table starts with every connection.
      if (hub) hub.broadcast(JSON.stringify({ type: 'snapshot-request' }), { room: 'admin-sync', except: peer });
    },
    { origins: isOwnOrigin, maxPayload: 1024, ...(hub ? { hub, rooms: () => 'admin-feed' } : {}) },
  );
  function event(type, fields) {
    const e = { type, time: new Date().toISOString(), ...(instance ? { instance } : {}), ...fields };
    feedLog.push(e);
    if (feedLog.length > FEED_HISTORY) feedLog.shift();
    // With a hub, the admin feeds of every instance get it.
    if (hub) hub.broadcast(JSON.stringify({ type: 'event', event: e }), { room: 'admin-feed' });
    else feed.broadcast(JSON.stringify({ type: 'event', event: e }));
  }

  // Rooms: name → { history, sockets }.
  const rooms = new Map();
  const roomOf = (name) => {
    let room = rooms.get(name);
    if (!room) {
      // Bounded: past MAX_ROOMS, the oldest rooms nobody is in are forgotten.
      for (const [old, r] of rooms) {
        if (rooms.size < MAX_ROOMS) break;
        if (r.sockets.size === 0) rooms.delete(old);
      }
      rooms.set(name, (room = { name, history: [], sockets: new Set() }));
    }
    return room;
  };
  const online = (room) => {
    const counts = new Map();
    for (const s of room.sockets) counts.set(s.user, (counts.get(s.user) ?? 0) + 1);
    return [...counts.keys()].sort();
  };
  const connections = new Set(); // { ws, user, room, sid, origin, since, ip }
  function snapshot() {
    return [...connections].map(({ user, room, since, ip, origin, transport }) => ({ user, room, since, ip, origin, transport, ...(instance ? { instance } : {}) }));
  }
  // Across instances (a hub): this instance answers the other instances' snapshot requests through
  // a member of its own in the 'admin-sync' room (what the hub needs of a socket, without one).
  const peer = hub ? serverMember((data) => {
    let msg;
    try {
      msg = JSON.parse(String(data));
    } catch {
      return;
    }
    if (msg?.type === 'snapshot-request') {
      hub.broadcast(JSON.stringify({ type: 'snapshot-part', instance, connections: snapshot() }), { room: 'admin-feed' });
    }
  }) : null;
  if (peer) hub.join(peer, 'admin-sync');
  function sendRoom(room, message) {
    const data = JSON.stringify(message);
    // With a hub, chat messages reach the room's sockets on every instance (presence stays local).
    if (hub && message.type === 'message') return void hub.broadcast(data, { room: `chat:${room.name}` });
    for (const s of room.sockets) if (s.ws.readyState === 1) s.ws.send(data);
  }

  const chat = websocket(
    (ws, req) => {
      const user = req.session.user;
      const roomName = req.chatRoom;
      const room = roomOf(roomName);
      const conn = {
        ws,
        user,
        room: roomName,
        sid: req.sessionID,
        origin: req.headers.origin ?? null,
        since: new Date().toISOString(),
        ip: req.ip ?? req.socket.remoteAddress,
        // Which transport served this socket: an RFC 8441 extended CONNECT, or an HTTP/1.1 upgrade.
        transport: req.httpVersionMajor === 2 ? 'h2' : 'http/1.1',
      };
      const first = !online(room).includes(user);
      connections.add(conn);
      room.sockets.add(conn);
      event('open', { user, room: roomName, origin: conn.origin, ip: conn.ip, transport: conn.transport, connections: connections.size });
      ws.send(JSON.stringify({ type: 'hello', user, room: roomName, online: online(room), history: room.history }));
      if (first) sendRoom(room, { type: 'presence', online: online(room), joined: user });
      else sendRoom(room, { type: 'presence', online: online(room) });

      ws.on('message', (data, isBinary) => {
        let msg;
        try {
          msg = isBinary ? null : JSON.parse(String(data));
        } catch {
          msg = null;
        }
        if (!msg || msg.type !== 'say' || typeof msg.text !== 'string') {
          ws.send(JSON.stringify({ type: 'error', error: 'expected {"type":"say","text":"…"}' }));
          return;
        }
        const text = msg.text.trim().slice(0, MAX_MESSAGE_CHARS);
        if (!text) return;
        const message = { type: 'message', id: randomBytes(6).toString('hex'), user, text, time: new Date().toISOString() };
        room.history.push(message);
        if (room.history.length > HISTORY) room.history.shift();
        sendRoom(room, message);
      });
      ws.on('close', (code) => {
        connections.delete(conn);
        room.sockets.delete(conn);
        event('close', { user, room: roomName, code, connections: connections.size });
        const still = online(room);
        sendRoom(room, still.includes(user) ? { type: 'presence', online: still } : { type: 'presence', online: still, left: user });
      });
    },
    { origins: isOwnOrigin, maxPayload: 4 * 1024, ...(hub ? { hub, rooms: (req) => `chat:${req.chatRoom}` } : {}) },
  );

  // ---- Ordinary pages ----------------------------------------------------------------------
  app.use('/login', (req, res) => {
    if (req.method === 'GET' || req.method === 'HEAD') return loginPage(req, res);
    if (req.method !== 'POST') return methodNotAllowed(res, 'GET, HEAD, POST');
    if (!isOwnOrigin(req.headers.origin, req)) return plain(res, 403, 'Cross-site form refused\n');
    readForm(req, res, (form) => {
      const name = typeof form.user === 'string' ? form.user.trim().toLowerCase() : '';
      const password = typeof form.password === 'string' ? form.password : '';
      if (!checkPassword(users, name, password)) {
        event('login-failed', { user: name.slice(0, 40) || null, ip: req.socket.remoteAddress });
        return loginPage(req, res, 401, 'Unknown user or wrong password.', name);
      }
      // A new session id at login (no session fixation).
      req.session.regenerate((err) => {
        if (err) return plain(res, 500, 'Session error\n');
        req.session.user = name;
        event('login', { user: name, ip: req.socket.remoteAddress });
        res.setHeader('Set-Cookie', signedCookie(NAME_COOKIE, name, secret));
        redirect(res, '/');
      });
    });
  });

  app.use('/logout', (req, res) => {
    if (req.method !== 'POST') return methodNotAllowed(res, 'POST');
    if (!isOwnOrigin(req.headers.origin, req)) return plain(res, 403, 'Cross-site form refused\n');
    const user = req.session?.user;
    const sid = req.sessionID;
    if (!user || !req.session) return redirect(res, '/login');
    req.session.destroy(() => {
      for (const c of connections) if (c.sid === sid) c.ws.close(4001, 'logged out');
      event('logout', { user });
      res.setHeader('Set-Cookie', CLEAR_SESSION_COOKIE); // a later visit is a new one, not an "ended" session
      redirect(res, '/login');
    });
  });

  app.use('/me', (req, res) => {
    const user = req.session?.user;
    if (!user) return json(res, 401, { error: 'not logged in' });
    json(res, 200, { user });
  });

  // ---- The chat socket: no session user, no entry (401) — on the handshake itself ------------
  app.use(
    '/chat',
    supportsUpgrade((req, res, next) => {
      if (!isUpgradeResponse(res)) return next();
      // Every handshake that does not switch shows up in the admin feed, with its real status.
      res.once('finish', () => {
        // A switch is 101 over HTTP/1.1 and 200 over HTTP/2 (RFC 8441).
        if (res.statusCode !== 101 && res.statusCode !== 200) {
          event('refused', { status: res.statusCode, user: req.session?.user ?? null, origin: req.headers.origin ?? null, ip: req.socket.remoteAddress });
        }
      });
      if (!req.session?.user) {
        res.statusCode = 401;
        res.setHeader('Content-Type', 'text/plain; charset=utf-8');
        return res.end('Log in first\n');
      }
      const room = typeof req.query?.room === 'string' && req.query.room !== '' ? req.query.room.toLowerCase() : 'lobby';
      if (!ROOM.test(room)) {
        res.statusCode = 400;
        return res.end('Bad room name\n');
      }
      req.chatRoom = room;
      next();
    }),
  );
  app.use('/chat', chat);
  // An ordinary GET /chat: this is a WebSocket endpoint.
  app.use('/chat', (req, res) => {
    // HTTP/2 forbids connection headers (and a browser on it would use extended CONNECT anyway).
    if (req.httpVersionMajor !== 2) {
      res.setHeader('Upgrade', 'websocket');
      res.setHeader('Connection', 'Upgrade');
    }
    plain(res, 426, 'This is a WebSocket endpoint: open it with new WebSocket()\n');
  });

  // ---- The admin area: Basic auth for the page, its script and its WebSocket feed ------------
  app.use('/admin', basicAuth(admin.user, admin.password, 'upgradeware chat admin'));
  app.use('/admin/feed', feed);
  app.use('/admin/drop', (req, res) => {
    // Close every chat socket with 1012 (service restart): the pages show it and reconnect.
    if (req.method !== 'POST') return methodNotAllowed(res, 'POST');
    if (!isOwnOrigin(req.headers.origin, req)) return plain(res, 403, 'Cross-site form refused\n');
    let n = 0;
    for (const c of connections) {
      c.ws.close(1012, 'dropped by admin');
      n++;
    }
    event('drop', { by: req.user, connections: n });
    json(res, 200, { dropped: n });
  });
  app.use('/admin', (req, res, next) => {
    if (req.url !== '/' && !req.url.startsWith('/?')) return next();
    send(res, 200, 'text/html; charset=utf-8', adminPage(req.user));
  });

  // ---- Static files; the chat page only for a logged-in user ---------------------------------
  app.use((req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    const path = req.url.split('?')[0];
    const file = files[path];
    if (!file) return next();
    if (path === '/' && !req.session?.user) {
      // A session cookie that no longer loads a session: it ended (logged out elsewhere, expired,
      // or the server restarted with its in-memory store). Say so on the login form.
      return redirect(res, hasSessionCookie(req) ? '/login?ended=1' : '/login');
    }
    res.setHeader('Cache-Control', 'no-store');
    send(res, 200, file.type, file.body);
  });

  app.use((req, res) => plain(res, 404, 'Not found\n'));

  // ---- Listen ------------------------------------------------------------------------------
  const server = tls ? app.listenHttp2(tls, port, host) : app.listen(port, host);
  const sockets = new Set();
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const actual = server.address().port;
  const { url, others } = urlsOf(host, actual, tls ? 'https' : 'http');

  let closing = null;
  return {
    server,
    port: actual,
    url,
    others,
    chat,
    feed,
    close() {
      closing ??= (async () => {
        await Promise.all([chat.close(), feed.close()]);
        await new Promise((resolve) => {
          server.close(() => resolve());
          for (const s of sockets) s.destroy();
        });
      })();
      return closing;
    },
  };

  // ---- Pages -------------------------------------------------------------------------------
  function loginPage(req, res, status = 200, error = '', name = '') {
    if (req.session?.user && status === 200) return redirect(res, '/');
    const remembered = typeof req.signedCookies?.[NAME_COOKIE] === 'string' ? req.signedCookies[NAME_COOKIE] : '';
    const prefill = name || remembered;
    const ended = req.query?.ended === '1';
    // Said once: the stale session cookie goes, so the next visit is an ordinary one.
    if (ended && hasSessionCookie(req)) res.setHeader('Set-Cookie', CLEAR_SESSION_COOKIE);
    const rows = Object.entries(users)
      .map(([u, p]) => `<tr><td><code>${esc(u)}</code></td><td><code>${esc(p)}</code></td></tr>`)
      .join('');
    send(
      res,
      status,
      'text/html; charset=utf-8',
      page(
        'Log in — upgradeware chat',
        `<main class="narrow">
  <h1>upgradeware chat</h1>
  ${remembered && !error ? `<p class="muted">Welcome back, ${esc(remembered)}.</p>` : ''}
  ${!error && ended ? '<p class="notice" role="alert">Your session ended, please log in again.</p>' : ''}
  ${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
  <form method="post" action="/login" class="card">
    <label>User <input name="user" autocomplete="username" required value="${esc(prefill)}" ${prefill ? '' : 'autofocus'}></label>
    <label>Password <input name="password" type="password" autocomplete="current-password" required ${prefill ? 'autofocus' : ''}></label>
    <button type="submit">Log in</button>
  </form>
  <details class="card" open>
    <summary>Demo accounts</summary>
    <table><tr><th>user</th><th>password</th></tr>${rows}</table>
    <p class="muted">Admin area: <a href="/admin">/admin</a> (Basic auth <code>${esc(admin.user)}</code> / <code>${esc(admin.password)}</code>).</p>
  </details>
</main>`,
      ),
    );
  }
}

function adminPage(user) {
  return page(
    'Admin — upgradeware chat',
    `<main>
  <header class="bar"><h1>Admin</h1><span class="muted">signed in as ${esc(String(user))}</span>
    <span id="status" class="status">connecting…</span>
    <button id="drop" type="button">Drop all chat connections</button></header>
  <section class="card"><h2>Open connections</h2><table id="connections"><thead><tr><th>user</th><th>room</th><th>since</th><th>address</th></tr></thead><tbody></tbody></table></section>
  <section class="card"><h2>Connection events</h2><ol id="events" class="events"></ol></section>
</main>
<script src="/admin.js"></script>`,
  );
}

function page(title, body) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title><link rel="icon" href="/favicon.svg"><link rel="stylesheet" href="/style.css"></head>
<body>${body}</body></html>
`;
}

// ---- Helpers ---------------------------------------------------------------------------------

function securityHeaders(req, res, next) {
  res.setHeader('X-Content-Type-Options', 'nosniff');
  if (!isUpgradeResponse(res)) {
    res.setHeader('Content-Security-Policy', CSP);
    res.setHeader('Referrer-Policy', 'same-origin');
  }
  next();
}

function send(res, status, type, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(res.req?.method === 'HEAD' ? undefined : body);
}
function plain(res, status, text) {
  send(res, status, 'text/plain; charset=utf-8', text);
}
function json(res, status, value) {
  res.setHeader('Cache-Control', 'no-store');
  send(res, status, 'application/json', JSON.stringify(value));
}
function redirect(res, location) {
  res.setHeader('Location', location);
  plain(res, 302, `Found: ${location}\n`);
}
function methodNotAllowed(res, allow) {
  res.setHeader('Allow', allow);
  plain(res, 405, 'Method not allowed\n');
}

/** Does the request carry a session cookie (loaded or not)? */
function hasSessionCookie(req) {
  return String(req.headers.cookie ?? '')
    .split(';')
    .some((pair) => pair.trim().startsWith(`${SESSION_COOKIE}=`));
}

/** A hub member that is not a socket: what is broadcast to its rooms goes to `onData`. */
function serverMember(onData) {
  const member = new EventEmitter();
  member.readyState = 1;
  member.bufferedAmount = 0;
  member.send = (data, cb) => {
    onData(data);
    if (typeof cb === 'function') cb();
  };
  member.close = () => {
    member.readyState = 3;
    member.emit('close');
  };
  return member;
}

/** The origin of the pages this request's client got from us: scheme and its own Host header. */
function ownOrigin(req) {
  // HTTP/2 names the host in :authority (there is no Host header).
  const host = req.headers.host ?? req.headers[':authority'];
  if (typeof host !== 'string' || host === '') return null;
  // req.protocol is set by trust-proxy from a trusted proxy's X-Forwarded-Proto (cluster.mjs).
  const scheme = typeof req.protocol === 'string' ? req.protocol : req.socket.encrypted ? 'https' : 'http';
  return `${scheme}://${host.toLowerCase()}`;
}

/**
 * Where to open the demo. Bound to every interface (0.0.0.0 or ::), a browser cannot open
 * `http://0.0.0.0:3000/`: the URL is the loopback one, and `others` lists the machine's LAN
 * addresses (for a phone on the same network).
 */
export function urlsOf(host, port, scheme = 'http') {
  const at = (address) => `${scheme}://${address.includes(':') ? `[${address}]` : address}:${port}/`;
  if (host !== '0.0.0.0' && host !== '::' && host !== '') return { url: at(host), others: [] };
  const others = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.internal || (a.family !== 'IPv4' && host === '0.0.0.0')) continue;
      if (a.family === 'IPv6' && a.address.toLowerCase().startsWith('fe80')) continue; // link-local: needs a zone id
      others.push(at(a.address));
    }
  }
  return { url: at('127.0.0.1'), others };
}

/**
 * Read an application/x-www-form-urlencoded body of at most MAX_FORM_BYTES: 415 for another type,
 * 413 when it is bigger (announced or not), 400 when the client goes away mid-body.
 */
function readForm(req, res, done) {
  const type = String(req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    res.setHeader('Connection', 'close');
    return plain(res, 415, 'Expected application/x-www-form-urlencoded\n');
  }
  const tooBig = () => {
    res.setHeader('Connection', 'close');
    plain(res, 413, `Form too large (at most ${MAX_FORM_BYTES} bytes)\n`);
    req.resume();
  };
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > MAX_FORM_BYTES) return tooBig();
  const chunks = [];
  let size = 0;
  let over = false;
  req.on('data', (chunk) => {
    if (over) return;
    size += chunk.length;
    if (size > MAX_FORM_BYTES) {
      over = true;
      chunks.length = 0;
      return tooBig();
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (over) return;
    const params = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    const form = Object.create(null);
    for (const [k, v] of params) if (!(k in form)) form[k] = v;
    done(form);
  });
  req.on('error', () => {
    if (!res.headersSent) plain(res, 400, 'Bad request body\n');
  });
}

/** Constant time in the password, and the same work for an unknown user as for a known one. */
function checkPassword(users, name, password) {
  const digest = (s) => createHash('sha256').update(s, 'utf8').digest();
  const known = Object.hasOwn(users, name);
  const expected = digest(known ? users[name] : 'no such user: ' + randomBytes(8).toString('hex'));
  return timingSafeEqual(expected, digest(password)) && known;
}

/** A cookie in cookie-parser's signed format (`s:value.signature`), read back by req.signedCookies. */
function signedCookie(name, value, secret) {
  const mac = createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '');
  const v = encodeURIComponent(`s:${value}.${mac}`);
  return `${name}=${v}; Path=/login; Max-Age=${30 * 24 * 3600}; HttpOnly; SameSite=Lax`;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}
