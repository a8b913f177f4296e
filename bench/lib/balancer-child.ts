/**
 * The bench's load balancer in its own process (as a real one would be: its
 * CPU is not the orchestrator's and it does not share an event loop with it).
 * IPC: {type:'start', options} -> {type:'listening', port}; {type:'stats'} -> {type:'stats', stats}.
 */
import { Balancer, type BalancerOptions } from './balancer';

let balancer: Balancer | undefined;

process.on('message', (raw: unknown) => {
  const m = raw as { type: 'start'; options: BalancerOptions } | { type: 'stats' };
  if (m.type === 'start') {
    Balancer.start(m.options).then(
      (b) => {
        balancer = b;
        process.send?.({ type: 'listening', port: b.port });
      },
      (err: unknown) => process.send?.({ type: 'error', message: err instanceof Error ? err.message : String(err) }),
    );
  } else if (m.type === 'stats') {
    process.send?.({ type: 'stats', stats: balancer?.stats() });
  }
});
process.on('disconnect', () => process.exit(0));
process.send?.({ type: 'ready' });
