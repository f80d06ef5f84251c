#!/usr/bin/env node
// The README's test command runs this: the jest suites (against package sources), then the
// packaging check when it exists. Each step writes its counts to test-results/<step>.json;
// the last line printed is the total, `N passed, M failed`.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const results = join(root, 'test-results');
rmSync(results, { recursive: true, force: true });
mkdirSync(results, { recursive: true });

const steps = [
  {
    // Most suites run against package sources; a few start real child processes on the built
    // packages (the demo, DEBUG traces). Building once here keeps parallel suites from racing.
    name: 'build',
    cmd: [process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-b']],
    count: () => ({ passed: 0, failed: 0 }),
    gate: true,
  },
  {
    name: 'jest',
    cmd: [process.execPath, [join(root, 'node_modules/jest/bin/jest.js'), '--ci', '--json', `--outputFile=${join(results, 'jest.json')}`]],
    count: (file) => {
      const r = JSON.parse(readFileSync(file, 'utf8'));
      // A suite that fails to run (syntax or type error) has no failed tests of its own: count it.
      return { passed: r.numPassedTests, failed: r.numFailedTests + r.numRuntimeErrorTestSuites };
    },
  },
  {
    name: 'pack',
    script: join(root, 'scripts/pack-test.mjs'),
    cmd: [process.execPath, [join(root, 'scripts/pack-test.mjs'), `--out=${join(results, 'pack.json')}`, '--quiet']],
    count: (file) => JSON.parse(readFileSync(file, 'utf8')),
  },
];

let passed = 0;
let failed = 0;
for (const step of steps) {
  if (step.script && !existsSync(step.script)) continue;
  const [bin, args] = step.cmd;
  const run = spawnSync(bin, args, { cwd: root, stdio: 'inherit' });
  const file = join(results, `${step.name}.json`);
  let counts;
  try {
    counts = step.count(file);
  } catch {
    counts = { passed: 0, failed: 1 };
    console.error(`${step.name}: no results (exit ${run.status})`);
  }
  if (run.status !== 0 && counts.failed === 0) counts.failed = 1;
  if (step.gate) {
    if (run.status !== 0) console.error(`${step.name} failed (exit ${run.status})`);
    failed += counts.failed;
    continue;
  }
  console.log(`${step.name}: ${counts.passed} passed, ${counts.failed} failed`);
  passed += counts.passed;
  failed += counts.failed;
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
