#!/usr/bin/env node
// Validates coalesced chart values (helm-render --values-out) against the
// chart's values.schema.json with ajv, as `helm install/template/lint` do
// with theirs. Usage: check-values.mjs values.schema.json values.json...
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const Ajv = require('ajv');
const [schemaFile, ...files] = process.argv.slice(2);
const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false, strictTuples: false, strictRequired: false });
const validate = ajv.compile(JSON.parse(readFileSync(schemaFile, 'utf8')));
let bad = 0;
for (const f of files) {
  if (validate(JSON.parse(readFileSync(f, 'utf8')))) continue;
  bad++;
  for (const e of validate.errors)
    console.error(`${f}: ${e.instancePath || '/'} ${e.message}${e.params?.additionalProperty ? `: ${e.params.additionalProperty}` : ''}`);
}
if (bad) process.exit(1);
console.log(`${files.length} value set(s) valid against ${schemaFile}`);
