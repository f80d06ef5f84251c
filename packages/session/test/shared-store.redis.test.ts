/**
 * A real shared store: the published connect-redis store and the redis client against a real
 * redis-server (REDIS_URL, default redis://127.0.0.1:6379). Two app instances on two ports share
 * it: log in over HTTP on A, upgrade on B with that cookie, log out on A, the next upgrade on B
 * gets 401. Run with `npx jest -c jest.redis.config.js`.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createClient } from 'redis';
import { RedisStore } from 'connect-redis';
import { createApp } from '@upgradeware/dispatcher';
import type { NextFunction } from '@upgradeware/upgrade-response';
import { session } from '@upgradeware/session';
import { nextMessage, rawRequest, request, start, wsClose, wsHandshake, wsOpen, WsRefused, type TestServer } from '../../../test-support';
import { loginRequired } from '../../../test-support/endpoints';
import { cookiePairs, wsEndpoint } from './helpers';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `upgradeware-test:${randomBytes(6).toString('hex')}:`;

type Client = ReturnType<typeof createClient>;

async function instance(client: Client): Promise<{ server: TestServer; close(): Promise<void> }> {
  const store = new RedisStore({ client, prefix });
  const app = createApp();
  app.use(session({ secret: 'shared secret', resave: false, saveUninitialized: false, store, cookie: { maxAge: 60_000 } }));
  app.use('/login', (req: IncomingMessage, res: ServerResponse, next: NextFunction) => {
    req.session!.regenerate((err) => {
      if (err) return next(err);
      req.session!.user = 'alice';
      res.end('welcome');
    });
  });
  app.use('/logout', (req: IncomingMessage, res: ServerResponse, next: NextFunction) => {
    req.session!.destroy((err) => (err ? next(err) : res.end('bye')));
  });
  app.use('/chat', loginRequired);
  const endpoint = wsEndpoint((ws, req) => {
    ws.on('message', () => ws.send(`user ${req.session?.user ?? ''}`));
  });
  app.use('/chat', endpoint.handle);
  const server = await start(app);
  return {
    server,
    close: async () => {
      endpoint.close();
      await server.close();
    },
  };
}

describe('sessions shared by two instances through connect-redis', () => {
  let client: Client;

  beforeAll(async () => {
    client = createClient({ url: REDIS_URL, socket: { connectTimeout: 3000, reconnectStrategy: false } });
    client.on('error', () => undefined);
    await client.connect();
  });

  afterAll(async () => {
    if (!client?.isOpen) return;
    const keys: string[] = [];
    for await (const batch of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 100 })) keys.push(...batch);
    if (keys.length > 0) await client.del(keys);
    await client.quit();
  });

  test('log in on A, upgrade on B, log out on A, B refuses', async () => {
    const a = await instance(client);
    const b = await instance(client);
    try {
      const login = await request(`${a.server.url}/login`);
      expect(login.status).toBe(200);
      const cookie = cookiePairs(login.headers['set-cookie'])[0]!;
      expect(cookie).toMatch(/^connect\.sid=s%3A/);
      const sid = decodeURIComponent(cookie.split('=')[1]!).slice(2).split('.')[0]!;
      // The session is in redis, under our prefix.
      const raw = await client.get(`${prefix}${sid}`);
      expect(JSON.parse(raw!)).toMatchObject({ user: 'alice' });

      const { ws } = await wsOpen(`${b.server.wsUrl}/chat`, { headers: { cookie } });
      const answer = nextMessage(ws);
      ws.send('who');
      expect(await answer).toBe('user alice');
      await wsClose(ws);

      expect((await request(`${a.server.url}/logout`, { headers: { cookie } })).body).toBe('bye');
      expect(await client.get(`${prefix}${sid}`)).toBeNull();

      const err = await wsOpen(`${b.server.wsUrl}/chat`, { headers: { cookie } }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(WsRefused);
      expect((err as WsRefused).status).toBe(401);
      const raw401 = await rawRequest(b.server.port, wsHandshake('/chat', { Cookie: cookie }));
      expect(raw401.status).toBe(401);
      expect(raw401.body).toBe('login first');
    } finally {
      await a.close();
      await b.close();
    }
  });
});
