/**
 * Prints the README's configuration table from the schema, so the two cannot
 * drift (test/unit/readme-config.test.ts compares them). With `--write` it
 * replaces the table between the README's config-table markers instead.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { OPTIONS, type OptionSpec } from '../src/config/schema';

export function configTable(): string {
  const rows = ['| variable | default | meaning |', '|---|---|---|'];
  for (const spec of Object.values(OPTIONS) as OptionSpec[]) {
    const def = spec.default === undefined || spec.default === '' ? 'unset' : `\`${spec.default}\``;
    const bench = spec.benchKey ? ` Bench key: \`${spec.benchKey}\`.` : '';
    rows.push(`| \`${spec.env}\` | ${def} | ${spec.doc.replace(/\|/g, '\\|')}${bench} |`);
  }
  return rows.join('\n');
}

function writeReadme(): void {
  const path = join(__dirname, '..', 'README.md');
  const text = readFileSync(path, 'utf8');
  const start = '<!-- config-table:start -->';
  const end = '<!-- config-table:end -->';
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a < 0 || b < a) throw new Error(`README.md: markers ${start} ... ${end} not found`);
  writeFileSync(path, `${text.slice(0, a + start.length)}\n${configTable()}\n${text.slice(b)}`);
}

if (require.main === module) {
  if (process.argv.includes('--write')) writeReadme();
  else process.stdout.write(`${configTable()}\n`);
}
