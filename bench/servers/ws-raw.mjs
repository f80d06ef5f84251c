// Baseline: `ws` alone, `noServer` + `handleUpgrade` on the server's 'upgrade' event.
import * as http from 'node:http';
import { WebSocketServer } from 'ws';
import { serve, onConnection } from '../lib/server-common.mjs';

const wss = new WebSocketServer({ noServer: true });
const server = http.createServer((req, res) => res.end('ok'));
server.on('upgrade', (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, onConnection);
});
serve(server, { name: 'ws-raw', impl: 'ws noServer + handleUpgrade' });
