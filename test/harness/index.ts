/** The test harness in one import: `import { startRedis, startGateway, connectClient } from '../harness';` */
export * from './clients';
export * from './fake-frappe';
export * from './gateway';
export * from './http';
export * from './paths';
export * from './ports';
export * from './prometheus';
export * from './redis';
export * from './scope';
export { HarnessTimeoutError, pollUntil, withTimeout, settlesWithin, type PollOptions } from './wait';
export type { ExitInfo } from './processes';
