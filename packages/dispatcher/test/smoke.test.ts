import { createApp } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade } from '@upgradeware/upgrade-response';
import { start, rawRequest, wsHandshake, upgradeRequest, rawConnect } from '../../../test-support';

test('smoke', async () => {
  const app = createApp({ upgradeProtocols: ['websocket', 'echo'] });
  app.use(supportsUpgrade((req, res, next) => { res.setHeader('X-Seen', '1'); next(); }));
  app.use('/echo', supportsUpgrade((req, res, next) => {
    if (!isUpgradeResponse(res)) return next();
    res.switchProtocols((socket, head) => { socket.write(head); socket.pipe(socket); });
  }));
  app.use('/deny', supportsUpgrade((req, res) => { res.statusCode = 401; res.end('no'); }));
  app.use('/connectx', (req, res) => { res.end('plain'); });
  const s = await start(app);
  try {
    const r1 = await rawRequest(s.port, wsHandshake('/deny'));
    console.log(JSON.stringify(r1));
    const r2 = await rawRequest(s.port, wsHandshake('/nothing'));
    console.log(JSON.stringify(r2));
    const r3 = await rawRequest(s.port, upgradeRequest('/connectx', 'h2c'));
    console.log(JSON.stringify(r3));
    const c = await rawConnect(s.port);
    c.socket.write(upgradeRequest('/echo', 'echo') + 'hello');
    await c.waitFor('hello');
    c.socket.write(' world');
    const all = await c.waitFor('world');
    console.log(JSON.stringify(all.toString()));
    c.close();
    const r4 = await rawRequest(s.port, 'CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n');
    console.log(JSON.stringify(r4));
  } finally { await s.close(); }
});
