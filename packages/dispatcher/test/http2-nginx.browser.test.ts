/**
 * What the README says about proxies, checked (issue 19): nginx's HTTP/2 listener does not
 * advertise extended CONNECT and nginx speaks HTTP/1.1 to its upstream, so chromium, loading a
 * page over HTTP/2 through nginx, opens its WebSocket as an HTTP/1.1 upgrade (which works through
 * `proxy_set_header Upgrade/Connection`); loading it from Node directly, it uses RFC 8441 on the
 * page's connection. Needs Debian's nginx and chromium (run by jest.browser.config.js).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type * as http2 from 'node:http2';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { createApp } from '@upgradeware/dispatcher';
import { websocket } from '@upgradeware/websocket';
import { h2Connect, h2Request } from '../../../test-support/http2';
import { freePort } from '../../../test-support';

const fixtures = join(__dirname, '../../../test-support/fixtures');
const PAGE = '<!doctype html><title>proxy check</title><p>proxy check</p>';

let upstream: http2.Http2SecureServer;
let upstreamPort: number;
let nginx: ChildProcess;
let nginxPort: number;
let dir: string;
let browser: Browser;
/** What the app saw: `<method> <url> <httpVersion>` per request and per WebSocket. */
const seen: string[] = [];

async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  const app = createApp();
  app.use('/chat', websocket((ws, req) => {
    seen.push(`websocket ${req.method} ${req.httpVersion}`);
    ws.on('message', (m) => ws.send(String(m)));
  }));
  app.use((req, res) => {
    seen.push(`${req.method} ${req.url} ${req.httpVersion}`);
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    res.end(PAGE);
  });
  const { readFileSync } = await import('node:fs');
  upstream = app.listenHttp2({ key: readFileSync(join(fixtures, 'localhost-key.pem')), cert: readFileSync(join(fixtures, 'localhost-cert.pem')) }, 0, '127.0.0.1');
  await new Promise<void>((resolve) => upstream.once('listening', resolve));
  upstreamPort = (upstream.address() as AddressInfo).port;

  nginxPort = await freePort();
  dir = mkdtempSync(join(tmpdir(), 'upgradeware-nginx-'));
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 1;
error_log ${dir}/error.log;
pid ${dir}/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:${nginxPort} ssl http2;
    ssl_certificate ${fixtures}/localhost-cert.pem;
    ssl_certificate_key ${fixtures}/localhost-key.pem;
    location / {
      proxy_pass https://127.0.0.1:${upstreamPort};
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_ssl_verify off;
    }
  }
}
`,
  );
  nginx = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  nginx.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  await waitForPort(nginxPort).catch((err: Error) => {
    throw new Error(`${err.message}; nginx said: ${stderr}`);
  });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: 30_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  if (nginx && nginx.exitCode === null) {
    const exited = new Promise((resolve) => nginx.once('exit', resolve));
    nginx.kill('SIGTERM');
    await exited;
  }
  await new Promise<void>((resolve) => (upstream ? upstream.close(() => resolve()) : resolve()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Load `origin/` in chromium, open a WebSocket to `/chat` from it, echo one message. */
async function pageAndSocket(origin: string): Promise<{ page: string; socket: string }> {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  try {
    const page = await context.newPage();
    await page.goto(`${origin}/`);
    const protocol = (await page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")) as string;
    const socket = (await page.evaluate(`new Promise((resolve) => {
      const ws = new WebSocket('${origin.replace('https:', 'wss:')}/chat');
      const timer = setTimeout(() => resolve('no answer'), 5000);
      ws.onopen = () => ws.send('ping');
      ws.onmessage = (e) => { clearTimeout(timer); ws.close(); resolve('echo ' + e.data); };
      ws.onclose = (e) => { clearTimeout(timer); resolve('closed ' + e.code); };
    })`)) as string;
    return { page: protocol, socket };
  } finally {
    await context.close();
  }
}

test('nginx: its HTTP/2 listener does not advertise extended CONNECT, and it forwards HTTP/1.1', async () => {
  const { session, connectProtocol } = await h2Connect(`https://127.0.0.1:${nginxPort}`);
  try {
    expect(connectProtocol).toBe(false);
    const r = await h2Request(session, { ':path': '/through-nginx', ':authority': `localhost:${nginxPort}` });
    expect(r.status).toBe(200);
    expect(seen).toContain('GET /through-nginx 1.1');
  } finally {
    session.destroy();
  }
});

test('chromium behind nginx: page over h2, WebSocket as an HTTP/1.1 upgrade that works; direct to Node: RFC 8441', async () => {
  seen.length = 0;
  const viaNginx = await pageAndSocket(`https://localhost:${nginxPort}`);
  expect(viaNginx).toEqual({ page: 'h2', socket: 'echo ping' });
  expect(seen.filter((s) => s.startsWith('websocket'))).toEqual(['websocket GET 1.1']);

  seen.length = 0;
  const direct = await pageAndSocket(`https://localhost:${upstreamPort}`);
  expect(direct).toEqual({ page: 'h2', socket: 'echo ping' });
  expect(seen.filter((s) => s.startsWith('websocket'))).toEqual(['websocket CONNECT 2.0']);
});
