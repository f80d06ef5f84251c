'use strict';
// The demo's browser suite: needs Debian's chromium at /usr/bin/chromium (driven by playwright-core).
// .ci/run installs and runs it; locally: `apt-get install -y chromium`, then
// `node node_modules/jest/bin/jest.js -c jest.browser.config.js`. Screenshots of failed steps go to
// test-results/browser/.
const base = require('./jest.config.js');
/** @type {import('jest').Config} */
module.exports = {
  ...base,
  testMatch: ['**/test/**/*.browser.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  testTimeout: 60000,
  maxWorkers: 1,
};
