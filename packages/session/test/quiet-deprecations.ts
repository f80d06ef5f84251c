// Imported first by suites that load express-session: depd decides whether to print when the
// package is loaded, so --no-deprecation has to be in force before that import runs.
process.noDeprecation = true;
export {};
