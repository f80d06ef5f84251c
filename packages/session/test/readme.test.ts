/**
 * The README's examples, run as written: each TypeScript block is taken out of README.md,
 * compiled and run against the real packages it imports. Only `app.listen(port)` is redirected
 * (127.0.0.1, port 0) and `process` is a stand-in carrying the example's environment.
 */
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import * as util from 'node:util';
import * as sessionPkg from '@upgradeware/session';
import * as uprPkg from '@upgradeware/upgrade-response';
import * as websocketPkg from '@upgradeware/websocket';
import { HOST, nextMessage, request, wsClose, wsOpen, WsRefused, readmeDispatcher, readmeBlock, readmeModule } from '../../../test-support';
import { cookiePairs } from './helpers';


/** The first ```ts block after the heading `heading` in this package's README. */
const block = (heading: string): string => readmeBlock(join(__dirname, '..', 'README.md'), heading, 'ts');

/** Compile and run a block; returns its exports and the servers it started. */
function run(source: string, env: Record<string, string> = {}): { exports: Record<string, unknown>; servers: http.Server[]; sockets: Set<Socket> } {
  const servers: http.Server[] = [];
  const sockets = new Set<Socket>();
  const modules: Record<string, unknown> = {
    'node:util': util,
    '@upgradeware/dispatcher': readmeDispatcher(servers, sockets),
    '@upgradeware/session': sessionPkg,
    '@upgradeware/upgrade-response': uprPkg,
    '@upgradeware/websocket': websocketPkg,
  };
  const { code, diagnostics, require: fakeRequire } = readmeModule(source, modules);
  expect(diagnostics).toEqual([]);
  const exports: Record<string, unknown> = {};
  // The example's own last statements, kept reachable for the checks below.
  const body = `${code}\nexports.__locals = { ${['MyStore', 'OldStore'].map((n) => `${n}: typeof ${n} === 'undefined' ? undefined : ${n}`).join(', ')} };`;
  new Function('require', 'exports', 'process', body)(fakeRequire, exports, { env });
  return { exports, servers, sockets };
}

test('the usage example runs as written: a 401 without a session, a login, then the WebSocket greets the user', async () => {
  const { servers, sockets } = run(block('## Usage'), { SESSION_SECRET: 'readme secret' });
  expect(servers).toHaveLength(1);
  const server = servers[0]!;
  if (!server.listening) await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const anonymous = await wsOpen(`ws://${HOST}:${port}/chat`).catch((e: unknown) => e);
    expect(anonymous).toBeInstanceOf(WsRefused);
    expect(anonymous).toMatchObject({ status: 401, body: 'login first' });

    const login = await request(`http://${HOST}:${port}/login`);
    expect([login.status, login.body]).toEqual([200, 'welcome']);
    const cookie = cookiePairs(login.headers['set-cookie'])[0]!;
    expect(cookie).toMatch(/^connect\.sid=s%3A/);

    const { ws } = await wsOpen(`ws://${HOST}:${port}/chat`, { headers: { cookie } });
    expect(await nextMessage(ws)).toBe('hello alice');
    await wsClose(ws);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('the Store example runs as written: both styles of store are Stores', () => {
  const { exports } = run(block('## Stores'));
  const { MyStore, OldStore } = exports.__locals as { MyStore: new () => object; OldStore: new () => object };
  for (const StoreClass of [MyStore, OldStore]) {
    const store = new StoreClass() as sessionPkg.Store;
    expect(store).toBeInstanceOf(sessionPkg.Store);
    expect(typeof store.regenerate).toBe('function');
    expect(typeof store.on).toBe('function');
  }
});
