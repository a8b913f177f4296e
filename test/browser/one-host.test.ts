/**
 * Chromium -> nginx (deploy/nginx/frappe-single-host.conf) -> one gateway host
 * with three workers (sticky routing inside the host) -> Redis.
 */
import { describe } from 'node:test';
import { deskScenarios, useBrowserStack } from './scenarios';

describe('browser e2e: one gateway host with 3 workers behind frappe-single-host.conf', () => {
  const stackOf = useBrowserStack('one-host');
  deskScenarios('one-host', stackOf);
});
