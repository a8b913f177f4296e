#!/usr/bin/env node
// Validates rendered Kubernetes manifests offline, the way an API server with
// strict field validation (kubectl --validate=strict) would reject them:
// unknown fields, wrong types and missing required fields are errors.
//
//   node tools/k8s-validate/validate.mjs --models DIR rendered.yaml...
//
// Schemas:
// - built-in kinds (Deployment, Service, ...): generated at run time from the
//   OpenAPI-generated models of the @kubernetes/client-node npm package
//   (dist/gen/models/*.js carry every field with its type, *.d.ts tell which
//   are required). deploy/verify.sh fetches the tarball with `npm pack` into a
//   cache; DIR is its dist/gen/models folder. Nothing of it is committed.
// - Prometheus Operator ServiceMonitor / PrometheusRule and Gateway API
//   HTTPRoute: strict schemas written for this project in crds/, covering the
//   fields of those CRDs that a chart can reasonably set (additionalProperties
//   false everywhere, so a typo or a field the CRD does not have fails).
// On top, a few API-server rules no structural schema expresses (semantic()).
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const Ajv = require('ajv');
const { parseAllDocuments } = require('yaml');

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
let modelsDir = '';
const inputs = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--models') modelsDir = args[++i];
  else inputs.push(args[i]);
}
if (!modelsDir || inputs.length === 0) {
  console.error('usage: validate.mjs --models DIR rendered.yaml...');
  process.exit(2);
}

// ---- schema generation from client-node models -----------------------------
const definitions = {};
// Quantity fields: the API accepts a string or a number ("2", 2, "500m").
const QUANTITY = new Set(['V1ResourceRequirements.limits', 'V1ResourceRequirements.requests', 'V1EmptyDirVolumeSource.sizeLimit']);

function typeSchema(type, format, owner, prop) {
  if (QUANTITY.has(`${owner}.${prop}`)) {
    return type.startsWith('{') ? { type: 'object', additionalProperties: { type: ['string', 'number'] } } : { type: ['string', 'number'] };
  }
  let m;
  if ((m = /^Array<(.+)>$/.exec(type))) return { type: 'array', items: typeSchema(m[1], '', owner, prop) };
  if ((m = /^\{ \[key: string\]: (.+); \}$/.exec(type))) return { type: 'object', additionalProperties: typeSchema(m[1], '', owner, prop) };
  switch (type) {
    case 'string':
      return { type: 'string' };
    case 'Date':
      return { type: 'string' };
    case 'boolean':
      return { type: 'boolean' };
    case 'number':
      return format === 'double' ? { type: 'number' } : { type: 'integer' };
    case 'IntOrString':
      return { type: ['integer', 'string'] };
    case 'any':
    case 'object':
      return {};
    default:
      model(type);
      return { $ref: `#/definitions/${type}` };
  }
}

function model(name) {
  if (definitions[name]) return;
  definitions[name] = {}; // placeholder against recursion
  const js = readFileSync(join(modelsDir, `${name}.js`), 'utf8');
  const map = /\.attributeTypeMap = (\[[\s\S]*?\n\]);/.exec(js);
  if (!map) throw new Error(`${name}: no attributeTypeMap`);
  const attrs = JSON.parse(map[1]);
  const dts = readFileSync(join(modelsDir, `${name}.d.ts`), 'utf8');
  const required = [...dts.matchAll(/^\s+'([^']+)': /gm)].map((x) => x[1]);
  const properties = {};
  for (const a of attrs) properties[a.baseName] = typeSchema(a.type, a.format, name, a.baseName);
  definitions[name] = { type: 'object', properties, additionalProperties: false, ...(required.length ? { required } : {}) };
}

/** apps/v1 Deployment -> V1Deployment; autoscaling/v2 HorizontalPodAutoscaler -> V2HorizontalPodAutoscaler. */
function modelName(apiVersion, kind) {
  const version = apiVersion.split('/').pop();
  return version.charAt(0).toUpperCase() + version.slice(1) + kind;
}

const BUILTIN_GROUPS = new Set([
  'v1',
  'apps/v1',
  'policy/v1',
  'autoscaling/v2',
  'networking.k8s.io/v1',
  'batch/v1',
  'rbac.authorization.k8s.io/v1',
]);
model('V1ObjectMeta');
model('V1LabelSelector');
const crds = {};
for (const f of readdirSync(join(here, 'crds')).filter((f) => f.endsWith('.schema.json'))) {
  const s = JSON.parse(readFileSync(join(here, 'crds', f), 'utf8'));
  crds[`${s['x-apiVersion']}/${s['x-kind']}`] = s;
}

const ajv = new Ajv({ allErrors: true, strict: false });
const validators = new Map();
function validatorFor(apiVersion, kind) {
  const key = `${apiVersion}/${kind}`;
  if (validators.has(key)) return validators.get(key);
  let schema;
  if (crds[key]) {
    const { ['x-apiVersion']: _a, ['x-kind']: _k, definitions: own = {}, ...rest } = crds[key];
    schema = { ...rest, definitions: Object.assign(definitions, own) };
  } else if (BUILTIN_GROUPS.has(apiVersion)) {
    const name = modelName(apiVersion, kind);
    try {
      model(name);
    } catch (e) {
      return null;
    }
    schema = { $ref: `#/definitions/${name}`, definitions };
  } else return null;
  // Top-level apiVersion/kind/metadata are required of every object.
  const v = ajv.compile({
    allOf: [{ type: 'object', required: ['apiVersion', 'kind', 'metadata'] }, schema],
    definitions: schema.definitions,
  });
  validators.set(key, v);
  return v;
}

// ---- API-server rules beyond the structure ---------------------------------
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const PORT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function semantic(o) {
  const errs = [];
  const md = o.metadata || {};
  const nameRe = ['Service', 'Deployment', 'Pod'].includes(o.kind) ? DNS_LABEL : DNS_SUBDOMAIN;
  const maxName = o.kind === 'Service' || o.kind === 'Deployment' ? 63 : 253;
  if (typeof md.name !== 'string' || !nameRe.test(md.name) || md.name.length > maxName)
    errs.push(`metadata.name ${JSON.stringify(md.name)} is not a valid ${o.kind} name`);
  const checkLabels = (labels, where) => {
    for (const [k, v] of Object.entries(labels || {})) {
      const name = k.includes('/') ? k.split('/').pop() : k;
      if (!name || name.length > 63 || !/^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(name)) errs.push(`${where}: bad label key ${k}`);
      if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v)) errs.push(`${where}: bad label value ${k}=${JSON.stringify(v)}`);
    }
  };
  checkLabels(md.labels, 'metadata.labels');
  const spec = o.spec || {};
  const podChecks = (pod, where) => {
    if (!pod) return;
    checkLabels(pod.metadata?.labels, `${where}.metadata.labels`);
    const ps = pod.spec || {};
    const volumes = new Set((ps.volumes || []).map((v) => v.name));
    for (const c of [...(ps.initContainers || []), ...(ps.containers || [])]) {
      const names = new Set();
      for (const p of c.ports || []) {
        if (p.name !== undefined) {
          if (p.name.length > 15 || !PORT_NAME.test(p.name) || !/[a-z]/.test(p.name))
            errs.push(`${where} container ${c.name}: bad port name ${p.name}`);
          names.add(p.name);
        }
        if (!(p.containerPort >= 1 && p.containerPort <= 65535))
          errs.push(`${where} container ${c.name}: containerPort ${p.containerPort} out of range`);
      }
      for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
        const port = c[probe]?.httpGet?.port;
        if (typeof port === 'string' && !names.has(port))
          errs.push(`${where} container ${c.name}: ${probe} port ${port} is not a named container port`);
      }
      for (const m of c.volumeMounts || [])
        if (!volumes.has(m.name)) errs.push(`${where} container ${c.name}: volumeMount ${m.name} has no volume`);
      const envNames = (c.env || []).map((e) => e.name);
      const dup = envNames.filter((n, i) => envNames.indexOf(n) !== i);
      if (dup.length) errs.push(`${where} container ${c.name}: duplicate env ${dup.join(', ')}`);
    }
  };
  switch (o.kind) {
    case 'Deployment': {
      const sel = spec.selector?.matchLabels || {};
      const tl = spec.template?.metadata?.labels || {};
      for (const [k, v] of Object.entries(sel))
        if (tl[k] !== v) errs.push(`spec.selector ${k}=${v} does not match the pod template labels`);
      podChecks(spec.template, 'spec.template');
      const ru = spec.strategy?.rollingUpdate;
      if (ru && (ru.maxSurge === 0 || ru.maxSurge === '0%') && (ru.maxUnavailable === 0 || ru.maxUnavailable === '0%'))
        errs.push('maxSurge and maxUnavailable cannot both be 0');
      break;
    }
    case 'Pod':
      podChecks(o, 'pod');
      break;
    case 'Service': {
      const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
      if (t !== undefined && !(t > 0 && t <= 86400))
        errs.push(`spec.sessionAffinityConfig.clientIP.timeoutSeconds ${t}: must be in (0, 86400]`);
      if (spec.sessionAffinityConfig && spec.sessionAffinity !== 'ClientIP')
        errs.push('sessionAffinityConfig needs sessionAffinity: ClientIP');
      for (const p of spec.ports || []) if (!(p.port >= 1 && p.port <= 65535)) errs.push(`port ${p.port} out of range`);
      break;
    }
    case 'PodDisruptionBudget':
      if (spec.minAvailable !== undefined && spec.maxUnavailable !== undefined)
        errs.push('PodDisruptionBudget: minAvailable and maxUnavailable are mutually exclusive');
      break;
    case 'HorizontalPodAutoscaler':
      if (spec.minReplicas !== undefined && spec.minReplicas > spec.maxReplicas) errs.push('minReplicas > maxReplicas');
      for (const dir of ['scaleUp', 'scaleDown']) {
        const w = spec.behavior?.[dir]?.stabilizationWindowSeconds;
        if (w !== undefined && !(w >= 0 && w <= 3600)) errs.push(`behavior.${dir}.stabilizationWindowSeconds ${w}: must be in [0, 3600]`);
        for (const p of spec.behavior?.[dir]?.policies || [])
          if (!(p.periodSeconds > 0 && p.periodSeconds <= 1800))
            errs.push(`behavior.${dir} policy periodSeconds ${p.periodSeconds}: must be in (0, 1800]`);
      }
      break;
    case 'Secret':
      for (const [k, v] of Object.entries(o.data || {})) if (!/^[A-Za-z0-9+/]*={0,2}$/.test(v)) errs.push(`data.${k} is not base64`);
      break;
    default:
  }
  return errs;
}

// ---- main ------------------------------------------------------------------
let failed = 0;
let checked = 0;
for (const file of inputs) {
  const kinds = [];
  const docs = parseAllDocuments(readFileSync(file, 'utf8'), { uniqueKeys: true });
  for (const d of docs) {
    if (d.errors.length) {
      console.error(`${file}: YAML: ${d.errors.map((e) => e.message).join('; ')}`);
      failed++;
      continue;
    }
    const o = d.toJS();
    if (o === null || o === undefined) continue;
    const where = `${file}: ${o.kind}/${o.metadata?.name}`;
    const v = validatorFor(String(o.apiVersion), String(o.kind));
    if (!v) {
      console.error(`${where}: no schema for ${o.apiVersion} ${o.kind}`);
      failed++;
      continue;
    }
    checked++;
    kinds.push(o.kind);
    const problems = [];
    if (!v(o)) {
      for (const e of v.errors) {
        // The allOf/$ref wrapper repeats some errors: keep distinct messages.
        const msg = `${e.instancePath || '/'} ${e.message}${e.params?.additionalProperty ? `: ${e.params.additionalProperty}` : ''}`;
        if (!problems.includes(msg)) problems.push(msg);
      }
    }
    problems.push(...semantic(o));
    if (problems.length) {
      failed++;
      for (const p of problems) console.error(`${where}: ${p}`);
    }
  }
  console.log(`${file}: ${kinds.join(' ')}`);
}
if (failed) {
  console.error(`${failed} invalid object(s) of ${checked}`);
  process.exit(1);
}
console.log(`${checked} objects valid`);
