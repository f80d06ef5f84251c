/**
 * The helpers' TypeScript signatures. ts-jest type-checks this file, so a signature that drifts
 * from what code written against @types/cookie-parser expects fails the suite; the runtime
 * assertions pin the values the types describe.
 */
import { createHmac } from 'node:crypto';
import { JSONCookie, JSONCookies, signedCookie, signedCookies } from '@upgradeware/cookie-parser';

const SECRET = 'keyboard cat';
const sign = (value: string, secret: string) =>
  `s:${value}.${createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '')}`;

/** Compiles only when `T` is exactly `U`. */
type Exact<T, U> = [T] extends [U] ? ([U] extends [T] ? true : false) : false;
const exact = <T, U>(check: Exact<T, U>): Exact<T, U> => check;

describe('helper signatures', () => {
  test('signedCookie of a string is string | false, as @types/cookie-parser declares', () => {
    const good = signedCookie(sign('abc', SECRET), SECRET);
    exact<typeof good, string | false>(true);
    // Code written against @types/cookie-parser: no undefined to handle.
    const asStock: string | false = signedCookie(sign('abc', SECRET), [SECRET, 'old']);
    expect(good).toBe('abc');
    expect(asStock).toBe('abc');
    expect(signedCookie(sign('abc', 'other'), SECRET)).toBe(false);
    expect(signedCookie('plain', SECRET)).toBe('plain');
  });

  test('signedCookie of anything else may be undefined', () => {
    const input: unknown = 42;
    const value = signedCookie(input, SECRET);
    exact<typeof value, string | false | undefined>(true);
    expect(value).toBeUndefined();
  });

  test('signedCookies gives string | false | undefined values; JSONCookie and JSONCookies give unknown', () => {
    const signed = signedCookies({ a: sign('x', SECRET), b: 'plain', c: 7 }, SECRET);
    exact<typeof signed, Record<string, string | false | undefined>>(true);
    expect({ ...signed }).toEqual({ a: 'x', c: undefined });

    const json = JSONCookie('j:42');
    exact<typeof json, unknown>(true);
    expect(json).toBe(42);

    const parsed = JSONCookies({ n: 'j:42', o: 'j:{"a":1}', s: 'raw' });
    exact<typeof parsed, { n: unknown; o: unknown; s: unknown }>(true);
    expect(parsed).toEqual({ n: 42, o: { a: 1 }, s: 'raw' });
  });
});
