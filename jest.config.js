'use strict';
// Tests run against each package's TypeScript source: `@upgradeware/<name>` resolves to
// packages/<name>/src, so no build is needed first and no stale dist/ can be tested.
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/packages', '<rootDir>/examples', '<rootDir>/test'],
  testMatch: ['**/test/**/*.test.ts'],
  // Suites that need a real component (a browser, redis-server) run from .ci/run with their own
  // configs: jest.browser.config.js, jest.redis.config.js, jest.nginx.config.js.
  testPathIgnorePatterns: ['/node_modules/', '/dist/', '\\.browser\\.test\\.ts$', '\\.redis\\.test\\.ts$', '\\.nginx\\.test\\.ts$'],
  moduleNameMapper: {
    '^@upgradeware/([^/]+)$': '<rootDir>/packages/$1/src',
  },
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.test.json' }],
  },
  setupFiles: ['<rootDir>/test-support/quiet-deprecations.js'],
  testTimeout: 20000,
  maxWorkers: 2,
};
