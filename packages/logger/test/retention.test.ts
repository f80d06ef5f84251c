/**
 * After a switch the logger keeps nothing of the request, the response or the chain: with
 * `closeFormat` it keeps copies of what the close line needs, and without it nothing at all.
 * In a child process with --expose-gc on the built packages; every req and res is registered in
 * a FinalizationRegistry and must be collected while its connection is still open.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const root = path.join(__dirname, '..', '..', '..');
const COUNT = 500;

beforeAll(() => {
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
  const build = spawnSync(process.execPath, [tsc, '-b', 'packages/logger', 'packages/dispatcher'], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  if (build.status !== 0) throw new Error(`tsc -b failed: ${build.stdout}${build.stderr}`);
});

interface Report {
  statuses: string[];
  whileOpen: number;
  registered: number;
  lines: string[];
}

function run(mode: 'closeFormat' | 'plain' | 'immediate'): Report {
  const child = spawnSync(process.execPath, ['--expose-gc', path.join(__dirname, 'fixtures', 'retention.cjs'), mode, String(COUNT)], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (child.status !== 0) throw new Error(`child failed (${child.status}): ${child.stderr}`);
  return JSON.parse(child.stdout) as Report;
}

test.each(['closeFormat', 'plain', 'immediate'] as const)('%s: every req and res is collected while the connections are open', (mode) => {
  const report = run(mode);
  expect(report.statuses).toEqual(['HTTP/1.1 101 Switching Protocols']);
  expect(report.registered).toBe(2 * COUNT);
  expect(report.whileOpen).toBe(report.registered);
  const first = report.lines.filter((l) => !l.startsWith('closed '));
  expect(first).toHaveLength(COUNT);
  const status = mode === 'immediate' ? '-' : '101';
  for (const line of first) expect(line).toMatch(new RegExp(`^GET /ws/\\d+ ${status}\\n$`));
});

test('closeFormat: the close line still has every value, from the copies made at the switch', () => {
  const closes = run('closeFormat').lines.filter((l) => l.startsWith('closed '));
  expect(closes).toHaveLength(COUNT);
  const seen = new Set<number>();
  for (const line of closes) {
    // `:res[x-tag]` (a response header), `:remote-user` (a request header), `:close-code` (filled
    // in after the switch, on the object the endpoint gave req.webSocketClose), the time open.
    const m = /^closed GET \/ws\/(\d+) 101 tag-(\d+) user(\d+) (\d{4}) (\d+\.\d{3})\n$/.exec(line);
    expect(m).not.toBeNull();
    const n = Number(m![1]);
    expect([Number(m![2]), Number(m![3]), Number(m![4])]).toEqual([n, n, 4000 + (n % 10)]);
    seen.add(n);
  }
  expect(seen.size).toBe(COUNT);
});
