/**
 * The README's examples, run as written: each TypeScript block is taken out of README.md,
 * compiled, and run against the real packages it imports by name (@upgradeware/dispatcher,
 * logger, session, basic-auth, websocket). Only what ties a program to a machine is redirected:
 * `app.listen(port)` listens on 127.0.0.1 port 0, the logger writes to a collector instead of
 * stdout, and `process` is a stand-in with the example's environment and signal handlers.
 */
import * as http from 'node:http';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import * as loggerPkg from '@upgradeware/logger';
import * as sessionPkg from '@upgradeware/session';
import * as basicAuthPkg from '@upgradeware/basic-auth';
import * as uprPkg from '@upgradeware/upgrade-response';
import * as websocketPkg from '@upgradeware/websocket';
import { rawRequest, request, wsHandshake, wsOpen, wsClose, nextMessage, until, WsRefused, HOST, readmeDispatcher, readmeBlock, readmeModule } from '../../../test-support';


/** The first ```ts block after the heading `heading` in this package's README. */
const block = (heading: string): string => readmeBlock(join(__dirname, '..', 'README.md'), heading, 'ts');

interface Running {
  server: http.Server;
  port: number;
  lines: string[];
  errors: unknown[][];
  signals: Map<string, () => unknown>;
  close(): Promise<void>;
}

const running: Running[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.close();
});

/** Compile and run one README block; resolves once its server listens. */
async function run(source: string, env: Record<string, string>): Promise<Running> {
  const lines: string[] = [];
  const errors: unknown[][] = [];
  const signals = new Map<string, () => unknown>();
  const servers: http.Server[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const modules: Record<string, unknown> = {
    '@upgradeware/dispatcher': readmeDispatcher(servers, sockets),
    '@upgradeware/logger': {
      ...loggerPkg,
      logger: Object.assign(
        (format?: string, options: loggerPkg.LoggerOptions = {}) =>
          loggerPkg.logger(format, { ...options, stream: { write: (line: string) => lines.push(line.replace(/\n$/, '')) } }),
        { token: loggerPkg.logger.token, format: loggerPkg.logger.format, compile: loggerPkg.logger.compile },
      ),
    },
    '@upgradeware/session': sessionPkg,
    '@upgradeware/basic-auth': basicAuthPkg,
    '@upgradeware/upgrade-response': uprPkg,
    '@upgradeware/websocket': websocketPkg,
  };
  const { code, diagnostics, require: fakeRequire } = readmeModule(source, modules);
  expect(diagnostics).toEqual([]);
  const fakeProcess = { env, on: (signal: string, fn: () => unknown) => signals.set(signal, fn) };
  const fakeConsole = { ...console, error: (...args: unknown[]) => errors.push(args) };
  const exports = {};
  new Function('require', 'exports', 'process', 'console', code)(fakeRequire, exports, fakeProcess, fakeConsole);
  expect(servers).toHaveLength(1);
  const server = servers[0]!;
  if (!server.listening) await new Promise((resolve) => server.once('listening', resolve));
  const r: Running = {
    server,
    port: (server.address() as AddressInfo).port,
    lines,
    errors,
    signals,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        if (!server.listening) return resolve();
        server.close(() => resolve());
      }),
  };
  running.push(r);
  return r;
}

function closeCode(ws: WebSocket, timeoutMs = 3000): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no close in time')), timeoutMs);
    ws.once('close', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

const ORIGIN = 'https://chat.example.com';
/** The dev format without its colours, for matching. */
const plain = (line: string) => line.replace(/\x1b\[\d+m/g, '');

test('the auth-protected chat example runs as written', async () => {
  const app = await run(block('## A complete, auth-protected example'), { SESSION_SECRET: 'readme secret' });
  const url = `ws://${HOST}:${app.port}/chat`;

  // No session: a real 401 on the handshake, logged as such.
  const anonymous = await wsOpen(url, { origin: ORIGIN }).catch((e: unknown) => e);
  expect(anonymous).toBeInstanceOf(WsRefused);
  expect(anonymous).toMatchObject({ status: 401, body: 'log in first' });

  // Log in: the session cookie.
  const login = await request(`http://${HOST}:${app.port}/login?name=ada`);
  expect(login).toMatchObject({ status: 200, body: 'logged in' });
  const cookie = String(login.headers['set-cookie']![0]).split(';')[0]!;
  expect(cookie).toMatch(/^connect\.sid=/);

  // With the cookie, from the app's own origin: 101, and the session's user in the callback.
  const ada = await wsOpen(url, { origin: ORIGIN, headers: { Cookie: cookie } });
  expect(ada.response.statusCode).toBe(101);
  expect(await nextMessage(ada.ws)).toBe('ada joined');
  const said = nextMessage(ada.ws);
  ada.ws.send('hello');
  expect(await said).toBe('ada: hello');

  // The same cookie from a foreign page: 403 before the switch (cross-site WebSocket hijacking).
  const hijack = await rawRequest(app.port, wsHandshake('/chat', { Origin: 'https://evil.example', Cookie: cookie }));
  expect(hijack.status).toBe(403);
  expect(hijack.body).toBe('Origin not allowed');
  expect(hijack.closed).toBe(true);

  // An ordinary GET /chat goes on to the page.
  const page = await request(`http://${HOST}:${app.port}/chat`, { headers: { Cookie: cookie } });
  expect(page).toMatchObject({ status: 200, body: '<!doctype html>…' });

  // The logger printed every handshake with its real status.
  await until(() => app.lines.length === 5);
  expect(app.lines.map((l) => plain(l).split(' ').slice(0, 3).join(' '))).toEqual([
    'GET /chat 401',
    'GET /login?name=ada 200',
    'GET /chat 101',
    'GET /chat 403',
    'GET /chat 200',
  ]);

  // SIGTERM: clients get 1001 Going Away and the server stops.
  const code = closeCode(ada.ws);
  await app.signals.get('SIGTERM')!();
  expect(await code).toBe(1001);
  await until(() => !app.server.listening);
  expect(app.errors).toEqual([]);
});

test('the Basic-auth feed example runs as written', async () => {
  const app = await run(block('### For scripts: HTTP Basic, and no browser at all'), { FEED_PASSWORD: 's3cret' });
  const url = `ws://${HOST}:${app.port}/feed`;

  const noAuth = await rawRequest(app.port, wsHandshake('/feed'));
  expect(noAuth.status).toBe(401);
  expect(noAuth.headers['www-authenticate']).toEqual(['Basic realm="feed"']);
  expect(noAuth.closed).toBe(true);

  // A browser page carrying cached Basic credentials is refused: it always sends an Origin.
  const auth = `Basic ${Buffer.from('bot:s3cret').toString('base64')}`;
  const browser = await rawRequest(app.port, wsHandshake('/feed', { Authorization: auth, Origin: 'https://any.example' }));
  expect(browser.status).toBe(403);

  const one = await wsOpen(url, { headers: { Authorization: auth } });
  expect(await nextMessage(one.ws)).toBe('hello bot');
  const two = await wsOpen(url, { headers: { Authorization: auth } });
  expect(await nextMessage(two.ws)).toBe('hello bot');
  const got = [nextMessage(one.ws), nextMessage(two.ws)];
  one.ws.send('news');
  expect(await Promise.all(got)).toEqual(['news', 'news']);

  await until(() => app.lines.length === 4);
  expect(app.lines.map((l) => / "GET \/feed HTTP\/1\.1" (\d{3}) /.exec(l)?.[1])).toEqual(['401', '403', '101', '101']);
  // combined logs the Basic user name once it was accepted.
  expect(app.lines[2]).toMatch(/^127\.0\.0\.1 - bot \[/);
  await wsClose(one.ws);
  await wsClose(two.ws);
});

test('the echo example at the top runs as written', async () => {
  const app = await run(block('# @upgradeware/websocket'), {});
  const { ws } = await wsOpen(`ws://${HOST}:${app.port}/echo`);
  const reply = nextMessage(ws);
  ws.send('hello');
  expect(await reply).toBe('hello');
  await wsClose(ws);
  // Anything else on the server is not the endpoint's: the dispatcher's 404.
  expect((await rawRequest(app.port, wsHandshake('/other'))).status).toBe(404);
});
