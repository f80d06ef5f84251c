// Peer: fastify 5 + @fastify/websocket, the same stock middleware run as onRequest hooks on the
// raw request/response (fastify's own request logging off: morgan does the logging, as elsewhere).
import Fastify from 'fastify';
import fastifyWebsocket from '@fastify/websocket';
import morgan from 'morgan';
import responseTime from 'response-time';
import cookieParser from 'cookie-parser';
import session from 'express-session';
import basicAuth from 'basic-auth-connect';
import { serve, onConnection, USER, PASS, SECRET, SESSION_OPTIONS, LOG_FORMAT, nullStream } from '../lib/server-common.mjs';

const fastify = Fastify({ logger: false });
await fastify.register(fastifyWebsocket);
const hooks = [
  morgan(LOG_FORMAT, { stream: nullStream }),
  responseTime(),
  cookieParser(SECRET),
  session({ ...SESSION_OPTIONS, store: new session.MemoryStore() }),
  basicAuth(USER, PASS),
];
for (const mw of hooks) {
  fastify.addHook('onRequest', (request, reply, done) => mw(request.raw, reply.raw, done));
}
fastify.get('/ws', { websocket: true }, (socket) => onConnection(socket));
fastify.get('/', (request, reply) => { reply.send('ok'); });
await fastify.ready();
serve(fastify.server, { name: 'fastify', impl: 'fastify 5 + @fastify/websocket 11, the same middleware as onRequest hooks' });
