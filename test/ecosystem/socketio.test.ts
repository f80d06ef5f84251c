/**
 * socket.io 4 on the same HTTP server as our stack (issue 7).
 *
 * Order of attachment: `new Server(httpServer)` first, then `app.attach(httpServer)`. socket.io's
 * `'upgrade'` listener then exists when `attach` runs, so an upgrade that no layer of ours answers
 * (`/socket.io/…`) is handed to it untouched (DESIGN.md rule 6). Its long-polling requests never
 * reach our stack: engine.io intercepts `/socket.io/` requests in the server's `'request'` event.
 * Our middleware also run inside socket.io's own hook, `io.engine.use(...)`, for both transports.
 */
import * as http from 'node:http';
import { Server as IoServer, type Socket as IoServerSocket } from 'socket.io';
import { io as ioClient, type Socket as IoClientSocket } from 'socket.io-client';
import { createApp } from '@upgradeware/dispatcher';
import { websocket } from '@upgradeware/websocket';
import { logger } from '@upgradeware/logger';
import { basicAuth } from '@upgradeware/basic-auth';
import { rawRequest, request, start, until, wsClose, wsHandshake, wsOpen, type TestServer } from '../../test-support';
import { ask, lineSink } from './helpers';

const auth = (user: string, pass: string) => 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64');

interface Connected {
  client: IoClientSocket;
  /** The transport the connection was opened with (before any upgrade). */
  transport: string;
}

/** Connect a socket.io client; resolves on 'connect', rejects on 'connect_error' (bounded). */
function connect(url: string, opts: Parameters<typeof ioClient>[1] = {}): Promise<Connected> {
  return new Promise((resolve, reject) => {
    const client = ioClient(url, { forceNew: true, reconnection: false, timeout: 4000, ...opts });
    let transport = '';
    client.io.once('open', () => {
      transport = client.io.engine.transport.name;
    });
    const timer = setTimeout(() => {
      client.close();
      reject(new Error('socket.io client: no connect in time'));
    }, 5000);
    client.once('connect', () => {
      clearTimeout(timer);
      resolve({ client, transport });
    });
    client.once('connect_error', (err) => {
      clearTimeout(timer);
      client.close();
      reject(err);
    });
  });
}

/** Emit with an acknowledgement and resolve with the server's answer (bounded). */
function emitAck(client: IoClientSocket, event: string, data: unknown): Promise<unknown> {
  return client.timeout(3000).emitWithAck(event, data);
}

/** Wait until the client has upgraded from polling to websocket (bounded). */
function upgraded(client: IoClientSocket): Promise<void> {
  return until(() => client.io.engine.transport.name === 'websocket', 4000);
}

/** Close a client and wait until the server has let go of it too (bounded). */
async function closeClient(client: IoClientSocket, io: IoServer): Promise<void> {
  client.close();
  await until(() => io.engine.clientsCount === 0, 3000);
}

async function closeIo(io: IoServer, s: TestServer): Promise<void> {
  await s.close();
  await new Promise<void>((resolve) => io.close(() => resolve()));
}

function echoHandlers(io: IoServer): void {
  io.on('connection', (socket: IoServerSocket) => {
    socket.on('echo', (data: unknown, ack: (v: unknown) => void) => ack({ data, user: socket.request.user ?? null }));
  });
}

describe('socket.io attached first, then app.attach(server)', () => {
  let s: TestServer;
  let io: IoServer;
  const log = lineSink();
  const chat = websocket((ws) => {
    ws.on('message', (m) => ws.send(`chat: ${String(m)}`));
  });

  beforeAll(async () => {
    const app = createApp();
    app.use(logger(':method :url :status', { stream: log }));
    app.use('/chat', chat);
    app.use('/page', (_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.end('page');
    });
    s = await start(app, (server) => {
      io = new IoServer(server);
      echoHandlers(io);
    });
  });
  afterAll(async () => {
    await chat.close();
    await closeIo(io, s);
  });

  test('websocket transport: socket.io gets its upgrade after our stack passes on it', async () => {
    const { client, transport } = await connect(s.url, { transports: ['websocket'] });
    try {
      expect(transport).toBe('websocket');
      expect(await emitAck(client, 'echo', 'ws-only')).toEqual({ data: 'ws-only', user: null });
    } finally {
      await closeClient(client, io);
    }
  });

  test('default transports: long-polling first, then the upgrade to websocket', async () => {
    const { client, transport } = await connect(s.url);
    try {
      expect(transport).toBe('polling');
      expect(await emitAck(client, 'echo', 1)).toEqual({ data: 1, user: null });
      await upgraded(client);
      expect(await emitAck(client, 'echo', 2)).toEqual({ data: 2, user: null });
    } finally {
      await closeClient(client, io);
    }
  });

  test('our own WebSocket endpoint and ordinary routes keep working next to socket.io', async () => {
    const { ws } = await wsOpen(`${s.wsUrl}/chat`);
    expect(await ask(ws, 'hi')).toBe('chat: hi');
    await wsClose(ws);
    expect((await request(`${s.url}/page`)).body).toBe('page');
    await until(() => log.lines.includes('GET /chat 101') && log.lines.includes('GET /page 200'));
    // socket.io's requests are not ours to log: polling never reached the stack, and the
    // websocket upgrades were handed over unanswered.
    expect(log.lines.filter((l) => l.includes('/socket.io/'))).toEqual([]);
  });

  test('an upgrade that neither our stack nor socket.io serves is ended by engine.io (destroyUpgrade)', async () => {
    // Handed over unanswered, socket.io's listener ends a socket nothing was written to after
    // its destroyUpgradeTimeout (1000 ms by default); our 404 is not sent in that case.
    const r = await rawRequest(s.port, wsHandshake('/unknown'), { timeoutMs: 4000 });
    expect(r.closed).toBe(true);
    expect(r.raw).toBe('');
    expect((await request(`${s.url}/page`)).body).toBe('page');
  });
});

describe('our middleware inside io.engine.use()', () => {
  let s: TestServer;
  let io: IoServer;

  beforeAll(async () => {
    const app = createApp();
    s = await start(app, (server) => {
      io = new IoServer(server);
      io.engine.use(basicAuth('alice', 'secret'));
      echoHandlers(io);
    });
  });
  afterAll(() => closeIo(io, s));

  test('basic-auth refuses a polling handshake without credentials with a real 401', async () => {
    const r = await request(`${s.url}/socket.io/?EIO=4&transport=polling`);
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe('Basic realm="Authorization Required"');
    await expect(connect(s.url)).rejects.toThrow();
  });

  test('basic-auth refuses a websocket-only handshake without credentials', async () => {
    await expect(connect(s.url, { transports: ['websocket'] })).rejects.toThrow();
  });

  test('with credentials both transports connect and socket.request.user is set', async () => {
    for (const transports of [['websocket'], ['polling', 'websocket']]) {
      const { client } = await connect(s.url, { transports, extraHeaders: { Authorization: auth('alice', 'secret') } });
      try {
        expect(await emitAck(client, 'echo', transports.join('+'))).toEqual({ data: transports.join('+'), user: 'alice' });
        if (transports.length === 2) {
          await upgraded(client);
          expect(await emitAck(client, 'echo', 'after upgrade')).toEqual({ data: 'after upgrade', user: 'alice' });
        }
      } finally {
        await closeClient(client, io);
      }
    }
  });
});

describe('attachment order reversed: app.attach(server), then new Server(server)', () => {
  test("socket.io's websocket upgrades are answered 404 by our stack first", async () => {
    let io!: IoServer;
    const app = createApp();
    const s = await start(null, (server) => {
      server.on('request', app);
      app.attach(server);
      io = new IoServer(server);
      echoHandlers(io);
    });
    try {
      const r = await rawRequest(s.port, wsHandshake('/socket.io/?EIO=4&transport=websocket'));
      expect(r.status).toBe(404);
      await expect(connect(s.url, { transports: ['websocket'] })).rejects.toThrow();
      // Polling is not affected: engine.io wraps the 'request' listeners itself.
      const { client, transport } = await connect(s.url, { transports: ['polling'] });
      expect(transport).toBe('polling');
      await closeClient(client, io);
    } finally {
      await closeIo(io, s);
    }
  });
});
