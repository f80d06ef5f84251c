/**
 * Holds and replays (issue 13): the time limit closes a refused upgrade whose `end()` a session
 * store holds forever, and an upgrade to a protocol the app does not serve is replayed only when
 * Node kept every header line of it (past `maxHeadersCount` its framing could be lost: 431).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createApp } from '@upgradeware/dispatcher';
import { MemoryStore, session } from '@upgradeware/session';
import { supportsUpgrade } from '@upgradeware/upgrade-response';
import { HOST, rawConnect, rawRequest, start, wsHandshake } from '../../test-support';

describe('a session store whose set() never calls back', () => {
  test('a refused upgrade is closed by the time limit, whatever end() does; the server serves on', async () => {
    const store = Object.assign(new MemoryStore({ checkPeriod: 0 }), { set: () => undefined });
    const app = createApp({ upgradeTimeout: 200 });
    app.use(session({ secret: 's', store, resave: false, saveUninitialized: true }));
    app.use(
      supportsUpgrade((req: IncomingMessage, res: ServerResponse) => {
        res.statusCode = 401;
        res.end('who are you?'); // held: the session waits for set() to save the new session
      }),
    );
    const server = await start(app);
    try {
      const started = Date.now();
      const conns = await Promise.all(Array.from({ length: 20 }, () => rawConnect(server.port)));
      for (const c of conns) c.socket.write(wsHandshake('/'));
      const closed = await Promise.all(conns.map((c) => c.waitClose(4000)));
      expect(closed.every(Boolean)).toBe(true);
      // The time limit (200 ms) plus the grace given to its 503 (1 s), not more.
      expect(Date.now() - started).toBeLessThan(3000);
      for (const c of conns) c.close();
      const conns2 = await new Promise<number>((r) => server.server.getConnections((_e, n) => r(n)));
      expect(conns2).toBe(0);
    } finally {
      await server.close();
    }
  });
});

describe('rule 7 replay and Node\'s header limit', () => {
  const lines = (n: number) => Array.from({ length: n }, (_, i) => `h${i}:v\r\n`).join('');
  const h2cPost = (filler: number) =>
    `POST /form HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: h2c\r\nConnection: Upgrade, close\r\n${lines(filler)}Content-Length: 5\r\n\r\nhello`;

  async function server() {
    const app = createApp();
    app.use((req: IncomingMessage, res: ServerResponse) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => res.end(`body=${body}`));
    });
    return start(app);
  }

  test('under the limit: replayed, framing and body intact', async () => {
    const s = await server();
    try {
      const res = await rawRequest(s.port, h2cPost(900));
      expect(res.status).toBe(200);
      expect(res.body).toBe('body=hello');
    } finally {
      await s.close();
    }
  });

  test('past it: a clear 431 and a closed connection, never a mis-framed replay; the server serves on', async () => {
    const s = await server();
    try {
      const res = await rawRequest(s.port, h2cPost(1500));
      expect(res.status).toBe(431);
      expect(res.body).toContain('<pre>Request Header Fields Too Large</pre>'); // ours, not Node's size limit
      expect(res.headers['connection']).toEqual(['close']);
      expect(res.closed).toBe(true);
      const next = await rawRequest(s.port, h2cPost(10));
      expect(next.body).toBe('body=hello');
    } finally {
      await s.close();
    }
  });

  test('a server with maxHeadersCount = 0 (no limit) replays everything', async () => {
    const s = await server();
    s.server.maxHeadersCount = 0;
    try {
      const res = await rawRequest(s.port, h2cPost(1500));
      expect(res.status).toBe(200);
      expect(res.body).toBe('body=hello');
    } finally {
      await s.close();
    }
  });
});
