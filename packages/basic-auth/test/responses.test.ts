/**
 * What exactly goes out for each outcome — status, headers, body — on ordinary requests and on
 * upgrades through the dispatcher, and which status a logger (a 'finish' listener) records.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createApp } from '@upgradeware/dispatcher';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { basicAuth } from '@upgradeware/basic-auth';
import { nextMessage, rawRequest, request, start, wsClose, wsHandshake, wsOpen, type TestServer } from '../../../test-support';
import { replyingWsEndpoint } from '../../../test-support/endpoints';

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const plain = (path: string, auth?: string) =>
  `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${auth === undefined ? '' : `Authorization: ${auth}\r\n`}\r\n`;
const upgrade = (path: string, auth?: string) => wsHandshake(path, auth === undefined ? {} : { Authorization: auth });

describe('responses, as sent and as logged', () => {
  let s: TestServer;
  const logged: Array<[string, number]> = [];
  /** Errors that reached the end of the stack (onError: not printed on the test run's stderr). */
  const reported: unknown[] = [];
  const endpoint = replyingWsEndpoint((req) => JSON.stringify({ user: req.user }));
  beforeAll(async () => {
    const app = createApp({ onError: (err) => void reported.push(err) });
    // What a logger does: read the status when the response finishes.
    app.use(
      supportsUpgrade((req: IncomingMessage, res: ServerResponse, next: () => void) => {
        res.on('finish', () => logged.push([req.originalUrl ?? '', res.statusCode]));
        next();
      }),
    );
    app.use('/fixed', basicAuth('tj', 'wahoo', 'Chat'));
    app.use('/token', basicAuth('', 't0ken'));
    app.use('/fn', basicAuth((_user, pass) => pass === 't0ken'));
    app.use(
      '/failing',
      basicAuth((_user, _pass, done) => setImmediate(() => done(Object.assign(new Error('directory down'), { status: 503 })))),
    );
    app.use(endpoint.handle);
    app.use((req: IncomingMessage, res: ServerResponse) => res.end(`hello ${JSON.stringify(req.user)}`));
    s = await start(app);
  });
  afterAll(async () => {
    endpoint.wss.close();
    await s.close();
  });

  async function lastLogged(url: string): Promise<number> {
    // 'finish' may fire just after the client saw the bytes: wait for it (bounded).
    for (let i = 0; i < 200; i++) {
      const hit = logged.filter(([u]) => u === url).pop();
      if (hit) return hit[1];
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error(`nothing logged for ${url}`);
  }

  test.each([
    ['an ordinary request', plain],
    ['a WebSocket upgrade', upgrade],
  ])('a malformed header on %s: 400, no challenge, the error page, logged as 400', async (_kind, make) => {
    logged.length = 0;
    const runs = endpoint.state.runs;
    const r = await rawRequest(s.port, make('/fixed', 'Basic !!!!'));
    expect(r.status).toBe(400);
    expect(r.reason).toBe('Bad Request');
    expect(r.headers['www-authenticate']).toBeUndefined();
    expect(r.headers.connection).toEqual(['close']);
    expect(r.headers['content-type']).toEqual(['text/html; charset=utf-8']);
    expect(r.headers['content-length']).toEqual([String(Buffer.byteLength(r.body))]);
    expect(r.body).toMatch(/^<!DOCTYPE html>[\s\S]*<pre>Error: Bad Request/);
    expect(r.closed).toBe(true);
    expect(await lastLogged('/fixed')).toBe(400);
    expect(endpoint.state.runs).toBe(runs);
    expect((await request(`${s.url}/fixed`, { headers: { Authorization: `Basic ${b64('tj:wahoo')}` } })).status).toBe(200);
  });

  test('with NODE_ENV=production the 400 page says only "Bad Request" (no stack trace)', async () => {
    const before = process.env.NODE_ENV;
    process.env.NODE_ENV = 'production';
    try {
      for (const make of [plain, upgrade]) {
        const r = await rawRequest(s.port, make('/fixed', `Basic ${b64('no colon')}`));
        expect(r.status).toBe(400);
        expect(r.body).toContain('<pre>Bad Request</pre>');
        expect(r.body).not.toContain(' at ');
        expect(reported.length).toBeGreaterThan(0);
      }
    } finally {
      process.env.NODE_ENV = before;
    }
  });

  test.each([
    ['an ordinary request', plain],
    ['a WebSocket upgrade', upgrade],
  ])('a refusal on %s: 401 with the challenge and body "Unauthorized", logged as 401', async (_kind, make) => {
    logged.length = 0;
    const runs = endpoint.state.runs;
    for (const auth of [undefined, `Basic ${b64('tj:nope')}`]) {
      const r = await rawRequest(s.port, make('/fixed', auth));
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toEqual(['Basic realm="Chat"']);
      expect(r.headers.connection).toEqual(['close']);
      expect(r.headers['content-length']).toEqual(['12']);
      expect(r.body).toBe('Unauthorized');
      expect(r.closed).toBe(true);
      expect(await lastLogged('/fixed')).toBe(401);
      logged.length = 0;
    }
    expect(endpoint.state.runs).toBe(runs);
  });

  test('an empty user name signs in (curl -u :token), as with basic-auth-connect, and req.user is ""', async () => {
    for (const path of ['/token', '/fn']) {
      const ok = await rawRequest(s.port, plain(path, `Basic ${b64(':t0ken')}`));
      expect(ok.status).toBe(200);
      expect(ok.body).toBe('hello ""');
      expect((await rawRequest(s.port, plain(path, `Basic ${b64(':nope')}`))).status).toBe(401);
      const { ws } = await wsOpen(`${s.wsUrl}${path}`, { headers: { Authorization: `Basic ${b64(':t0ken')}` } });
      try {
        ws.send('who');
        expect(JSON.parse(await nextMessage(ws))).toEqual({ user: '' });
      } finally {
        await wsClose(ws);
      }
    }
  });

  test('an error from the callback form is not a 401: next(err), on requests and upgrades alike', async () => {
    // Decided against basic-auth-connect's 401: a directory that is down says nothing about the
    // credentials, and a 401 would make the browser ask the user again for a password that is right.
    logged.length = 0;
    const runs = endpoint.state.runs;
    for (const make of [plain, upgrade]) {
      const r = await rawRequest(s.port, make('/failing', `Basic ${b64('tj:wahoo')}`));
      expect(r.status).toBe(503);
      expect(r.headers['www-authenticate']).toBeUndefined();
      expect(r.headers.connection).toEqual(['close']);
      expect(r.body).toContain('directory down');
      expect(r.closed).toBe(true);
      expect(await lastLogged('/failing')).toBe(503);
      logged.length = 0;
    }
    expect(endpoint.state.runs).toBe(runs);
    expect((await request(`${s.url}/fixed`, { headers: { Authorization: `Basic ${b64('tj:wahoo')}` } })).body).toBe('hello "tj"');
  });
});
