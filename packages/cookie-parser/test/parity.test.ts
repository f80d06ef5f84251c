/**
 * Parity with cookie-parser on ordinary requests: the stock middleware and ours run in the same
 * kind of Connect app, on the same Cookie headers; req.cookies, req.signedCookies and req.secret
 * are compared. Also the exported helpers, side by side with the stock ones.
 */
import { createHmac } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as path from 'node:path';
import connect from 'connect';
import { cookieParser, JSONCookie, JSONCookies, signedCookie, signedCookies } from '@upgradeware/cookie-parser';
import { rawRequest, start, type TestServer } from '../../../test-support';

type Handle = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void;
interface Stock {
  (secret?: unknown, options?: unknown): Handle;
  JSONCookie(str: unknown): unknown;
  JSONCookies(obj: Record<string, unknown>): Record<string, unknown>;
  signedCookie(str: unknown, secret: unknown): unknown;
  signedCookies(obj: Record<string, unknown>, secret: unknown): Record<string, unknown>;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const stock = require('cookie-parser') as Stock;
// cookie-signature is the stock package's own dependency: it resolves from there, not from the root.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const signature = require(require.resolve('cookie-signature', { paths: [path.dirname(require.resolve('cookie-parser'))] })) as {
  sign(value: string, secret: string): string;
};

/** cookie-signature's format, written out: s: + value + '.' + base64(HMAC-SHA256) without '='. */
function sign(value: string, secret: string): string {
  return `s:${value}.${createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '')}`;
}

/** What the endpoint reports: every property with its type, in key order, and the prototype. */
function describeObject(obj: Record<string, unknown> | undefined) {
  if (obj === undefined) return 'undefined';
  return Object.keys(obj).map((key) => [key, typeof obj[key], obj[key] === undefined ? 'undefined' : obj[key]]);
}

function appWith(parser: Handle, preset = false) {
  const app = connect();
  if (preset) {
    app.use((req: IncomingMessage, _res: ServerResponse, next: () => void) => {
      req.cookies = { preset: 'yes' };
      next();
    });
  }
  app.use(parser);
  app.use((req: IncomingMessage, res: ServerResponse) => {
    res.setHeader('Content-Type', 'application/json');
    res.end(
      JSON.stringify({
        cookies: describeObject(req.cookies),
        signedCookies: describeObject(req.signedCookies),
        secret: req.secret === undefined ? 'undefined' : req.secret,
        hasSecret: 'secret' in req,
      }),
    );
  });
  app.use((err: Error, _req: IncomingMessage, res: ServerResponse, _next: unknown) => {
    res.statusCode = 500;
    res.end(`error ${err.message}`);
  });
  return app;
}

async function getWith(port: number, cookie: string | undefined) {
  const header = cookie === undefined ? '' : `Cookie: ${cookie}\r\n`;
  return rawRequest(port, `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${header}\r\n`);
}

interface Pair {
  stock: TestServer;
  ours: TestServer;
}

async function pair(stockHandle: Handle, ours: Handle, preset = false): Promise<Pair> {
  return { stock: await start(appWith(stockHandle, preset)), ours: await start(appWith(ours, preset)) };
}

async function closePair(p: Pair) {
  await p.stock.close();
  await p.ours.close();
}

async function compare(p: Pair, cookie: string | undefined) {
  const a = await getWith(p.stock.port, cookie);
  const b = await getWith(p.ours.port, cookie);
  expect(a.status).toBe(200);
  expect(b.status).toBe(200);
  expect(JSON.parse(b.body)).toEqual(JSON.parse(a.body));
  return JSON.parse(b.body) as { cookies: unknown; signedCookies: unknown; secret: string };
}

const SECRET = 'keyboard cat';
const OLD = 'old secret';

const cookieCases: Array<[string, string | undefined]> = [
  ['no header', undefined],
  ['an empty header', ''],
  ['plain cookies', 'a=1; b=two; c='],
  ['URL-encoded values, and a bad escape left raw', 'a=hello%20world; b=%E4%BD%A0; c=100%; d=%zz'],
  ['quoted values', 'a="quoted"; b=""; c="half; d="'],
  ['duplicates: the first wins', 'a=1; a=2; b=3; b=4'],
  ['spaces and tabs around names and values', ' a = 1 ;\tb\t=\t2\t; ;;; c=3'],
  ['pairs without =', 'lonely; a=1; =2; ; b'],
  ['JSON cookies', 'o=j:{"a":1,"b":[true,null]}; arr=j:[1,2]; s=j:"str"; n=j:42'],
  ['falsy JSON cookies stay raw', 'zero=j:0; f=j:false; nul=j:null; empty=j:""'],
  ['broken JSON stays raw', 'bad=j:{a:1}; cut=j:{"a":; nothing=j:'],
  ['prototype names', '__proto__=j:{"polluted":true}; constructor=c; toString=t; hasOwnProperty=h; valueOf=j:{"x":1}'],
  ['signed cookies, good', `sid=${sign('abc', SECRET)}; plain=1`],
  ['a signed JSON cookie', `prefs=${sign('j:{"theme":"dark"}', SECRET)}`],
  ['a tampered value', `sid=${sign('abc', SECRET).replace('abc', 'abd')}`],
  ['a tampered signature', `sid=${sign('abc', SECRET).slice(0, -1)}${sign('abc', SECRET).endsWith('A') ? 'B' : 'A'}`],
  ['a truncated signature', `sid=${sign('abc', SECRET).slice(0, -10)}`],
  ['a signature with its padding', `sid=${sign('abc', SECRET)}=`],
  ['no signature at all', 'sid=s:abc; dot=s:abc.; empty=s:'],
  ['a value with dots', `sid=${sign('a.b.c', SECRET)}`],
  ['signed with the old secret', `sid=${sign('rotated', OLD)}`],
  ['signed with a stranger secret', `sid=${sign('abc', 'stranger')}`],
  ['a URL-encoded signed cookie', `sid=${encodeURIComponent(sign('v\u00e4lue', SECRET))}`],
];

describe('cookieParser(secret) against cookie-parser', () => {
  let p: Pair;
  beforeAll(async () => {
    p = await pair(stock(SECRET), cookieParser(SECRET));
  });
  afterAll(() => closePair(p));

  test.each(cookieCases)('%s', async (_name, cookie) => {
    const r = await compare(p, cookie);
    expect(r.secret).toBe(SECRET);
  });

  test('what the results are (not only that they agree)', async () => {
    expect((await compare(p, `sid=${sign('abc', SECRET)}; plain=1`)).signedCookies).toEqual([['sid', 'string', 'abc']]);
    expect((await compare(p, `sid=${sign('abc', SECRET).slice(0, -10)}`)).signedCookies).toEqual([['sid', 'boolean', false]]);
    expect((await compare(p, `prefs=${sign('j:{"theme":"dark"}', SECRET)}`)).signedCookies).toEqual([
      ['prefs', 'object', { theme: 'dark' }],
    ]);
    const protoCase = await compare(p, '__proto__=j:{"polluted":true}; constructor=c');
    expect(protoCase.cookies).toEqual([['constructor', 'string', 'c']]);
  });
});

describe('other configurations against cookie-parser', () => {
  test('no secret: signed cookies stay in req.cookies, req.signedCookies is empty', async () => {
    const p = await pair(stock(), cookieParser());
    try {
      for (const [, cookie] of cookieCases) await compare(p, cookie);
      const r = await compare(p, `sid=${sign('abc', SECRET)}`);
      expect(r.signedCookies).toEqual([]);
      expect(r.secret).toBe('undefined');
    } finally {
      await closePair(p);
    }
  });

  test('an empty-string secret means no secret', async () => {
    const p = await pair(stock(''), cookieParser(''));
    try {
      expect((await compare(p, `sid=${sign('abc', '')}`)).signedCookies).toEqual([]);
    } finally {
      await closePair(p);
    }
  });

  test('rotation: every secret verifies, the first is req.secret', async () => {
    const p = await pair(stock([SECRET, OLD]), cookieParser([SECRET, OLD]));
    try {
      for (const [, cookie] of cookieCases) await compare(p, cookie);
      const r = await compare(p, `a=${sign('new', SECRET)}; b=${sign('old', OLD)}; c=${sign('x', 'stranger')}`);
      expect(r.signedCookies).toEqual([
        ['a', 'string', 'new'],
        ['b', 'string', 'old'],
        ['c', 'boolean', false],
      ]);
      expect(r.secret).toBe(SECRET);
    } finally {
      await closePair(p);
    }
  });

  test('the decode option, and a decode that throws leaves the value raw', async () => {
    const upper = { decode: (v: string) => v.toUpperCase() };
    const throwing = {
      decode: (v: string) => {
        if (v.includes('boom')) throw new Error('cannot decode');
        return `<${v}>`;
      },
    };
    for (const options of [upper, throwing]) {
      const p = await pair(stock(SECRET, options), cookieParser(SECRET, options));
      try {
        for (const [, cookie] of cookieCases) await compare(p, cookie);
        await compare(p, 'a=boom; b=fine; c="boom"');
      } finally {
        await closePair(p);
      }
    }
  });

  test('req.cookies already set: the request passes untouched', async () => {
    const p = await pair(stock(SECRET), cookieParser(SECRET), true);
    try {
      const r = await compare(p, 'a=1');
      expect(r.cookies).toEqual([['preset', 'string', 'yes']]);
      expect(r.signedCookies).toBe('undefined');
    } finally {
      await closePair(p);
    }
  });
});

describe('deliberate difference: options the stock package ignores', () => {
  test('a misspelt option is ignored by the stock package (cookie.parse), refused here', async () => {
    const decoder = (v: string) => v.toUpperCase();
    const p = await pair(stock(SECRET, { decoder }), cookieParser(SECRET), false);
    try {
      // The stock parser ignores `decoder`: it decodes as usual, exactly as ours without the option.
      const r = await compare(p, 'a=x%20y');
      expect(r.cookies).toEqual([['a', 'string', 'x y']]);
    } finally {
      await closePair(p);
    }
    expect(() => cookieParser(SECRET, { decoder } as never)).toThrow('@upgradeware/cookie-parser: unknown option "decoder"');
  });
});

describe('exported helpers against the stock ones', () => {
  test('our signing format is cookie-signature\'s', () => {
    for (const value of ['abc', '', 'a.b', 'v\u00e4lue', 'j:{"a":1}']) {
      expect(sign(value, SECRET)).toBe(`s:${signature.sign(value, SECRET)}`);
    }
  });

  const strings: unknown[] = [
    undefined,
    null,
    42,
    'plain',
    's:',
    's:abc',
    's:abc.',
    sign('abc', SECRET),
    sign('abc', OLD),
    sign('abc', SECRET).slice(0, -1),
    `${sign('abc', SECRET)}=`,
    sign('a.b', SECRET),
    'j:{"a":1}',
    'j:0',
    'j:',
    'j:[',
  ];

  test('signedCookie', () => {
    for (const secret of [SECRET, [OLD, SECRET], [], undefined, '']) {
      for (const str of strings) expect([str, secret, signedCookie(str, secret)]).toEqual([str, secret, stock.signedCookie(str, secret)]);
    }
  });

  test('JSONCookie', () => {
    for (const str of strings) expect([str, JSONCookie(str)]).toEqual([str, stock.JSONCookie(str)]);
  });

  test('signedCookies moves signed cookies out, JSONCookies parses in place', () => {
    const make = () => ({ a: sign('x', SECRET), b: 'plain', c: sign('y', 'stranger'), d: 'j:{"k":1}', e: 7 as unknown });
    const ours = make();
    const theirs = make();
    const a = signedCookies(ours, SECRET);
    const b = stock.signedCookies(theirs, SECRET);
    expect({ ...a }).toEqual({ ...b });
    expect(ours).toEqual(theirs);
    expect(Object.getPrototypeOf(a)).toBeNull();
    expect(JSONCookies(ours)).toEqual(stock.JSONCookies(theirs));
    expect(ours.d).toEqual({ k: 1 });
  });

  test('JSONCookies never touches a prototype, even for an own __proto__ key', () => {
    const obj = JSON.parse('{"__proto__":"j:{\\"admin\\":true}","b":"j:[1]"}') as Record<string, unknown>;
    const out = JSONCookies(obj);
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect((out as { admin?: unknown }).admin).toBeUndefined();
    expect(Object.getOwnPropertyDescriptor(out, '__proto__')?.value).toEqual({ admin: true });
    expect(out.b).toEqual([1]);
    expect(({} as { admin?: unknown }).admin).toBeUndefined();
  });
});
