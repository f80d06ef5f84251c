// Self instructions per function, and what calls cost by calling function, from a callgrind dump
// taken with `--dump-instr=yes`: native code
// under callgrind's own names, V8's code (JavaScript, builtins, regular expressions) under the
// names of the process's perf map (`node --perf-basic-prof` writes /tmp/perf-<pid>.map), which
// callgrind cannot read itself — it only sees anonymous addresses there.
import { readFileSync } from 'node:fs';

/** The entries of a perf map (`start`, `end`, `name`, and `seq`: the later entry wins), sorted by start. */
function readPerfMap(file) {
  const entries = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(line);
    if (m !== null) {
      const start = parseInt(m[1], 16);
      entries.push({ start, end: start + parseInt(m[2], 16), name: m[3], seq: entries.length });
    }
  }
  return entries.sort((a, b) => a.start - b.start || a.seq - b.seq);
}

/** The newest perf-map entry holding `address` (code V8 freed may be reused), or null. */
function lookup(entries, address) {
  let lo = 0;
  let hi = entries.length - 1;
  let last = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (entries[mid].start <= address) {
      last = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  let found = null;
  // Entries overlap only where code was replaced: a short look back is enough.
  for (let i = last; i >= 0 && i > last - 64; i--) {
    const e = entries[i];
    if (address < e.end && (found === null || e.seq > found.seq)) found = e;
  }
  return found?.name ?? null;
}

/** `fn=(id) name` or `cfn=(id) name` (the name only where the id first appears). */
const NAME_LINE = /^(c?)fn=\((\d+)\)(?: (.*))?$/;

/**
 * What one dump says, by name: `self`, function → self instructions; `calls`, `callee <- caller` →
 * the instructions spent inside the calls from that caller (the callee and what it calls), the caller
 * named by the address of its call. A cost line right after `calls=` is such an inclusive cost, not
 * the caller's own. A dump of more events than instructions (`--cache-sim=yes`) also gives `events`,
 * their names, and `selfEvents`, function → self cost of each of them, in that order.
 */
export function readDump(dumpFile, perfMapFile) {
  const entries = readPerfMap(perfMapFile);
  const fnNames = new Map();
  const byAddress = new Map();
  const byCall = new Map();
  let fn = '?';
  let callee = '?';
  let address = 0;
  let callCost = false;
  const text = readFileSync(dumpFile, 'utf8');
  const events = (/^events: (.+)$/m.exec(text)?.[1] ?? 'Ir').trim().split(/\s+/);
  const many = events.length > 1;
  for (const line of text.split('\n')) {
    // A function is named once, `fn=(id) name` or `cfn=(id) name`; later by its id alone.
    const named = line.startsWith('fn=') || line.startsWith('cfn=') ? NAME_LINE.exec(line) : null;
    if (named !== null) {
      if (named[3] !== undefined) fnNames.set(named[2], named[3]);
      if (named[1] === '') fn = fnNames.get(named[2]) ?? '?';
      else callee = fnNames.get(named[2]) ?? '?';
      continue;
    }
    if (line.startsWith('calls=')) {
      callCost = true;
      continue;
    }
    const c = line.charCodeAt(0);
    // Position lines: an address (absolute in hex, +/- relative in decimal, or * for the same), a
    // line, the cost.
    if (c !== 48 /* 0 */ && c !== 43 /* + */ && c !== 45 /* - */ && c !== 42 /* * */) continue;
    const parts = line.split(' ');
    const a = parts[0];
    if (c === 48) address = parseInt(a, 16);
    else if (c === 43) address += Number(a.slice(1));
    else if (c === 45) address -= Number(a.slice(1));
    const cost = Number(parts[2] ?? 0);
    if (callCost) {
      callCost = false;
      const key = `${address}\u0000${callee}`;
      const seen = byCall.get(key);
      if (seen === undefined) byCall.set(key, { cost, fn, address, callee });
      else seen.cost += cost;
      continue;
    }
    let seen = byAddress.get(address);
    if (seen === undefined) byAddress.set(address, (seen = { cost: 0, fn, costs: many ? new Array(events.length).fill(0) : null }));
    seen.cost += cost;
    // Callgrind leaves out trailing zero costs.
    if (seen.costs !== null) for (let i = 2; i < parts.length && i - 2 < events.length; i++) seen.costs[i - 2] += Number(parts[i]);
  }
  // Optimised and baseline code of one function count as one ("JS:*f" and "JS:~f").
  const nameAt = (addr, native) => (lookup(entries, addr) ?? native).replace(/^JS:[*~^+]/, 'JS:');
  const self = new Map();
  const selfEvents = new Map();
  for (const [addr, { cost, fn: native, costs }] of byAddress) {
    const name = nameAt(addr, native);
    self.set(name, (self.get(name) ?? 0) + cost);
    if (costs === null) continue;
    const sum = selfEvents.get(name);
    if (sum === undefined) selfEvents.set(name, [...costs]);
    else for (let i = 0; i < costs.length; i++) sum[i] += costs[i];
  }
  const calls = new Map();
  for (const { cost, fn: native, address: addr, callee: to } of byCall.values()) {
    const key = `${to} <- ${nameAt(addr, native)}`;
    calls.set(key, (calls.get(key) ?? 0) + cost);
  }
  return { self, calls, events, selfEvents };
}

const GROUPS = [
  ['JavaScript', (n) => n.startsWith('JS:') || n.startsWith('RegExp:')],
  ['V8 builtins', (n) => n.startsWith('Builtin:') || n.startsWith('BytecodeHandler:')],
  ['garbage collection', (n) => /Heap|Marking|Mark[A-Z]|Scaveng|Sweep|Evacuat|Collector|RememberedSet|SlotSet|MemoryAllocator|Compact/.test(n)],
  ['compiling, deopt data', (n) => /compiler::|Maglev|Translation|Deoptimiz|Compil|Parser|Scanner|Zone/.test(n)],
  ['native (Node, libuv, libc, V8 runtime)', () => true],
];

/** Instructions by group: what the code of a server costs, apart from what collection and compiling add. */
export function groups(costs) {
  const out = Object.fromEntries(GROUPS.map(([g]) => [g, 0]));
  for (const [name, cost] of costs) out[GROUPS.find(([, test]) => test(name))[0]] += cost;
  return out;
}
