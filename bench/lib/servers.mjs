// Which file runs a server of the bench and with what environment: `ours-save-no-<layer>` is the
// full stack with a layer left out (servers/ours-save.mjs with BENCH_SKIP), and `name#k` is the k-th
// process of the same server (cost.mjs, icount.mjs, idle.mjs); and how run.mjs and the tools start one.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const serversDir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'servers');
const SKIP = 'ours-save-no-';

/** `{ file, env }` of the server named `name`: the script to run and what to add to the environment. */
export function serverOf(name) {
  const base = name.replace(/#.*$/, '');
  const skip = base.startsWith(SKIP) ? base.slice(SKIP.length) : undefined;
  return {
    file: path.join(serversDir, `${skip === undefined ? base : 'ours-save'}.mjs`),
    env: skip === undefined ? {} : { BENCH_SKIP: skip },
  };
}

/**
 * Start a server of the bench in its own process (`NODE_ENV=production`) and wait until it listens
 * (20 s at most; a server that does not make it is killed): `{ name, port, info, child, ask(cmd),
 * cpu() }`. `info` is the JSON line the server prints after its port; `ask(cmd)` sends a command
 * over IPC and resolves with the answer; `cpu()` is the server's own CPU time so far, `{ total,
 * system }` in µs. `execArgv`: Node options for it; `pin`: run it on CPU 0 (`taskset`); `stderr`:
 * 'ignore' (the tools) or 'inherit' (run.mjs).
 */
export async function spawnServer(name, { cwd, execArgv = [], pin = false, stderr = 'ignore' } = {}) {
  const server = serverOf(name);
  const env = { ...process.env, NODE_ENV: 'production', ...server.env };
  const args = [...execArgv, server.file, '0'];
  const options = { cwd, stdio: ['pipe', 'pipe', stderr, 'ipc'], env };
  const child = pin ? spawn('taskset', ['-c', '0', process.execPath, ...args], options) : spawn(process.execPath, args, options);
  const lines = [];
  let buf = '';
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name}: not ready within 20 s`)), 20_000);
      child.once('exit', (code) => reject(new Error(`${name} exited with ${code} before it was ready`)));
      child.stdout.on('data', function onData(d) {
        buf += d;
        const parts = buf.split('\n');
        buf = parts.pop();
        lines.push(...parts);
        if (lines.length >= 2) {
          clearTimeout(timer);
          // Later output (V8's traces, in run.mjs's compile scenario) is for whoever listens.
          child.stdout.off('data', onData);
          resolve();
        }
      });
    });
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  child.stdout.resume();
  let seq = 0;
  const ask = (cmd) =>
    new Promise((resolve) => {
      const id = ++seq;
      const on = (m) => {
        if (m?.id !== id) return;
        child.off('message', on);
        resolve(m);
      };
      child.on('message', on);
      child.send({ cmd, id });
    });
  const cpu = async () => {
    const { user, system } = await ask('cpu');
    return { total: user + system, system };
  };
  return { name, port: Number(lines[0]), info: JSON.parse(lines[1]), child, ask, cpu };
}
