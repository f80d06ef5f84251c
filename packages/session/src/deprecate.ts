/**
 * One-time deprecation notices, as express-session gives them with `depd`: each message once per
 * process, through `process.emitWarning` (so `--no-deprecation`, `--throw-deprecation` and
 * `--trace-deprecation` apply), and silenced by `NO_DEPRECATION` naming `express-session`,
 * `@upgradeware/session` or `*` (a comma- or space-separated list, case-insensitive, as depd reads it).
 */
const PACKAGE = '@upgradeware/session';
const NAMESPACES = new Set(['express-session', PACKAGE]);
const given = new Set<string>();

/** True when deprecation notices of this package are switched off. */
export function deprecationsSilenced(): boolean {
  if (process.noDeprecation) return true;
  const list = process.env.NO_DEPRECATION;
  if (!list) return false;
  for (const entry of list.split(/[ ,]+/)) {
    if (entry === '*' || NAMESPACES.has(entry.toLowerCase())) return true;
  }
  return false;
}

/** Emit `message` (express-session's wording where it has one) once per process. */
export function deprecate(message: string): void {
  if (given.has(message) || deprecationsSilenced()) return;
  given.add(message);
  process.emitWarning(`${PACKAGE} deprecated ${message}`, 'DeprecationWarning');
}
