// Ours, bare: the dispatcher and the WebSocket endpoint, nothing else.
import * as http from 'node:http';
import { serve, onConnection } from '../lib/server-common.mjs';
import { createApp, websocketEndpoint } from '../lib/ours.mjs';

const app = createApp();
const { endpoint, impl } = websocketEndpoint(onConnection);
app.use('/ws', endpoint);
app.use((req, res) => res.end('ok'));
const server = app.attach(http.createServer(app));
serve(server, { name: 'ours-bare', impl: `@upgradeware/dispatcher + ${impl}` });
