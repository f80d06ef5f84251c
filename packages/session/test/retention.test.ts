/**
 * Nothing of a handshake's chain stays reachable after the switch (issue 13, item 10), and a save
 * that never completes holds nothing once the connection is closed (item 7). Measured in a child
 * process started with --expose-gc, on the built packages, by a FinalizationRegistry on every
 * request and response: see fixtures/retention.cjs.
 */
import { execFile, spawnSync } from 'node:child_process';
import * as path from 'node:path';

const root = path.join(__dirname, '..', '..', '..');
const N = 200;

interface Result {
  error?: string;
  n: number;
  answered?: number;
  saved?: number;
  regenerated?: number;
  pendingSaves?: number;
  answeredWhileHanging?: number;
  lateAnswersThrew?: number;
  alive: { req: number; res: number };
}

function child(scenario: string): Promise<Result> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--expose-gc', path.join(__dirname, 'fixtures', 'retention.cjs'), scenario, String(N)],
      { cwd: root, timeout: 60_000 },
      (err, stdout, stderr) => {
        const line = stdout.trim().split('\n').pop() ?? '';
        try {
          const result = JSON.parse(line) as Result;
          if (result.error) return reject(new Error(result.error));
          resolve(result);
        } catch {
          reject(new Error(`child ${scenario} failed: ${String(err)}\n${stdout}\n${stderr}`));
        }
      },
    );
  });
}

beforeAll(() => {
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
  const build = spawnSync(process.execPath, [tsc, '-b', 'packages/session', 'packages/dispatcher', 'packages/websocket'], { cwd: root, encoding: 'utf8', timeout: 240_000 });
  if (build.status !== 0) throw new Error(`tsc -b failed: ${build.stdout}${build.stderr}`);
}, 300_000);

describe('what stays reachable while WebSockets are open', () => {
  test(`${N} WebSockets through dispatcher + session (saveUninitialized) + ws's own 101: no req, no res`, async () => {
    const r = await child('plain-ws');
    expect(r.answered).toBe(N);
    expect(r.alive).toEqual({ req: 0, res: 0 });
  }, 90_000);

  test(`${N} WebSockets through @upgradeware/websocket: no req, no res (nothing holds the chain)`, async () => {
    const r = await child('websocket-package');
    expect(r.answered).toBe(N);
    expect(r.alive).toEqual({ req: 0, res: 0 });
  }, 90_000);

  test('an application that keeps req.session for the socket: save() and regenerate() work, no res is held', async () => {
    const r = await child('live-session');
    expect(r.saved).toBe(N);
    expect(r.regenerated).toBe(5);
    // The session belongs to its request (session.req, as in express-session): keeping one keeps
    // its req, on purpose. Its response, next() and the rest of the chain are let go.
    expect(r.alive).toEqual({ req: N, res: 0 });
  }, 90_000);

  test('a save that never completes: once the connection is closed, the store holds nothing of the request; late answers do nothing', async () => {
    const r = await child('hanging-save');
    expect(r.pendingSaves).toBe(N);
    expect(r.answeredWhileHanging).toBe(0);
    expect(r.alive).toEqual({ req: 0, res: 0 });
    expect(r.lateAnswersThrew).toBe(0);
  }, 90_000);
});
