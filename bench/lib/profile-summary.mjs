// node lib/profile-summary.mjs <file.cpuprofile> [top]: self time by function and by package.
import { readFileSync } from 'node:fs';
const [file, topArg] = process.argv.slice(2);
const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map();
const dt = prof.timeDeltas;
for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (dt[i] ?? 0));
const parent = new Map();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const idle = new Set(prof.nodes.filter((n) => ['(idle)', '(program)'].includes(n.callFrame.functionName)).map((n) => n.id));
for (const id of idle) self.delete(id);
const total = [...self.values()].reduce((a, b) => a + b, 0);
const fn = new Map();
const pkg = new Map();
const where = (url) => {
  if (!url) return '(native/vm)';
  let m = /packages\/([^/]+)\//.exec(url);
  if (m) return `@upgradeware/${m[1]}`;
  m = /node_modules\/\.pnpm\/[^/]+\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  if (url.startsWith('node:')) return url;
  return url.split('/').slice(-2).join('/');
};
for (const [id, t] of self) {
  const n = byId.get(id);
  const cf = n.callFrame;
  const key = `${cf.functionName || '(anon)'} ${where(cf.url)}:${cf.lineNumber + 1}`;
  fn.set(key, (fn.get(key) ?? 0) + t);
  const p = where(cf.url);
  pkg.set(p, (pkg.get(p) ?? 0) + t);
}
const top = Number(topArg ?? 25);
const pct = (t) => ((100 * t) / total).toFixed(1).padStart(5) + '%';
console.log(`${file}: ${(total / 1000).toFixed(0)} ms busy (idle excluded)`);
console.log('-- by module');
for (const [k, t] of [...pkg].sort((a, b) => b[1] - a[1]).slice(0, 20)) console.log(pct(t), k);
console.log('-- by function (self)');
for (const [k, t] of [...fn].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(pct(t), k);

// node lib/profile-summary.mjs file top FUNCTION: who calls FUNCTION (stacks, by self time)
const target = process.argv[4];
if (target) {
  const stacks = new Map();
  for (const [id, t] of self) {
    if (byId.get(id).callFrame.functionName !== target) continue;
    const chain = [];
    for (let p = parent.get(id); p !== undefined && chain.length < 8; p = parent.get(p)) {
      const cf = byId.get(p).callFrame;
      chain.push(`${cf.functionName || '(anon)'}@${where(cf.url)}:${cf.lineNumber + 1}`);
    }
    const k = chain.join(' < ');
    stacks.set(k, (stacks.get(k) ?? 0) + t);
  }
  console.log(`-- callers of ${target}`);
  for (const [k, t] of [...stacks].sort((a, b) => b[1] - a[1]).slice(0, 6)) console.log(pct(t), k);
}
