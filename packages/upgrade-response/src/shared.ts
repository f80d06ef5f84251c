/**
 * What the HTTP/1.1 response (index.ts) and the HTTP/2 one (http2.ts) share: their trace, their
 * brand, where a response is in its life, and the timings and bytes of refusing and aborting a
 * connection.
 */
import createDebug from 'debug';

/** What the package uses of a `debug` function (typed here: a consumer need not have debug's types). */
interface Trace {
  (format: string, ...args: unknown[]): void;
  readonly enabled: boolean;
}

/** The package's trace (`DEBUG=upgradeware:upgrade-response`), for both kinds of response. */
export const debug: Trace = createDebug('upgradeware:upgrade-response');

/**
 * `d.enabled` as a call: the getter debug puts on each of its functions, taken once. Read as a
 * property, `d.enabled` is a call of V8's generic property lookup on every request.
 */
export function enabledReader(d: { readonly enabled: boolean }): () => boolean {
  const get = Object.getOwnPropertyDescriptor(d, 'enabled')?.get;
  return typeof get === 'function' ? (get.bind(d) as () => boolean) : () => d.enabled;
}

/** `debug.enabled`, read through its getter. */
export const tracing = enabledReader(debug);

/** The brand `isUpgradeResponse()` looks for, on both kinds of response. */
export const kBrand = Symbol.for('upgradeware.UpgradeResponse');
export const EMPTY = Buffer.alloc(0);

/** Answering: the response may still end with anything. */
export const OPEN = 0;
/** `switchProtocols()` was called: the connection goes to its callback once the switch is out. */
export const SWITCHING = 1;
/** Someone else writes the switch (`externalSwitch()`): nothing of ours reaches the connection. */
export const EXTERNAL = 2;
/** Done: the connection was handed over, closed, or released. */
export const RELEASED = 3;

/** How long a refused connection (or stream) may stay half-open, waiting for the client's side. */
export const LINGER_MS = 5000;
/** A WebSocket close frame from a server: code 1011 (internal error). */
export const WS_CLOSE_1011 = Buffer.from([0x88, 0x02, 0x03, 0xf3]);
/** How long an aborted connection (or stream) is given to say goodbye before it is cut. */
export const ABORT_GRACE_MS = 1000;
