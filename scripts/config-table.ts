/**
 * Prints the README's configuration table from the schema, so the two cannot
 * drift (test/unit/readme-config.test.ts compares them).
 */
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

if (require.main === module) process.stdout.write(`${configTable()}\n`);
