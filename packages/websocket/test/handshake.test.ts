import { start, rawRequest, wsHandshake, wsOpen, wsClose, nextMessage, until, type TestServer } from '../../../test-support';
import { WebSocketServer } from 'ws';
import { echoApp, type Logged } from './helpers';

let s: TestServer | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

async function stillServes(server: TestServer): Promise<void> {
  const { ws } = await wsOpen(`${server.wsUrl}/chat`);
  const reply = nextMessage(ws);
  ws.send('ping');
  expect(await reply).toBe('ping');
  await wsClose(ws);
}

const handshake = (extra: Record<string, string>, method = 'GET') => wsHandshake('/chat', extra).replace(/^GET /, `${method} `);

interface Case {
  name: string;
  request: string;
  status: number;
  reason: string;
  body: string;
  headers?: Record<string, string[]>;
}

const cases: Case[] = [
  { name: 'POST', request: handshake({}, 'POST'), status: 405, reason: 'Method Not Allowed', body: 'Invalid HTTP method', headers: { allow: ['GET'] } },
  { name: 'Upgrade naming websocket among others', request: handshake({ Upgrade: 'websocket, foo' }), status: 400, reason: 'Bad Request', body: 'Invalid Upgrade header' },
  { name: 'missing key', request: handshake({ 'Sec-WebSocket-Key': '' }), status: 400, reason: 'Bad Request', body: 'Missing or invalid Sec-WebSocket-Key header' },
  { name: 'bad key', request: handshake({ 'Sec-WebSocket-Key': 'short' }), status: 400, reason: 'Bad Request', body: 'Missing or invalid Sec-WebSocket-Key header' },
  {
    name: 'missing version',
    request: handshake({ 'Sec-WebSocket-Version': '' }),
    status: 400,
    reason: 'Bad Request',
    body: 'Missing or invalid Sec-WebSocket-Version header',
    headers: { 'sec-websocket-version': ['13, 8'] },
  },
  {
    name: 'garbage version',
    request: handshake({ 'Sec-WebSocket-Version': 'thirteen' }),
    status: 400,
    reason: 'Bad Request',
    body: 'Missing or invalid Sec-WebSocket-Version header',
    headers: { 'sec-websocket-version': ['13, 8'] },
  },
  {
    name: 'unsupported version',
    request: handshake({ 'Sec-WebSocket-Version': '7' }),
    status: 426,
    reason: 'Upgrade Required',
    body: 'Missing or invalid Sec-WebSocket-Version header',
    headers: { 'sec-websocket-version': ['13, 8'] },
  },
  {
    name: 'bad subprotocol list',
    request: handshake({ 'Sec-WebSocket-Protocol': 'a,,b' }),
    status: 400,
    reason: 'Bad Request',
    body: 'Invalid Sec-WebSocket-Protocol header',
  },
  {
    name: 'duplicated subprotocol',
    request: handshake({ 'Sec-WebSocket-Protocol': 'a, a' }),
    status: 400,
    reason: 'Bad Request',
    body: 'Invalid Sec-WebSocket-Protocol header',
  },
  {
    name: 'bad permessage-deflate offer',
    request: handshake({ 'Sec-WebSocket-Extensions': 'permessage-deflate; server_max_window_bits=99' }),
    status: 400,
    reason: 'Bad Request',
    body: 'Invalid or unacceptable Sec-WebSocket-Extensions header',
  },
  {
    name: 'unparseable extensions',
    request: handshake({ 'Sec-WebSocket-Extensions': 'permessage-deflate;;' }),
    status: 400,
    reason: 'Bad Request',
    body: 'Invalid or unacceptable Sec-WebSocket-Extensions header',
  },
];

describe('the Sec-WebSocket-Key check agrees with ws', () => {
  test('keys valid and invalid at every position: a 101 exactly where a plain ws server sends one', async () => {
    const good = 'dGhlIHNhbXBsZSBub25jZQ==';
    const keys = new Set([good, good.slice(0, 23), `${good}=`, `A${good}`, good.replace('==', '=A'), good.replace('==', 'A='), good.toUpperCase(), `${'/'.repeat(11)}${'+'.repeat(11)}==`]);
    for (const c of '+/09AZaz-_.*:@[`{= \t') {
      for (const at of [0, 5, 21]) keys.add(good.slice(0, at) + c + good.slice(at + 1));
    }
    const plain = await start(null, (server) => {
      const wss = new WebSocketServer({ noServer: true });
      server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => ws.close()));
    });
    const { app } = echoApp();
    s = await start(app);
    try {
      const disagree: string[] = [];
      let accepted = 0;
      for (const key of keys) {
        const request = (path: string) => wsHandshake(path, { 'Sec-WebSocket-Key': key });
        const [theirs, ours] = await Promise.all([
          rawRequest(plain.port, request('/'), { untilHead: true }),
          rawRequest(s.port, request('/chat'), { untilHead: true }),
        ]);
        if (ours.status === 101) accepted++;
        if ((theirs.status === 101) !== (ours.status === 101) || (ours.status !== 101 && ours.status !== 400)) disagree.push(`${JSON.stringify(key)}: ws ${theirs.status}, ours ${ours.status}`);
      }
      expect(disagree).toEqual([]);
      expect(keys.size).toBeGreaterThan(50);
      // Both answers were given, many times each.
      expect(accepted).toBeGreaterThan(20);
      expect(keys.size - accepted).toBeGreaterThan(20);
    } finally {
      await plain.close();
    }
  });
});

describe('a bad handshake is a full, logged HTTP response, and the next one works', () => {
  test.each(cases)('$name → $status', async (c) => {
    const { app, log } = echoApp({ perMessageDeflate: true });
    s = await start(app);
    const raw = await rawRequest(s.port, c.request);
    expect(raw.status).toBe(c.status);
    expect(raw.reason).toBe(c.reason);
    expect(raw.body).toBe(c.body);
    expect(raw.headers['connection']).toEqual(['close']);
    expect(raw.headers['content-length']).toEqual([String(Buffer.byteLength(c.body))]);
    expect(raw.headers['content-type']).toEqual(['text/plain; charset=utf-8']);
    expect(raw.headers['upgrade']).toBeUndefined();
    expect(raw.headers['sec-websocket-accept']).toBeUndefined();
    for (const [name, value] of Object.entries(c.headers ?? {})) expect(raw.headers[name]).toEqual(value);
    expect(raw.closed).toBe(true);
    await until(() => log.length === 1 && log[0]!.closed);
    expect(log[0]).toEqual<Logged>({ method: c.request.slice(0, c.request.indexOf(' ')), url: '/chat', status: c.status, finishes: 1, closed: true });
    await stillServes(s);
  });

  test('version 8 is accepted', async () => {
    const { app } = echoApp();
    s = await start(app);
    const raw = await rawRequest(s.port, handshake({ 'Sec-WebSocket-Version': '8' }), { untilHead: true });
    expect(raw.status).toBe(101);
  });
});
