'use strict';
// The child process of readme-resets.test.ts: every README program (a fenced js/ts block that
// imports an @upgradeware package, as readme-examples.test.ts finds them) runs here, as written,
// against the built packages (packages/*/dist). Only what ties a program to a machine is
// redirected: every listen() is on 127.0.0.1 port 0, loggers write to a sink, `process` is a
// stand-in (environment variables read `readme-test-<name>`, signal handlers recorded), `console`
// is silenced. Names an example leaves to the reader (`<!-- readme-test: assumes … -->`) get a
// stand-in. An example that stops short of listening gets its last app listened.
//
// Nothing here catches an uncaught exception: one ends the process, and the test sees it die.
// IPC: sends { type: 'ready', examples: [{ label, readme, heading, ports, upgrade, connect }] }.
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const root = path.join(__dirname, '..', '..');
const ts = require(path.join(root, 'node_modules', 'typescript'));

const LANGS = /^(js|javascript|mjs|cjs|ts|typescript|mts|cts)$/;
function readmes() {
  const files = ['README.md'];
  for (const dir of fs.readdirSync(path.join(root, 'packages')).sort()) {
    if (fs.existsSync(path.join(root, 'packages', dir, 'README.md'))) files.push(`packages/${dir}/README.md`);
  }
  return files;
}
function blocksOf(readme) {
  const lines = fs.readFileSync(path.join(root, readme), 'utf8').split('\n');
  const found = [];
  let heading = '(top)';
  for (let i = 0; i < lines.length; i++) {
    if (/^#{1,6} /.test(lines[i])) heading = lines[i].replace(/^#+ /, '');
    const open = /^```(\S*)\s*$/.exec(lines[i]);
    if (!open) continue;
    const end = lines.findIndex((l, j) => j > i && /^```\s*$/.test(l));
    if (end === -1) break;
    const marker = /^<!--\s*readme-test:\s*assumes\s+([\w$,\s]+?)\s*-->\s*$/.exec(lines[i - 1] || '');
    const assumes = marker ? marker[1].split(/[\s,]+/).filter(Boolean) : [];
    if (LANGS.test(open[1])) found.push({ readme, line: i + 1, lang: open[1], heading, code: lines.slice(i + 1, end).join('\n') + '\n', assumes });
    i = end;
  }
  return found;
}
const isProgram = (b) => /(?:from\s+|require\(\s*)['"]@upgradeware\//.test(b.code);
const isTs = (b) => /^(ts|typescript|mts|cts)$/.test(b.lang);

// Every listen() of this process: 127.0.0.1, port 0; the servers of the example being run recorded.
let current = null;
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function redirectedListen(...args) {
  if (current !== null) current.add(this);
  const callback = args.find((a) => typeof a === 'function');
  return callback ? listen.call(this, 0, '127.0.0.1', callback) : listen.call(this, 0, '127.0.0.1');
};

const sink = { write: () => true };
const pkg = (name) => require(path.join(root, 'packages', name));
function standIn() {
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

function run(block) {
  const servers = new Set();
  const apps = [];
  const created = [];
  const dispatcher = pkg('dispatcher');
  const loggerPkg = pkg('logger');
  const httpModule = { ...http, createServer: (...a) => {
    const s = http.createServer(...a);
    created.push(s);
    return s;
  } };
  const modules = {
    http: httpModule,
    'node:http': httpModule,
    '@upgradeware/dispatcher': { ...dispatcher, createApp: (...a) => {
      const app = dispatcher.createApp(...a);
      apps.push(app);
      return app;
    } },
    '@upgradeware/logger': { ...loggerPkg, logger: Object.assign(
      (format, options = {}) => loggerPkg.logger(format, { ...options, stream: sink }),
      { token: loggerPkg.logger.token, format: loggerPkg.logger.format, compile: loggerPkg.logger.compile },
    ) },
  };
  const fakeRequire = (name) => {
    if (name in modules) return modules[name];
    const m = /^@upgradeware\/([^/]+)$/.exec(name);
    if (m) return pkg(m[1]);
    return require(require.resolve(name, { paths: [root] }));
  };
  const env = new Proxy({}, { get: (_t, key) => (typeof key !== 'string' ? undefined : key === 'NODE_ENV' ? 'production' : `readme-test-${key.toLowerCase()}`) });
  const fakeProcess = {
    env,
    argv: [process.execPath, 'example.js'],
    on: () => fakeProcess,
    once: () => fakeProcess,
    exit: (code) => {
      throw new Error(`the example called process.exit(${code ?? ''})`);
    },
    stdout: sink,
    stderr: sink,
  };
  const quiet = { ...console, log() {}, error() {}, warn() {}, info() {}, debug() {} };
  const js = ts.transpileModule(block.code, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, allowJs: true },
    fileName: isTs(block) ? 'example.ts' : 'example.js',
  }).outputText;
  current = servers;
  try {
    new Function('require', 'module', 'exports', 'process', 'console', ...block.assumes, js)(fakeRequire, { exports: {} }, {}, fakeProcess, quiet, ...block.assumes.map(standIn));
  } catch (err) {
    // An example that is not a server (a Store subclass …) may stop here; its error is reported.
    return { servers: [], error: String(err && err.message) };
  } finally {
    current = null;
  }
  if (servers.size === 0 && created.length === 0 && apps.length > 0) {
    current = servers;
    apps[apps.length - 1].listen();
    current = null;
  }
  for (const s of created) if (!servers.has(s)) {
    servers.add(s);
    listen.call(s, 0, '127.0.0.1');
  }
  return { servers: [...servers] };
}

async function main() {
  const examples = [];
  for (const block of readmes().flatMap(blocksOf).filter(isProgram)) {
    const { servers, error } = run(block);
    for (const s of servers) if (!s.listening) await new Promise((resolve) => s.once('listening', resolve));
    examples.push({
      label: `${block.readme}:${block.line} (${block.heading})`,
      readme: block.readme,
      heading: block.heading,
      error,
      ports: servers.map((s) => s.address().port),
      upgrade: servers.map((s) => s.listenerCount('upgrade') > 0),
      connect: servers.map((s) => s.listenerCount('connect') > 0),
      request: servers.map((s) => s.listenerCount('request') > 0),
    });
  }
  process.send({ type: 'ready', examples });
}
process.on('disconnect', () => process.exit(0));
main();
