/**
 * MQTT message -> Frappe event (docs/mqtt.md "Rules"). Pure: topic matching,
 * template expansion and payload decoding, with a drop reason for anything
 * that cannot become a valid event.
 */
import type { MqttRule } from '../config';
import { MAX_DEPTH, rawTooDeep, validateEvent, type FrappeEvent } from '../events/parse';

export const MQTT_DROP_REASONS = [
  'no_rule',
  'empty_payload',
  'bad_payload',
  'oversized',
  'too_deep',
  'missing_level',
  'bad_target',
] as const;
export type MqttDropReason = (typeof MQTT_DROP_REASONS)[number];

/** Metric label of messages that matched no rule. */
export const NO_RULE = 'none';

export type Mapped =
  | { readonly ok: true; readonly rule: MqttRule; readonly event: FrappeEvent }
  | { readonly ok: false; readonly rule: string; readonly reason: MqttDropReason; readonly detail: string };

/** True when `topic` matches the MQTT filter (MQTT 3.1.1 section 4.7). */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  // Wildcards at the first level never match system topics ($SYS/...).
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false;
  for (let i = 0; i < f.length; i++) {
    const level = f[i];
    if (level === '#') return true;
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}

/** `{n}` replaced by the n-th topic level; null when the topic has no such level. */
export function expand(template: string, levels: readonly string[]): string | null {
  let missing = false;
  const out = template.replace(/\{(\d+)\}/g, (_m, n: string) => {
    const v = levels[Number(n) - 1];
    if (v === undefined || v === '') missing = true;
    return v ?? '';
  });
  return missing ? null : out;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The payload as the event's `message`: JSON when it parses as JSON, the
 * text otherwise. Binary (not UTF-8) payloads have no faithful JSON form.
 */
export function decodePayload(payload: Buffer, maxBytes: number): { ok: true; message: unknown } | { ok: false; reason: MqttDropReason } {
  if (payload.length === 0) return { ok: false, reason: 'empty_payload' };
  if (payload.length > maxBytes) return { ok: false, reason: 'oversized' };
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch {
    return { ok: false, reason: 'bad_payload' };
  }
  // Counting the event object that wraps it, as the events intake does.
  if (rawTooDeep(text, MAX_DEPTH - 1)) return { ok: false, reason: 'too_deep' };
  try {
    return { ok: true, message: JSON.parse(text) as unknown };
  } catch {
    return { ok: true, message: text };
  }
}

/** Maps one message; the first rule (in configuration order) whose filter matches wins. */
export function mapMessage(rules: readonly MqttRule[], topic: string, payload: Buffer, maxBytes: number): Mapped {
  const rule = rules.find((r) => topicMatches(r.topic, topic));
  if (!rule) return { ok: false, rule: NO_RULE, reason: 'no_rule', detail: 'no rule matches the topic' };
  const decoded = decodePayload(payload, maxBytes);
  if (!decoded.ok) return { ok: false, rule: rule.name, reason: decoded.reason, detail: `payload: ${decoded.reason}` };
  const levels = topic.split('/');
  const site = expand(rule.site, levels);
  const room = expand(rule.room, levels);
  const event = expand(rule.event, levels);
  if (site === null || room === null || event === null) {
    return { ok: false, rule: rule.name, reason: 'missing_level', detail: 'a template refers to an empty or absent topic level' };
  }
  const v = validateEvent({ event, message: decoded.message, room, namespace: site });
  if (!v.ok) return { ok: false, rule: rule.name, reason: v.reason === 'too_deep' ? 'too_deep' : 'bad_target', detail: v.detail };
  return { ok: true, rule, event: v.value };
}
