/**
 * A real nginx (Debian's) in front of app instances: round robin, no sticky sessions, WebSocket
 * proxying, X-Forwarded-* set. The config is generated into a temp dir; nginx runs in the
 * foreground as our child (`daemon off`) with its own pid file and logs, and is stopped at the end.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as net from 'node:net';
import { delay, freePort } from '../../../test-support';

export function nginxBinary(): string {
  for (const candidate of [process.env.NGINX_BIN, '/usr/sbin/nginx', '/usr/bin/nginx']) {
    if (candidate && spawnSync(candidate, ['-v']).status === 0) return candidate;
  }
  throw new Error('nginx not found: apt-get install -y nginx (or set NGINX_BIN)');
}

/** The config template the demo documents too: `{{PORT}}`, `{{UPSTREAMS}}`, `{{DIR}}` are filled in. */
export function nginxConfig(dir: string, port: number, upstreams: number[]): string {
  return `# Generated for a test: two app instances behind nginx, round robin, no sticky sessions.
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 1024; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  upstream app {
${upstreams.map((p) => `    server 127.0.0.1:${p};`).join('\n')}
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_read_timeout 1h;
    }
  }
}
`;
}

export interface Nginx {
  port: number;
  url: string;
  wsUrl: string;
  dir: string;
  stop(): Promise<void>;
}

export async function startNginx(upstreams: number[]): Promise<Nginx> {
  const bin = nginxBinary();
  const dir = mkdtempSync(join(tmpdir(), 'upgradeware-nginx-'));
  for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, sub));
  // Workers may run as another user when we are root.
  chmodSync(dir, 0o777);
  for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) chmodSync(join(dir, sub), 0o777);
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, nginxConfig(dir, port, upstreams));
  const child = spawn(bin, ['-e', join(dir, 'startup.log'), '-p', dir, '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  let exited = false;
  child.once('exit', () => (exited = true));
  for (let i = 0; ; i++) {
    if (exited) throw new Error(`nginx exited at start: ${stderr}${safeRead(join(dir, 'error.log'))}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (i > 100) throw new Error('nginx did not listen in time');
    await delay(50);
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
    dir,
    stop: () =>
      new Promise<void>((resolve) => {
        const done = () => {
          rmSync(dir, { recursive: true, force: true });
          resolve();
        };
        if (exited) return done();
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        child.once('exit', () => {
          clearTimeout(timer);
          done();
        });
        // SIGQUIT: graceful; SIGTERM: fast. Fast, and the timer above bounds it.
        child.kill('SIGTERM');
      }),
  };
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
