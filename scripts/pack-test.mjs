#!/usr/bin/env node
// The packaging check (issue 7). Run by scripts/test.mjs as `node scripts/pack-test.mjs --out=<file> --quiet`;
// writes {"passed": N, "failed": M} to <file> and prints one line per check and a summary (with
// --quiet: only the failed checks, test.mjs prints the counts).
//
// 1. build:        `tsc -b` at the root, as `pnpm build` does
// 2. pack:         the root `pnpm pack:all` (what the READMEs tell users to run): one tarball per
//                  publishable package, none for the private ones; each tarball's files (LICENSE
//                  included) and its package.json (no `workspace:` left, internal ranges
//                  `^<version>`, exports, real repository/bugs/homepage/keywords/engines/license)
// 3. README:       each package README's first section is its install section (tarballs today,
//                  the npm line for later), and its install line works as written
// 4. install:      the tarballs into a fresh npm project under os.tmpdir() (no workspace links)
// 5. consume:      a CommonJS script, an ESM script (named imports) and a `tsc --noEmit --strict`
//                  type check (CommonJS .ts and ESM .mts, module nodenext) against the install
// 6. versioning:   on a throw-away clone of HEAD: `changeset status`, `changeset version` (the
//                  dependents' `workspace:^` ranges keep pointing at the new version, which the
//                  packed manifest shows), `pnpm -r publish --dry-run`
// The real repository is never modified (apart from dist/ by the build). Temp dirs are removed.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outArg = process.argv.find((a) => a.startsWith('--out='));
const outFile = outArg ? outArg.slice('--out='.length) : null;
const keep = process.argv.includes('--keep');
// --quiet (scripts/test.mjs): only failures are printed, and no summary (test.mjs prints the counts).
const quiet = process.argv.includes('--quiet');
const PNPM = ['--yes', 'pnpm@10.34.9'];
const TSC = join(root, 'node_modules/typescript/bin/tsc');
const CHANGESET = join(root, 'node_modules/@changesets/cli/bin.js');
const BUDGET_MS = 8 * 60_000;
const started = Date.now();

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed++;
  else failed++;
  if (!ok || !quiet) console.log(`${ok ? 'ok    ' : 'FAIL  '} ${name}${detail && !ok ? ` — ${detail}` : ''}`);
  return ok;
}
const note = (text) => void (quiet || console.log(`note   ${text}`));

/** Run a command, bounded by its own timeout and by what is left of the script's budget. */
function run(cmd, args, { cwd = root, timeout = 180_000, env = {} } = {}) {
  const left = BUDGET_MS - (Date.now() - started);
  if (left < 1000) return { ok: false, out: 'time budget of the packaging check exhausted' };
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    timeout: Math.min(timeout, left),
    env: { ...process.env, npm_config_update_notifier: 'false', ...env },
    maxBuffer: 64 * 1024 * 1024,
  });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? `\n${r.error.message}` : ''}`;
  return { ok: r.status === 0, out };
}
const npx = (args, opts) => run('npx', args, opts);
const tail = (text, lines = 15) => text.trim().split('\n').slice(-lines).join('\n');
const readJson = (file) => JSON.parse(readFileSync(file, 'utf8'));

const temps = [];
function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

function finish() {
  if (!keep) for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  else note(`kept ${temps.join(', ')}`);
  if (!quiet) console.log(`pack: ${passed} passed, ${failed} failed (${Math.round((Date.now() - started) / 1000)} s)`);
  if (outFile) writeFileSync(outFile, JSON.stringify({ passed, failed }) + '\n');
  process.exitCode = failed === 0 ? 0 : 1;
}

// ---- The packages -----------------------------------------------------------------------------

const all = readdirSync(join(root, 'packages'))
  .filter((dir) => existsSync(join(root, 'packages', dir, 'package.json')))
  .sort()
  .map((dir) => ({ dir, path: join(root, 'packages', dir), manifest: readJson(join(root, 'packages', dir, 'package.json')) }));
const packages = [];
for (const pkg of all) {
  if (pkg.manifest.private) continue;
  if (!existsSync(join(pkg.path, 'src/index.ts'))) {
    note(`${pkg.manifest.name}: no src/index.ts yet, skipped`);
    continue;
  }
  packages.push(pkg);
}
const versions = new Map(all.map((p) => [p.manifest.name, p.manifest.version]));

function main() {
  // 1. Build.
  const build = run(process.execPath, [TSC, '-b'], { timeout: 240_000 });
  check('build: tsc -b', build.ok, build.ok ? '' : tail(build.out));

  // 2. Pack (the root `pack:all` script, as the READMEs' install sections tell users), 3. README.
  const work = tempDir('upgradeware-pack-');
  const tarballs = join(work, 'tarballs');
  mkdirSync(tarballs);
  const packAll = npx([...PNPM, 'run', '--silent', 'pack:all'], { env: { PACK_DIR: tarballs }, timeout: 240_000 });
  const made = existsSync(tarballs) ? readdirSync(tarballs).filter((f) => f.endsWith('.tgz')).sort() : [];
  const expected = packages.map((p) => tarballName(p.manifest)).sort();
  check(
    `pnpm pack:all: one tarball per publishable package (${expected.length}), none for private ones`,
    packAll.ok && JSON.stringify(made) === JSON.stringify(expected),
    packAll.ok ? `made ${made.join(', ')}` : tail(packAll.out),
  );
  const packed = [];
  for (const pkg of packages) {
    const { name } = pkg.manifest;
    const file = join(tarballs, tarballName(pkg.manifest));
    if (!check(`pack ${name}`, existsSync(file), `no ${file}`)) continue;
    const problems = inspectTarball(pkg, file);
    if (check(`pack ${name}: files, LICENSE and manifest`, problems.length === 0, problems.join('; '))) packed.push({ pkg, file });
    const readme = existsSync(join(pkg.path, 'README.md')) ? readFileSync(join(pkg.path, 'README.md'), 'utf8') : null;
    const missing = readme === null ? ['README.md'] : installSectionProblems(readme, pkg.manifest);
    check(`README ${name}: starts with its install section`, missing.length === 0, missing.join('; '));
  }
  const names = new Set(packed.map((p) => p.pkg.manifest.name));
  if (!names.has('@upgradeware/upgrade-response') || !names.has('@upgradeware/dispatcher')) {
    check('install and consume', false, 'upgrade-response and dispatcher must pack first');
  } else {
    consume(work, packed);
    installAsReadme(work, tarballs, packed);
  }

  // 6. Versioning.
  versioning();
}

/** The file name `pnpm pack` gives a package's tarball. */
function tarballName({ name, version }) {
  return `${name.replace(/^@/, '').replace('/', '-')}-${version}.tgz`;
}

/**
 * What the package READMEs' install section must say (issue 15): nothing is published yet, so the
 * first `##` section is "Install": tarballs from `pnpm pack:all`, this package's beside
 * `@upgradeware/upgrade-response`'s, and the npm line for after publishing.
 */
function installSectionProblems(readme, manifest) {
  const problems = [];
  const lines = readme.split('\n');
  const first = lines.findIndex((l) => l.startsWith('## '));
  if (first === -1 || lines[first].trim() !== '## Install') return [`first ## heading is ${JSON.stringify(lines[first] ?? 'none')}, not "## Install"`];
  const h1 = lines.findIndex((l) => l.startsWith('# '));
  if (h1 === -1 || h1 > first) problems.push('no # title above the install section');
  const end = lines.findIndex((l, i) => i > first && l.startsWith('## '));
  const section = lines.slice(first, end === -1 ? undefined : end).join('\n');
  // Tarballs are named with their version or with a `*` for it (`upgradeware-query-*.tgz`: a
  // shell glob that survives a version bump).
  const either = (m) => [tarballName(m), tarballName({ ...m, version: '*' })];
  const wanted = [
    ['pack:all'],
    either({ name: '@upgradeware/upgrade-response', version: versions.get('@upgradeware/upgrade-response') }),
    either(manifest),
    [`npm install ${manifest.name}`],
  ];
  for (const texts of wanted) if (!texts.some((t) => section.includes(t))) problems.push(`install section does not name ${texts.join(' or ')}`);
  return problems;
}

/**
 * The README's install line, as written: the `npm install …tgz` line of one package's README
 * (logger's: it has registry dependencies of its own), run by `sh` in a fresh project with the
 * README's /path/to/upgradeware/tarballs pointing at the tarballs just made. It installs, and the
 * package loads.
 */
function installAsReadme(work, tarballs, packed) {
  const probe = packed.find((p) => p.pkg.manifest.name === '@upgradeware/logger') ?? packed.find((p) => p.pkg.manifest.name !== '@upgradeware/upgrade-response');
  if (!probe) return;
  const name = probe.pkg.manifest.name;
  const readme = readFileSync(join(probe.pkg.path, 'README.md'), 'utf8');
  const line = readme.split('\n').find((l) => /^npm install \S+\.tgz/.test(l.trim()));
  if (!check(`README ${name}: has an npm install line for tarballs`, line !== undefined)) return;
  const command = line.trim().replaceAll('/path/to/upgradeware/tarballs', tarballs);
  const app = join(work, 'readme-install');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'readme-install', version: '1.0.0', private: true }, null, 2));
  const install = run('sh', ['-c', `${command} --no-audit --no-fund --prefer-offline --loglevel=error`], {
    cwd: app,
    timeout: 240_000,
    env: { npm_config_workspaces: 'false' },
  });
  const names = USAGE[name]?.names ?? [];
  const load = install.ok
    ? run(process.execPath, ['-e', `const m = require(${JSON.stringify(name)}); for (const n of ${JSON.stringify(names)}) if (typeof m[n] !== 'function') throw new Error('no ' + n);`], { cwd: app })
    : install;
  check(`README ${name}: its install line, as written, installs the package beside upgrade-response and it loads`, load.ok, tail(load.out));
}

/** Problems with a tarball's file list and manifest (empty when fine). */
function inspectTarball(pkg, file) {
  const problems = [];
  const list = run('tar', ['-tzf', file]);
  if (!list.ok) return [`tar -t: ${tail(list.out, 3)}`];
  const files = list.out.trim().split('\n').map((f) => f.replace(/^package\//, ''));
  // (README.md is checked on its own: a missing README should not keep the package from installing.)
  for (const required of ['package.json', 'dist/index.js', 'dist/index.d.ts', 'LICENSE']) {
    if (!files.includes(required)) problems.push(`missing ${required}`);
  }
  const allowed = /^(package\.json|README\.md|CHANGELOG\.md|LICENSE(\.md)?|dist\/.+\.(js|d\.ts))$/;
  const extra = files.filter((f) => !allowed.test(f));
  if (extra.length) problems.push(`ships ${extra.join(', ')}`);
  const manifestText = run('tar', ['-xOzf', file, 'package/package.json']);
  if (!manifestText.ok) return [...problems, 'no package/package.json'];
  const manifest = JSON.parse(manifestText.out);
  for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies']) {
    for (const [dep, range] of Object.entries(manifest[field] ?? {})) {
      if (String(range).startsWith('workspace:')) problems.push(`${field}.${dep} is still ${range}`);
      else if (versions.has(dep) && range !== `^${versions.get(dep)}`) problems.push(`${field}.${dep} is ${range}, not ^${versions.get(dep)}`);
    }
  }
  const license = run('tar', ['-xOzf', file, 'package/LICENSE']);
  if (license.ok && !/^MIT License/.test(license.out)) problems.push('LICENSE is not the MIT license');
  problems.push(...metadataProblems(pkg, manifest));
  const dot = manifest.exports?.['.'];
  if (!dot || typeof dot !== 'object') problems.push('no exports["."]');
  else {
    if (!dot.types) problems.push('exports["."] has no types');
    if (!(dot.require || dot.default)) problems.push('exports["."] serves no require');
    if (!(dot.import || dot.default)) problems.push('exports["."] serves no import');
  }
  return problems;
}

/** The published metadata (issue 15): license, repository with its directory, bugs, homepage, keywords, engines. */
function metadataProblems(pkg, manifest) {
  const problems = [];
  const repo = 'https://github.com/upgradeware/upgradeware';
  if (manifest.license !== 'MIT') problems.push(`license is ${manifest.license}`);
  const r = manifest.repository;
  if (r?.type !== 'git' || r?.url !== `git+${repo}.git` || r?.directory !== `packages/${pkg.dir}`) problems.push(`repository is ${JSON.stringify(r)}`);
  if (manifest.bugs?.url !== `${repo}/issues`) problems.push(`bugs is ${JSON.stringify(manifest.bugs)}`);
  if (typeof manifest.homepage !== 'string' || !manifest.homepage.startsWith(`${repo}/tree/main/packages/${pkg.dir}`)) problems.push(`homepage is ${JSON.stringify(manifest.homepage)}`);
  if (!Array.isArray(manifest.keywords) || manifest.keywords.length < 3) problems.push('fewer than 3 keywords');
  if (manifest.engines?.node !== '>=20') problems.push(`engines.node is ${JSON.stringify(manifest.engines?.node)}`);
  return problems;
}

// ---- 4. install, 5. consume -------------------------------------------------------------------

/** What each package must export (the contract's names), and how a script uses it. */
const USAGE = {
  '@upgradeware/upgrade-response': { names: ['supportsUpgrade', 'isUpgradeResponse', 'UpgradeResponse'] },
  '@upgradeware/dispatcher': { names: ['createApp'] },
  '@upgradeware/logger': { names: ['logger'], use: "app.use(logger(':method :url :status', { stream: { write: (l) => void logLines.push(l.trim()) } }));" },
  '@upgradeware/response-time': { names: ['responseTime'], use: 'app.use(responseTime());' },
  '@upgradeware/basic-auth': { names: ['basicAuth'], use: "app.use('/private', basicAuth('alice', 'secret'));" },
  '@upgradeware/cookie-parser': { names: ['cookieParser', 'signedCookie', 'signedCookies', 'JSONCookie', 'JSONCookies'], use: "app.use(cookieParser('s3cret'));" },
  '@upgradeware/query': { names: ['query'], use: 'app.use(query());' },
  '@upgradeware/vhost': { names: ['vhost'], use: "app.use(vhost('other.invalid', (req, res) => res.end('other')));" },
  '@upgradeware/session': { names: ['session', 'Store', 'MemoryStore', 'Session', 'Cookie'], use: "app.use(session({ secret: 's3cret', resave: false, saveUninitialized: true }));" },
  // An adapter for Express apps; Express itself is the user's (an optional peer), so only its exports are checked here.
  '@upgradeware/express': { names: ['attachUpgrades', 'upgradable', 'skipUpgrades'] },
  '@upgradeware/hub': { names: ['createHub', 'inProcessTransport', 'redisTransport'] },
  '@upgradeware/trust-proxy': { names: ['trustProxy', 'sameOrigin'], use: "app.use(trustProxy('loopback'));" },
  '@upgradeware/websocket': { names: ['websocket'], use: "const endpoint = websocket((ws) => ws.on('message', (m) => ws.send('ws:' + m)));\napp.use('/ws', endpoint);" },
};

function consume(work, packed) {
  const app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'pack-consumer', version: '1.0.0', private: true }, null, 2));
  const install = run(
    'npm',
    ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', ...packed.map((p) => p.file), '@types/node@^20'],
    { cwd: app, timeout: 240_000, env: { npm_config_workspaces: 'false' } },
  );
  if (!check(`install ${packed.length} tarballs into a fresh npm project`, install.ok, tail(install.out))) return;
  const names = packed.map((p) => p.pkg.manifest.name);
  const linked = names.filter((n) => {
    const r = run('node', ['-e', `process.stdout.write(require('fs').realpathSync(require.resolve(${JSON.stringify(n)})))`], { cwd: app });
    return !r.ok || !r.out.startsWith(app);
  });
  check('installed copies live in the project (no workspace links)', linked.length === 0, linked.join(', '));

  const present = names.filter((n) => USAGE[n]);
  const local = (n) => n.replace('@upgradeware/', '').replace(/-(\w)/g, (_, c) => c.toUpperCase());
  const body = scriptBody(present);
  const cjs = present.map((n) => `const ns_${local(n)} = require(${JSON.stringify(n)});`).join('\n');
  const cjsNames = present.map((n) => `const { ${USAGE[n].names.join(', ')} } = ns_${local(n)};`).join('\n');
  writeFileSync(join(app, 'check.cjs'), `'use strict';\nconst http = require('node:http');\nconst net = require('node:net');\n${cjs}\n${cjsNames}\nconst modules = { ${present.map((n) => `${JSON.stringify(n)}: ns_${local(n)}`).join(', ')} };\n${body}`);
  const esm = present.map((n) => `import { ${USAGE[n].names.join(', ')} } from ${JSON.stringify(n)};`).join('\n');
  const esmNs = present.map((n) => `import * as ns_${local(n)} from ${JSON.stringify(n)};`).join('\n');
  writeFileSync(join(app, 'check.mjs'), `import * as http from 'node:http';\nimport * as net from 'node:net';\n${esm}\n${esmNs}\nconst modules = { ${present.map((n) => `${JSON.stringify(n)}: ns_${local(n)}`).join(', ')} };\n${body}`);
  for (const file of ['check.cjs', 'check.mjs']) {
    const r = run(process.execPath, [file], { cwd: app, timeout: 30_000 });
    check(`${file === 'check.cjs' ? 'CommonJS require()' : 'ESM import (named exports)'}: a request and an upgrade through the installed packages`, r.ok && r.out.includes('CONSUMER OK'), tail(r.out, 20));
  }

  writeFileSync(join(app, 'check.ts'), typeCheckSource(present, 'cjs'));
  writeFileSync(join(app, 'check.mts'), typeCheckSource(present, 'esm'));
  const tsc = run(process.execPath, [TSC, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', 'check.ts', 'check.mts'], { cwd: app, timeout: 120_000 });
  check('tsc --noEmit --strict (nodenext, .ts and .mts) against the installed types', tsc.ok, tail(tsc.out, 25));
}

/** The part of the CJS and ESM scripts after the imports: exports present, one request, one upgrade. */
function scriptBody(present) {
  const has = (n) => present.includes(n);
  const uses = present.filter((n) => USAGE[n].use).map((n) => USAGE[n].use).join('\n');
  return `
{
  const expected = ${JSON.stringify(Object.fromEntries(present.map((n) => [n, USAGE[n].names])))};
  for (const [name, list] of Object.entries(expected)) {
    for (const key of list) if (typeof modules[name][key] !== 'function') throw new Error(name + ' does not export ' + key);
  }
}
const logLines = [];
const app = createApp({ upgradeProtocols: ['websocket', 'echo'] });
app.use(supportsUpgrade((req, res, next) => { res.setHeader('X-Consumer', 'yes'); next(); }));
${uses}
app.use('/echo', supportsUpgrade((req, res, next) => {
  if (!isUpgradeResponse(res)) return next();
  res.switchProtocols((socket, head) => { socket.write(head); socket.pipe(socket); });
}));
app.use((req, res) => { res.setHeader('Content-Type', 'text/plain'); res.end('hello ' + req.url); });

const timer = setTimeout(() => { console.error('consumer: timed out'); process.exit(1); }, 15000);
const server = app.listen(0, '127.0.0.1', async () => {
  const { port } = server.address();
  try {
    const body = await new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/page', agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => (res.headers['x-consumer'] === 'yes' ? resolve(text) : reject(new Error('no X-Consumer header'))));
      }).on('error', reject);
    });
    if (body !== 'hello /page') throw new Error('ordinary request answered ' + JSON.stringify(body));
    const echoed = await new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      let text = '';
      socket.on('error', reject);
      socket.on('data', (c) => {
        text += c.toString('latin1');
        if (text.includes('\\r\\n\\r\\nping')) { socket.destroy(); resolve(text); }
      });
      socket.write('GET /echo HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: echo\\r\\nConnection: Upgrade\\r\\n\\r\\nping');
    });
    if (!echoed.startsWith('HTTP/1.1 101 Switching Protocols') || !/x-consumer: yes/i.test(echoed)) throw new Error('upgrade answered ' + JSON.stringify(echoed));
${has('@upgradeware/websocket') ? `    const reply = await new Promise((resolve, reject) => {
      const ws = new modules['@upgradeware/websocket'].WebSocket('ws://127.0.0.1:' + port + '/ws');
      ws.on('error', reject);
      ws.on('open', () => ws.send('hi'));
      ws.on('message', (m) => { resolve(String(m)); ws.close(); });
    });
    if (reply !== 'ws:hi') throw new Error('websocket replied ' + JSON.stringify(reply));
    await endpoint.close();` : ''}
${has('@upgradeware/basic-auth') ? `    const denied = await new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/private', agent: false }, (res) => { res.resume(); resolve(res.statusCode); }).on('error', reject);
    });
    if (denied !== 401) throw new Error('basic-auth answered ' + denied);` : ''}
${has('@upgradeware/logger') ? `    await new Promise((r) => setTimeout(r, 50));
    if (!logLines.includes('GET /page 200') || !logLines.includes('GET /echo 101')) throw new Error('logger wrote ' + JSON.stringify(logLines));` : ''}
    console.log('CONSUMER OK');
    clearTimeout(timer);
    server.close();
  } catch (err) {
    console.error(err);
    process.exit(1);
  }
});
`;
}

function typeCheckSource(present, kind) {
  const has = (n) => present.includes(n);
  const imports = present.map((n) => `import { ${USAGE[n].names.join(', ')} } from '${n}';`).join('\n');
  return `${imports}
import * as http from 'node:http';
import type { Duplex } from 'node:stream';

const app = createApp({ upgradeProtocols: ['websocket'], upgradeTimeout: 5000 });
const guard = supportsUpgrade((req: http.IncomingMessage, res: http.ServerResponse, next: (err?: unknown) => void) => {
  if (isUpgradeResponse(res)) {
    const head: Buffer = res.upgradeHead;
    const ok: boolean = res.switchProtocols((socket: Duplex, rest: Buffer) => { socket.end(rest); });
    void head; void ok;
    return;
  }
  next();
});
const flag: true = guard.supportsUpgrade;
app.use('/x', guard);
app.use((err: unknown, _req: http.IncomingMessage, res: http.ServerResponse, _next: (err?: unknown) => void) => { res.statusCode = 500; res.end(String(err)); });
${has('@upgradeware/logger') ? "app.use(logger('combined', { stream: { write: (line: string) => void process.stdout.write(line) }, skip: (_req, res) => res.statusCode < 400 }));\nlogger.token('kind', (req: http.IncomingMessage) => req.headers.upgrade ? 'upgrade' : 'plain');" : ''}
${has('@upgradeware/response-time') ? "app.use(responseTime({ digits: 2, suffix: false }));" : ''}
${has('@upgradeware/basic-auth') ? "app.use(basicAuth((user: string, pass: string) => user === 'a' && pass === 'b', 'Realm'));" : ''}
${has('@upgradeware/cookie-parser') ? "app.use(cookieParser(['new', 'old']));\nconst plain = signedCookie('s:v.sig', 'new');\nvoid plain;" : ''}
${has('@upgradeware/query') ? 'app.use(query());' : ''}
${has('@upgradeware/session') ? "const store = new MemoryStore();\napp.use(session({ secret: 's', store, resave: false, saveUninitialized: false, cookie: { httpOnly: true, maxAge: 60_000 } }));\nvoid Store; void Session; void Cookie;" : ''}
${has('@upgradeware/websocket') ? "const endpoint = websocket((ws, req: http.IncomingMessage) => { ws.send(String(req.url)); }, { origins: ['http://127.0.0.1'], maxPayload: 1024 });\napp.use('/ws', endpoint);\nconst n: number = endpoint.broadcast('hi');\nvoid n;" : ''}
const server: http.Server = app.attach(http.createServer(app));
app.handleUpgrade satisfies (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void;
void server; void flag;
export const kind = '${kind}';
`;
}

// ---- 6. versioning ----------------------------------------------------------------------------

function versioning() {
  const dir = tempDir('upgradeware-version-');
  const repo = join(dir, 'repo');
  const clone = run('git', ['clone', '--quiet', '--no-hardlinks', root, repo]);
  if (!check('versioning: throw-away clone of HEAD', clone.ok, tail(clone.out))) return;
  // changesets compares with its baseBranch (main); a clone made from a feature branch or a
  // worktree has none: there, main is HEAD itself.
  if (!run('git', ['rev-parse', '--verify', '--quiet', 'refs/heads/main'], { cwd: repo }).ok) run('git', ['branch', 'main'], { cwd: repo });
  // The clone borrows the real install (read-only use) and the dist/ just built.
  symlinkSync(join(root, 'node_modules'), join(repo, 'node_modules'), 'dir');
  const published = [];
  for (const pkg of packages) {
    const target = join(repo, 'packages', pkg.dir);
    if (!existsSync(join(target, 'package.json')) || !existsSync(join(pkg.path, 'dist'))) continue;
    cpSync(join(pkg.path, 'dist'), join(target, 'dist'), { recursive: true });
    published.push(pkg);
  }
  // What `pnpm install` would link: each package's internal dependencies, inside the clone (pnpm
  // reads them to turn `workspace:^` into a version when it packs and publishes).
  for (const pkg of all) {
    const target = join(repo, 'packages', pkg.dir);
    if (!existsSync(join(target, 'package.json'))) continue;
    const m = readJson(join(target, 'package.json'));
    for (const dep of Object.keys({ ...m.dependencies, ...m.devDependencies })) {
      const sibling = all.find((p) => p.manifest.name === dep);
      if (!sibling || !existsSync(join(repo, 'packages', sibling.dir))) continue;
      const link = join(target, 'node_modules', dep);
      mkdirSync(dirname(link), { recursive: true });
      if (!existsSync(link)) symlinkSync(join('..', '..', '..', sibling.dir), link, 'dir');
    }
  }
  // Packages that exist only as uncommitted work are not in the clone: nothing to version there.
  const inClone = packages.filter((p) => existsSync(join(repo, 'packages', p.dir, 'src/index.ts')));
  for (const p of packages) if (!inClone.includes(p)) note(`versioning: ${p.manifest.name} is not committed yet`);
  if (inClone.length === 0) return;
  const base = inClone.find((p) => p.manifest.name === '@upgradeware/upgrade-response') ?? inClone[0];
  const dependents = inClone.filter((p) => p !== base && Object.keys(p.manifest.dependencies ?? {}).includes(base.manifest.name));
  writeFileSync(
    join(repo, '.changeset', 'pack-test-bump.md'),
    `---\n"${base.manifest.name}": minor\n---\n\nA change made by the packaging check in a throw-away clone.\n`,
  );
  const status = run(process.execPath, [CHANGESET, 'status', '--verbose'], { cwd: repo });
  check('versioning: changeset status', status.ok && status.out.includes(base.manifest.name), tail(status.out));
  const version = run(process.execPath, [CHANGESET, 'version'], { cwd: repo });
  if (!check('versioning: changeset version', version.ok, tail(version.out))) return;
  const bumped = readJson(join(repo, 'packages', base.dir, 'package.json')).version;
  const expected = bumpMinor(base.manifest.version);
  const problems = [];
  if (bumped !== expected) problems.push(`${base.manifest.name} is ${bumped}, expected ${expected}`);
  if (!existsSync(join(repo, 'packages', base.dir, 'CHANGELOG.md'))) problems.push(`no CHANGELOG.md for ${base.manifest.name}`);
  for (const dep of dependents) {
    const m = readJson(join(repo, 'packages', dep.dir, 'package.json'));
    if (m.version === dep.manifest.version) problems.push(`${m.name} was not bumped`);
    if (m.dependencies[base.manifest.name] !== dep.manifest.dependencies[base.manifest.name]) {
      problems.push(`${m.name} depends on ${m.dependencies[base.manifest.name]}`);
    }
    const log = join(repo, 'packages', dep.dir, 'CHANGELOG.md');
    if (!existsSync(log) || !readFileSync(log, 'utf8').includes(`${base.manifest.name}@${expected}`)) problems.push(`${m.name}'s CHANGELOG does not name ${base.manifest.name}@${expected}`);
  }
  check(`versioning: ${base.manifest.name} ${base.manifest.version} → ${expected}, ${dependents.length} dependents bumped with changelogs`, problems.length === 0, problems.join('; '));

  // The internal range of a dependent, as it will be published.
  const probe = dependents.find((d) => published.includes(d));
  if (probe) {
    const dest = join(dir, 'packed');
    mkdirSync(dest);
    const pack = npx([...PNPM, 'pack', '--pack-destination', dest], {
      cwd: join(repo, 'packages', probe.dir),
      env: { npm_config_ignore_scripts: 'true' },
    });
    const tgz = pack.ok ? readdirSync(dest).find((f) => f.endsWith('.tgz')) : undefined;
    const manifest = tgz ? JSON.parse(run('tar', ['-xOzf', join(dest, tgz), 'package/package.json']).out) : null;
    const range = manifest?.dependencies?.[base.manifest.name];
    check(`versioning: ${probe.manifest.name} is published depending on ${base.manifest.name} ^${expected}`, range === `^${expected}`, pack.ok ? `range ${range}` : tail(pack.out));
  }

  const publish = npx([...PNPM, '-r', 'publish', '--dry-run', '--no-git-checks', '--ignore-scripts', '--access', 'public'], { cwd: repo, timeout: 240_000 });
  const missing = inClone.filter((p) => !publish.out.includes(`${p.manifest.name}@`)).map((p) => p.manifest.name);
  check('versioning: pnpm -r publish --dry-run', publish.ok && missing.length === 0, publish.ok ? `not in the dry run: ${missing.join(', ')}` : tail(publish.out, 25));
}

function bumpMinor(version) {
  const [major, minor] = version.split('.').map(Number);
  return `${major}.${minor + 1}.0`;
}

// Last, so that every declaration above is initialised.
try {
  main();
} catch (err) {
  check('packaging check ran to the end', false, err?.stack ?? String(err));
} finally {
  finish();
}
