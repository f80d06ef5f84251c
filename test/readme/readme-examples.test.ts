/**
 * Every code example in a README (the root one and every package's), checked against the real
 * packages, so that a broken example cannot land again (issue 15).
 *
 * The examples are found generically: every fenced `js`/`ts` block of every README. A block that
 * imports an `@upgradeware/*` package is a program a user would copy whole; for each of those:
 *
 * 1. names: the block is type-checked (loosely: `strict` off, JavaScript checked as `checkJs`
 *    does) against the packages' sources, and only the mistakes a copying user would hit are
 *    reported — a name used but never declared or imported, an import the package does not
 *    export, a module that does not exist, an option the function does not take, a wrong number of
 *    arguments;
 * 2. runs: it is executed in this process against the real packages. Only what ties a program to
 *    a machine is redirected: every `listen()` listens on 127.0.0.1 port 0, the logger writes to a
 *    collector instead of stdout, `process` is a stand-in (environment variables the example reads
 *    get a test value, signal handlers are recorded), `console` is collected. An example that
 *    stops short of listening gets its server listened, or its last app served. Every program
 *    must then answer an ordinary request and a WebSocket handshake on `/` (any status: the
 *    server keeps serving) without an error reaching the stack's end;
 * 3. behaviour: examples this file knows by README and heading are driven further with real
 *    clients (below). The websocket package's examples have their own suite
 *    (packages/websocket/test/readme.test.ts).
 *
 * An example may leave names to the reader (`users.authenticate(…)`, `join(ws, room)`): an HTML
 * comment on the line above its fence, invisible on GitHub and npm, names them —
 * `<!-- readme-test: assumes users, join -->` — and the run gives each a stand-in that accepts any
 * use and answers a rejected promise when called.
 *
 * Blocks without an upgradeware import are fragments of a program shown above them (an option, a
 * token): they are checked for syntax only.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import * as ts from 'typescript';
import * as dispatcher from '@upgradeware/dispatcher';
import * as uprPkg from '@upgradeware/upgrade-response';
import * as loggerPkg from '@upgradeware/logger';
import * as responseTimePkg from '@upgradeware/response-time';
import * as basicAuthPkg from '@upgradeware/basic-auth';
import * as cookieParserPkg from '@upgradeware/cookie-parser';
import * as queryPkg from '@upgradeware/query';
import * as vhostPkg from '@upgradeware/vhost';
import * as sessionPkg from '@upgradeware/session';
import * as websocketPkg from '@upgradeware/websocket';
import { HOST, nextMessage, rawRequest, until, upgradeRequest, wsClose, wsHandshake, wsOpen, WsRefused } from '../../test-support';

const root = join(__dirname, '..', '..');

// ---- Finding the examples ---------------------------------------------------------------------

interface Block {
  readme: string;
  /** 1-based line of the opening fence */
  line: number;
  lang: string;
  /** the nearest heading above the block */
  heading: string;
  code: string;
  /** names the example leaves to the reader (`<!-- readme-test: assumes users, join -->` above it) */
  assumes: string[];
  /**
   * a suite that runs the example instead of this file, because it needs a real component
   * (`<!-- readme-test: run by packages/hub/test/readme.redis.test.ts -->` above it)
   */
  runBy?: string;
}

const LANGS = /^(js|javascript|mjs|cjs|ts|typescript|mts|cts)$/;

function readmes(): string[] {
  const files = ['README.md'];
  for (const dir of readdirSync(join(root, 'packages')).sort()) {
    if (existsSync(join(root, 'packages', dir, 'README.md'))) files.push(`packages/${dir}/README.md`);
  }
  return files;
}

function blocksOf(readme: string): Block[] {
  const lines = readFileSync(join(root, readme), 'utf8').split('\n');
  const found: Block[] = [];
  let heading = '(top)';
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (/^#{1,6} /.test(line)) heading = line.replace(/^#+ /, '');
    const open = /^```(\S*)\s*$/.exec(line);
    if (!open) continue;
    const end = lines.findIndex((l, j) => j > i && /^```\s*$/.test(l));
    if (end === -1) throw new Error(`${readme}:${i + 1}: a code fence that never closes`);
    const marker = /^<!--\s*readme-test:\s*assumes\s+([\w$,\s]+?)\s*-->\s*$/.exec(lines[i - 1] ?? '');
    const assumes = marker ? marker[1]!.split(/[\s,]+/).filter(Boolean) : [];
    const runBy = /^<!--\s*readme-test:\s*run by\s+(\S+)\s*-->\s*$/.exec(lines[i - 1] ?? '')?.[1];
    if (LANGS.test(open[1]!)) found.push({ readme, line: i + 1, lang: open[1]!, heading, code: lines.slice(i + 1, end).join('\n') + '\n', assumes, runBy });
    i = end;
  }
  return found;
}

const isProgram = (b: Block) => /(?:from\s+|require\(\s*)['"]@upgradeware\//.test(b.code);
const isTs = (b: Block) => /^(ts|typescript|mts|cts)$/.test(b.lang);
const label = (b: Block) => `${b.readme}:${b.line} (${b.heading})`;

const all = readmes().flatMap(blocksOf);
const programs = all.filter(isProgram);

test('the READMEs have examples to check (the finder works)', () => {
  expect(readmes().length).toBeGreaterThanOrEqual(2);
  expect(programs.length).toBeGreaterThanOrEqual(readmes().length);
  expect(programs.some((b) => b.readme === 'README.md')).toBe(true);
});

// ---- 0. syntax, for every block -----------------------------------------------------------------

test.each(all.map((b) => [label(b), b] as const))('%s: valid syntax', (_name, block) => {
  const out = ts.transpileModule(block.code, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, allowJs: true },
    fileName: isTs(block) ? 'block.ts' : 'block.js',
    reportDiagnostics: true,
  });
  expect((out.diagnostics ?? []).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))).toEqual([]);
});

// ---- 1. names, for every program ----------------------------------------------------------------

/** What a user copying the example would trip over (the rest of the type-checker's view is left to the package suites). */
const REPORTED = new Set([
  2304, // Cannot find name 'x'.
  2552, // Cannot find name 'x'. Did you mean 'y'?
  2305, // Module 'm' has no exported member 'x'.
  2724, // 'm' has no exported member named 'x'. Did you mean 'y'?
  2307, // Cannot find module 'm'.
  2353, // Object literal may only specify known properties, and 'x' does not exist in type …
  2561, // … Did you mean to write 'y'?
  2554, // Expected n arguments, but got m.
]);

const typeErrors: Map<Block, string[]> = (() => {
  const dir = join(root, 'test', 'readme', '.examples');
  const files = new Map<string, Block>();
  programs.forEach((b, i) => files.set(join(dir, `example-${i}.${isTs(b) ? 'ts' : 'js'}`), b));
  const options: ts.CompilerOptions = {
    allowJs: true,
    checkJs: true,
    noEmit: true,
    strict: false,
    noImplicitAny: false,
    skipLibCheck: true,
    esModuleInterop: true,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    target: ts.ScriptTarget.ES2022,
    lib: ['lib.es2022.d.ts'],
    types: ['node'],
    baseUrl: root,
    paths: { '@upgradeware/*': ['packages/*/src'] },
  };
  const host = ts.createCompilerHost(options);
  // Each example is its own module (`export {}`), so no two share their top-level names.
  // The names an example leaves to the reader are declared, as `any`.
  const declare = (b: Block) => b.assumes.map((n) => (isTs(b) ? `declare var ${n}: any;` : `/** @type {any} */ var ${n};`)).join('\n');
  const source = (file: string) => (files.has(file) ? `${files.get(file)!.code}\nexport {};\n${declare(files.get(file)!)}\n` : undefined);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (file, lang, ...rest) => {
    const text = source(file);
    return text === undefined ? getSourceFile(file, lang, ...rest) : ts.createSourceFile(file, text, lang, true);
  };
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (file) => files.has(file) || fileExists(file);
  const readFile = host.readFile.bind(host);
  host.readFile = (file) => source(file) ?? readFile(file);
  const program = ts.createProgram([...files.keys()], options, host);
  const result = new Map<Block, string[]>();
  for (const [file, block] of files) {
    const sf = program.getSourceFile(file)!;
    const diagnostics = [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)];
    result.set(
      block,
      diagnostics
        .filter((d) => REPORTED.has(d.code))
        .map((d) => {
          const { line } = sf.getLineAndCharacterOfPosition(d.start ?? 0);
          return `${block.readme}:${block.line + 1 + line}: TS${d.code} ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`;
        }),
    );
  }
  return result;
})();

test.each(programs.map((b) => [label(b), b] as const))('%s: every name it uses is declared or imported, every import and option exists', (_name, block) => {
  expect(typeErrors.get(block)).toEqual([]);
});

// ---- 2. runs --------------------------------------------------------------------------------------

interface Running {
  servers: http.Server[];
  lines: string[];
  logged: unknown[][];
  signals: Map<string, (...args: unknown[]) => unknown>;
  /** errors that reached an app's end (its final handler) */
  stackErrors: unknown[];
  port(i?: number): number;
  close(): Promise<void>;
}

const running: Running[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.close();
});

const PACKAGES: Record<string, unknown> = {
  '@upgradeware/dispatcher': dispatcher,
  '@upgradeware/upgrade-response': uprPkg,
  '@upgradeware/logger': loggerPkg,
  '@upgradeware/response-time': responseTimePkg,
  '@upgradeware/basic-auth': basicAuthPkg,
  '@upgradeware/cookie-parser': cookieParserPkg,
  '@upgradeware/query': queryPkg,
  '@upgradeware/vhost': vhostPkg,
  '@upgradeware/session': sessionPkg,
  '@upgradeware/websocket': websocketPkg,
};

/** Run one example; resolves once every server it started listens. */
async function run(block: Block): Promise<Running> {
  const lines: string[] = [];
  const logged: unknown[][] = [];
  const signals = new Map<string, (...args: unknown[]) => unknown>();
  const servers: http.Server[] = [];
  const sockets = new Set<Socket>();
  const stackErrors: unknown[] = [];

  /** A server of the example: tracked, and its listen() redirected to 127.0.0.1 port 0. */
  const listened = new Set<http.Server>();
  const apps: dispatcher.App[] = [];
  const adopt = (server: http.Server): http.Server => {
    servers.push(server);
    server.on('connection', (s: Socket) => {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
    });
    const listen = server.listen.bind(server) as (...args: unknown[]) => http.Server;
    server.listen = ((...args: unknown[]) => {
      listened.add(server);
      const callback = args.find((a) => typeof a === 'function');
      return callback ? listen(0, HOST, callback) : listen(0, HOST);
    }) as typeof server.listen;
    return server;
  };
  const httpModule = { ...http, createServer: (...args: Parameters<typeof http.createServer>) => adopt(http.createServer(...args)) };
  const collector = { write: (line: string) => void lines.push(line.replace(/\n$/, '')) };
  const modules: Record<string, unknown> = {
    ...PACKAGES,
    '@upgradeware/dispatcher': {
      ...dispatcher,
      createApp: (...args: Parameters<typeof dispatcher.createApp>) => {
        const app = dispatcher.createApp(...args);
        apps.push(app);
        // What reaches the end of the stack, recorded (the example's own error handlers run first).
        const use = app.use.bind(app);
        let finalAdded = false;
        const addFinal = () => {
          if (finalAdded) return;
          finalAdded = true;
          use((err: unknown, _req: http.IncomingMessage, _res: http.ServerResponse, next: (err?: unknown) => void) => {
            stackErrors.push(err);
            next(err);
          });
        };
        app.listen = ((...args: unknown[]) => {
          addFinal();
          const server = adopt(app.attach(http.createServer(app)));
          return (server.listen as (...a: unknown[]) => http.Server)(...args);
        }) as typeof app.listen;
        const attach = app.attach.bind(app);
        app.attach = ((server: http.Server) => {
          addFinal();
          return attach(server);
        }) as typeof app.attach;
        return app;
      },
    },
    '@upgradeware/logger': {
      ...loggerPkg,
      logger: Object.assign(
        (format?: Parameters<typeof loggerPkg.logger>[0], options: loggerPkg.LoggerOptions = {}) =>
          loggerPkg.logger(format as string, { ...options, stream: collector }),
        { token: loggerPkg.logger.token, format: loggerPkg.logger.format, compile: loggerPkg.logger.compile },
      ),
    },
    http: httpModule,
    'node:http': httpModule,
  };
  const js = ts.transpileModule(block.code, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, allowJs: true },
    fileName: isTs(block) ? 'example.ts' : 'example.js',
  });
  const fakeRequire = (name: string): unknown => (name in modules ? modules[name] : require(name));
  const env = new Proxy({} as Record<string, string>, {
    get: (_t, key) => (typeof key === 'string' && key !== 'NODE_ENV' ? `readme-test-${key.toLowerCase()}` : key === 'NODE_ENV' ? 'test' : undefined),
  });
  const fakeProcess = {
    env,
    argv: [process.execPath, 'example.js'],
    exitCode: undefined as number | undefined,
    on: (signal: string, fn: (...args: unknown[]) => unknown) => void signals.set(signal, fn),
    once: (signal: string, fn: (...args: unknown[]) => unknown) => void signals.set(signal, fn),
    exit: (code?: number) => {
      throw new Error(`the example called process.exit(${code ?? ''})`);
    },
    stdout: collector,
    stderr: collector,
  };
  const fakeConsole = { ...console, log: (...a: unknown[]) => void logged.push(a), error: (...a: unknown[]) => void logged.push(a), warn: (...a: unknown[]) => void logged.push(a) };
  const serveApp = (app: dispatcher.App) => (app.listen as (...a: unknown[]) => http.Server)();
  const assumed = block.assumes.map(() => standIn());
  // A server made where the example's `http` is not ours (Express's app.listen() makes its own)
  // is adopted when it listens: it too listens on 127.0.0.1 port 0 and is closed after the test.
  const netListen = net.Server.prototype.listen;
  net.Server.prototype.listen = function adoptingListen(this: net.Server, ...args: unknown[]) {
    if (this instanceof http.Server && !servers.includes(this)) return adopt(this).listen(...(args as []));
    return (netListen as (...a: unknown[]) => net.Server).apply(this, args);
  } as typeof netListen;
  try {
    new Function('require', 'module', 'exports', 'process', 'console', ...block.assumes, js.outputText)(fakeRequire, { exports: {} }, {}, fakeProcess, fakeConsole, ...assumed);
  } finally {
    net.Server.prototype.listen = netListen;
  }
  // An example that stops short of listening (its point is the middleware): its server listens
  // now, or, when it made none, its last app (the one the others are mounted on) gets one.
  if (servers.length === 0 && apps.length > 0) serveApp(apps[apps.length - 1]!);
  for (const server of servers) if (!listened.has(server)) server.listen();
  for (const server of servers) if (!server.listening) await new Promise((resolve) => server.once('listening', resolve));
  const r: Running = {
    servers,
    lines,
    logged,
    signals,
    stackErrors,
    port: (i = 0) => (servers[i]!.address() as AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await Promise.all(servers.map((s) => new Promise<void>((resolve) => (s.listening ? s.close(() => resolve()) : resolve()))));
    },
  };
  running.push(r);
  return r;
}

/** A stand-in for a name the example leaves to the reader: any property is another stand-in, a call a rejected promise. */
function standIn(): unknown {
  const target = function placeholder() {};
  return new Proxy(target, {
    get: (_t, key) => (key === 'then' ? undefined : standIn()),
    apply: () => {
      const p = Promise.reject(new Error('a name the README example leaves to the reader'));
      p.catch(() => undefined);
      return p;
    },
  });
}

test.each(programs.map((b) => [label(b), b] as const))('%s: runs against the real packages and serves', async (_name, block) => {
  if (block.runBy !== undefined) {
    // Needs a real component (redis-server): the suite named above the example runs it as written.
    const suite = join(root, block.runBy);
    expect(existsSync(suite)).toBe(true);
    expect(readFileSync(suite, 'utf8')).toContain(block.heading);
    return;
  }
  const r = await run(block);
  // (An example that makes neither a server nor an app — a Store subclass — has run: that is all.)
  for (let i = 0; i < r.servers.length; i++) {
    const server = r.servers[i]!;
    // What the server listens for: ordinary requests, upgrades, or both.
    expect(server.listenerCount('request') + server.listenerCount('upgrade')).toBeGreaterThan(0);
    if (server.listenerCount('request') > 0) {
      const page = await rawRequest(r.port(i), `GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
      expect(page.status).toBeGreaterThanOrEqual(200);
    }
    if (server.listenerCount('upgrade') > 0) {
      const upgrade = await rawRequest(r.port(i), wsHandshake('/'), { timeoutMs: 1000, untilHead: true });
      expect(upgrade.status).toBeGreaterThanOrEqual(101);
    }
  }
  expect(r.stackErrors).toEqual([]);
});

// ---- 3. behaviour of the examples this file knows -------------------------------------------------

/** The one program block under `heading` in `readme` (the first when there are more). */
function example(readme: string, heading: string | null = null): Block {
  const b = programs.find((p) => p.readme === readme && (heading === null || p.heading === heading));
  if (!b) throw new Error(`${readme} has no example${heading ? ` under "${heading}"` : ''}`);
  return b;
}

describe('the root README', () => {
  const auth = { Authorization: 'Bearer s3cret' };

  test('echo: the bytes sent with the request (head) come back first, then everything after them', async () => {
    const r = await run(example('README.md', 'upgradeware'));
    const socket = net.connect(r.port(), HOST);
    try {
      let text = '';
      const got = (what: string) =>
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no ${JSON.stringify(what)} in ${JSON.stringify(text)}`)), 3000);
          const check = () => {
            if (!text.includes(what)) return;
            clearTimeout(timer);
            socket.off('data', onData);
            resolve();
          };
          const onData = (c: Buffer) => {
            text += c.toString('latin1');
            check();
          };
          socket.on('data', onData);
          check();
        });
      // The request and the first bytes of the new protocol in one packet.
      socket.write(upgradeRequest('/echo', 'echo', auth) + 'first bytes|');
      await got('first bytes|');
      expect(text.startsWith('HTTP/1.1 101 Switching Protocols\r\n')).toBe(true);
      expect(text.endsWith('\r\n\r\nfirst bytes|')).toBe(true);
      socket.write('and more');
      await got('first bytes|and more');
    } finally {
      socket.destroy();
    }
  });

  test('the guard answers an upgrade without the token with a real 401', async () => {
    const r = await run(example('README.md', 'upgradeware'));
    const refused = await rawRequest(r.port(), upgradeRequest('/echo', 'echo') + 'lost');
    expect(refused.status).toBe(401);
    expect(refused.body).toBe('who are you?');
    expect(refused.closed).toBe(true);
    const ws = await rawRequest(r.port(), wsHandshake('/echo'));
    expect(ws.status).toBe(401);
  });

  test('a protocol upgradeProtocols does not name is served as an ordinary request: a 404, no switch', async () => {
    const r = await run(example('README.md', 'upgradeware'));
    // As any ordinary request, the connection follows the client's own Connection tokens (here:
    // close after the answer); the Upgrade is ignored (RFC 9110 §7.8).
    const other = await rawRequest(r.port(), upgradeRequest('/echo', 'other', auth).replace('Connection: Upgrade', 'Connection: Upgrade, close'));
    expect(other.status).toBe(404);
    expect(other.headers.upgrade).toBeUndefined();
    expect(other.headers.connection).toEqual(['close']);
    // The same example without `upgradeProtocols`: `Upgrade: echo` is not served as an upgrade.
    const withoutOption = { ...example('README.md', 'upgradeware') };
    withoutOption.code = withoutOption.code.replace(/createApp\(\{[^)]*\}\)/, 'createApp()');
    expect(withoutOption.code).toContain('createApp()');
    const plain = await run(withoutOption);
    const echo = await rawRequest(plain.port(), upgradeRequest('/echo', 'echo', auth).replace('Connection: Upgrade', 'Connection: Upgrade, close'));
    expect(echo.status).toBe(404);
  });
});

// The first program of each package README, driven a step further. (When a README's example
// changes, these follow it; a package README without a test here is covered by the checks above.)
describe('package READMEs', () => {
  test('upgrade-response: 401 without the token; the 101 carries X-Hello and echoes the bytes sent with the request', async () => {
    const r = await run(example('packages/upgrade-response/README.md'));
    const refused = await rawRequest(r.port(), upgradeRequest('/x', 'echo'));
    expect([refused.status, refused.body, refused.closed]).toEqual([401, 'who are you?', true]);
    const switched = await rawRequest(r.port(), upgradeRequest('/x', 'echo', { Authorization: 'Bearer s3cret' }) + 'ping', { timeoutMs: 500 });
    expect(switched.status).toBe(101);
    expect(switched.headers['x-hello']).toEqual(['world']);
    expect(switched.body).toBe('ping');
    // Its 'finish' line: the real status of both.
    expect(r.logged).toEqual([
      ['GET', '/x', 401],
      ['GET', '/x', 101],
    ]);
  });

  test('dispatcher: a page, a Basic-guarded WebSocket feed (401, then 101), all logged', async () => {
    const r = await run(example('packages/dispatcher/README.md'));
    const page = await rawRequest(r.port(), `GET /anything HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`);
    expect([page.status, page.body]).toEqual([200, 'a page']);
    const refused = await wsOpen(`ws://${HOST}:${r.port()}/admin/feed`).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(WsRefused);
    expect((refused as WsRefused).status).toBe(401);
    const admin = await wsOpen(`ws://admin:s3cret@${HOST}:${r.port()}/admin/feed`);
    expect(await nextMessage(admin.ws)).toBe('hello admin');
    await wsClose(admin.ws);
    await until(() => r.lines.length >= 3);
    expect(r.lines.map((l) => l.replace(/\x1b\[\d+m/g, '').split(' ').slice(0, 3).join(' '))).toEqual([
      'GET /anything 200',
      'GET /admin/feed 401',
      'GET /admin/feed 101',
    ]);
  });

  test('cookie-parser: an upgrade to /chat without a signed sid cookie is a real 403', async () => {
    const r = await run(example('packages/cookie-parser/README.md'));
    const refused = await rawRequest(r.port(), wsHandshake('/chat'));
    expect([refused.status, refused.body]).toEqual([403, 'no session']);
  });

  test('response-time: both headers on a page and on a refused upgrade', async () => {
    const r = await run(example('packages/response-time/README.md'));
    for (const reply of [await rawRequest(r.port(), `GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`), await rawRequest(r.port(), wsHandshake('/'))]) {
      expect(reply.headers['x-response-time']?.[0]).toMatch(/^\d+\.\d{3}ms$/);
      expect(reply.headers['x-elapsed']?.[0]).toMatch(/^\d+$/);
    }
  });

  test('vhost: an upgrade to api.example.com reaches the api app; a tenant host gets its page', async () => {
    const r = await run(example('packages/vhost/README.md'));
    const live = await wsOpen(`ws://${HOST}:${r.port()}/live`, { headers: { Host: 'api.example.com' } });
    expect(await nextMessage(live.ws)).toBe('hello from api.example.com');
    await wsClose(live.ws);
    const tenant = await rawRequest(r.port(), `GET / HTTP/1.1\r\nHost: acme.example.com\r\nConnection: close\r\n\r\n`);
    expect([tenant.status, tenant.body]).toEqual([200, 'tenant acme']);
  });
});
