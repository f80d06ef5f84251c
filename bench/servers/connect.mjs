// Peer for ordinary requests: connect 3 with the stock packages.
import * as http from 'node:http';
import connect from 'connect';
import morgan from 'morgan';
import responseTime from 'response-time';
import cookieParser from 'cookie-parser';
import session from 'express-session';
import basicAuth from 'basic-auth-connect';
import { serve, USER, PASS, SECRET, SESSION_OPTIONS, LOG_FORMAT, nullStream } from '../lib/server-common.mjs';

const app = connect();
app.use(morgan(LOG_FORMAT, { stream: nullStream }));
app.use(responseTime());
app.use(cookieParser(SECRET));
app.use(session({ ...SESSION_OPTIONS, store: new session.MemoryStore() }));
app.use(basicAuth(USER, PASS));
app.use((req, res) => res.end('ok'));
serve(http.createServer(app), { name: 'connect', impl: 'connect 3 + morgan, response-time, cookie-parser, express-session, basic-auth-connect' });
