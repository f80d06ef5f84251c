// Peer: express 5 + express-ws, with morgan, response-time, cookie-parser, express-session and
// basic-auth-connect — the same middleware and options as our full stack.
import * as http from 'node:http';
import express from 'express';
import expressWs from 'express-ws';
import morgan from 'morgan';
import responseTime from 'response-time';
import cookieParser from 'cookie-parser';
import session from 'express-session';
import basicAuth from 'basic-auth-connect';
import { serve, onConnection, USER, PASS, SECRET, SESSION_OPTIONS, LOG_FORMAT, nullStream } from '../lib/server-common.mjs';

const app = express();
const server = http.createServer(app);
expressWs(app, server);
app.use(morgan(LOG_FORMAT, { stream: nullStream }));
app.use(responseTime());
app.use(cookieParser(SECRET));
app.use(session({ ...SESSION_OPTIONS, store: new session.MemoryStore() }));
app.use(basicAuth(USER, PASS));
app.ws('/ws', (ws) => onConnection(ws));
app.get('/', (req, res) => res.end('ok'));
serve(server, { name: 'express-ws', impl: 'express 5 + express-ws 5 + morgan, response-time, cookie-parser, express-session, basic-auth-connect' });
