/**
 * One-time deprecation notices, as express-session gives them with `depd`: each message once per
 * process, silenced by `NO_DEPRECATION` naming `express-session`, `@upgradeware/session` or `*`
 * (see upgrade-response's `deprecation`).
 */
import { deprecation } from '@upgradeware/upgrade-response';

/** Emit `message` (express-session's wording where it has one) once per process. */
export const deprecate = deprecation('@upgradeware/session', 'express-session', ' deprecated ');
