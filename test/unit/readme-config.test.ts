import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { configTable } from '../../scripts/config-table';
import { OPTIONS } from '../../src/config/schema';

const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8');

test('the README configuration table is the one generated from the schema (npx tsx scripts/config-table.ts)', () => {
  const m = /<!-- config-table:start -->\n([\s\S]*?)<!-- config-table:end -->/.exec(readme);
  assert.ok(m, 'README has the config-table markers');
  assert.equal(m[1]?.trim(), configTable().trim());
});

test('every option of the configuration contract is documented', () => {
  const envs: string[] = Object.values(OPTIONS).map((o) => o.env);
  for (const v of [
    'GATEWAY_PORT',
    'GATEWAY_OPS_PORT',
    'GATEWAY_WORKERS',
    'GATEWAY_REDIS_URL',
    'GATEWAY_EVENTS_CHANNEL',
    'GATEWAY_BACKEND_URL',
    'GATEWAY_DEFAULT_SITE',
    'GATEWAY_PUBLISH_TOKEN',
    'GATEWAY_BENCH_PATH',
  ]) {
    assert.ok(envs.includes(v), `${v} is in the schema`);
    assert.ok(readme.includes(`\`${v}\``), `${v} is in the README`);
  }
});

test('the README starts with the two commands', () => {
  const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
  assert.match(firstBlock, /^npm ci && npm start\b/m);
  assert.match(firstBlock, /^npm test\b/m);
});
