/**
 * Micro-benchmark of LmdbBackend.writeBatch (group commit, DESIGN §8): batches of 1, 64 and
 * 512 ops, each op one log entry (a put of a 100-byte value) appended AND applied, spread
 * over 16 partitions, one batch in flight at a time (as the storage server's BatchWriter
 * does). Prints ops/s and the mean batch latency for --sync batch and --sync none.
 *
 * Not a test (no *.test.ts): run `npm run build && node dist/test/storage/lmdb-batch.bench.js [seconds]`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LogEntry, type PartitionId, epoch, partitionId, seq } from '../../src/core/types.js';
import type { BatchOp, SyncMode } from '../../src/storage/backend.js';
import { LmdbBackend } from '../../src/storage/lmdb.js';

const PARTITIONS = 16;
const VALUE_BYTES = 100;
const BATCH_SIZES = [1, 64, 512] as const;
/** Bounds the run whatever the clock says. */
const MAX_BATCHES = 1_000_000;
const encoder = new TextEncoder();

interface Result {
  readonly sync: SyncMode;
  readonly batchOps: number;
  readonly batches: number;
  readonly ops: number;
  readonly seconds: number;
}

async function run(sync: SyncMode, batchOps: number, seconds: number): Promise<Result> {
  const dir = await mkdtemp(join(tmpdir(), 'dstore-lmdb-bench-'));
  const backend = await LmdbBackend.open({ dataDir: dir, sync });
  try {
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
      for (const [partition, entries] of byPartition) {
        ops.push({ kind: 'appendLog', partition, entries }, { kind: 'apply', partition, entries });
      }
      return ops;
    };
    // Warm up (page cache, code paths), then measure.
    for (let i = 0; i < 20; i++) await backend.writeBatch(makeBatch());
    const startNs = process.hrtime.bigint();
    const deadlineNs = startNs + BigInt(Math.round(seconds * 1e9));
    let batches = 0;
    for (; batches < MAX_BATCHES; batches++) {
      await backend.writeBatch(makeBatch());
      if ((batches & 7) === 7 && process.hrtime.bigint() >= deadlineNs) {
        batches += 1;
        break;
      }
    }
    const elapsed = Number(process.hrtime.bigint() - startNs) / 1e9;
    return { sync, batchOps, batches, ops: batches * batchOps, seconds: elapsed };
  } finally {
    await backend.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[2] ?? 3);
  console.log(`lmdb writeBatch: ops = appendLog+apply of one ${VALUE_BYTES}-byte put, ${PARTITIONS} partitions, one batch in flight, ${seconds}s each, tmpdir ${tmpdir()}`);
  console.log('sync   batch-ops     ops/s   batches/s   mean batch ms');
  for (const sync of ['batch', 'none'] as const) {
    for (const batchOps of BATCH_SIZES) {
      const r = await run(sync, batchOps, seconds);
      const opsPerSecond = r.ops / r.seconds;
      const batchesPerSecond = r.batches / r.seconds;
      console.log(
        `${sync.padEnd(5)}  ${String(batchOps).padStart(9)}  ${opsPerSecond.toFixed(0).padStart(8)}  ${batchesPerSecond.toFixed(0).padStart(10)}  ${((1000 * r.seconds) / r.batches).toFixed(3).padStart(14)}`,
      );
    }
  }
}

await main();
