/**
 * The logger on an HTTP/2 server: an RFC 8441 WebSocket is logged as what was sent (CONNECT …
 * 200 websocket/h2), next to an HTTP/1.1 upgrade on the same server (GET … 101 websocket/1.1).
 */
import * as http2 from 'node:http2';
import { createApp } from '@upgradeware/dispatcher';
import { logger } from '@upgradeware/logger';
import { websocket } from '@upgradeware/websocket';
import { until, wsAsk, wsClose } from '../../../test-support';
import { h2Connect, h2Request, h2WebSocket, startHttp2, type Http2TestServer } from '../../../test-support/http2';
import { collector } from './helpers';

let s: Http2TestServer | null = null;
let client: http2.ClientHttp2Session | null = null;
afterEach(async () => {
  client?.destroy();
  await s?.close();
  s = null;
  client = null;
});

test("format 'switch' and token :switched say the protocol and the status actually sent", async () => {
  const log = collector();
  const app = createApp();
  app.use(logger('switch', { stream: log.stream }));
  app.use(logger(':method :url :status :upgrade :switched', { stream: log.stream }));
  app.use('/chat', websocket((ws) => ws.on('message', (m) => ws.send(String(m))), { origins: ['https://localhost'] }));
  s = await startHttp2(app as never);
  client = (await h2Connect(s.url)).session;

  const { ws } = await h2WebSocket(client, '/chat');
  await until(() => log.lines().length === 2);
  await wsClose(ws);
  expect(await wsAsk(`wss://127.0.0.1:${s.port}/chat`, 'x', { rejectUnauthorized: false })).toBe('x');
  await until(() => log.lines().length === 4);
  const refused = await h2Request(client, { ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/chat', origin: 'https://evil.example', 'sec-websocket-version': '13' });
  expect(refused.status).toBe(403);
  await until(() => log.lines().length === 6);

  const lines = log.lines().map((l) => l.replace(/\d+\.\d{3} ms$/, 'N ms'));
  expect(lines).toEqual([
    '127.0.0.1 CONNECT /chat HTTP/2.0 200 websocket/h2 N ms',
    'CONNECT /chat 200 websocket websocket/h2',
    '127.0.0.1 GET /chat HTTP/1.1 101 websocket/1.1 N ms',
    'GET /chat 101 websocket websocket/1.1',
    '127.0.0.1 CONNECT /chat HTTP/2.0 403 - N ms',
    'CONNECT /chat 403 websocket -',
  ]);
});

/** An h2 WebSocket through a logger with `closeFormat`, closed by the server (4000) on its first message. */
async function closedOverH2(format: string, closeFormat: string): Promise<ReturnType<typeof collector>> {
  const log = collector();
  const app = createApp();
  app.use(logger(format, { stream: log.stream, closeFormat }));
  app.use('/chat', websocket((ws) => ws.on('message', () => ws.close(4000, 'done'))));
  s = await startHttp2(app as never);
  client = (await h2Connect(s.url)).session;
  const { ws } = await h2WebSocket(client, '/chat');
  ws.send('bye');
  await until(() => log.lines().length === 2);
  return log;
}

test('closeFormat on HTTP/2: a second line when the WebSocket stream closes, with its close code', async () => {
  const log = await closedOverH2(':method :url :status :switched', ':method :url closed :close-code after :connection-time[0] ms');
  expect(log.lines()[0]).toBe('CONNECT /chat 200 websocket/h2');
  expect(log.lines()[1]).toMatch(/^CONNECT \/chat closed 4000 after \d+ ms$/);
});

test('closeFormat with :switched: the close line says what the switch was, on both transports', async () => {
  const log = await closedOverH2(':method :url :status', 'closed :switched :close-code');
  expect(log.lines()[1]).toBe('closed websocket/h2 4000');
  expect(await wsAsk(`wss://127.0.0.1:${s!.port}/chat`, 'bye', { rejectUnauthorized: false }).catch(() => 'closed')).toBe('closed');
  await until(() => log.lines().length === 4);
  expect(log.lines()[3]).toBe('closed websocket/1.1 4000');
});
