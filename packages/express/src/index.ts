/**
 * @upgradeware/express
 *
 * Serve an Express app's WebSocket upgrades through the app itself: its middleware (session,
 * helmet, cors, rate limits …) and its router run for the handshake, so
 * `app.get('/chat', requireLogin, websocket(onConnection))` answers a refused login with a real
 * 401 and an accepted one with a logged 101. Ordinary requests are not touched: Node keeps handing
 * them to Express exactly as before.
 */
import * as net from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createApp, type AppOptions } from '@upgradeware/dispatcher';
import { isUpgradeResponse, supportsUpgrade, type Middleware, type NextFunction, type UpgradeAware } from '@upgradeware/upgrade-response';

/**
 * What is needed of an Express 4 or 5 application (or `express.Router()`): a request handler that
 * takes a `next` to call when nothing in it answered.
 */
export type ExpressHandler = Middleware;

/** The layer `upgradable()` returns: usable in any upgradeware (Connect-style) stack. */
export type ExpressLayer = UpgradeAware<(req: IncomingMessage, res: ServerResponse, next: NextFunction) => void>;

/**
 * Wrap an Express app (or router) as a layer that serves upgrades: `createApp().use(upgradable(app))`.
 *
 * Express replaces the prototypes of `req` and `res` with its own when a request enters it;
 * `@upgradeware/upgrade-response` copes with that inside Express. When Express lets a request go
 * on (nothing in it answered, or an error), the prototypes are put back, as Express does itself
 * when it leaves a mounted sub-app, so the layers after it see the request as it came in.
 */
export function upgradable(app: ExpressHandler): ExpressLayer {
  if (typeof app !== 'function') {
    throw new TypeError('@upgradeware/express: app must be an Express application or router (a function)');
  }
  return supportsUpgrade(function expressApp(req: IncomingMessage, res: ServerResponse, next: NextFunction): void {
    const reqProto = Object.getPrototypeOf(req) as object | null;
    const resProto = Object.getPrototypeOf(res) as object | null;
    if (isUpgradeResponse(res)) res.on('close', forgetExpressLinks);
    app(req, res, (err?: unknown) => {
      Object.setPrototypeOf(req, reqProto);
      Object.setPrototypeOf(res, resProto);
      next(err);
    });
  });
}

/**
 * Express links `req.res` and `req.next` (the router's continuation) to the request. A WebSocket
 * handler keeps `req` for as long as the connection is open, and with it the finished response and
 * the router's state: several kilobytes per open connection. Once the upgrade response has closed
 * (switched, refused or gone) nothing may use them any more, so the links are cut.
 */
function forgetExpressLinks(this: ServerResponse): void {
  const req = this.req as IncomingMessage & { res?: unknown; next?: unknown };
  if (req.res === this) req.res = undefined;
  if (typeof req.next === 'function') req.next = undefined;
}

/**
 * Serve the upgrades (WebSocket handshakes) that reach `server` through the Express app `app`,
 * which usually already serves the server's ordinary requests:
 *
 * ```js
 * const server = attachUpgrades(app.listen(3000), app);
 * ```
 *
 * An upgrade that no route of `app` answers gets a 404 (or goes to an `'upgrade'` listener the
 * server already had, e.g. socket.io's); an error gets its status. `options` are the dispatcher's
 * (`upgradeProtocols`, `upgradeTimeout`). Returns `server`.
 */
export function attachUpgrades<S extends net.Server>(server: S, app: ExpressHandler, options?: AppOptions): S {
  if (!(server instanceof net.Server)) {
    throw new TypeError('@upgradeware/express: server must be an http or https server (app.listen() returns one)');
  }
  const layer = upgradable(app);
  const upgrades = createApp(options);
  upgrades.use(layer);
  // The dispatcher's attach() is typed for http.Server; an https.Server has the same events.
  upgrades.attach(server as unknown as Parameters<typeof upgrades.attach>[0]);
  return server;
}

/**
 * Run `middleware` for ordinary requests only: on an upgrade it is passed over, as if it had
 * called `next()`. Inside an Express app every middleware also runs for upgrades; this is how to
 * keep one that must not (e.g. `express.static` on a path where a WebSocket lives) away from them.
 *
 * ```js
 * app.use(skipUpgrades(express.static('public')));
 * ```
 */
export function skipUpgrades<F extends Middleware>(middleware: F): F {
  if (typeof middleware !== 'function') {
    throw new TypeError('@upgradeware/express: skipUpgrades(middleware) needs a middleware function');
  }
  return function skipUpgrades(req: IncomingMessage, res: ServerResponse, next: NextFunction): unknown {
    if (isUpgradeResponse(res)) return next();
    return middleware(req, res, next);
  } as F;
}
