'use strict';
// The reverse-proxy suite: two app instances behind Debian's nginx, with Debian's redis-server.
// .ci/run installs both and runs it; locally: `apt-get install -y nginx redis-server`, then
// `node node_modules/jest/bin/jest.js -c jest.nginx.config.js`.
const base = require('./jest.config.js');
/** @type {import('jest').Config} */
module.exports = {
  ...base,
  testMatch: ['**/test/**/*.nginx.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  maxWorkers: 1,
};
