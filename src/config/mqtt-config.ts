/**
 * Validation of the JSON-valued options of the IoT ingress (docs/mqtt.md):
 * GATEWAY_MQTT_RULES and GATEWAY_CUSTOM_ROOMS. Lives in the config layer so
 * `loadConfig` reports every problem of every option at once, before start.
 */

export interface MqttRule {
  /** Label of the rule in metrics and logs (default: the topic filter). */
  readonly name: string;
  /** MQTT topic filter (`+` one level, `#` the rest). */
  readonly topic: string;
  /** Templates: `{n}` is the n-th topic level (1-based). */
  readonly site: string;
  readonly room: string;
  readonly event: string;
  readonly qos: 0 | 1;
}

export interface CustomRoomSpec {
  /** Room name with `{placeholder}`s, e.g. `sensor:{id}`. */
  readonly pattern: string;
  /** Doctype whose read permission gates the room; may use the pattern's placeholders. */
  readonly doctype: string;
  /** Document name; null = permission on the doctype as a whole. */
  readonly name: string | null;
  /** Keep the last event of each room and give it to a client when it joins. */
  readonly latest: boolean;
  /** Keep only the newest pending event per room for a client whose outbound queue backs up. */
  readonly conflate: boolean;
}

export interface MqttConfig {
  readonly url: string;
  readonly username: string | null;
  readonly password: string | null;
  readonly clientId: string;
  readonly cleanSession: boolean;
  readonly qos: 0 | 1;
  readonly rules: readonly MqttRule[];
}

const MAX_RULES = 1000;
const MAX_ROOM_PATTERNS = 1000;
const LEVEL_REF = /\{(\d+)\}/g;
/**
 * Frappe's own rooms (docs/protocol.md section 3) have their own rules (a user
 * room is its user's alone): a custom pattern must not reach into them.
 */
const FRAPPE_ROOM_PREFIXES = ['user:', 'doc:', 'doctype:', 'open_doc:', 'task_progress:'];
const FRAPPE_ROOMS = ['all', 'website'];

/** The Frappe room (or room prefix) a custom pattern could produce, if any. */
function frappeRoomOf(pattern: string): string | undefined {
  const literal = pattern.split('{')[0] ?? '';
  const prefix = FRAPPE_ROOM_PREFIXES.find((p) => literal.startsWith(p) || p.startsWith(literal));
  if (prefix !== undefined) return `${prefix}...`;
  const re = new RegExp(
    `^${pattern
      .split(NAMED_REF_SPLIT)
      .map((part, i) => (i % 2 === 1 ? '.+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
      .join('')}$`,
  );
  return FRAPPE_ROOMS.find((r) => re.test(r));
}
const NAMED_REF = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
const NAMED_REF_SPLIT = /\{([A-Za-z_][A-Za-z0-9_]*)\}/;

type Problems = string[];

function parseJsonArray(source: string, text: string, problems: Problems): unknown[] | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    problems.push(`${source} is not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
    return null;
  }
  if (!Array.isArray(v)) {
    problems.push(`${source} must be a JSON array`);
    return null;
  }
  return v;
}

function str(o: Record<string, unknown>, key: string, where: string, problems: Problems, required = true): string | null {
  const v = o[key];
  if (v === undefined && !required) return null;
  if (typeof v !== 'string' || v === '') {
    problems.push(`${where}.${key} must be a non-empty string`);
    return null;
  }
  return v;
}

/** Why a topic filter is not a valid MQTT subscription, or null. */
export function topicFilterProblem(filter: string): string | null {
  if (filter === '' || filter.length > 1024) return 'must be 1-1024 characters';
  if (filter.includes('\0')) return 'must not contain NUL';
  if (filter.startsWith('$share/')) return 'must not be a shared subscription: only the leader subscribes';
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i] ?? '';
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return '`#` must be the whole last level';
    if (l.includes('+') && l !== '+') return '`+` must be a whole level';
  }
  return null;
}

/** `{n}` references of a template. */
export function levelRefs(template: string): number[] {
  return [...template.matchAll(LEVEL_REF)].map((m) => Number(m[1]));
}

/** `{name}` placeholders of a custom room pattern, in order. */
export function placeholders(template: string): string[] {
  return [...template.matchAll(NAMED_REF)].map((m) => m[1] ?? '');
}

export function parseMqttRules(source: string, text: string, defaultQos: 0 | 1, problems: Problems): MqttRule[] {
  const arr = parseJsonArray(source, text, problems);
  if (!arr) return [];
  if (arr.length === 0) problems.push(`${source} must list at least one rule`);
  if (arr.length > MAX_RULES) problems.push(`${source} lists ${arr.length} rules, at most ${MAX_RULES} are accepted`);
  const rules: MqttRule[] = [];
  const names = new Set<string>();
  arr.forEach((item, i) => {
    const where = `${source}[${i}]`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      problems.push(`${where} must be an object {topic, site, room, event, qos?}`);
      return;
    }
    const o = item as Record<string, unknown>;
    const before = problems.length;
    const topic = str(o, 'topic', where, problems);
    const site = str(o, 'site', where, problems);
    const room = str(o, 'room', where, problems);
    const event = str(o, 'event', where, problems);
    const name = o['name'] === undefined ? topic : str(o, 'name', where, problems);
    let qos: 0 | 1 = defaultQos;
    if (o['qos'] !== undefined) {
      if (o['qos'] === 0 || o['qos'] === 1) qos = o['qos'];
      else problems.push(`${where}.qos must be 0 or 1`);
    }
    for (const key of Object.keys(o)) {
      if (!['topic', 'site', 'room', 'event', 'qos', 'name'].includes(key)) problems.push(`${where} has an unknown key "${key}"`);
    }
    if (topic !== null) {
      const p = topicFilterProblem(topic);
      if (p) problems.push(`${where}.topic "${topic}" ${p}`);
      else {
        const levels = topic.split('/');
        const open = levels[levels.length - 1] === '#';
        for (const [key, tpl] of [
          ['site', site],
          ['room', room],
          ['event', event],
        ] as const) {
          for (const n of levelRefs(tpl ?? '')) {
            if (n < 1 || (!open && n > levels.length)) {
              problems.push(`${where}.${key} refers to topic level {${n}}, the filter "${topic}" has levels 1-${levels.length}`);
            }
          }
        }
      }
    }
    if (name !== null && names.has(name)) problems.push(`${where}.name "${name}" is used by another rule`);
    if (name !== null) names.add(name);
    if (problems.length === before && topic && site && room && event && name) rules.push({ name, topic, site, room, event, qos });
  });
  return rules;
}

export function parseCustomRooms(source: string, text: string, problems: Problems): CustomRoomSpec[] {
  const arr = parseJsonArray(source, text, problems);
  if (!arr) return [];
  if (arr.length > MAX_ROOM_PATTERNS) problems.push(`${source} lists ${arr.length} patterns, at most ${MAX_ROOM_PATTERNS} are accepted`);
  const out: CustomRoomSpec[] = [];
  const seen = new Set<string>();
  arr.forEach((item, i) => {
    const where = `${source}[${i}]`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      problems.push(`${where} must be an object {pattern, doctype, name?, latest?, conflate?}`);
      return;
    }
    const o = item as Record<string, unknown>;
    const before = problems.length;
    const pattern = str(o, 'pattern', where, problems);
    const doctype = str(o, 'doctype', where, problems);
    const name = str(o, 'name', where, problems, false);
    const flag = (key: string): boolean => {
      const v = o[key];
      if (v === undefined) return false;
      if (typeof v !== 'boolean') problems.push(`${where}.${key} must be true or false`);
      return v === true;
    };
    const latest = flag('latest');
    const conflate = flag('conflate');
    for (const key of Object.keys(o)) {
      if (!['pattern', 'doctype', 'name', 'latest', 'conflate'].includes(key)) problems.push(`${where} has an unknown key "${key}"`);
    }
    if (pattern !== null) {
      const names = placeholders(pattern);
      if (names.length === 0) problems.push(`${where}.pattern "${pattern}" has no {placeholder}: a fixed room needs no pattern`);
      if (new Set(names).size !== names.length) problems.push(`${where}.pattern "${pattern}" uses a placeholder twice`);
      if (/\}\{/.test(pattern)) problems.push(`${where}.pattern "${pattern}" has adjacent placeholders: separate them`);
      for (const [key, tpl] of [
        ['doctype', doctype],
        ['name', name],
      ] as const) {
        for (const ref of placeholders(tpl ?? '')) {
          if (!names.includes(ref)) problems.push(`${where}.${key} uses {${ref}}, which the pattern "${pattern}" does not define`);
        }
      }
      const frappe = frappeRoomOf(pattern);
      if (frappe !== undefined) problems.push(`${where}.pattern "${pattern}" could name Frappe's own rooms (${frappe})`);
      if (seen.has(pattern)) problems.push(`${where}.pattern "${pattern}" is listed twice`);
      seen.add(pattern);
    }
    if (problems.length === before && pattern && doctype) out.push({ pattern, doctype, name, latest, conflate });
  });
  return out;
}
