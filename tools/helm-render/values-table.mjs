#!/usr/bin/env node
// Writes the values table of helm/realtime-gateway/README.md from values.yaml
// (key, default, the comment above the key), between the markers
// <!-- values:start --> and <!-- values:end -->.
//   node tools/helm-render/values-table.mjs          rewrite the README
//   node tools/helm-render/values-table.mjs --check  fail when it is stale
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { parseDocument, isMap, isScalar, isSeq } = require('yaml');
const chart = new URL('../../helm/realtime-gateway/', import.meta.url);
const doc = parseDocument(readFileSync(new URL('values.yaml', chart), 'utf8'));
const rows = [];
// The comment above a key, its last paragraph only (the file header is
// separated by a blank line), without commented-out YAML examples.
const clean = (c) =>
  (c || '')
    .split(/\n\s*\n/)
    .pop()
    .split('\n')
    .map((l) => l.replace(/^\s*#?\s?/, ''))
    .filter((l) => l.trim() && !/^\s*-\s|^\s+\w[\w.]*:(\s|$)|^\s*(helm install|--set)/.test(l))
    .map((l) => l.trim())
    .join(' ')
    .replace(/^-- /, '')
    .replace(/\|/g, '\\|');
function walk(map, prefix) {
  for (const [i, pair] of map.items.entries()) {
    const key = `${prefix}${pair.key.value}`;
    // The first key's comment is attached to its map by the parser.
    const comment = clean(pair.key.commentBefore || (i === 0 ? map.commentBefore : ''));
    const v = pair.value;
    if (
      isMap(v) &&
      v.items.length > 0 &&
      !['podSecurityContext', 'securityContext', 'resources'].includes(key) &&
      !/(Selector|labels|annotations)$/i.test(key)
    ) {
      if (comment) rows.push([key, '', comment]);
      walk(v, `${key}.`);
    } else {
      const js = v && typeof v.toJSON === 'function' ? v.toJSON() : isScalar(v) ? v.value : v;
      let def = JSON.stringify(js);
      if (def.length > 60) def = `${def.slice(0, 57)}...`;
      rows.push([key, `\`${def.replace(/\|/g, '\\|')}\``, comment]);
    }
    void isSeq;
  }
}
walk(doc.contents, '');
const table = ['| key | default | description |', '|---|---|---|', ...rows.map(([k, d, c]) => `| \`${k}\` | ${d} | ${c} |`)].join('\n');
const readmeUrl = new URL('README.md', chart);
const readme = readFileSync(readmeUrl, 'utf8');
const re = /(<!-- values:start -->\n)[\s\S]*?(<!-- values:end -->)/;
if (!re.test(readme)) {
  console.error('README.md has no <!-- values:start --> / <!-- values:end --> markers');
  process.exit(1);
}
const next = readme.replace(re, `$1${table}\n$2`);
if (process.argv.includes('--check')) {
  if (next !== readme) {
    console.error('helm/realtime-gateway/README.md values table is stale: run node tools/helm-render/values-table.mjs');
    process.exit(1);
  }
  console.log(`README values table up to date (${rows.length} rows)`);
} else {
  writeFileSync(readmeUrl, next);
  console.log(`wrote ${rows.length} rows`);
}
