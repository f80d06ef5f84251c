/**
 * The README's example "With sessions, a WebSocket endpoint and Redis", run as written against a
 * real redis-server of its own (a free loopback port): only `app.listen(3000)` becomes port 0 on
 * 127.0.0.1, and the objects it made are handed back so the test can close them. Two clients of
 * its /chat endpoint: what one sends reaches the other (through the hub and Redis), not itself.
 * (test/readme/readme-examples.test.ts type-checks the example and points here for the run.)
 */
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import * as ts from 'typescript';
import WebSocket from 'ws';
import { readmeBlock } from '../../../test-support';
import { startRedis, type RedisServer } from './redis-helpers';

const README = join(__dirname, '..', 'README.md');
const HEADING = '## With sessions, a WebSocket endpoint and Redis';

function example(): string {
  return readmeBlock(README, HEADING, 'ts');
}

interface Made {
  server: Server;
  hub: { close(): Promise<void> | void };
  publisher: { quit(): Promise<unknown> };
  subscriber: { quit(): Promise<unknown> };
}

let redis: RedisServer;
let made: Made | undefined;
const AsyncFunction = Object.getPrototypeOf(async () => undefined).constructor as new (...args: string[]) => (...a: unknown[]) => Promise<void>;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  if (made) {
    await new Promise<void>((resolve) => made!.server.close(() => resolve()));
    await made.hub.close();
    await Promise.allSettled([made.publisher.quit(), made.subscriber.quit()]);
  }
  await redis?.stop();
});

test('the README example runs as written: a message on /chat reaches the other socket through Redis', async () => {
  let code = example();
  expect(code).toContain('app.listen(3000);');
  code = code.replace('app.listen(3000);', "const server = app.listen(0, '127.0.0.1');\n__made({ server, hub, publisher, subscriber });");
  const js = ts.transpileModule(code, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 } }).outputText;
  const env = { ...process.env, REDIS_URL: redis.url, SESSION_SECRET: 'readme example secret' };
  const fakeProcess = { env };
  await new AsyncFunction('require', 'exports', 'process', '__made', js)(require, {}, fakeProcess, (m: Made) => (made = m));
  expect(made).toBeDefined();
  const { server } = made!;
  if (!server.listening) await new Promise((r) => server.once('listening', r));
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/chat`;
  const open = (): Promise<{ ws: WebSocket; got: string[] }> =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const got: string[] = [];
      ws.on('message', (d) => got.push(String(d)));
      ws.once('open', () => resolve({ ws, got }));
      ws.once('error', reject);
    });
  const a = await open();
  const b = await open();
  a.ws.send('hello from a');
  const deadline = Date.now() + 5000;
  while (b.got.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  expect(b.got).toEqual(['hello from a']);
  expect(a.got).toEqual([]);
  a.ws.close();
  b.ws.close();
  await Promise.all([a, b].map(({ ws }) => new Promise((r) => (ws.readyState === WebSocket.CLOSED ? r(null) : ws.once('close', r)))));
}, 30_000);
