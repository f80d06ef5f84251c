// Peer for the session-saving full stack: fastify 5 + @fastify/websocket, morgan and
// response-time as onRequest hooks, fastify's own cookie and session plugins (@fastify/cookie,
// @fastify/session with `saveUninitialized: true` and a MemoryStore), and basic auth as an
// onRequest hook. On a WebSocket route @fastify/websocket hijacks the reply, so its session is
// created but never saved and no cookie rides on the 101: this stack does less per handshake
// than ours-save, which saves a session and sends its cookie on every 101.
import Fastify from 'fastify';
import fastifyWebsocket from '@fastify/websocket';
import fastifyCookie from '@fastify/cookie';
import fastifySession from '@fastify/session';
import morgan from 'morgan';
import responseTime from 'response-time';
import basicAuth from 'basic-auth-connect';
import { serve, onConnection, USER, PASS, SECRET, LOG_FORMAT, nullStream } from '../lib/server-common.mjs';

const fastify = Fastify({ logger: false });
await fastify.register(fastifyWebsocket);
for (const mw of [morgan(LOG_FORMAT, { stream: nullStream }), responseTime()]) {
  fastify.addHook('onRequest', (request, reply, done) => mw(request.raw, reply.raw, done));
}
await fastify.register(fastifyCookie);
await fastify.register(fastifySession, {
  // @fastify/session needs a secret of at least 32 characters.
  secret: `${SECRET} (fastify)`.padEnd(32, '.'),
  cookieName: 'sid',
  saveUninitialized: true,
  rolling: false,
  cookie: { secure: false, path: '/', httpOnly: true },
});
const auth = basicAuth(USER, PASS);
fastify.addHook('onRequest', (request, reply, done) => auth(request.raw, reply.raw, done));
fastify.get('/ws', { websocket: true }, (socket) => onConnection(socket));
fastify.get('/', (request, reply) => { reply.send('ok'); });
await fastify.ready();
serve(fastify.server, {
  name: 'fastify-session',
  impl: 'fastify 5 + @fastify/websocket 11, morgan + response-time + basic auth as onRequest hooks, @fastify/cookie + @fastify/session (saveUninitialized: true)',
});
