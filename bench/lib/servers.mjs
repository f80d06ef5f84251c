// Which file runs a server of the bench and with what environment: `ours-save-no-<layer>` is the
// full stack with a layer left out (servers/ours-save.mjs with BENCH_SKIP), and `name#k` is the k-th
// process of the same server (cost.mjs, icount.mjs).
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
