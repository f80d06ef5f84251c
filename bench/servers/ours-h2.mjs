// Ours over HTTP/2 and HTTP/1.1 on one TLS server (app.listenHttp2's settings): the dispatcher and
// the WebSocket endpoint, nothing else — the same app as ours-bare. Extended CONNECT (RFC 8441)
// and HTTP/1.1 upgrades reach the same endpoint.
import * as http2 from 'node:http2';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { serve, onConnection } from '../lib/server-common.mjs';
import { createApp, websocketEndpoint } from '../lib/ours.mjs';

// The test suite's self-signed localhost certificate: loopback only.
const fixtures = fileURLToPath(new URL('../../test-support/fixtures/', import.meta.url));
const tls = { key: readFileSync(fixtures + 'localhost-key.pem'), cert: readFileSync(fixtures + 'localhost-cert.pem') };

const app = createApp();
const { endpoint, impl } = websocketEndpoint(onConnection);
app.use('/ws', endpoint);
app.use((req, res) => res.end('ok'));
const server = app.attach(http2.createSecureServer({ ...tls, allowHTTP1: true, settings: { enableConnectProtocol: true } }, app));
serve(server, { name: 'ours-h2', impl: `@upgradeware/dispatcher + ${impl}, HTTP/2 + HTTP/1.1 over TLS` });
