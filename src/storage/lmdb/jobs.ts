/** The lmdb backend's write jobs and the per-transaction view of partition states they run on. */
import type { Database } from 'lmdb';
import type { PartitionId } from '../../core/types.js';
import type { PartState } from './layout.js';

// ---------------------------------------------------------------------------------------
// Per-transaction view of the partition states.
// ---------------------------------------------------------------------------------------

export interface StateSource {
  state(partition: PartitionId): PartState | undefined;
}

/** Changes on top of a parent view; `null` marks a dropped partition. */
export class Overlay implements StateSource {
  readonly changes = new Map<PartitionId, PartState | null>();
  constructor(private readonly parent: StateSource) {}
  state(partition: PartitionId): PartState | undefined {
    const changed = this.changes.get(partition);
    if (changed !== undefined) return changed ?? undefined;
    return this.parent.state(partition);
  }
  set(partition: PartitionId, s: PartState | null): void {
    this.changes.set(partition, s);
  }
  mergeInto(target: Overlay): void {
    for (const [p, s] of this.changes) target.set(p, s);
  }
}

/** A batch op's bytes, encoded when writeBatch is called. */
export interface PreparedOp {
  /** appendLog: each entry's log record. */
  readonly records?: readonly Buffer[];
  /** apply: each entry's data key (generation left blank) and put value; null where unused. */
  readonly keys?: ReadonlyArray<Buffer | null>;
  readonly values?: ReadonlyArray<Buffer | null>;
  /**
   * apply, S10: each tagged entry's dedup key (generation left blank) and, except for a
   * delete (whose record says whether the key existed, known only in the transaction),
   * its record; null where unused.
   */
  readonly dedupKeys?: ReadonlyArray<Buffer | null>;
  readonly dedupValues?: ReadonlyArray<Buffer | null>;
}

/** One unit of the write queue; `run` executes inside a child transaction. */
export interface Job {
  readonly weight: number;
  /** Internal jobs (garbage collection) are dropped at close. */
  readonly internal: boolean;
  run(view: Overlay): unknown;
  settle(outcome: { ok: true; value: unknown } | { ok: false; error: unknown }): void;
}

/** A put of a snapshot being staged: into `data` or `dedup`. */
export type StagedPut = readonly [Database<Buffer, Buffer>, Buffer, Buffer];

export interface OpenSnapshot {
  done(): void;
}
