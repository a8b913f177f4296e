/** The command line (README "Command line"): the server by default, help, version, check-config, usage errors. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { parseArgs } from '../../src/cli/args';
import { effectiveConfigText, helpText, packageVersion } from '../../src/cli/commands';
import { loadConfig, OPTIONS } from '../../src/config';

describe('parseArgs', () => {
  const cases: [string[], unknown][] = [
    [[], { command: 'serve' }],
    [['serve'], { command: 'serve' }],
    [['--help'], { command: 'help' }],
    [['-h'], { command: 'help' }],
    [['check-config', '--help'], { command: 'help' }],
    [['--version'], { command: 'version' }],
    [['-v'], { command: 'version' }],
    [['check-config'], { command: 'check-config' }],
  ];
  for (const [argv, expected] of cases) {
    test(`${JSON.stringify(argv)}`, () => assert.deepEqual(parseArgs(argv), expected));
  }
  test('unknown commands and stray arguments are usage errors naming them', () => {
    assert.match((parseArgs(['start']) as { error: string }).error, /unknown command or option "start"/);
    assert.match((parseArgs(['--port=1']) as { error: string }).error, /"--port=1"/);
    assert.match((parseArgs(['check-config', 'x']) as { error: string }).error, /takes no arguments, got "x"/);
  });
});

describe('texts', () => {
  test("the version is package.json's", () => {
    const pkg = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
    assert.equal(packageVersion(), pkg.version);
  });
  test('help names every command and every variable', () => {
    const h = helpText();
    for (const word of ['check-config', '--version', '--help', 'serve', '_FILE']) assert.ok(h.includes(word), word);
    for (const o of Object.values(OPTIONS)) assert.ok(h.includes(o.env), o.env);
  });
  test('check-config text: mode, every effective value with its source, warnings, no secret', () => {
    const r = loadConfig({ GATEWAY_PUBLISH_TOKEN: 'hunter2', GATEWAY_WORKERZ: '3' });
    assert.ok(r.ok);
    const text = effectiveConfigText(r);
    assert.match(text, /configuration is valid: standalone mode/);
    assert.match(text, /GATEWAY_PUBLISH_TOKEN=\*{8}\s+\(env\)/);
    assert.match(text, /GATEWAY_PORT=9000\s+\(default\)/);
    assert.match(text, /GATEWAY_WORKERZ is not a known option.*GATEWAY_WORKERS/);
    assert.doesNotMatch(text, /hunter2/);
  });
});
