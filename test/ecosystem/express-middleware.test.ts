/**
 * Common Express middleware on WebSocket upgrades, inside an Express app served by
 * attachUpgrades() (issue 18; docs/express.md keeps the table these tests hold up). Inside Express
 * every middleware runs for upgrades too (rule 2 cannot be enforced there), so each one is shown
 * to work on a handshake, or to be harmless, or to be skipped with skipUpgrades().
 * Express 4 and Express 5 both.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import express5 from 'express';
import expressSession from 'express-session';
import cookieParser from 'cookie-parser';
import morgan from 'morgan';
import helmet from 'helmet';
import cors from 'cors';
import compression from 'compression';
import { Passport } from 'passport';
import { attachUpgrades, skipUpgrades } from '@upgradeware/express';
import { websocket } from '@upgradeware/websocket';
import { rawRequest, request, until, wsClose, wsHandshake, wsOpen, WsRefused, start, type TestServer } from '../../test-support';
import { ask, cookiePairs, lineSink, signCookie } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const express4 = require('express4') as typeof express5;
const versions: Array<[string, typeof express5]> = [
  ['Express 4', express4],
  ['Express 5', express5],
];

const secret = 'middleware secret';
type Loose = { [key: string]: unknown };

describe.each(versions)('%s: common middleware on upgrades', (_name, express) => {
  let s: TestServer;
  let dir: string;
  const log = lineSink();
  const passport = new Passport();
  const bodies: unknown[] = [];
  const echo = websocket((ws, req) => {
    const r = req as unknown as Loose;
    ws.on('message', (m) => {
      const what = String(m);
      if (what === 'cookies') ws.send(JSON.stringify({ cookies: r.cookies, signed: r.signedCookies }));
      else if (what === 'user') ws.send(String((r.user as { id?: string } | undefined)?.id));
      else ws.send(`echo ${what}`);
    });
  });

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'upgradeware-express-'));
    fs.mkdirSync(path.join(dir, 'public'));
    fs.writeFileSync(path.join(dir, 'public', 'hello.txt'), 'static hello');
    fs.mkdirSync(path.join(dir, 'skipped'));
    fs.writeFileSync(path.join(dir, 'skipped', 'ws'), 'a file where a WebSocket lives');

    passport.serializeUser((user, done) => done(null, (user as { id: string }).id));
    passport.deserializeUser((id: string, done) => done(null, { id }));

    const app = express();
    app.use(morgan(':method :url :status', { stream: log }));
    app.use(helmet());
    app.use(cors());
    app.use(compression({ threshold: 0 }));
    app.use(cookieParser(secret));
    app.use(express.json());
    app.use(express.urlencoded({ extended: false }));
    app.use((req, _res, next) => {
      if (req.body !== undefined && Object.keys(req.body as object).length > 0) bodies.push(req.body);
      next();
    });
    app.use(expressSession({ secret, resave: false, saveUninitialized: false }));
    app.use(passport.session());
    app.use(express.static(path.join(dir, 'public')));
    app.use('/skipped', skipUpgrades(express.static(path.join(dir, 'skipped'))));
    app.post('/login', (req, res, next) => {
      (req as unknown as { login(user: object, cb: (err?: unknown) => void): void }).login({ id: 'carol' }, (err) =>
        err ? next(err) : res.send('in'),
      );
    });
    app.get('/big', (_req, res) => {
      res.status(401).type('text').send('x'.repeat(4096));
    });
    app.get('/ws', echo);
    app.get('/skipped/ws', echo);
    app.get('/members', (req, res, next) => {
      if ((req as unknown as { isAuthenticated(): boolean }).isAuthenticated()) return next();
      res.status(401).send('members only');
    });
    app.get('/members', echo);
    s = await start(null, (server) => {
      server.on('request', app);
      attachUpgrades(server, app);
    });
  });
  afterAll(async () => {
    await echo.close();
    await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('compression (threshold 0, client accepts gzip): the 101 carries no Content-Encoding, frames are untouched', async () => {
    const { ws, response } = await wsOpen(`${s.wsUrl}/ws`, { headers: { 'Accept-Encoding': 'gzip' } });
    expect(response.statusCode).toBe(101);
    expect(response.headers['content-encoding']).toBeUndefined();
    expect(await ask(ws, 'zip')).toBe('echo zip');
    // compression wrapped res.end after Express swapped the prototype: the switch still finishes.
    await until(() => log.lines.includes('GET /ws 101'));
    await wsClose(ws);
  });

  test('compression on a refused upgrade: a well-formed gzip body, then the connection closes', async () => {
    const r = await rawRequest(s.port, wsHandshake('/big', { 'Accept-Encoding': 'gzip' }));
    expect(r.status).toBe(401);
    expect(r.headers['content-encoding']).toEqual(['gzip']);
    expect(r.headers['transfer-encoding']).toEqual(['chunked']);
    expect(r.closed).toBe(true);
    // De-chunk, then gunzip.
    const raw = Buffer.from(r.body, 'latin1');
    const parts: Buffer[] = [];
    let at = 0;
    for (;;) {
      const eol = raw.indexOf('\r\n', at);
      const size = parseInt(raw.subarray(at, eol).toString('latin1'), 16);
      if (!size) break;
      parts.push(raw.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
    expect(zlib.gunzipSync(Buffer.concat(parts)).toString()).toBe('x'.repeat(4096));
  });

  test('cookie-parser: plain and signed cookies reach the WebSocket handler', async () => {
    const { ws } = await wsOpen(`${s.wsUrl}/ws`, {
      headers: { Cookie: `plain=1; sig=${encodeURIComponent('s:' + signCookie('ok', secret))}; bad=${encodeURIComponent('s:ok.forged')}` },
    });
    expect(JSON.parse(await ask(ws, 'cookies'))).toEqual({ cookies: { plain: '1' }, signed: { sig: 'ok', bad: false } });
    await wsClose(ws);
  });

  test('helmet and cors: their headers ride on the 101; cors never refuses (an Origin guard is websocket’s `origins`)', async () => {
    const { ws, response } = await wsOpen(`${s.wsUrl}/ws`, { headers: { Origin: 'https://anywhere.example' } });
    expect(response.headers['x-content-type-options']).toBe('nosniff');
    expect(response.headers['strict-transport-security']).toMatch(/max-age=/);
    expect(response.headers['access-control-allow-origin']).toBe('*');
    await wsClose(ws);
  });

  test('express.json / urlencoded: a handshake has no body, so they pass it on; a body is a 400, not frames', async () => {
    bodies.length = 0;
    const { ws } = await wsOpen(`${s.wsUrl}/ws`, { headers: { 'Content-Type': 'application/json' } });
    expect(await ask(ws, 'b')).toBe('echo b');
    await wsClose(ws);
    // A handshake that claims a JSON body: Node gives the body bytes to the upgrade as the start
    // of the connection, not to req. Express 4's body-parser reads an empty, short body (400);
    // Express 5's sees req already ended and passes on, and the endpoint refuses the body (400).
    const r = await rawRequest(s.port, wsHandshake('/ws', { 'Content-Type': 'application/json', 'Content-Length': '7' }) + '{"a":1}');
    expect(r.status).toBe(400);
    expect(r.body).toMatch(express === express4 ? /request size did not match content length/ : /^Unexpected request body$/);
    expect(r.closed).toBe(true);
    expect(bodies).toEqual([]);
    expect((await request(`${s.url}/hello.txt`)).body).toBe('static hello');
  });

  test('express.static: a handshake to a path with no file passes through; to a file, the file (harmless: 200, then closed)', async () => {
    const { ws } = await wsOpen(`${s.wsUrl}/ws`);
    expect(await ask(ws, 's')).toBe('echo s');
    await wsClose(ws);
    const file = await rawRequest(s.port, wsHandshake('/hello.txt'));
    expect([file.status, file.body]).toEqual([200, 'static hello']);
    expect(file.headers['connection']).toEqual(['close']);
    expect(file.closed).toBe(true);
    await until(() => log.lines.includes('GET /hello.txt 200'));
  });

  test('skipUpgrades(express.static(…)): the same file serves ordinary requests, the handshake reaches the endpoint', async () => {
    expect((await request(`${s.url}/skipped/ws`)).body).toBe('a file where a WebSocket lives');
    const { ws, response } = await wsOpen(`${s.wsUrl}/skipped/ws`);
    expect(response.statusCode).toBe(101);
    expect(await ask(ws, 'k')).toBe('echo k');
    await wsClose(ws);
  });

  test('passport’s session: a 401 before login; after req.login() the handshake is authenticated and req.user is set', async () => {
    const refused = (await wsOpen(`${s.wsUrl}/members`).catch((e: unknown) => e)) as WsRefused;
    expect(refused).toBeInstanceOf(WsRefused);
    expect([refused.status, refused.body]).toEqual([401, 'members only']);
    const login = await request(`${s.url}/login`, { method: 'POST' });
    expect(login.body).toBe('in');
    const [cookie] = cookiePairs(login.headers['set-cookie']);
    const { ws } = await wsOpen(`${s.wsUrl}/members`, { headers: { Cookie: cookie! } });
    expect(await ask(ws, 'user')).toBe('carol');
    await wsClose(ws);
    await until(() => log.lines.includes('GET /members 401') && log.lines.includes('GET /members 101'));
  });
});
