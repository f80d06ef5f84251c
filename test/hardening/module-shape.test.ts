/**
 * Every package's exports object stays an ordinary (fast-mode) V8 object. TypeScript compiles
 * `export { x } from './y'` to a getter that replaces the data property it declared first, and that
 * turns the whole exports object into a dictionary: every call another package makes through it
 * (`isUpgradeResponse(res)`, `createBoundLater(…)`, once or more per request) is then a dictionary
 * lookup that V8's optimizing compiler cannot inline. A child process loads the built packages,
 * as an installed copy would, and asks V8 (`%HasFastProperties`, `--allow-natives-syntax`).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(__dirname, '../..');
const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
const packages = fs
  .readdirSync(path.join(root, 'packages'))
  .filter((name) => fs.existsSync(path.join(root, 'packages', name, 'package.json')))
  .sort();

const SCRIPT = `
const results = {};
for (const dir of JSON.parse(process.argv[1])) {
  const exported = require(dir);
  results[dir] = { fast: %HasFastProperties(exported), names: Object.keys(exported).length };
}
process.stdout.write(JSON.stringify(results));
`;

let results: Record<string, { fast: boolean; names: number }>;

beforeAll(() => {
  const build = spawnSync(process.execPath, [tsc, '-b', ...packages.map((name) => `packages/${name}`)], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (build.status !== 0) throw new Error(`tsc -b failed: ${build.stdout}${build.stderr}`);
  const dirs = packages.map((name) => path.join(root, 'packages', name));
  const child = spawnSync(process.execPath, ['--allow-natives-syntax', '-e', SCRIPT, JSON.stringify(dirs)], {
    cwd: root,
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (child.status !== 0) throw new Error(`the child failed: ${child.stderr}`);
  results = JSON.parse(child.stdout) as typeof results;
}, 150_000);

test('there are packages to check', () => {
  expect(packages).toEqual(expect.arrayContaining(['dispatcher', 'upgrade-response', 'websocket', 'session', 'hub']));
});

test.each(packages)('@upgradeware/%s: its exports object is in fast mode', (name) => {
  const result = results[path.join(root, 'packages', name)]!;
  expect(result.names).toBeGreaterThan(0);
  expect({ name, fast: result.fast }).toEqual({ name, fast: true });
});

test('the check tells a dictionary-mode exports object apart (what a re-export getter does)', () => {
  // The same question asked of a module object shaped as TypeScript's re-export emit shapes it.
  const probe = `
const exportsLike = {};
Object.defineProperty(exportsLike, '__esModule', { value: true });
exportsLike.a = exportsLike.b = void 0;
exportsLike.b = function b() {};
const before = %HasFastProperties(exportsLike);
Object.defineProperty(exportsLike, 'a', { enumerable: true, get: function () { return 1; } });
process.stdout.write(JSON.stringify([before, %HasFastProperties(exportsLike)]));
`;
  const child = spawnSync(process.execPath, ['--allow-natives-syntax', '-e', probe], { encoding: 'utf8', timeout: 30_000 });
  expect(child.status).toBe(0);
  expect(JSON.parse(child.stdout)).toEqual([true, false]);
});
