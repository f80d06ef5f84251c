// The first upgradeware demo: one stack serving a page, an echo protocol through
// res.switchProtocols(), and a refusal that is a real HTTP response. The chat demo replaces it.
import { createApp } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade } from '@upgradeware/upgrade-response';

const port = Number(process.env.PORT ?? 3000);
const host = '127.0.0.1';

const app = createApp({ upgradeProtocols: ['websocket', 'echo'] });

// Runs for every request, upgrades included (it opted in): the header rides on the 101 too.
app.use(
  supportsUpgrade((req, res, next) => {
    res.setHeader('X-Served-By', 'upgradeware');
    next();
  }),
);

// Upgrades only where a token is given: a refusal is a real 401, not a silent close.
app.use(
  '/echo',
  supportsUpgrade((req, res, next) => {
    if (!isUpgradeResponse(res)) return next();
    if (!new URL(req.url, 'http://x').searchParams.has('token')) {
      res.statusCode = 401;
      res.end('a token is required\n');
      return;
    }
    res.switchProtocols((socket, head) => {
      socket.write(head);
      socket.pipe(socket);
    });
  }),
);

app.use('/', (req, res) => {
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.end(
    [
      'upgradeware demo',
      '',
      `An ordinary request: curl http://${host}:${port}/`,
      `An echo upgrade:     curl -i -N -H 'Upgrade: echo' -H 'Connection: Upgrade' 'http://${host}:${port}/echo?token=1'`,
      `A refused upgrade:   curl -i -H 'Upgrade: echo' -H 'Connection: Upgrade' http://${host}:${port}/echo`,
      '',
    ].join('\n'),
  );
});

const server = app.listen(port, host, () => {
  process.stdout.write(`upgradeware demo listening on http://${host}:${port}/\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
