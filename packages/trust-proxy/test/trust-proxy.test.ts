/**
 * trustProxy() side by side with Express's `trust proxy` on the same requests, then what it is
 * for: the logger logs the client's address, the session sets Secure cookies behind TLS
 * termination, the WebSocket Origin guard compares against the public origin — and a peer that is
 * not a trusted proxy cannot spoof any of it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import express from 'express';
import { createApp } from '@upgradeware/dispatcher';
import { logger } from '@upgradeware/logger';
import { session } from '@upgradeware/session';
import { websocket } from '@upgradeware/websocket';
import { compileTrust, publicOrigin, sameOrigin, trustProxy, type TrustValue } from '@upgradeware/trust-proxy';
import { nextMessage, request, start, wsClose, wsOpen, type TestServer } from '../../../test-support';

const FIELDS = ['ip', 'ips', 'protocol', 'secure', 'host', 'hostname'] as const;

function pick(req: IncomingMessage): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of FIELDS) out[f] = (req as unknown as Record<string, unknown>)[f];
  return out;
}

async function ours(trust: TrustValue): Promise<TestServer> {
  const app = createApp();
  app.use(trustProxy(trust));
  app.use((req: IncomingMessage, res: ServerResponse) => {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify(pick(req)));
  });
  return start(app);
}

async function theirs(trust: TrustValue): Promise<TestServer> {
  const app = express();
  app.set('trust proxy', trust);
  app.use((req, res) => {
    res.json(pick(req));
  });
  return start(app as unknown as Parameters<typeof start>[0]);
}

const HEADERS: Array<Record<string, string>> = [
  {},
  { 'x-forwarded-for': '203.0.113.7' },
  { 'x-forwarded-for': '203.0.113.7, 10.0.0.2', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'chat.example.com' },
  { 'x-forwarded-for': 'spoofed, 198.51.100.1, 10.0.0.2, 10.0.0.3', 'x-forwarded-proto': 'HTTPS, http' },
  { 'x-forwarded-for': 'not an address', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'a.example:8443' },
  { 'x-forwarded-host': '[::1]:3000', 'x-forwarded-proto': 'https' },
];

describe('the same answers as Express', () => {
  test.each<[string, TrustValue]>([
    ['false', false],
    ['true', true],
    ['1 hop', 1],
    ['3 hops', 3],
    ['loopback', 'loopback'],
    ['loopback and a subnet', 'loopback, 10.0.0.0/8'],
    ['a list', ['127.0.0.1', '10.0.0.2']],
    ['somebody else', '192.0.2.1'],
  ])('trust %s', async (_name, trust) => {
    const a = await ours(trust);
    const b = await theirs(trust);
    try {
      for (const extra of HEADERS) {
        // One Host for both servers (they listen on different ports).
        const headers = { host: 'app.example:8080', ...extra };
        const mine = JSON.parse((await request(a.url, { headers })).body) as Record<string, unknown>;
        const express = JSON.parse((await request(b.url, { headers })).body) as Record<string, unknown>;
        expect({ headers, ...mine }).toEqual({ headers, ...express });
      }
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('a function is used as it is; bad values are TypeErrors naming the package', () => {
    const fn = (addr: string) => addr === '127.0.0.1';
    expect(compileTrust(fn)).toBe(fn);
    expect(() => trustProxy('not-an-ip')).toThrow(/^@upgradeware\/trust-proxy: trust: /);
    expect(() => trustProxy(-1)).toThrow(/hops must be an integer/);
    expect(() => trustProxy({} as never)).toThrow(/trust must be/);
    expect(() => trustProxy([1] as never)).toThrow(/trust must be/);
  });
});

describe('behind a TLS-terminating proxy', () => {
  async function stack(trust: TrustValue) {
    const lines: string[] = [];
    const app = createApp();
    app.use(trustProxy(trust));
    app.use(logger(':remote-addr :method :url :status', { stream: { write: (line: string) => void lines.push(line.trim()) } }));
    app.use(session({ secret: 's', resave: false, saveUninitialized: true, cookie: { secure: true } }));
    const endpoint = websocket(
      (ws, req) => ws.send(`${req.ip} ${req.protocol} ${publicOrigin(req)}`),
      { origins: sameOrigin },
    );
    app.use('/ws', endpoint);
    app.use((_req: IncomingMessage, res: ServerResponse) => res.end('ok'));
    const server = await start(app);
    return {
      server,
      lines,
      close: async () => {
        await endpoint.close();
        await server.close();
      },
    };
  }

  const proxied = { 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'chat.example.com' };

  test("an upgrade's peer is read without Node's cache of it: nothing of it stays on the socket ws holds", async () => {
    const app = createApp();
    app.use(trustProxy('loopback'));
    const socketKeys: unknown[] = [];
    const endpoint = websocket((ws, req) => {
      socketKeys.push(Object.keys(req.socket));
      ws.send(`${req.ip}`);
    });
    app.use('/ws', endpoint);
    const server = await start(app);
    try {
      const { ws } = await wsOpen(`${server.wsUrl}/ws`, { headers: proxied });
      expect(await nextMessage(ws)).toBe('203.0.113.7');
      expect(socketKeys[0]).not.toContain('_peername');
      await wsClose(ws);
    } finally {
      await endpoint.close();
      await server.close();
    }
  });

  test('trusted: the log has the client, the session cookie is Secure, the Origin guard takes the public origin', async () => {
    const s = await stack('loopback');
    try {
      const res = await request(`${s.server.url}/`, { headers: proxied });
      expect(res.status).toBe(200);
      const cookie = String(res.headers['set-cookie']);
      expect(cookie).toMatch(/^connect\.sid=.*; Secure/);
      const { ws } = await wsOpen(`${s.server.wsUrl}/ws`, { headers: { ...proxied, origin: 'https://chat.example.com' } });
      expect(await nextMessage(ws)).toBe('203.0.113.7 https https://chat.example.com');
      await wsClose(ws);
      await expect(wsOpen(`${s.server.wsUrl}/ws`, { headers: { ...proxied, origin: s.server.url } })).rejects.toMatchObject({ status: 403 });
      await new Promise((r) => setTimeout(r, 50));
      expect(s.lines).toEqual(['203.0.113.7 GET / 200', '203.0.113.7 GET /ws 101', '203.0.113.7 GET /ws 403']);
    } finally {
      await s.close();
    }
  });

  test('not trusted: spoofed headers are ignored — the peer is logged, no Secure cookie goes over plain HTTP, the spoofed origin is refused', async () => {
    const s = await stack('10.9.9.9');
    try {
      const res = await request(`${s.server.url}/`, { headers: proxied });
      expect(res.status).toBe(200);
      expect(res.headers['set-cookie']).toBeUndefined();
      await expect(wsOpen(`${s.server.wsUrl}/ws`, { headers: { ...proxied, origin: 'https://chat.example.com' } })).rejects.toMatchObject({ status: 403 });
      const { ws } = await wsOpen(`${s.server.wsUrl}/ws`, { headers: { ...proxied, origin: s.server.url } });
      expect(await nextMessage(ws)).toBe(`127.0.0.1 http ${s.server.url}`);
      await wsClose(ws);
      await new Promise((r) => setTimeout(r, 50));
      expect(s.lines).toEqual(['127.0.0.1 GET / 200', '127.0.0.1 GET /ws 403', '127.0.0.1 GET /ws 101']);
    } finally {
      await s.close();
    }
  });
});

describe('sameOrigin and opaque origins', () => {
  test('an opaque Origin ("null", file:) never matches, not even an opaque public origin from an odd X-Forwarded-Proto', () => {
    const req = { headers: { host: 'chat.example.com' }, socket: {}, protocol: 'foo', host: 'chat.example.com' } as unknown as IncomingMessage;
    expect(publicOrigin(req)).toBe('foo://chat.example.com');
    expect(sameOrigin('file:///x', req)).toBe(false);
    expect(sameOrigin('null', req)).toBe(false);
    const plain = { headers: { host: 'chat.example.com' }, socket: {}, protocol: 'https', host: 'chat.example.com' } as unknown as IncomingMessage;
    expect(sameOrigin('https://chat.example.com', plain)).toBe(true);
    expect(sameOrigin('https://CHAT.example.com:443', plain)).toBe(true);
    expect(sameOrigin('file:///x', plain)).toBe(false);
  });
});
