/**
 * Serialises like Frappe's publisher, Python
 * `json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=True, separators=(",", ": "))`,
 * so tests can publish byte-identical messages to the `events` channel.
 *
 * Limits that come from JavaScript numbers, not from this encoder: an integral
 * number is written as a Python int (`42`, never `42.0`; wrap it in
 * `pyFloat()` to get Python's float form), and integers beyond 2**53 have
 * already lost precision when JSON.parse produced them.
 */

/** Marks a number as a Python float, so an integral value prints as `1.0`. */
export class PyFloat {
  constructor(readonly value: number) {}
}

export function pyFloat(value: number): PyFloat {
  return new PyFloat(value);
}

const SIMPLE_ESCAPES: Record<number, string> = {
  0x22: '\\"',
  0x5c: '\\\\',
  0x0a: '\\n',
  0x0d: '\\r',
  0x09: '\\t',
  0x08: '\\b',
  0x0c: '\\f',
};

/** ensure_ascii: everything outside printable ASCII (0x20-0x7e) becomes \uXXXX, per UTF-16 unit (so astral chars become surrogate pairs). */
function encodeString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const unit = s.charCodeAt(i);
    const simple = SIMPLE_ESCAPES[unit];
    if (simple !== undefined) out += simple;
    else if (unit < 0x20 || unit > 0x7e) out += `\\u${unit.toString(16).padStart(4, '0')}`;
    else out += s[i];
  }
  return `${out}"`;
}

/** Python's float repr: shortest round-trip digits, exponent form when exp10 < -4 or >= 16. */
function pythonFloatRepr(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return 'Infinity';
  if (n === -Infinity) return '-Infinity';
  if (n === 0) return Object.is(n, -0) ? '-0.0' : '0.0';
  const sign = n < 0 ? '-' : '';
  const [mantissa = '', exponent = '0'] = Math.abs(n).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const exp10 = Number(exponent);
  if (exp10 < -4 || exp10 >= 16) {
    const frac = digits.slice(1);
    const expDigits = String(Math.abs(exp10)).padStart(2, '0');
    return `${sign}${digits[0] ?? '0'}${frac === '' ? '' : `.${frac}`}e${exp10 < 0 ? '-' : '+'}${expDigits}`;
  }
  if (exp10 < 0) return `${sign}0.${'0'.repeat(-exp10 - 1)}${digits}`;
  const intPart = digits.slice(0, exp10 + 1).padEnd(exp10 + 1, '0');
  const fracPart = digits.slice(exp10 + 1);
  return `${sign}${intPart}.${fracPart === '' ? '0' : fracPart}`;
}

function encodeNumber(n: number): string {
  if (Number.isInteger(n)) return BigInt(n).toString();
  return pythonFloatRepr(n);
}

/** sort_keys compares Python str, i.e. by code point (not by UTF-16 unit as Array.sort does). */
function compareCodePoints(a: string, b: string): number {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const ca = ia.next();
    const cb = ib.next();
    if (ca.done === true) return cb.done === true ? 0 : -1;
    if (cb.done === true) return 1;
    const diff = (ca.value.codePointAt(0) ?? 0) - (cb.value.codePointAt(0) ?? 0);
    if (diff !== 0) return diff;
  }
}

function isSkippable(value: unknown): boolean {
  return value === undefined || typeof value === 'function' || typeof value === 'symbol';
}

function encode(value: unknown, depth: number, seen: Set<object>): string {
  if (value !== null && typeof value === 'object' && 'toJSON' in value && typeof value.toJSON === 'function') {
    value = (value.toJSON as () => unknown).call(value);
  }
  if (value === null) return 'null';
  if (value instanceof PyFloat) return pythonFloatRepr(value.value);
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      return encodeNumber(value);
    case 'bigint':
      return value.toString();
    case 'string':
      return encodeString(value);
    case 'object':
      break;
    default:
      throw new TypeError(`frappeJson: cannot serialise a ${typeof value}`);
  }
  if (seen.has(value)) throw new TypeError('frappeJson: circular structure');
  seen.add(value);
  const inner = '\n' + ' '.repeat(depth + 1);
  const outer = '\n' + ' '.repeat(depth);
  let result: string;
  if (Array.isArray(value)) {
    const items = value.map((item: unknown) => (isSkippable(item) ? 'null' : encode(item, depth + 1, seen)));
    result = items.length === 0 ? '[]' : `[${inner}${items.join(`,${inner}`)}${outer}]`;
  } else {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => !isSkippable(v))
      .sort(([a], [b]) => compareCodePoints(a, b))
      .map(([k, v]) => `${encodeString(k)}: ${encode(v, depth + 1, seen)}`);
    result = entries.length === 0 ? '{}' : `{${inner}${entries.join(`,${inner}`)}${outer}}`;
  }
  seen.delete(value);
  return result;
}

export function frappeJson(value: unknown): string {
  if (isSkippable(value)) throw new TypeError('frappeJson: nothing to serialise');
  return encode(value, 0, new Set());
}
