/**
 * Chromium -> nginx (deploy/nginx/frappe-multi-host.conf: cookie-hash upstream
 * whose stickiness survives long-polling) -> two gateway hosts with two
 * workers each, sharing Redis -> Redis. Includes the host restart.
 */
import { describe } from 'node:test';
import { deskScenarios, restartScenarios, useBrowserStack } from './scenarios';

describe('browser e2e: two gateway hosts with 2 workers each behind frappe-multi-host.conf', () => {
  const stackOf = useBrowserStack('two-hosts');
  deskScenarios('two-hosts', stackOf);
  restartScenarios(stackOf);
});
