// The demo's command-line entry: `npx --yes pnpm@10.34.9 demo` (from the repository root) builds the
// packages and runs this. PORT (default 3000) and HOST (default 127.0.0.1) choose where it listens;
// the request log goes to stdout. HTTP2=1 serves it over HTTPS with HTTP/2 (WebSockets over the
// page's HTTP/2 connection, RFC 8441), with TLS_KEY / TLS_CERT (PEM files; default: the test
// suite's self-signed localhost certificate — for trying it on this machine only).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createChatServer, DEMO_ADMIN, DEMO_USERS } from './chat.mjs';

const port = process.env.PORT === undefined || process.env.PORT === '' ? 3000 : Number(process.env.PORT);
const host = process.env.HOST || '127.0.0.1';

let tls;
if (process.env.HTTP2 === '1') {
  const fixtures = join(dirname(fileURLToPath(import.meta.url)), '../../test-support/fixtures');
  tls = {
    key: readFileSync(process.env.TLS_KEY || join(fixtures, 'localhost-key.pem')),
    cert: readFileSync(process.env.TLS_CERT || join(fixtures, 'localhost-cert.pem')),
  };
}

let chat;
try {
  chat = await createChatServer({ port, host, log: process.stdout, secret: process.env.SESSION_SECRET || undefined, tls });
} catch (err) {
  process.stderr.write(`upgradeware chat: cannot listen on ${host}:${port}: ${err.message}\n`);
  if (err.code === 'EADDRINUSE') process.stderr.write('Another program uses that port: try PORT=3001.\n');
  process.exit(1);
}

const users = Object.entries(DEMO_USERS)
  .map(([u, p]) => `${u} / ${p}`)
  .join(', ');
process.stdout.write(
  [
    '',
    `upgradeware chat listening on ${chat.url}`,
    ...(chat.others.length ? [`  bound to ${host}; from another device on your network: ${chat.others.join('  ')}`] : []),
    `  log in as:  ${users}`,
    `  admin area: ${chat.url}admin  (${DEMO_ADMIN.user} / ${DEMO_ADMIN.password})`,
    '  Ctrl-C stops it.',
    '',
    '',
  ].join('\n'),
);

let stopping = false;
const stop = () => {
  if (stopping) process.exit(1); // a second Ctrl-C: now
  stopping = true;
  chat.close().then(() => process.exit(0));
  setTimeout(() => process.exit(0), 3000).unref();
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
