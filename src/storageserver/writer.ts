/**
 * Group commit (DESIGN §8): storage ops from every partition accumulate while the previous
 * batch is being written, then go to the backend as ONE atomic, durable batch. Each batch
 * has a number; `after(partition, fn)` runs `fn` once every op that partition enqueued so
 * far is durable, in the order `after` was called — the ordering contract of the replica
 * core (src/core/replica/replica.ts).
 *
 * A batch that fails may or may not be durable, and every later one was planned on top of
 * it: the writer stops for good. `onFailed` is called once; nothing enqueued or waiting runs
 * from then on (no ack, reply or send may depend on a write the backend did not confirm),
 * and later `enqueue`/`after` calls are dropped.
 *
 * The bookkeeping is the host's (GroupCommit in host.ts); this class runs it against a
 * backend. The storage server itself drives group commit through the host (server.ts).
 */
import type { BatchOp, BatchResult, Backend } from '../storage/backend.js';
import type { PartitionId } from '../core/types.js';
import { GroupCommit } from './host.js';

export interface BatchDone {
  readonly ops: readonly BatchOp[];
  readonly result: BatchResult;
  /** The write ids enqueued with the ops of this batch, per partition. */
  readonly writeIds: ReadonlyArray<{ partition: PartitionId; writeId: number }>;
}

export class BatchWriter {
  private readonly commit = new GroupCommit();
  private failed: Error | undefined;

  constructor(
    private readonly backend: Backend,
    private readonly onDone: (done: BatchDone) => void,
    private readonly onFailed: (err: Error) => void,
  ) {}

  /** The failure that stopped this writer, if any. */
  get failure(): Error | undefined {
    return this.failed;
  }

  enqueue(partition: PartitionId, ops: readonly BatchOp[], writeId?: number): void {
    if (this.failed) return; // stopped: the caller's state is being discarded
    this.commit.enqueue(partition, ops, writeId);
    if (this.commit.wantsStart) queueMicrotask(() => this.startBatch());
  }

  /** Runs `fn` after everything `partition` enqueued so far is durable. */
  after(partition: PartitionId, fn: () => void): void {
    if (this.failed) return; // never: `fn` may depend on a write that failed
    this.commit.after(partition, fn);
  }

  /** Resolves once nothing is queued or being written. */
  async idle(): Promise<void> {
    for (let i = 0; i < 10_000 && this.commit.busy && !this.failed; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  private startBatch(): void {
    if (this.failed) return;
    const next = this.commit.start();
    if (!next) return;
    this.backend.writeBatch(next.ops).then(
      (result) => {
        const writeIds = this.commit.committed();
        this.onDone({ ops: next.ops, result, writeIds });
        this.commit.release();
        this.startBatch();
      },
      (err: unknown) => {
        // The in-memory state now runs ahead of the disk: stop rather than diverge.
        this.failed = err instanceof Error ? err : new Error(String(err));
        this.onFailed(this.failed);
      },
    );
  }
}
