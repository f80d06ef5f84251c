/**
 * The README's examples, run as written: every ```js block is taken out of README.md, compiled
 * to CommonJS and run against the real packages it imports. Only what ties a program to a machine
 * is redirected: `app.listen(port)` listens on 127.0.0.1 port 0, and a logger without a stream of
 * its own writes to a collector instead of stdout. The lines a block shows in its comments are the
 * lines it prints (times apart).
 */
import { readFileSync } from 'node:fs';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { join } from 'node:path';
import * as ts from 'typescript';
import * as dispatcher from '@upgradeware/dispatcher';
import * as loggerPkg from '@upgradeware/logger';
import * as upr from '@upgradeware/upgrade-response';
import * as websocketPkg from '@upgradeware/websocket';
import { request, wsOpen, wsClose, until, WsRefused, HOST } from '../../../test-support';
import './quiet-deprecations';

const README = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
const BLOCKS = [...README.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!);

interface Running {
  lines: string[];
  exports: Record<string, unknown>;
  port: () => number;
  close(): Promise<void>;
}

const running: Running[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.close();
});

async function run(source: string): Promise<Running> {
  const lines: string[] = [];
  const servers: http.Server[] = [];
  const endpoints: Array<{ close(): unknown }> = [];
  const modules: Record<string, unknown> = {
    'node:crypto': crypto,
    '@upgradeware/upgrade-response': upr,
    '@upgradeware/dispatcher': {
      ...dispatcher,
      createApp: (...args: Parameters<typeof dispatcher.createApp>) => {
        const app = dispatcher.createApp(...args);
        app.listen = ((): http.Server => {
          const server = app.attach(http.createServer(app));
          servers.push(server);
          return server.listen(0, HOST);
        }) as typeof app.listen;
        return app;
      },
    },
    '@upgradeware/logger': {
      ...loggerPkg,
      logger: Object.assign(
        (format: string, options: loggerPkg.LoggerOptions = {}) =>
          loggerPkg.logger(format, { stream: { write: (line) => lines.push(String(line).replace(/\n$/, '')) }, ...options }),
        { token: loggerPkg.logger.token, format: loggerPkg.logger.format, compile: loggerPkg.logger.compile },
      ),
    },
    '@upgradeware/websocket': {
      ...websocketPkg,
      websocket: (...args: Parameters<typeof websocketPkg.websocket>) => {
        const ep = websocketPkg.websocket(...args);
        endpoints.push(ep);
        return ep;
      },
    },
  };
  const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 } }).outputText;
  const exports: Record<string, unknown> = {};
  const require = (name: string) => {
    if (!(name in modules)) throw new Error(`README example imports ${name}, unknown to this test`);
    return modules[name];
  };
  new Function('require', 'exports', js)(require, exports);
  const r: Running = {
    lines,
    exports,
    port: () => (servers[0]!.address() as { port: number }).port,
    close: async () => {
      for (const ep of endpoints) await ep.close();
      for (const s of servers) {
        s.closeAllConnections();
        await new Promise((resolve) => s.close(resolve));
      }
    },
  };
  running.push(r);
  await Promise.all(servers.map((sv) => (sv.listening ? undefined : new Promise((resolve) => sv.once('listening', resolve)))));
  return r;
}

/** The lines a block shows as `// ...` comments after its code. */
const shown = (block: string) => [...block.matchAll(/^\/\/ (.*)$/gm)].map((m) => m[1]!);
const plain = (line: string) => line.replace(/\x1b\[\d+m/g, '').replace(/\d+\.\d{3} ms/g, 'N ms');
const blockWith = (text: string) => {
  const found = BLOCKS.find((b) => b.includes(text));
  if (!found) throw new Error(`no README block with ${text}`);
  return found;
};

test('every block compiles and runs as written', async () => {
  expect(BLOCKS.length).toBeGreaterThanOrEqual(6);
  for (const block of BLOCKS) await expect(run(block)).resolves.toBeDefined();
});

test('the first example prints the lines it shows: a switch and a refused upgrade', async () => {
  const block = BLOCKS[0]!;
  const r = await run(block);
  const url = `ws://${HOST}:${r.port()}/chat`;
  const { ws } = await wsOpen(url, { headers: { Cookie: 'member=1' } });
  await wsClose(ws);
  await expect(wsOpen(url)).rejects.toBeInstanceOf(WsRefused);
  await until(() => r.lines.length === 2);
  expect(r.lines.map(plain)).toEqual(shown(block).map(plain));
});

test('the closeFormat example prints its two lines', async () => {
  const block = blockWith('closeFormat:');
  const r = await run(block);
  const { ws } = await wsOpen(`ws://${HOST}:${r.port()}/chat`);
  ws.close(1000);
  await until(() => r.lines.length === 2);
  expect(r.lines.map(plain)).toEqual(shown(block).map(plain));
});

test('the object-mode example collects objects', async () => {
  const block = blockWith('writableObjectMode');
  // The example's own array, reached through the app it builds: serve it and ask once.
  const r = await run(block.replace('const entries = [];', 'const entries = []; exports.entries = entries;').concat('\napp.listen(3000);\n'));
  await request(`http://${HOST}:${r.port()}/x`);
  await until(() => (r.exports.entries as unknown[]).length === 1);
  expect(r.exports.entries).toEqual([{ method: 'GET', url: '/x', status: 404 }]);
});

test('the token example logs the id of each request', async () => {
  const r = await run(blockWith("logger.token('id'").concat('\napp.listen(3000);\n'));
  await request(`http://${HOST}:${r.port()}/y`);
  await until(() => r.lines.length === 1);
  expect(r.lines[0]).toMatch(/^[0-9a-f-]{36} GET \/y 404$/);
});
