/**
 * The demo (issue 8), without a browser: the server runs as `node examples/chat/server.mjs` on the
 * built packages, in a child process on port 0; real HTTP requests and real `ws` clients.
 */
import type { IncomingMessage } from 'node:http';
import WebSocket from 'ws';
import { build, login, request, root, startDemo, type Demo } from './demo';

let demo: Demo;
const sockets = new Set<WebSocket>();

beforeAll(async () => {
  build();
  demo = await startDemo();
}, 200_000);

afterAll(async () => {
  for (const ws of sockets) ws.terminate();
  await demo?.close();
});

interface Opened {
  ws?: WebSocket;
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
  messages: Message[];
}
type Message = Record<string, any>;

/** Open a WebSocket; resolves with it (status 101) or with the refusal's status and body. */
function open(url: string, options: WebSocket.ClientOptions = {}): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: 5000, ...options });
    sockets.add(ws);
    const messages: Message[] = [];
    let headers: IncomingMessage['headers'] = {};
    ws.on('upgrade', (res) => (headers = res.headers));
    ws.on('message', (data) => {
      messages.push(JSON.parse(String(data)));
      ws.emit('queued');
    });
    ws.once('open', () => resolve({ ws, status: 101, headers, body: '', messages }));
    ws.once('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString(), messages });
        req.destroy();
      });
    });
    ws.once('error', (err) => reject(err));
  });
}

/** The first message (already received or still to come) that `match` accepts. */
function next(o: Opened, match: (m: Message) => boolean, timeoutMs = 3000): Promise<Message> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const i = o.messages.findIndex(match);
      if (i === -1) return;
      const [m] = o.messages.splice(i, 1);
      o.ws!.off('queued', check);
      clearTimeout(timer);
      resolve(m!);
    };
    const timer = setTimeout(() => {
      o.ws!.off('queued', check);
      reject(new Error(`no matching message within ${timeoutMs} ms; got ${JSON.stringify(o.messages)}`));
    }, timeoutMs);
    o.ws!.on('queued', check);
    check();
  });
}

const closed = (ws: WebSocket, timeoutMs = 3000) =>
  new Promise<number>((resolve, reject) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve(-1);
    const timer = setTimeout(() => reject(new Error('socket not closed')), timeoutMs);
    ws.once('close', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });

const admin = 'Basic ' + Buffer.from('admin:upgradeware').toString('base64');

describe('pages and login', () => {
  test('the start page sends a visitor without a session to the login form, which shows the demo accounts', async () => {
    const start = await request(`${demo.origin}/`);
    expect(start.status).toBe(302);
    expect(start.headers.location).toBe('/login');
    const form = await request(`${demo.origin}/login`);
    expect(form.status).toBe(200);
    expect(form.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(form.body).toContain('<form method="post" action="/login"');
    expect(form.body).toContain('<code>alice</code>');
    expect(form.body).toContain('<code>wonderland</code>');
  });

  test('a right password: 302 to the chat, a session cookie, and the chat page', async () => {
    const reply = await request(`${demo.origin}/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'user=alice&password=wonderland',
    });
    expect(reply.status).toBe(302);
    expect(reply.headers.location).toBe('/');
    const sid = reply.headers['set-cookie']!.find((c) => c.startsWith('chat.sid='))!;
    expect(sid).toMatch(/^chat\.sid=s%3A[\w-]+\.[\w%]+; Path=\/; HttpOnly; SameSite=Lax$/);
    const cookie = sid.split(';')[0]!;
    expect((await request(`${demo.origin}/me`, { headers: { Cookie: cookie } })).body).toBe('{"user":"alice"}');
    const page = await request(`${demo.origin}/`, { headers: { Cookie: cookie } });
    expect(page.status).toBe(200);
    expect(page.body).toContain('<script src="/app.js"></script>');
  });

  test('the login form remembers the last name in a signed cookie (cookie-parser reads it back)', async () => {
    const reply = await request(`${demo.origin}/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'user=bob&password=builder',
    });
    const name = reply.headers['set-cookie']!.find((c) => c.startsWith('chat.name='))!.split(';')[0]!;
    expect(name).toMatch(/^chat\.name=s%3Abob\./);
    const form = await request(`${demo.origin}/login`, { headers: { Cookie: name } });
    expect(form.body).toContain('Welcome back, bob.');
    // A forged value fails the signature: not remembered.
    const forged = await request(`${demo.origin}/login`, { headers: { Cookie: name.replace('bob', 'eve') } });
    expect(forged.body).not.toContain('Welcome back');
  });

  test('a wrong password or an unknown user: 401, the form again, no session', async () => {
    for (const body of ['user=alice&password=nope', 'user=mallory&password=wonderland', 'user=alice', '']) {
      const reply = await request(`${demo.origin}/login`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body,
      });
      expect(reply.status).toBe(401);
      expect(reply.body).toContain('Unknown user or wrong password.');
      expect(reply.headers['set-cookie']).toBeUndefined();
    }
  });

  test('a form body above 4 KiB is 413 (announced or streamed), another content type 415, and the server goes on', async () => {
    const big = 'user=alice&password=' + 'x'.repeat(5000);
    const announced = await request(`${demo.origin}/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: big,
    });
    expect(announced.status).toBe(413);
    const chunked = await request(`${demo.origin}/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'Transfer-Encoding': 'chunked' },
      body: big,
    });
    expect(chunked.status).toBe(413);
    const json = await request(`${demo.origin}/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: '{"user":"alice"}',
    });
    expect(json.status).toBe(415);
    expect(await login(demo.origin, 'alice', 'wonderland')).toMatch(/^chat\.sid=/);
  });

  test('a login form posted from a foreign page is refused (403)', async () => {
    const reply = await request(`${demo.origin}/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: 'http://evil.example' },
      body: 'user=alice&password=wonderland',
    });
    expect(reply.status).toBe(403);
  });

  test('the allowed origin follows the address the page is served from (HOST=0.0.0.0, a LAN address): no 403', async () => {
    const form = (host: string, origin: string) =>
      request(`${demo.origin}/login`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Host: host, Origin: origin },
        body: 'user=alice&password=wonderland',
      });
    // What a browser sends when the page was opened at the machine's LAN address, or at another name.
    for (const host of [`192.168.1.20:${demo.port}`, `[fd00::20]:${demo.port}`, `Chat.Test:${demo.port}`]) {
      const reply = await form(host, `http://${host.toLowerCase()}`);
      expect([host, reply.status, reply.headers.location]).toEqual([host, 302, '/']);
    }
    // A form from a page of another address (another port, another host) is still cross-site.
    expect((await form(`192.168.1.20:${demo.port}`, `http://192.168.1.20:${demo.port + 1}`)).status).toBe(403);
    expect((await form(`192.168.1.20:${demo.port}`, `http://127.0.0.1:${demo.port}`)).status).toBe(403);
    expect((await form(`192.168.1.20:${demo.port}`, 'null')).status).toBe(403);
  });

  test('bound to 0.0.0.0 the demo prints a URL a browser can open (127.0.0.1), and the LAN addresses', async () => {
    const { spawnSync } = await import('node:child_process');
    const script = `import('./examples/chat/chat.mjs').then((m) => process.stdout.write(JSON.stringify([m.urlsOf('0.0.0.0', 3000), m.urlsOf('::', 3000), m.urlsOf('127.0.0.1', 3000), m.urlsOf('::1', 3000)])))`;
    const run = spawnSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', timeout: 15_000 });
    expect(run.stderr).toBe('');
    const [any4, any6, loop4, loop6] = JSON.parse(run.stdout);
    expect(any4.url).toBe('http://127.0.0.1:3000/');
    expect(any6.url).toBe('http://127.0.0.1:3000/');
    for (const other of [...any4.others, ...any6.others]) expect(other).toMatch(/^http:\/\/(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):3000\/$/);
    expect(any4.others.every((u: string) => !u.includes('['))).toBe(true);
    expect(loop4).toEqual({ url: 'http://127.0.0.1:3000/', others: [] });
    expect(loop6).toEqual({ url: 'http://[::1]:3000/', others: [] });
  });

  test('a session cookie that no longer loads a session (logout elsewhere, restart) leads to a login form that says so', async () => {
    const start = await request(`${demo.origin}/`, { headers: { Cookie: 'chat.sid=s%3Agone.c2lnbmF0dXJl' } });
    expect(start.status).toBe(302);
    expect(start.headers.location).toBe('/login?ended=1');
    const form = await request(`${demo.origin}/login?ended=1`, { headers: { Cookie: 'chat.sid=s%3Agone.c2lnbmF0dXJl' } });
    expect(form.status).toBe(200);
    expect(form.body).toContain('Your session ended, please log in again.');
    // Said once: the stale cookie is cleared, so the next visit is an ordinary one.
    expect(form.headers['set-cookie']).toEqual(['chat.sid=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax']);
    expect((await request(`${demo.origin}/login`)).body).not.toContain('Your session ended');
  });

  test('an ordinary GET /chat is told to upgrade (426)', async () => {
    const reply = await request(`${demo.origin}/chat`);
    expect(reply.status).toBe(426);
    expect(reply.headers.upgrade).toBe('websocket');
  });
});

describe('the chat socket', () => {
  test('a logged-in session opens /chat (101 with X-Response-Time) and two users chat both ways', async () => {
    const alice = await open(`${demo.wsOrigin}/chat`, { headers: { Cookie: await login(demo.origin, 'alice', 'wonderland') } });
    expect(alice.status).toBe(101);
    expect(alice.headers['x-response-time']).toMatch(/^\d+\.\d{3}ms$/);
    expect(await next(alice, (m) => m.type === 'hello')).toMatchObject({ user: 'alice', room: 'lobby', online: ['alice'] });

    const bob = await open(`${demo.wsOrigin}/chat`, {
      headers: { Cookie: await login(demo.origin, 'bob', 'builder') },
      origin: demo.origin, // as a page of the demo's own sends it
    });
    expect(bob.status).toBe(101);
    expect(await next(bob, (m) => m.type === 'hello')).toMatchObject({ user: 'bob', online: ['alice', 'bob'] });
    expect(await next(alice, (m) => m.type === 'presence' && m.joined === 'bob')).toMatchObject({ online: ['alice', 'bob'] });

    alice.ws!.send(JSON.stringify({ type: 'say', text: 'hi bob' }));
    const got = await next(bob, (m) => m.type === 'message');
    expect(got).toMatchObject({ user: 'alice', text: 'hi bob' });
    expect(new Date(got.time).getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect(await next(alice, (m) => m.type === 'message')).toMatchObject({ user: 'alice', text: 'hi bob' });

    bob.ws!.send(JSON.stringify({ type: 'say', text: 'hello alice' }));
    expect(await next(alice, (m) => m.type === 'message')).toMatchObject({ user: 'bob', text: 'hello alice' });

    // Nonsense gets an error message, not a crash.
    bob.ws!.send('not json');
    expect(await next(bob, (m) => m.type === 'error')).toBeTruthy();

    bob.ws!.close();
    expect(await next(alice, (m) => m.type === 'presence' && m.left === 'bob')).toMatchObject({ online: ['alice'] });
    alice.ws!.close();
    await closed(alice.ws!);
    await demo.waitForLog(/GET \/chat 101 \d+\.\d{3} ms/);
  });

  test('rooms come from the query string; a late joiner gets the room history', async () => {
    const cookie = await login(demo.origin, 'carol', 'singer');
    const first = await open(`${demo.wsOrigin}/chat?room=kitchen`, { headers: { Cookie: cookie } });
    expect(await next(first, (m) => m.type === 'hello')).toMatchObject({ room: 'kitchen', history: [] });
    first.ws!.send(JSON.stringify({ type: 'say', text: 'tea?' }));
    await next(first, (m) => m.type === 'message');
    const second = await open(`${demo.wsOrigin}/chat?room=kitchen`, { headers: { Cookie: cookie } });
    const hello = await next(second, (m) => m.type === 'hello');
    expect(hello.history.map((m: Message) => m.text)).toEqual(['tea?']);
    const bad = await open(`${demo.wsOrigin}/chat?room=${encodeURIComponent('../etc')}`, { headers: { Cookie: cookie } });
    expect(bad.status).toBe(400);
    first.ws!.close();
    second.ws!.close();
    await Promise.all([closed(first.ws!), closed(second.ws!)]);
  });

  test('without a session the handshake is a real 401, and the log says so', async () => {
    const refused = await open(`${demo.wsOrigin}/chat`);
    expect(refused.status).toBe(401);
    expect(refused.body).toBe('Log in first\n');
    expect(refused.headers.connection).toBe('close');
    expect(refused.headers['x-response-time']).toMatch(/ms$/);
    const forged = await open(`${demo.wsOrigin}/chat`, { headers: { Cookie: 'chat.sid=s%3Aforged.signature' } });
    expect(forged.status).toBe(401);
    await demo.waitForLog(/GET \/chat 401 \d+\.\d{3} ms/);
  });

  test('a foreign Origin is refused with 403, even with a valid session; our own origins are accepted', async () => {
    const cookie = await login(demo.origin, 'alice', 'wonderland');
    const foreign = await open(`${demo.wsOrigin}/chat`, { headers: { Cookie: cookie }, origin: 'http://evil.example' });
    expect(foreign.status).toBe(403);
    expect(foreign.body).toBe('Origin not allowed');
    const otherPort = await open(`${demo.wsOrigin}/chat`, { headers: { Cookie: cookie }, origin: `http://127.0.0.1:${demo.port + 1}` });
    expect(otherPort.status).toBe(403);
    await demo.waitForLog(/GET \/chat 403 /);
    // Our own origin is the address the page came from: a browser sends it as both Host and Origin.
    for (const host of [`127.0.0.1:${demo.port}`, `localhost:${demo.port}`, `192.168.1.20:${demo.port}`, `chat.test:${demo.port}`]) {
      const own = await open(`${demo.wsOrigin}/chat`, { headers: { Cookie: cookie, Host: host }, origin: `http://${host}` });
      expect(own.status).toBe(101);
      own.ws!.close();
      await closed(own.ws!);
    }
  });

  test('logging out closes that session’s sockets (4001) and the next handshake is 401', async () => {
    const cookie = await login(demo.origin, 'bob', 'builder');
    const o = await open(`${demo.wsOrigin}/chat`, { headers: { Cookie: cookie } });
    expect(o.status).toBe(101);
    const code = closed(o.ws!);
    const out = await request(`${demo.origin}/logout`, { method: 'POST', headers: { Cookie: cookie } });
    expect(out.status).toBe(302);
    expect(out.headers.location).toBe('/login');
    // The browser drops the session cookie: a later visit is an ordinary one, not an "ended" session.
    expect(out.headers['set-cookie']).toEqual(['chat.sid=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax']);
    expect(await code).toBe(4001);
    expect((await open(`${demo.wsOrigin}/chat`, { headers: { Cookie: cookie } })).status).toBe(401);
  });
});

describe('the admin area', () => {
  test('/admin is 401 with a Basic challenge without credentials, 200 with them', async () => {
    const no = await request(`${demo.origin}/admin`);
    expect(no.status).toBe(401);
    expect(no.headers['www-authenticate']).toBe('Basic realm="upgradeware chat admin"');
    const wrong = await request(`${demo.origin}/admin`, { headers: { Authorization: 'Basic ' + Buffer.from('admin:nope').toString('base64') } });
    expect(wrong.status).toBe(401);
    const yes = await request(`${demo.origin}/admin`, { headers: { Authorization: admin } });
    expect(yes.status).toBe(200);
    expect(yes.body).toContain('Connection events');
  });

  test('/admin/feed is guarded too: 401 without credentials, 403 from a foreign page', async () => {
    expect((await open(`${demo.wsOrigin}/admin/feed`)).status).toBe(401);
    expect((await open(`${demo.wsOrigin}/admin/feed`, { headers: { Authorization: admin }, origin: 'http://evil.example' })).status).toBe(403);
  });

  test('/admin/feed shows every connection event: open, refusals with their status, close, drop', async () => {
    const feed = await open(`ws://admin:upgradeware@127.0.0.1:${demo.port}/admin/feed`);
    expect(feed.status).toBe(101);
    expect(await next(feed, (m) => m.type === 'snapshot')).toMatchObject({ connections: [] });
    const event = (match: (e: Message) => boolean) => next(feed, (m) => m.type === 'event' && match(m.event)).then((m) => m.event);

    const cookie = await login(demo.origin, 'alice', 'wonderland');
    expect(await event((e) => e.type === 'login')).toMatchObject({ user: 'alice' });
    const alice = await open(`${demo.wsOrigin}/chat`, { headers: { Cookie: cookie } });
    expect(await event((e) => e.type === 'open')).toMatchObject({ user: 'alice', room: 'lobby', connections: 1 });

    await open(`${demo.wsOrigin}/chat`);
    expect(await event((e) => e.type === 'refused')).toMatchObject({ status: 401, user: null });
    await open(`${demo.wsOrigin}/chat`, { headers: { Cookie: cookie }, origin: 'http://evil.example' });
    expect(await event((e) => e.type === 'refused')).toMatchObject({ status: 403, user: 'alice', origin: 'http://evil.example' });

    // The admin drops every connection (1012): the chat page would reconnect.
    const code = closed(alice.ws!);
    const drop = await request(`${demo.origin}/admin/drop`, { method: 'POST', headers: { Authorization: admin } });
    expect(JSON.parse(drop.body)).toEqual({ dropped: 1 });
    expect(await code).toBe(1012);
    expect(await event((e) => e.type === 'drop')).toMatchObject({ by: 'admin', connections: 1 });
    expect(await event((e) => e.type === 'close')).toMatchObject({ user: 'alice', code: 1012, connections: 0 });
    feed.ws!.close();
    await closed(feed.ws!);
  });
});

test('the log has the 101s, with response times, next to the 200s and the refused 401s', async () => {
  const log = demo.log();
  expect(log).toMatch(/^GET \/chat 101 \d+\.\d{3} ms - -$/m);
  expect(log).toMatch(/^GET \/chat 401 \d+\.\d{3} ms - -$/m);
  expect(log).toMatch(/^GET \/chat 403 \d+\.\d{3} ms - \d+$/m);
  expect(log).toMatch(/^GET \/admin\/feed 101 /m);
  expect(log).toMatch(/^GET \/login 200 \d+\.\d{3} ms - \d+$/m);
  expect(log).toMatch(/^POST \/login 302 /m);
});
