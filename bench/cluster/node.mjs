// One app instance of the cluster bench: sessions in Redis (connect-redis), a hub on Redis, a
// WebSocket endpoint whose sockets join `session:<id>` and `chat`. Started as a child process by
// bench/cluster/run.mjs (REDIS_URL, MODE, CHANNEL, PREFIX in the environment); prints its port.
// Runs on the built packages (tsc -b).
import { createClient } from 'redis';
import { RedisStore } from 'connect-redis';
import { createApp } from '../../packages/dispatcher/dist/index.js';
import { supportsUpgrade } from '../../packages/upgrade-response/dist/index.js';
import { session } from '../../packages/session/dist/index.js';
import { websocket } from '../../packages/websocket/dist/index.js';
import { createHub, redisTransport } from '../../packages/hub/dist/index.js';

export async function startNode({ url, mode, channel, prefix, name }) {
  const client = createClient({ url });
  client.on('error', () => undefined);
  const sub = client.duplicate();
  sub.on('error', () => undefined);
  await Promise.all([client.connect(), sub.connect()]);
  const store = new RedisStore({ client, prefix });
  const hub = createHub({ transport: redisTransport({ publisher: client, subscriber: sub, mode, channel }) });
  await hub.ready;
  hub.watchSessions(store);
  const app = createApp();
  app.use(session({ secret: 'bench', resave: false, saveUninitialized: false, store }));
  app.use('/login', (req, res) => {
    req.session.user = 'u';
    res.end(name);
  });
  app.use(
    '/chat',
    supportsUpgrade((req, res, next) => {
      if (req.session?.user) return next();
      res.statusCode = 401;
      res.end();
    }),
  );
  const endpoint = websocket(() => undefined, { hub, rooms: () => 'chat' });
  app.use('/chat', endpoint);
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return {
    hub,
    store,
    port: server.address().port,
    async close() {
      await endpoint.close();
      await new Promise((resolve) => server.close(resolve));
      await hub.close();
      client.destroy();
      sub.destroy();
    },
  };
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop())) {
  const { REDIS_URL, MODE, CHANNEL, PREFIX } = process.env;
  const node = await startNode({ url: REDIS_URL, mode: MODE, channel: CHANNEL, prefix: PREFIX, name: 'B' });
  process.stdout.write(`${node.port}\n`);
  process.on('SIGTERM', () => node.close().then(() => process.exit(0)));
  process.on('disconnect', () => process.exit(0));
}
