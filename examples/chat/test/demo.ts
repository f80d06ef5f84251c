/**
 * Start the demo as a user does — `node examples/chat/server.mjs` on the built packages — in a
 * child process on port 0, and read its log. Shared by the fast suite and the browser suite.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as http from 'node:http';
import * as path from 'node:path';

export const root = path.resolve(__dirname, '../../..');
const tsc = path.join(root, 'node_modules/typescript/bin/tsc');

/** `tsc -b`, as the root `demo` script does first (a no-op when dist/ is up to date). */
export function build(): void {
  const run = spawnSync(process.execPath, [tsc, '-b'], { cwd: root, encoding: 'utf8', timeout: 180_000 });
  if (run.status !== 0) throw new Error(`tsc -b failed (${run.status}): ${run.stdout}${run.stderr}`);
}

export interface Demo {
  child: ChildProcess;
  port: number;
  /** `http://127.0.0.1:<port>` (no trailing slash) */
  origin: string;
  /** `ws://127.0.0.1:<port>` */
  wsOrigin: string;
  /** Everything the server printed so far (stdout and stderr). */
  log(): string;
  /** Wait until the log matches `pattern`; rejects after `timeoutMs`. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  close(): Promise<void>;
}

/** Start the demo server (after `build()`); resolves once it printed its URL. */
export function startDemo(env: Record<string, string> = {}): Promise<Demo> {
  const child = spawn(process.execPath, [path.join(root, 'examples/chat/server.mjs')], {
    cwd: root,
    env: { ...process.env, PORT: '0', NO_COLOR: '1', NODE_ENV: 'test', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const waiters = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    text += chunk.toString('utf8');
    for (const w of [...waiters]) w();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const waitForLog = (pattern: RegExp, timeoutMs = 5000) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const m = pattern.exec(text);
        if (m) {
          waiters.delete(check);
          clearTimeout(timer);
          resolve(m[0]);
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`server log never matched ${pattern} within ${timeoutMs} ms; log:\n${text}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });

  return waitForLog(/listening on https?:\/\/127\.0\.0\.1:(\d+)\//, 15_000).then(
    (line) => {
      const port = Number(/:(\d+)\/$/.exec(line)![1]);
      return {
        child,
        port,
        origin: `${line.startsWith('listening on https') ? 'https' : 'http'}://127.0.0.1:${port}`,
        wsOrigin: `${line.startsWith('listening on https') ? 'wss' : 'ws'}://127.0.0.1:${port}`,
        log: () => text,
        waitForLog,
        close: async () => {
          if (child.exitCode === null && child.signalCode === null) {
            child.kill('SIGTERM');
            const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
            await exited;
            clearTimeout(timer);
          }
        },
      };
    },
    (err) => {
      child.kill('SIGKILL');
      throw err;
    },
  );
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP request (no redirects followed), bounded in time. */
export function request(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string | Buffer; timeoutMs?: number } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method ?? 'GET', headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', reject);
    });
    const timer = setTimeout(() => req.destroy(new Error(`${url}: no answer within ${options.timeoutMs ?? 5000} ms`)), options.timeoutMs ?? 5000);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end(options.body);
  });
}

/** The `name=value` pair of a cookie from a response's Set-Cookie headers. */
export function cookieOf(reply: Reply, name: string): string | undefined {
  for (const line of reply.headers['set-cookie'] ?? []) {
    const pair = line.split(';')[0]!;
    if (pair.startsWith(`${name}=`)) return pair;
  }
  return undefined;
}

/** Log in through the form; resolves with the session cookie (`chat.sid=…`). */
export async function login(origin: string, user: string, password: string): Promise<string> {
  const reply = await request(`${origin}/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ user, password }).toString(),
  });
  const cookie = cookieOf(reply, 'chat.sid');
  if (reply.status !== 302 || !cookie) throw new Error(`login as ${user}: ${reply.status} ${reply.body}`);
  return cookie;
}
