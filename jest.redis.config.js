'use strict';
// The store suite: needs a real redis-server on 127.0.0.1 (REDIS_URL, default redis://127.0.0.1:6379).
// .ci/run installs and starts it; locally: `apt-get install -y redis-server && redis-server --daemonize yes`.
const base = require('./jest.config.js');
/** @type {import('jest').Config} */
module.exports = {
  ...base,
  testMatch: ['**/test/**/*.redis.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
};
