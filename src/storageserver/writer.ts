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
 * and later `enqueue`/`after` calls are dropped. The storage server then replaces the
 * writer with a new one on a reopened backend (server.ts, "storage failure").
 */
import type { BatchOp, BatchResult, Backend } from '../storage/backend.js';
import type { PartitionId } from '../core/types.js';

export interface BatchDone {
  readonly ops: readonly BatchOp[];
  readonly result: BatchResult;
  /** The write ids enqueued with the ops of this batch, per partition. */
  readonly writeIds: ReadonlyArray<{ partition: PartitionId; writeId: number }>;
}

export class BatchWriter {
  private ops: BatchOp[] = [];
  private writeIds: Array<{ partition: PartitionId; writeId: number }> = [];
  private inFlight = false;
  /** Number of the batch now accumulating. */
  private openBatch = 1;
  private committedBatch = 0;
  private readonly lastBatchOf = new Map<PartitionId, number>();
  private readonly waiting = new Map<PartitionId, Array<{ batch: number; fn: () => void }>>();
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
    for (const op of ops) this.ops.push(op);
    if (writeId !== undefined) this.writeIds.push({ partition, writeId });
    this.lastBatchOf.set(partition, this.openBatch);
    if (!this.inFlight) queueMicrotask(() => this.startBatch());
  }

  /** Runs `fn` after everything `partition` enqueued so far is durable. */
  after(partition: PartitionId, fn: () => void): void {
    if (this.failed) return; // never: `fn` may depend on a write that failed
    const batch = this.lastBatchOf.get(partition) ?? 0;
    const queue = this.waiting.get(partition);
    if (!queue && batch <= this.committedBatch) return fn();
    if (queue) queue.push({ batch, fn });
    else this.waiting.set(partition, [{ batch, fn }]);
  }

  /** Resolves once nothing is queued or being written. */
  async idle(): Promise<void> {
    for (let i = 0; i < 10_000 && (this.inFlight || this.ops.length > 0) && !this.failed; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  private startBatch(): void {
    if (this.inFlight || this.ops.length === 0 || this.failed) return;
    this.inFlight = true;
    const ops = this.ops;
    const writeIds = this.writeIds;
    this.ops = [];
    this.writeIds = [];
    const batch = this.openBatch++;
    this.backend.writeBatch(ops).then(
      (result) => {
        this.committedBatch = batch;
        this.inFlight = false;
        this.onDone({ ops, result, writeIds });
        this.runWaiting();
        this.startBatch();
      },
      (err: unknown) => {
        // The in-memory state now runs ahead of the disk: stop rather than diverge.
        this.inFlight = false;
        this.failed = err instanceof Error ? err : new Error(String(err));
        this.ops = [];
        this.writeIds = [];
        this.waiting.clear();
        this.onFailed(this.failed);
      },
    );
  }

  private runWaiting(): void {
    for (const [partition, queue] of this.waiting) {
      // The queue stays registered while its callbacks run, so an after() they call queues behind.
      while (queue.length > 0 && queue[0]!.batch <= this.committedBatch) queue.shift()!.fn();
      if (queue.length === 0) this.waiting.delete(partition);
    }
  }
}
