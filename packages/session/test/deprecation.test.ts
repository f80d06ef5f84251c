/**
 * express-session's deprecated forms are honoured and announced once, as depd does it: through
 * process.emitWarning (DeprecationWarning), silenced by NO_DEPRECATION (express-session,
 * @upgradeware/session or *, comma- or space-separated) and by --no-deprecation.
 */
import type * as SessionModule from '@upgradeware/session';

type Mod = typeof SessionModule;

/** Warnings are delivered on the next tick. */
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const saved = { env: process.env.NO_DEPRECATION, flag: process.noDeprecation };
beforeEach(() => {
  delete process.env.NO_DEPRECATION;
  process.noDeprecation = false;
});
afterAll(() => {
  if (saved.env === undefined) delete process.env.NO_DEPRECATION;
  else process.env.NO_DEPRECATION = saved.env;
  process.noDeprecation = saved.flag;
});

/** A fresh copy of the package (its once-only memory empty), and the deprecation warnings it emits while `fn` runs. */
async function collect(fn: (mod: Mod) => void): Promise<string[]> {
  let mod: Mod | undefined;
  jest.isolateModules(() => {
    mod = require('@upgradeware/session') as Mod;
  });
  const seen: string[] = [];
  // Caught where the package hands them to Node (which would print them).
  const spy = jest.spyOn(process, 'emitWarning').mockImplementation(((warning: string | Error, type?: unknown) => {
    if (type === 'DeprecationWarning') seen.push(String(warning));
  }) as typeof process.emitWarning);
  try {
    fn(mod!);
    await tick();
  } finally {
    spy.mockRestore();
  }
  return seen;
}

describe('deprecation notices', () => {
  test('the key option is announced once (that it names the cookie: parity.test.ts)', async () => {
    const seen = await collect(({ session, MemoryStore }) => {
      const store = new MemoryStore({ checkPeriod: 0 });
      session({ secret: 's', resave: false, saveUninitialized: false, key: 'sid', store });
      session({ secret: 's', resave: false, saveUninitialized: false, key: 'other', store });
    });
    expect(seen).toEqual(['@upgradeware/session deprecated key option; use name option']);
  });

  test("express-session's own notices, in its wording, each once", async () => {
    const seen = await collect(({ session, Cookie }) => {
      session({});
      session({});
      const cookie = new Cookie();
      cookie.maxAge = new Date(Date.now() + 1000);
      cookie.maxAge = new Date(Date.now() + 2000);
    });
    expect(seen.sort()).toEqual(
      [
        '@upgradeware/session deprecated req.secret; provide secret option',
        '@upgradeware/session deprecated undefined resave option; provide resave option',
        '@upgradeware/session deprecated undefined saveUninitialized option; provide saveUninitialized option',
        '@upgradeware/session deprecated maxAge as Date; pass number of milliseconds instead',
      ].sort(),
    );
  });

  test.each(['express-session', '@upgradeware/session', '*', 'morgan, express-session', 'body-parser EXPRESS-SESSION'])('NO_DEPRECATION=%s silences them', async (value) => {
    process.env.NO_DEPRECATION = value;
    const seen = await collect(({ session }) => session({ key: 'sid' }));
    expect(seen).toEqual([]);
  });

  test('NO_DEPRECATION naming another package does not', async () => {
    process.env.NO_DEPRECATION = 'morgan,body-parser';
    const seen = await collect(({ session }) => session({ secret: 's', resave: false, saveUninitialized: false, key: 'sid' }));
    expect(seen).toEqual(['@upgradeware/session deprecated key option; use name option']);
  });

  test('--no-deprecation (process.noDeprecation) silences them', async () => {
    process.noDeprecation = true;
    const seen = await collect(({ session }) => session({ key: 'sid' }));
    expect(seen).toEqual([]);
  });
});
