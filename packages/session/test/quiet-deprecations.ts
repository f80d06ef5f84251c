// Imported before express-session: depd decides when a module loads whether its deprecation
// notices (undefined resave / saveUninitialized, req.secret — option sets compared on purpose
// in parity.test.ts) are printed.
process.noDeprecation = true;
