// The chat as two instances behind nginx, with redis-server: sessions in Redis (connect-redis), chat
// messages and the admin feed across instances through @upgradeware/hub (Redis Streams), a logout on
// one instance closing the user's sockets on the other, nginx in front (round robin, no sticky
// sessions) and trustProxy('loopback') so that the apps see the clients' addresses.
//
//   npx --yes pnpm@10.34.9 demo:cluster      (= tsc -b && node examples/chat/cluster.mjs)
//
// Needs Debian's `redis-server` and `nginx` (apt-get install -y redis-server nginx). PORT (default
// 8080) is nginx's; REDIS_URL uses a running Redis instead of starting one. The instances listen on
// free loopback ports; the config for nginx is generated from nginx.conf.template into a temp dir and
// nginx runs in the foreground as a child (own pid file), stopped with everything else on Ctrl-C.
//
// `node cluster.mjs --instance NAME` is one instance (the parent starts two of them).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

const here = dirname(fileURLToPath(import.meta.url));
const self = fileURLToPath(import.meta.url);

if (process.argv[2] === '--instance') await instance(process.argv[3] ?? 'A');
else await main();

async function instance(name) {
  const { createClient } = await import('redis');
  const { RedisStore } = await import('connect-redis');
  const { createHub, redisTransport } = await import('@upgradeware/hub');
  const { createChatServer } = await import('./chat.mjs');
  const client = createClient({ url: process.env.REDIS_URL });
  const subscriber = client.duplicate();
  for (const c of [client, subscriber]) c.on('error', (err) => process.stderr.write(`[${name}] redis: ${err.message}\n`));
  await Promise.all([client.connect(), subscriber.connect()]);
  const store = new RedisStore({ client, prefix: 'chat-demo:sess:' });
  const hub = createHub({ transport: redisTransport({ publisher: client, subscriber, mode: 'streams', channel: 'chat-demo:hub' }) });
  hub.watchSessions(store);
  const log = { write: (line) => process.stdout.write(`[${name}] ${line}`) };
  const chat = await createChatServer({
    port: 0,
    log,
    secret: process.env.SESSION_SECRET,
    store,
    hub,
    trust: 'loopback',
    publicOrigins: (process.env.PUBLIC_ORIGINS ?? '').split(',').filter(Boolean),
    instance: name,
  });
  process.send?.({ port: chat.port });
  const stop = async () => {
    await chat.close();
    await hub.close();
    client.destroy();
    subscriber.destroy();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', () => undefined); // the parent stops us
  process.on('disconnect', stop);
}

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

async function waitPort(port, what) {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not listen on ${port}`);
}

async function main() {
  const children = [];
  const dir = mkdtempSync(join(tmpdir(), 'upgradeware-chat-cluster-'));
  let stopping = false;
  const stop = (code = 0) => {
    if (stopping) return;
    stopping = true;
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    setTimeout(() => {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      process.exit(code);
    }, 1000).unref();
  };
  process.on('SIGINT', () => stop(0));
  process.on('SIGTERM', () => stop(0));
  const fail = (message) => {
    process.stderr.write(`chat cluster: ${message}\n`);
    stop(1);
  };

  try {
    let redisUrl = process.env.REDIS_URL;
    if (!redisUrl) {
      const port = await freePort();
      const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
      children.push(redis);
      redis.once('error', () => fail('cannot start redis-server (apt-get install -y redis-server)'));
      await waitPort(port, 'redis-server');
      redisUrl = `redis://127.0.0.1:${port}`;
    }
    const port = process.env.PORT ? Number(process.env.PORT) : 8080;
    const publicOrigins = [`http://127.0.0.1:${port}`, `http://localhost:${port}`].join(',');
    const secret = process.env.SESSION_SECRET || randomBytes(32).toString('base64url');
    const ports = [];
    const pids = [];
    for (const name of ['A', 'B']) {
      const child = spawn(process.execPath, [self, '--instance', name], {
        env: { ...process.env, REDIS_URL: redisUrl, SESSION_SECRET: secret, PUBLIC_ORIGINS: publicOrigins },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      children.push(child);
      // An instance that dies is not the end: nginx sends its clients to the other one, where their
      // session (in Redis) still holds. Try it: kill -9 one of the pids printed below.
      child.once('exit', (code, signal) => !stopping && process.stderr.write(`chat cluster: instance ${name} exited (${signal ?? code}); nginx uses the other\n`));
      const [msg] = await Promise.race([once(child, 'message'), new Promise((_, rej) => setTimeout(() => rej(new Error(`instance ${name} did not start`)), 15_000))]);
      ports.push(msg.port);
      pids.push(child.pid);
    }
    for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, sub));
    for (const sub of ['', 'body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) chmodSync(join(dir, sub), 0o777);
    const conf = readFileSync(join(here, 'nginx.conf.template'), 'utf8')
      .replaceAll('{{DIR}}', dir)
      .replaceAll('{{PORT}}', String(port))
      .replaceAll('{{UPSTREAMS}}', ports.map((p) => `    server 127.0.0.1:${p};`).join('\n'));
    writeFileSync(join(dir, 'nginx.conf'), conf);
    const nginx = spawn(process.env.NGINX_BIN || 'nginx', ['-e', join(dir, 'startup.log'), '-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: 'inherit' });
    children.push(nginx);
    nginx.once('error', () => fail('cannot start nginx (apt-get install -y nginx)'));
    nginx.once('exit', (code) => !stopping && fail(`nginx exited (${code}); see ${dir}/error.log`));
    await waitPort(port, 'nginx');
    process.stdout.write(
      [
        '',
        `upgradeware chat, two instances (A on ${ports[0]}, pid ${pids[0]}; B on ${ports[1]}, pid ${pids[1]}) behind nginx: http://127.0.0.1:${port}/`,
        `  redis: ${redisUrl}   nginx config: ${dir}/nginx.conf`,
        '  log in as alice / wonderland and bob / builder in two browsers: nginx spreads the requests',
        '  over both instances (the log lines start with [A] or [B]); the chat and /admin span both.',
        '  Ctrl-C stops everything.',
        '',
        '',
      ].join('\n'),
    );
  } catch (err) {
    fail(err.message);
  }
}
