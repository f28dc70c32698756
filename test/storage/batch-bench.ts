/**
 * The shared part of the writeBatch micro-benchmarks (lmdb-batch.bench.ts,
 * redis-batch.bench.ts): batches of log entries (a put of a 100-byte value each) appended
 * AND applied, spread over 16 partitions, with `inFlight` batches outstanding at a time.
 */
import { type LogEntry, type PartitionId, epoch, partitionId, seq } from '../../src/core/types.js';
import type { Backend, BatchOp } from '../../src/storage/backend.js';

export const PARTITIONS = 16;
export const VALUE_BYTES = 100;
export const BATCH_SIZES = [1, 64, 512] as const;
/** Bounds the run whatever the clock says. */
const MAX_BATCHES = 1_000_000;
const encoder = new TextEncoder();

export interface BatchRun {
  readonly batches: number;
  readonly ops: number;
  readonly seconds: number;
}

/** Warms up (20 batches), then writes batches of `batchOps` ops for `seconds`. */
export async function measureBatches(
  backend: Backend,
  batchOps: number,
  seconds: number,
  inFlight = 1,
): Promise<BatchRun> {
  const nextSeq = new Array<number>(PARTITIONS).fill(1);
  const value = new Uint8Array(VALUE_BYTES).fill(0x61);
  let n = 0;
  const makeBatch = (): BatchOp[] => {
    const byPartition = new Map<PartitionId, LogEntry[]>();
    for (let i = 0; i < batchOps; i++, n++) {
      const p = partitionId(n % PARTITIONS);
      const s = nextSeq[p]!;
      nextSeq[p] = s + 1;
      // Keys spread over the key space, as hashed client keys would be.
      const key = encoder.encode(`key-${(n * 2654435761) % 1_000_003}`);
      const entry: LogEntry = { epoch: epoch(1), seq: seq(s), op: { kind: 'put', key, value } };
      const list = byPartition.get(p);
      if (list) list.push(entry);
      else byPartition.set(p, [entry]);
    }
    const ops: BatchOp[] = [];
    for (const [partition, entries] of byPartition)
      ops.push({ kind: 'appendLog', partition, entries }, { kind: 'apply', partition, entries });
    return ops;
  };
  // Warm up (page cache, script cache, code paths), then measure.
  for (let i = 0; i < 20; i++) await backend.writeBatch(makeBatch());
  const startNs = process.hrtime.bigint();
  const deadlineNs = startNs + BigInt(Math.round(seconds * 1e9));
  let batches = 0;
  // `inFlight` loops, each with one batch outstanding; the backend orders them by call.
  const loop = async (): Promise<void> => {
    while (batches < MAX_BATCHES && process.hrtime.bigint() < deadlineNs) {
      batches += 1;
      await backend.writeBatch(makeBatch());
    }
  };
  await Promise.all(Array.from({ length: inFlight }, loop));
  const elapsed = Number(process.hrtime.bigint() - startNs) / 1e9;
  return { batches, ops: batches * batchOps, seconds: elapsed };
}
