/**
 * @upgradeware/response-time
 *
 * Measures the time from this middleware to the moment the response head is written and hands
 * it to a callback, by default one that sets `X-Response-Time`. Works the same on ordinary
 * requests and on upgrades: the header rides on the 101 (or on the rejection).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import onHeaders from 'on-headers';
import { deprecation, supportsUpgrade, type NextFunction, type UpgradeAware } from '@upgradeware/upgrade-response';

/** Receives the elapsed time in milliseconds, just before the response head is written. */
export type ResponseTimeCallback<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse> = {
  callback(req: Req, res: Res, time: number): void;
}['callback'];

export interface ResponseTimeOptions {
  /** Digits after the decimal point (default 3). */
  digits?: number;
  /** The response header to set (default `X-Response-Time`). */
  header?: string;
  /** Append `ms` to the value (default true). */
  suffix?: boolean;
}

/** The middleware `responseTime()` returns. */
export type ResponseTimeMiddleware<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse> =
  UpgradeAware<(req: Req, res: Res, next: NextFunction) => void>;

const NAME = '@upgradeware/response-time';
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const OPTIONS = new Set(['digits', 'header', 'suffix']);
/**
 * A deprecation warning, once per message, as depd prints response-time's: silenced by
 * `--no-deprecation` and by `NO_DEPRECATION` naming `response-time`, this package or `*`.
 */
const deprecate = deprecation(NAME, 'response-time', ': ');

/**
 * `responseTime(options?)` sets a header with the response time; `responseTime(fn)` calls
 * `fn(req, res, ms)` instead. A number is taken as `{ digits }`, as response-time 2 does.
 */
export function responseTime<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse>(
  options?: ResponseTimeOptions | ResponseTimeCallback<Req, Res> | number,
): ResponseTimeMiddleware<Req, Res> {
  if (typeof options === 'number') {
    // response-time 2's back-compat form, deprecated there with these words.
    deprecate(`number argument: use {digits: ${JSON.stringify(options)}} instead`);
  }
  const report: ResponseTimeCallback<Req, Res> =
    typeof options === 'function'
      ? options
      : headerSetter(typeof options === 'number' ? { digits: options } : options);

  return supportsUpgrade(function responseTime(req: Req, res: Res, next: NextFunction): void {
    const timing = new Timing<Req, Res>(req, res, process.hrtime.bigint(), report);
    onHeaders(res, timing.onResponseHead.bind(timing));
    next();
  });
}

/**
 * One response's timer. Its on-headers listener is a method bound to it, not a closure made per
 * request, which V8 would compile again after every full garbage collection (DESIGN.md, "Facts
 * measured").
 */
class Timing<Req extends IncomingMessage, Res extends ServerResponse> {
  constructor(
    private readonly req: Req,
    private readonly res: Res,
    private readonly start: bigint,
    private readonly report: ResponseTimeCallback<Req, Res>,
  ) {}

  onResponseHead(): void {
    this.report(this.req, this.res, Number(process.hrtime.bigint() - this.start) / 1e6);
  }
}

function headerSetter(options: ResponseTimeOptions | undefined): ResponseTimeCallback {
  if (options === undefined || options === null) options = {};
  if (typeof options !== 'object') throw new TypeError(`${NAME}: options must be an object, a function or a number`);
  for (const key of Object.keys(options)) {
    if (!OPTIONS.has(key)) throw new TypeError(`${NAME}: unknown option ${JSON.stringify(key)}`);
  }
  const { digits = 3, header = 'X-Response-Time', suffix = true } = options;
  if (typeof digits !== 'number' || !Number.isInteger(digits) || digits < 0 || digits > 100) {
    throw new TypeError(`${NAME}: option digits must be an integer from 0 to 100`);
  }
  if (typeof header !== 'string' || !HEADER_NAME.test(header)) {
    throw new TypeError(`${NAME}: option header must be a valid header name`);
  }
  if (typeof suffix !== 'boolean') throw new TypeError(`${NAME}: option suffix must be a boolean`);
  const unit = suffix ? 'ms' : '';
  return function setHeader(_req: IncomingMessage, res: ServerResponse, time: number): void {
    // A value set earlier (by the app, or by another timer) wins.
    if (res.getHeader(header)) return;
    res.setHeader(header, time.toFixed(digits) + unit);
  };
}
