/** Line collectors and normalisers shared by the logger suites. */

/** A stream that keeps what is written to it. */
export function collector() {
  const chunks: string[] = [];
  return {
    chunks,
    stream: { write: (s: string) => chunks.push(s) },
    /** The logged lines, without their '\n'. */
    lines: () => chunks.join('').split('\n').slice(0, -1),
  };
}

const CLF = /\d{2}\/[A-Z][a-z]{2}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000/g;
const WEB = /[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT/g;
const ISO = /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/g;

/**
 * Make two lines of the same request comparable: dates become their style's name (after their
 * shape is checked by the patterns), decimal numbers keep their count of decimals only.
 */
export function normalise(line: string): string {
  return line
    .replace(CLF, '<clf>')
    .replace(WEB, '<web>')
    .replace(ISO, '<iso>')
    .replace(/\d+\.(\d+)/g, (_m, frac: string) => 'N.' + 'd'.repeat(frac.length));
}
