/**
 * Custom room patterns (GATEWAY_CUSTOM_ROOMS, docs/mqtt.md): `sensor:{id}`
 * compiled once to a matcher. Shared by the MQTT ingress (which rooms keep a
 * latest value) and the subscribe_room handler (which rooms may be joined).
 */
import type { CustomRoomSpec } from '../config';
import type { Keys } from '../redis/keys';

/** A custom room pattern compiled to a matcher. */
export interface RoomPattern {
  readonly spec: CustomRoomSpec;
  /** Placeholder values when `room` is an instance of the pattern, else null. */
  match(room: string): Record<string, string> | null;
  /** `{placeholder}`s of `template` replaced by the values. */
  fill(template: string, values: Record<string, string>): string;
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Placeholders match one or more characters other than `:`, except the last
 * one when it ends the pattern, which takes the rest (document names may hold `:`).
 */
export function compileRoomPattern(spec: CustomRoomSpec): RoomPattern {
  const parts = spec.pattern.split(/(\{[A-Za-z_][A-Za-z0-9_]*\})/);
  const names: string[] = [];
  let src = '^';
  parts.forEach((p, i) => {
    const m = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(p);
    if (!m) {
      src += escape(p);
      return;
    }
    names.push(m[1] ?? '');
    const last = i === parts.length - 2 && parts[parts.length - 1] === '';
    src += last ? '(.+)' : '([^:]+)';
  });
  const re = new RegExp(`${src}$`);
  return {
    spec,
    match: (room) => {
      const m = re.exec(room);
      if (!m) return null;
      const values: Record<string, string> = {};
      names.forEach((n, i) => (values[n] = m[i + 1] ?? ''));
      return values;
    },
    fill: (template, values) => template.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, n: string) => values[n] ?? ''),
  };
}

/** The first configured pattern `room` is an instance of. */
export function findRoomPattern(
  patterns: readonly RoomPattern[],
  room: string,
): { pattern: RoomPattern; values: Record<string, string> } | null {
  for (const pattern of patterns) {
    const values = pattern.match(room);
    if (values) return { pattern, values };
  }
  return null;
}

/**
 * Redis key of the last event of a `latest` room, written by the MQTT ingress
 * and read on subscribe_room. Hash-tagged like the ingress' redelivery
 * markers: its script writes both, which in Redis Cluster must share a slot.
 */
export function latestKey(keys: Keys, site: string, room: string): string {
  return `{${keys.prefix}}:latest:${site}:${room}`;
}
