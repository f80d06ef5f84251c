// Imported before the stock packages: depd decides when a module loads whether its deprecation
// warnings (morgan's `default` format, response-time's number argument) are printed.
process.noDeprecation = true;
