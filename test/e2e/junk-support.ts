/**
 * The hostile-input suite's junk: `JUNK` messages of every kind a broken or
 * hostile publisher can put on the events channel (malformed JSON, oversized,
 * wrong field types, valid-looking events for namespaces and rooms nobody is
 * in), deterministic per round. Shared with the junk-memory benchmark.
 */
import assert from 'node:assert/strict';
import { frappeJson } from '../harness';

export const SITE = 'site1.local';
export const MAX_MESSAGE_BYTES = 4096;
export const JUNK = 10_000;

export type Reason = 'malformed_json' | 'oversized' | 'not_object' | 'bad_event' | 'bad_room' | 'bad_namespace' | 'no_namespace' | 'routed';

/** A small deterministic PRNG, so a failure can be reproduced. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Junk {
  payloads: (string | Buffer)[];
  expected: Record<Reason, number>;
  /** Namespaces the junk addressed (none may leave state behind). */
  namespaces: Set<string>;
}

/** `JUNK` messages of every kind, shuffled; `round` makes the namespaces and rooms of each round distinct. */
export function makeJunk(site: string, round: number): Junk {
  const rnd = prng(round * 7919 + 1);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)] as T;
  const word = (n: number): string => Array.from({ length: n }, () => String.fromCharCode(97 + Math.floor(rnd() * 26))).join('');
  const expected: Record<Reason, number> = {
    malformed_json: 0,
    oversized: 0,
    not_object: 0,
    bad_event: 0,
    bad_room: 0,
    bad_namespace: 0,
    no_namespace: 0,
    routed: 0,
  };
  const namespaces = new Set<string>();
  const ns = (i: number): string => {
    const n = `junk-r${round}-${i}-${word(6)}.example`;
    namespaces.add(n);
    return n;
  };
  const kinds: [Reason, number, (i: number) => string | Buffer][] = [
    [
      'malformed_json',
      2000,
      (i) =>
        pick([
          () => `{"event": "list_update", "room": "doc:X/${i}", "namespace": "${ns(i)}"`,
          () => `{${word(20)}}`,
          // A raw control character inside a string: never valid JSON, whatever follows.
          () =>
            Buffer.concat([
              Buffer.from('{"\u0000'),
              Buffer.from(Array.from({ length: Math.floor(rnd() * 200) }, () => Math.floor(rnd() * 256))),
            ]),
          () => '',
          () => `{"event": "x",, "room": null}`,
          () => `NaN${word(3)}`,
        ])(),
    ],
    [
      'oversized',
      1000,
      (i) =>
        pick([
          () => frappeJson({ event: 'list_update', message: { blob: word(64).repeat(80) }, namespace: ns(i), room: `doc:Junk/${i}` }),
          () => `{"event": "x", "junk": "${'z'.repeat(MAX_MESSAGE_BYTES + 1 + Math.floor(rnd() * 2000))}`,
        ])(),
    ],
    ['not_object', 500, () => pick(['[1, 2, 3]', '"just a string"', '42', 'null', 'true', `[{"event": "x"}]`])],
    [
      'bad_event',
      500,
      (i) =>
        JSON.stringify(
          pick(
            [{ event: 5 }, { event: '' }, { event: null }, { message: {} }, { event: ['x'] }, { event: 'e'.repeat(300) }].map((o) => ({
              ...o,
              namespace: ns(i),
              room: 'r',
            })),
          ),
        ),
    ],
    [
      'bad_room',
      500,
      (i) => JSON.stringify({ event: 'x', message: {}, namespace: ns(i), room: pick([5, { a: 1 }, ['r'], true, 'r'.repeat(2000)]) }),
    ],
    [
      'bad_namespace',
      500,
      (i) =>
        JSON.stringify({
          event: 'x',
          message: {},
          room: `user:${word(5)}`,
          namespace: pick([5, ['a'], { n: 1 }, `/${ns(i)}`, `a b ${i}`]),
        }),
    ],
    ['no_namespace', 500, (i) => JSON.stringify({ event: 'x', message: { i }, room: pick(['website', 'all', `doc:ToDo/${i}`]) })],
    [
      'routed',
      JUNK - 5500,
      (i) =>
        frappeJson({
          event: pick(['list_update', 'doc_update', 'msgprint', word(8)]),
          message: { i, note: word(1 + Math.floor(rnd() * 200)) },
          namespace: rnd() < 0.5 ? ns(i) : site, // other sites, and rooms nobody is in on a live one
          room: pick([
            `doc:Junk/${word(8)}`,
            `user:nobody-${word(8)}@example.com`,
            `task_progress:${word(10)}`,
            `sensor:${i}`,
            `doctype:${word(12)}`,
          ]),
        }),
    ],
  ];
  const payloads: (string | Buffer)[] = [];
  for (const [reason, count, make] of kinds) {
    for (let i = 0; i < count; i++) payloads.push(make(i));
    expected[reason] += count;
  }
  for (let i = payloads.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [payloads[i], payloads[j]] = [payloads[j] as string | Buffer, payloads[i] as string | Buffer];
  }
  assert.equal(payloads.length, JUNK);
  return { payloads, expected, namespaces };
}
