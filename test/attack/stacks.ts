/**
 * The attack suites' servers: stacks-child.cjs (the demo, an Express app, the HTTP/1.1 side of an
 * HTTP/2 server and the full stack, on the built packages) in a child process, where an uncaught
 * exception ends it and the suites can tell.
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';

const root = path.join(__dirname, '..', '..');

export interface StackPorts {
  chat: number;
  express: number;
  h2: number;
  full: number;
}

export interface Stacks {
  child: ChildProcess;
  ports: StackPorts;
  /** Throws if the child died. */
  alive(): void;
  /** Ask the child to exit (SIGKILL after 5 s); resolves once it has. */
  stop(): Promise<void>;
}

/** Build the packages, start the child (`execArgv`: e.g. `--expose-gc`), wait for its ports. */
export async function startStacks(execArgv: string[] = []): Promise<Stacks> {
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
  const build = spawnSync(process.execPath, [tsc, '-b'], { cwd: root, encoding: 'utf8', timeout: 180_000 });
  if (build.status !== 0) throw new Error(`tsc -b failed: ${build.stdout}${build.stderr}`);
  const child = fork(path.join(__dirname, 'stacks-child.cjs'), [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let exited: { code: number | null; signal: string | null } | null = null;
  child.on('exit', (code, signal) => (exited = { code, signal }));
  const ports = await new Promise<StackPorts>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the child did not start listening')), 30_000);
    const onMessage = (msg: { type: string; ports?: StackPorts }) => {
      if (msg.type !== 'listening') return;
      clearTimeout(timer);
      child.off('message', onMessage);
      resolve(msg.ports!);
    };
    child.on('message', onMessage);
  });
  return {
    child,
    ports,
    alive() {
      if (exited !== null) throw new Error(`the child died: ${JSON.stringify(exited)}`);
    },
    async stop() {
      if (exited !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.send('exit');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    },
  };
}
