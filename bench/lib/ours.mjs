// Our side: the dispatcher, and the WebSocket endpoint — @upgradeware/websocket when it is built,
// otherwise a minimal endpoint doing what that package does (documented `ws` API only).
import { require, tryRequire, pick } from './server-common.mjs';

export const { createApp } = require('@upgradeware/dispatcher');
const { isUpgradeResponse, supportsUpgrade } = require('@upgradeware/upgrade-response');
export { isUpgradeResponse, supportsUpgrade };

/** A minimal WebSocket endpoint on the UpgradeResponse contract (what @upgradeware/websocket does). */
function inlineWebsocket(handler) {
  const { WebSocketServer } = require('ws');
  const wss = new WebSocketServer({ noServer: true });
  const kRes = Symbol('res');
  // ws emits 'headers' with the request: the response of that request writes its headers there.
  wss.on('headers', (lines, req) => {
    const res = req[kRes];
    req[kRes] = undefined;
    if (res) lines.push(...res.externalSwitch());
  });
  return supportsUpgrade(function websocketEndpoint(req, res, next) {
    if (!isUpgradeResponse(res)) return next();
    const socket = res.socket;
    const head = res.upgradeHead;
    req[kRes] = res;
    wss.handleUpgrade(req, socket, head, (ws) => handler(ws, req));
  });
}

/** `websocket(onConnection)` and where it came from. */
export function websocketEndpoint(handler) {
  const fn = pick(tryRequire('@upgradeware/websocket'), 'websocket');
  if (fn) return { endpoint: fn(handler), impl: '@upgradeware/websocket' };
  return { endpoint: inlineWebsocket(handler), impl: 'inline endpoint (ws noServer + externalSwitch)' };
}
