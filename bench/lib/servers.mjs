// Which file runs a server of the bench and with what environment: `ours-save-no-<layer>` is the
// full stack with a layer left out (servers/ours-save.mjs with BENCH_SKIP), and `name#k` is the k-th
// process of the same server (cost.mjs, icount.mjs, idle.mjs); and how the tools start one.
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
 * Start a server of the bench in its own process (`NODE_ENV=production`, its stderr dropped) and
 * wait until it listens: `{ name, port, child, cpu() }`, where `cpu()` asks the server for its own
 * CPU time so far, `{ total, system }` in µs. `execArgv`: Node options for it; `pin`: run it on
 * CPU 0 (`taskset`). For the tools (cost.mjs, idle.mjs); run.mjs has its own, with more to it.
 */
export async function spawnServer(name, { cwd, execArgv = [], pin = false } = {}) {
  const server = serverOf(name);
  const env = { ...process.env, NODE_ENV: 'production', ...server.env };
  const args = [...execArgv, server.file, '0'];
  const options = { cwd, stdio: ['pipe', 'pipe', 'ignore', 'ipc'], env };
  const child = pin ? spawn('taskset', ['-c', '0', process.execPath, ...args], options) : spawn(process.execPath, args, options);
  let out = '';
  await new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${name} exited with ${code}`)));
    child.stdout.on('data', (d) => {
      out += d;
      if (out.split('\n').length > 2) resolve();
    });
  });
  child.stdout.resume();
  let seq = 0;
  const cpu = () =>
    new Promise((resolve) => {
      const id = ++seq;
      const on = (m) => {
        if (m?.id !== id) return;
        child.off('message', on);
        resolve({ total: m.user + m.system, system: m.system });
      };
      child.on('message', on);
      child.send({ cmd: 'cpu', id });
    });
  return { name, port: Number(out.split('\n')[0]), child, cpu };
}
