/**
 * Deprecation notices as the stock packages give them with `depd`, for the packages of this
 * project: each message once per process, through `process.emitWarning` (so `--no-deprecation`,
 * `--throw-deprecation` and `--trace-deprecation` apply), and silenced by `NO_DEPRECATION` naming
 * the package, the stock package it stands in for, or `*` (a comma- or space-separated list,
 * case-insensitive, read at each notice as depd reads it).
 */

/**
 * @internal For the packages of this project. `deprecation('@upgradeware/logger', 'morgan', ': ')`
 * gives the function that warns `@upgradeware/logger: <message>`.
 */
export function deprecation(name: string, stockName: string, separator: string): (message: string) => void {
  const given = new Set<string>();
  const names = new Set(['*', name.toLowerCase(), stockName.toLowerCase()]);
  return (message) => {
    if (given.has(message) || process.noDeprecation) return;
    const list = process.env.NO_DEPRECATION;
    if (list) for (const entry of list.split(/[ ,]+/)) if (names.has(entry.toLowerCase())) return;
    given.add(message);
    process.emitWarning(`${name}${separator}${message}`, 'DeprecationWarning');
  };
}
