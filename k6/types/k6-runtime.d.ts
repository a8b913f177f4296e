/**
 * Globals the k6 runtime provides that `@types/k6` does not declare and
 * `lib: es2020` lacks.
 */
interface K6Console {
  log(...args: unknown[]): void;
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
  debug(...args: unknown[]): void;
}

declare const console: K6Console;
