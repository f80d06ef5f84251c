import './quiet-deprecations';
import { logger, type LoggerOptions } from '@upgradeware/logger';
import morgan from 'morgan';
import { collector } from './helpers';

describe('logger() checks its arguments when called', () => {
  test.each<[string, unknown, unknown, RegExp]>([
    ['format: a number', 42, undefined, /argument format must be/],
    ['format: null', null, undefined, /argument format must be/],
    ['format: true (morgan: argument format)', true, undefined, /argument format must be/],
    ['options: a string', 'tiny', 'fast', /options must be an object/],
    ['an unknown option', 'tiny', { skp: () => true }, /unknown option "skp"/],
    ['format in logger(options): a number', { format: 42 }, undefined, /option format must be .*\(argument format\)/],
    ['buffer: a string', 'tiny', { buffer: '1s' }, /option buffer must be true or a number of milliseconds/],
    ['buffer: negative', 'tiny', { buffer: -5 }, /option buffer must be true or a number of milliseconds/],
    ['buffer: past the timer limit', 'tiny', { buffer: 2 ** 31 }, /option buffer must be true or a number of milliseconds/],
    ['stream without write()', 'tiny', { stream: {} }, /option stream must have a write\(\) method/],
    ['stream: a string', 'tiny', { stream: 'stdout' }, /option stream must have a write\(\) method/],
    ['skip: not a function', 'tiny', { skip: true }, /option skip must be a function/],
    ['immediate: not a boolean', 'tiny', { immediate: 'yes' }, /option immediate must be a boolean/],
  ])('%s', (_name, format, options, message) => {
    const call = () => logger(format as string, options as LoggerOptions);
    expect(call).toThrow(TypeError);
    expect(call).toThrow(/^@upgradeware\/logger: /);
    expect(call).toThrow(message);
  });

  test('token(), format() and compile() check theirs', () => {
    expect(() => logger.token('', () => 'x')).toThrow(/^@upgradeware\/logger: token\(name, fn\) needs a name/);
    expect(() => logger.token('x', 'y' as never)).toThrow(/needs a function/);
    expect(() => logger.format('', 'x')).toThrow(/^@upgradeware\/logger: format\(name, fmt\) needs a name/);
    expect(() => logger.format('x', 3 as never)).toThrow(/needs a format string or a function/);
    // morgan's wording (`argument format`), with our prefix; morgan's suite checks none, a function, a number.
    for (const bad of [undefined, () => ':method', 42]) {
      expect(() => logger.compile(bad as never)).toThrow(/^@upgradeware\/logger: argument format must be a string/);
    }
  });

  test('deliberate difference: what morgan takes without a word, this logger refuses', () => {
    const stream = collector().stream;
    for (const opts of [{ skp: () => true }, { immediate: 'yes' }, { buffer: '1s' }]) {
      expect(typeof morgan('tiny', { stream, ...opts } as never)).toBe('function');
      expect(() => logger('tiny', { stream, ...opts } as never)).toThrow(TypeError);
    }
  });

  test('deliberate difference: formats and tokens are not properties of logger, as they are of morgan', () => {
    logger.format('token', ':method');
    expect(typeof (morgan as unknown as Record<string, unknown>).combined).toBe('string');
    expect(typeof (morgan as unknown as Record<string, unknown>)['remote-addr']).toBe('function');
    const props = logger as unknown as Record<string, unknown>;
    expect([props.combined, props['remote-addr']]).toEqual([undefined, undefined]);
    expect(typeof logger.token).toBe('function');
  });

  test('null options are no options, as in morgan; so are skip: false / null and stream: null', () => {
    for (const opts of [null, { skip: false }, { skip: null }, { stream: null }]) {
      expect(typeof logger('tiny', opts as never)).toBe('function');
    }
  });

  test('the middleware is named logger (for DEBUG traces) and compiled formats take 3 arguments', () => {
    expect(logger('tiny', { stream: collector().stream }).name).toBe('logger');
    expect(logger.compile(':method')).toHaveLength(3);
  });

  test('the middleware supports upgrades; token() and format() chain', () => {
    const c = collector();
    expect(logger('tiny', { stream: c.stream }).supportsUpgrade).toBe(true);
    expect(logger(() => null, { stream: c.stream }).supportsUpgrade).toBe(true);
    expect(logger.token('chain-a', () => 'a').format('chain-b', ':chain-a')).toBe(logger);
  });
});

describe('compile()', () => {
  const req = {} as never;
  const res = {} as never;

  test('replaces tokens with their values, falsy values with -, and keeps the rest', () => {
    const fn = logger.compile<never, never>('a :one [:two[x y]] :three :nope-token ok: 12:30 :x');
    const seen: unknown[] = [];
    const line = fn(
      {
        one: () => '1',
        two: (_q, _s, arg) => {
          seen.push(arg);
          return 'two';
        },
        three: () => undefined,
      },
      req,
      res,
    );
    // Unregistered tokens (`:nope-token`, `:30`) are printed as written; `:x` is too short to be one.
    expect(line).toBe('a 1 [two] - :nope-token ok: 12:30 :x');
    expect(seen).toEqual(['x y']);
  });

  test('does not reach inherited properties of the token table', () => {
    expect(logger.compile(':constructor :toString')({}, req, res)).toBe(':constructor :toString');
  });
});
