/**
 * Promoted garbage for tests of memory bounds: `objects` small objects (~80
 * bytes each) kept alive across the scavenges that 64 MB of young garbage
 * forces, so that V8 moves them to its old space, then dropped on return.
 * They stay in the old space until a full GC.
 */
export function promoteGarbage(objects: number): number {
  const kept: { a: number; s: string }[] = [];
  for (let i = 0; i < objects; i++) kept.push({ a: i, s: `object ${i} of the promoted garbage` });
  for (let i = 0; i < 1_000_000; i++) void { i, s: `young ${i}` };
  return kept.length;
}
