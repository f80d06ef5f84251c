/**
 * response-time's deprecated number argument warns once, in its words, and is silenced as depd
 * silences it. A child process on the built package: warnings are once per process.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const root = path.join(__dirname, '..', '..', '..');
const dist = path.join(__dirname, '..', 'dist');

beforeAll(() => {
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
  const build = spawnSync(process.execPath, [tsc, '-b', 'packages/response-time'], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  if (build.status !== 0) throw new Error(`tsc -b failed: ${build.stdout}${build.stderr}`);
});

const SCRIPT = `
const { responseTime } = require(${JSON.stringify(dist)});
const seen = [];
process.on('warning', (w) => seen.push(w.name + ': ' + w.message));
responseTime(2); responseTime(2); responseTime(0); responseTime({ digits: 2 }); responseTime();
setImmediate(() => process.stdout.write(JSON.stringify(seen)));
`;

function run(env: Record<string, string>, execArgv: string[] = []) {
  const { NO_DEPRECATION: _n, NODE_OPTIONS: _o, ...base } = process.env;
  const child = spawnSync(process.execPath, [...execArgv, '-e', SCRIPT], { env: { ...base, ...env }, encoding: 'utf8', timeout: 20_000 });
  expect(child.status).toBe(0);
  return { seen: JSON.parse(child.stdout) as string[], stderr: child.stderr };
}

test('responseTime(number) warns once per value, in response-time\'s words', () => {
  const { seen, stderr } = run({});
  expect(seen).toEqual([
    'DeprecationWarning: @upgradeware/response-time: number argument: use {digits: 2} instead',
    'DeprecationWarning: @upgradeware/response-time: number argument: use {digits: 0} instead',
  ]);
  expect(stderr).toContain('DeprecationWarning: @upgradeware/response-time: number argument: use {digits: 2} instead');
});

test.each(['response-time', '*', 'morgan,response-time'])('NO_DEPRECATION=%s silences it', (value) => {
  expect(run({ NO_DEPRECATION: value })).toEqual({ seen: [], stderr: '' });
});

test('--no-deprecation silences it', () => {
  expect(run({}, ['--no-deprecation'])).toEqual({ seen: [], stderr: '' });
});
