'use strict';
// Every jest worker: deprecation notices (express-session's, morgan's and our ports' own, for the
// option sets the suites use on purpose) are not printed on the test run's output. The suites that
// check those notices turn them back on for themselves or run a child process.
process.noDeprecation = true;
