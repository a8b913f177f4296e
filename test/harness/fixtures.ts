import { readFileSync } from 'node:fs';
import { frappeFixturesPath } from './paths';

/** One publish on the `events` channel (docs/protocol.md section 2). */
export interface FrappePublish {
  event: string;
  message: unknown;
  room?: string | null;
  namespace?: string | null;
}

export interface FrappeFixture {
  /** The exact bytes Frappe publishes (no trailing newline). */
  raw: string;
  parsed: FrappePublish;
}

/**
 * Reads the shared fixture file: records separated by a line holding only
 * `---`; lines starting with `#` are comments.
 */
export function loadFrappeFixtures(file: string = frappeFixturesPath): FrappeFixture[] {
  const text = readFileSync(file, 'utf8');
  const records: string[][] = [[]];
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith('#')) continue;
    if (line.trim() === '---') records.push([]);
    else records[records.length - 1]?.push(line);
  }
  const out: FrappeFixture[] = [];
  for (const lines of records) {
    const raw = lines.join('\n').replace(/^\n+|\n+$/g, '');
    if (raw.trim() === '') continue;
    const parsed = JSON.parse(raw) as unknown;
    if (parsed === null || typeof parsed !== 'object' || typeof (parsed as { event?: unknown }).event !== 'string') {
      throw new Error(`loadFrappeFixtures: record is not a Frappe publish: ${raw.slice(0, 80)}`);
    }
    out.push({ raw, parsed: parsed as FrappePublish });
  }
  return out;
}
