/** vhost on an HTTP/2 server: the host of an HTTP/2 request is its `:authority`. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as http2 from 'node:http2';
import { createApp } from '@upgradeware/dispatcher';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { vhost } from '@upgradeware/vhost';
import { h2Connect, h2Request, startHttp2, type Http2TestServer } from '../../../test-support/http2';

let s: Http2TestServer | null = null;
let client: http2.ClientHttp2Session | null = null;
afterEach(async () => {
  client?.destroy();
  await s?.close();
});

test('ordinary requests and extended CONNECT over HTTP/2 match by :authority', async () => {
  const app = createApp();
  app.use(
    vhost(
      '*.example.test',
      supportsUpgrade((req: IncomingMessage, res: ServerResponse) => {
        res.statusCode = 200;
        res.end(`hello ${req.vhost?.[0]} over ${req.httpVersion}`);
      }),
    ),
  );
  app.use((_req, res) => {
    res.statusCode = 404;
    res.end('no host matched');
  });
  s = await startHttp2(app as never);
  client = (await h2Connect(s.url)).session;
  const page = await h2Request(client, { ':path': '/', ':authority': 'chat.example.test' });
  expect(page.body.toString()).toBe('hello chat over 2.0');
  const connect = await h2Request(client, { ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'https', ':path': '/', ':authority': 'chat.example.test' });
  expect(connect.status).toBe(200);
  const other = await h2Request(client, { ':path': '/', ':authority': 'elsewhere.test' });
  expect(other.body.toString()).toBe('no host matched');
});
