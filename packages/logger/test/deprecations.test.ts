/**
 * morgan's deprecated forms warn once each, as depd prints morgan's warnings, and can be
 * silenced the same ways; a buffered logger neither keeps the process alive nor loses lines.
 * Child processes on the built package: warnings and process exit are per process.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const root = path.join(__dirname, '..', '..', '..');
const fixture = (name: string) => path.join(__dirname, 'fixtures', name);

beforeAll(() => {
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
  const build = spawnSync(process.execPath, [tsc, '-b', 'packages/logger'], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  if (build.status !== 0) throw new Error(`tsc -b failed: ${build.stdout}${build.stderr}`);
});

function run(script: string, args: string[] = [], env: Record<string, string> = {}, execArgv: string[] = []) {
  const { NO_DEPRECATION: _n, NODE_OPTIONS: _o, ...base } = process.env;
  const started = Date.now();
  const child = spawnSync(process.execPath, [...execArgv, fixture(script), ...args], {
    env: { ...base, ...env },
    encoding: 'utf8',
    timeout: 20_000,
  });
  return { ...child, ms: Date.now() - started };
}

const EXPECTED = [
  '@upgradeware/logger: logger(options): use logger("default", options) instead',
  '@upgradeware/logger: default format: use combined format',
  '@upgradeware/logger: logger(options): use logger(":method", options) instead',
  '@upgradeware/logger: logger(options): use logger(format, options) instead',
  '@upgradeware/logger: undefined format: specify a format',
  '@upgradeware/logger: buffer option',
];

describe('deprecation warnings', () => {
  test('each deprecated form warns once, as a DeprecationWarning, in morgan\'s words', () => {
    const child = run('deprecations.cjs');
    expect(child.status).toBe(0);
    const seen = JSON.parse(child.stdout) as Array<{ name: string; message: string }>;
    expect(seen.map((w) => w.name)).toEqual(EXPECTED.map(() => 'DeprecationWarning'));
    expect(seen.map((w) => w.message)).toEqual(EXPECTED);
    // Node prints them to stderr like its own: one line each.
    for (const message of EXPECTED) expect(child.stderr.split(`DeprecationWarning: ${message}\n`)).toHaveLength(2);
  });

  test.each([['morgan'], ['*'], ['@upgradeware/logger'], ['express,morgan'], ['body-parser MORGAN']])(
    'NO_DEPRECATION=%s silences them',
    (value) => {
      const child = run('deprecations.cjs', [], { NO_DEPRECATION: value });
      expect(child.status).toBe(0);
      expect(JSON.parse(child.stdout)).toEqual([]);
      expect(child.stderr).toBe('');
    },
  );

  test('another NO_DEPRECATION value does not', () => {
    const child = run('deprecations.cjs', [], { NO_DEPRECATION: 'express,body-parser' });
    expect(JSON.parse(child.stdout)).toHaveLength(EXPECTED.length);
  });

  test('--no-deprecation (process.noDeprecation) silences them', () => {
    const child = run('deprecations.cjs', [], {}, ['--no-deprecation']);
    expect(child.status).toBe(0);
    expect(JSON.parse(child.stdout)).toEqual([]);
    expect(child.stderr).toBe('');
  });
});

describe('buffer: the timer never keeps the process alive, no line is lost', () => {
  test('a process with nothing else to do exits at once and writes the pending lines', () => {
    // A 60 s interval: only the flush at exit can have written the lines.
    const child = run('buffer-exit.cjs', ['60000', 'natural'], { NO_DEPRECATION: 'morgan' });
    expect(child.status).toBe(0);
    expect(child.stdout).toBe('GET /r0 200\nGET /r1 200\nGET /r2 200\n');
    expect(child.ms).toBeLessThan(15_000);
  });

  test('process.exit() with lines pending writes them first', () => {
    const child = run('buffer-exit.cjs', ['60000', 'exit'], { NO_DEPRECATION: 'morgan' });
    expect(child.status).toBe(0);
    expect(child.stdout).toBe('GET /r0 200\nGET /r1 200\nGET /r2 200\n');
  });

  test('lines flushed by the timer are written once, not again at exit', () => {
    const child = run('buffer-exit.cjs', ['1', 'natural'], { NO_DEPRECATION: 'morgan' });
    expect(child.status).toBe(0);
    expect(child.stdout.split('\n').filter(Boolean).sort()).toEqual(['GET /r0 200', 'GET /r1 200', 'GET /r2 200']);
  });
});
