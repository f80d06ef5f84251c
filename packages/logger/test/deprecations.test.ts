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

  test("morgan's own buffer keeps the process alive until its timer fires (the difference)", () => {
    const stock = run('buffer-exit.cjs', ['1500', 'natural', 'stock'], { NO_DEPRECATION: 'morgan' });
    expect(stock.status).toBe(0);
    expect(stock.stdout).toBe('GET /r0 200\nGET /r1 200\nGET /r2 200\n');
    expect(stock.ms).toBeGreaterThanOrEqual(1400);
  });

  test('lines flushed by the timer are written once, not again at exit', () => {
    const child = run('buffer-exit.cjs', ['1', 'natural'], { NO_DEPRECATION: 'morgan' });
    expect(child.status).toBe(0);
    expect(child.stdout.split('\n').filter(Boolean).sort()).toEqual(['GET /r0 200', 'GET /r1 200', 'GET /r2 200']);
  });
});

describe('NO_COLOR when the module loads', () => {
  const devLines = (env: Record<string, string>) => {
    const child = run('no-color.cjs', [], { NO_DEPRECATION: 'morgan', ...env });
    expect(child.status).toBe(0);
    const out = JSON.parse(child.stdout) as { stock: string[]; ours: string[] };
    const norm = (lines: string[], prefix: string) => lines.map((l) => l.replace(prefix, '/').replace(/\d+\.\d{3} ms/, 'N ms'));
    expect(norm(out.ours, '/ours/')).toEqual(norm(out.stock, '/stock/'));
    return norm(out.ours, '/ours/');
  };

  test('a non-empty NO_COLOR gives the dev format without colours, as morgan', () => {
    expect(devLines({ NO_COLOR: '1' })).toEqual(['GET /ok 200 N ms - -\n', 'GET /missing 404 N ms - -\n']);
  });

  test('an empty NO_COLOR keeps the colours, as morgan', () => {
    expect(devLines({ NO_COLOR: '' })).toEqual([
      '\x1b[0mGET /ok \x1b[32m200\x1b[0m N ms - -\x1b[0m\n',
      '\x1b[0mGET /missing \x1b[33m404\x1b[0m N ms - -\x1b[0m\n',
    ]);
  });
});
