/**
 * The import rules of src/ (checked by `npm run lint`, part of `npm test`).
 *
 * Layers, top to bottom; a folder may import only from folders below it:
 *   main.ts
 *   roles/                 composition roots (primary, worker, standalone)
 *   ops/  cluster/  ingress/  ops HTTP server; primary<->worker plumbing; MQTT ingress
 *   realtime/              socket.io server assembly, delivery, fast path
 *   recovery/  leader/     sessions and history; the events leader
 *   frappe/                auth, handlers, rooms, app handlers, backend
 *   presence/              cluster-wide presence
 *   events/                the wire contract: parse, validate, encode, room names
 *   redis/                 connections, key and channel names
 *   config/ metrics/ shared/  leaves: import nothing of ours but shared/
 */
const layer = (name, allowed) => ({
  name: `${name}-imports-only-below`,
  severity: 'error',
  comment: `src/${name} may import only ${allowed.join(', ')}`,
  from: { path: `^src/${name}/` },
  to: { path: '^src/', pathNot: [`^src/(${[name, ...allowed].join('|')})/`] },
});

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'no import cycles, between files or folders',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'roles-only-from-main',
      severity: 'error',
      comment: 'role roots are composed by main.ts only',
      from: { path: '^src/', pathNot: '^src/(main\\.ts$|roles/)' },
      to: { path: '^src/roles/' },
    },
    layer('roles', ['ops', 'cluster', 'ingress', 'realtime', 'recovery', 'leader', 'frappe', 'presence', 'events', 'redis', 'config', 'metrics', 'shared']),
    layer('ops', ['events', 'config', 'metrics', 'shared']),
    layer('cluster', ['config', 'metrics', 'shared']),
    layer('ingress', ['events', 'redis', 'config', 'metrics', 'shared']),
    layer('realtime', ['recovery', 'frappe', 'presence', 'events', 'redis', 'config', 'metrics', 'shared']),
    layer('recovery', ['frappe', 'events', 'redis', 'config', 'metrics', 'shared']),
    layer('leader', ['events', 'redis', 'config', 'metrics', 'shared']),
    layer('frappe', ['presence', 'events', 'redis', 'config', 'metrics', 'shared']),
    layer('presence', ['events', 'redis', 'config', 'metrics', 'shared']),
    layer('events', ['redis', 'config', 'metrics', 'shared']),
    layer('redis', ['config', 'shared']),
    layer('config', ['shared']),
    layer('metrics', ['shared']),
    layer('shared', []),
    {
      name: 'src-not-from-tests',
      severity: 'error',
      comment: 'production code never imports tests, bench or k6',
      from: { path: '^src/' },
      to: { path: '^(test|bench|k6)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
  },
};
