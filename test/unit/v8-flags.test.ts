/**
 * The gateway's V8 flags (V8_FLAGS in src/cluster/supervisor.ts): workers
 * get each one the operator did not set, and the places that start a
 * primary (the container image's NODE_OPTIONS, `npm start`) carry the same.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { missingV8Flags, V8_FLAGS, workerExecArgv } from '../../src/cluster/supervisor';

const root = path.join(__dirname, '..', '..');

describe('V8_FLAGS', () => {
  test('a worker gets the flags on top of the primary execArgv', () => {
    assert.deepEqual(workerExecArgv(['--inspect=127.0.0.1:0'], undefined), ['--inspect=127.0.0.1:0', ...V8_FLAGS]);
    assert.deepEqual(workerExecArgv([], ''), [...V8_FLAGS]);
  });

  test("an operator's value wins, however it is spelt and wherever it is set", () => {
    assert.deepEqual(missingV8Flags(['--max-semi-space-size=16'], undefined), []);
    assert.deepEqual(missingV8Flags([], '--max-old-space-size=384  --max_semi_space_size=8'), []);
    assert.deepEqual(workerExecArgv(['--max-semi-space-size', '8'], undefined), ['--max-semi-space-size', '8']);
    assert.deepEqual(missingV8Flags([], '--max-old-space-size=384'), [...V8_FLAGS], 'another flag does not count');
  });

  test('the container image and npm start set the same flags for the primary', () => {
    const env = /NODE_OPTIONS=(\S+)/.exec(readFileSync(path.join(root, 'Dockerfile'), 'utf8'))?.[1];
    assert.equal(env, V8_FLAGS.join(' '));
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    assert.match(pkg.scripts['start'] ?? '', new RegExp(`node ${V8_FLAGS.join(' ')} dist/main\\.js`));
  });
});
