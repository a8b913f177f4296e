import type { AdapterMode } from '../config';
import { encodeRoomBroadcast } from '../events/encode';
import type { Metrics } from '../metrics/metrics';
import type { RedisClient } from '../redis/connect';
import type { Keys } from '../redis/keys';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';
import { openDocRoom } from '../events/rooms';
import { sweepDeadWorker, type Liveness } from './redis-presence';

export interface SweeperDeps {
  readonly cmd: RedisClient;
  readonly keys: Keys;
  readonly liveness: Liveness;
  readonly adapterMode: AdapterMode;
  readonly metrics: Metrics;
  readonly log: Logger;
}

/**
 * Presence of a process that died: removes its entries and sends the new
 * `doc_viewers` to each affected document's viewers. The primary sweeps its
 * own dead workers at once; the leader sweeps processes of hosts that died
 * as a whole (their liveness expired).
 */
export class PresenceSweeper {
  constructor(private readonly d: SweeperDeps) {}

  async sweep(nodeId: string): Promise<void> {
    const { cmd, keys, liveness, adapterMode, metrics, log } = this.d;
    const changed = await sweepDeadWorker(cmd, keys, nodeId, liveness);
    for (const { ref, users } of changed) {
      const p = encodeRoomBroadcast(adapterMode, keys.adapterPrefix, ref.site, openDocRoom(ref.doctype, ref.docname), 'doc_viewers', [
        { doctype: ref.doctype, docname: ref.docname, users },
      ]);
      await (adapterMode === 'sharded' ? cmd.spublish(p.channel, p.payload) : cmd.publish(p.channel, p.payload));
    }
    await liveness.remove(nodeId);
    metrics.presenceSweeps.inc(changed.length);
    if (changed.length > 0) log.info({ worker: nodeId, documents: changed.length }, 'swept presence of a dead process');
  }

  /** Sweeps every process whose liveness expired. */
  async sweepDead(): Promise<void> {
    const { dead } = await this.d.liveness.all();
    for (const id of dead) await this.sweep(id);
  }

  sweepInBackground(nodeId: string): void {
    this.sweep(nodeId).catch((err: unknown) => this.d.log.warn({ err: errorMessage(err) }, 'presence sweep failed'));
  }
}
