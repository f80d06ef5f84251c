/**
 * DEBUG=upgradeware:* (issue 7): the `debug` convention traces what the stack did with a request
 * (layers run or passed over, the switch, a rejection, the time limit, the hand-over to another
 * 'upgrade' listener). A child process runs the built packages with DEBUG set, makes its own
 * requests over loopback, and exits; its stderr is the trace.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '../..');
const tsc = path.join(root, 'node_modules/typescript/bin/tsc');

/** The child: a server with a few layers, then one request of each kind, then exit. */
const childScript = (paths: Record<string, string>) => `
'use strict';
const net = require('node:net');
const { createApp } = require(${JSON.stringify(paths.dispatcher)});
const { supportsUpgrade, isUpgradeResponse } = require(${JSON.stringify(paths.upgradeResponse)});
const { websocket } = require(${JSON.stringify(paths.websocket)});
const WebSocket = require(${JSON.stringify(paths.ws)});

const app = createApp({ upgradeProtocols: ['websocket', 'echo'], upgradeTimeout: 200 });
app.use(function plainOnly(req, res, next) { next(); });
for (let i = 0; i < 10; i++) app.use(function plainMany(req, res, next) { next(); });
app.use(supportsUpgrade(function tagAll(req, res, next) { res.setHeader('X-Tag', '1'); next(); }));
app.use('/deny', supportsUpgrade(function denyAll(req, res) { res.statusCode = 401; res.end('no'); }));
app.use('/slow', supportsUpgrade(function neverAnswers() {}));
app.use('/echo', supportsUpgrade(function echoSwitch(req, res, next) {
  if (!isUpgradeResponse(res)) return next();
  res.switchProtocols((socket) => socket.end());
}));
const endpoint = websocket((ws) => ws.close());
app.use('/ws', endpoint);

function raw(port, text) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const timer = setTimeout(() => socket.destroy(), 3000);
    socket.on('error', () => undefined);
    socket.on('close', () => { clearTimeout(timer); resolve(); });
    socket.on('data', () => undefined);
    socket.write(text);
  });
}
const hs = (p) => 'GET ' + p + ' HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n';

const server = app.listen(0, '127.0.0.1', async () => {
  const port = server.address().port;
  const mark = (what) => process.stderr.write('=== ' + what + '\\n');
  mark('deny'); await raw(port, hs('/deny'));
  mark('slow'); await raw(port, hs('/slow'));
  mark('echo'); await raw(port, 'GET /echo HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: echo\\r\\nConnection: Upgrade\\r\\n\\r\\n');
  mark('ws');
  await new Promise((resolve) => {
    const ws = new WebSocket('ws://127.0.0.1:' + port + '/ws');
    ws.on('error', resolve);
    ws.on('close', resolve);
  });
  mark('missing'); await raw(port, hs('/missing'));
  mark('page'); await raw(port, 'GET /page HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n');
  mark('done');
  await endpoint.close();
  server.close(() => process.exit(0));
});
`;

let trace = '';
let status: number | null = null;

beforeAll(() => {
  // The child runs the built packages, as an installed copy would.
  const build = spawnSync(process.execPath, [tsc, '-b', 'packages/dispatcher', 'packages/websocket'], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (build.status !== 0) throw new Error(`tsc -b failed: ${build.stdout}${build.stderr}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'upgradeware-debug-'));
  try {
    const file = path.join(dir, 'server.cjs');
    fs.writeFileSync(
      file,
      childScript({
        dispatcher: path.join(root, 'packages/dispatcher'),
        upgradeResponse: path.join(root, 'packages/upgrade-response'),
        websocket: path.join(root, 'packages/websocket'),
        ws: require.resolve('ws'),
      }),
    );
    const run = spawnSync(process.execPath, [file], {
      encoding: 'utf8',
      timeout: 20_000,
      env: { ...process.env, DEBUG: 'upgradeware:*', DEBUG_COLORS: 'no', DEBUG_HIDE_DATE: 'true', NODE_ENV: 'test' },
    });
    trace = run.stderr;
    status = run.status;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 150_000);

/** The trace lines between `=== name` and the next marker. */
function section(name: string): string {
  const start = trace.indexOf(`=== ${name}\n`);
  if (start === -1) return '';
  const end = trace.indexOf('\n=== ', start + 1);
  return trace.slice(start, end === -1 ? undefined : end);
}

test('the child ran to the end', () => {
  expect(status).toBe(0);
  expect(trace).toContain('=== done');
});

test('an upgrade is named, with layers run and passed over', () => {
  const deny = section('deny');
  expect(deny).toMatch(/upgradeware:dispatcher upgrade GET \/deny/);
  // Layers passed over in a row make one line: named when few, counted when many.
  expect(deny).toMatch(/upgradeware:dispatcher GET \/deny: passed over 11 layers \(11× no supportsUpgrade\)$/m);
  expect(deny).not.toMatch(/passed over plainMany/);
  expect(deny).toMatch(/upgradeware:dispatcher GET \/deny: run tagAll/);
  expect(deny).toMatch(/upgradeware:dispatcher GET \/deny: run denyAll at \/deny/);
});

test('one line at the start of a request and one at its end, with its status', () => {
  expect(section('deny').match(/upgradeware:dispatcher upgrade GET \/deny$/gm)).toHaveLength(1);
  expect(section('deny')).toMatch(/upgradeware:dispatcher end GET \/deny: 401$/m);
  expect(section('echo')).toMatch(/upgradeware:dispatcher end GET \/echo: 101$/m);
  expect(section('missing')).toMatch(/upgradeware:dispatcher end GET \/missing: 404$/m);
  expect(section('page')).toMatch(/upgradeware:dispatcher request GET \/page$/m);
  expect(section('page')).toMatch(/upgradeware:dispatcher GET \/page: run plainOnly$/m);
  expect(section('page')).toMatch(/upgradeware:dispatcher end GET \/page: 404$/m);
});

test('a rejection is traced with its status', () => {
  // upgrade-response names the URL as the answering layer saw it (mount path stripped): see
  // docs/ecosystem.md, "Debugging".
  expect(section('deny')).toMatch(/upgradeware:upgrade-response answered 401 to GET \/(deny)?; closing/);
});

test('the time limit is traced', () => {
  const slow = section('slow');
  expect(slow).toMatch(/upgradeware:dispatcher GET \/slow: run neverAnswers at \/slow/);
  expect(slow).toMatch(/upgradeware:dispatcher time limit: 503 for GET \/slow/);
  expect(slow).toMatch(/upgradeware:upgrade-response answered 503 to GET \/(slow)?; closing/);
});

test('a switch by res.switchProtocols() is traced', () => {
  const echo = section('echo');
  expect(echo).toMatch(/upgradeware:dispatcher upgrade GET \/echo/);
  expect(echo).toMatch(/upgradeware:upgrade-response switched GET \/echo \(101\)/);
});

test('a WebSocket handshake through @upgradeware/websocket is traced up to its endpoint', () => {
  const ws = section('ws');
  expect(ws).toMatch(/upgradeware:dispatcher upgrade GET \/ws/);
  expect(ws).toMatch(/upgradeware:dispatcher GET \/ws: run \S+ at \/ws/);
  // (The 101 that ws writes through res.externalSwitch() has no trace line of its own yet.)
});

test('an upgrade nobody answers is traced as a 404', () => {
  expect(section('missing')).toMatch(/answered 404 to GET \/missing/);
});
