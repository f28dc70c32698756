/**
 * Micro-benchmark of RedisBackend.writeBatch, the twin of lmdb-batch.bench.ts: batches of
 * 1, 64 and 512 ops, each op one log entry (a put of a 100-byte value) appended AND applied,
 * spread over 16 partitions. One batch in flight at a time (as the storage server's
 * BatchWriter does), and also 8 in flight (pipelined: Redis fsyncs every script that
 * arrived in one event-loop turn together). Prints ops/s and the mean batch latency for
 * --sync batch (redis-server --appendfsync always) and --sync none (--appendfsync everysec).
 * Each configuration gets a fresh redis-server on a free loopback port in a temp dir.
 *
 * Not a test (no *.test.ts): run `npm run build && node dist/test/storage/redis-batch.bench.js [seconds]`.
 */
import { tmpdir } from 'node:os';
import { type LogEntry, type PartitionId, epoch, partitionId, seq } from '../../src/core/types.js';
import type { BatchOp, SyncMode } from '../../src/storage/backend.js';
import { RedisBackend } from '../../src/storage/redis.js';
import { REDIS_SKIP, redisInstalled, startRedis } from './redis-server.js';

const PARTITIONS = 16;
const VALUE_BYTES = 100;
const BATCH_SIZES = [1, 64, 512] as const;
const IN_FLIGHT = [1, 8] as const;
/** Bounds the run whatever the clock says. */
const MAX_BATCHES = 1_000_000;
const encoder = new TextEncoder();

interface Result {
  readonly batches: number;
  readonly ops: number;
  readonly seconds: number;
}

async function run(sync: SyncMode, batchOps: number, inFlight: number, seconds: number): Promise<Result> {
  const server = await startRedis({ appendfsync: sync === 'batch' ? 'always' : 'everysec' });
  try {
    const backend = await RedisBackend.open({ url: server.url, sync });
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
      // Warm up (script cache, connection), then measure.
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
    } finally {
      await backend.close();
    }
  } finally {
    await server.destroy();
  }
}

async function main(): Promise<void> {
  if (!redisInstalled) {
    console.log(`skipped: ${REDIS_SKIP}`);
    return;
  }
  const seconds = Number(process.argv[2] ?? 3);
  console.log(`redis writeBatch: ops = appendLog+apply of one ${VALUE_BYTES}-byte put, ${PARTITIONS} partitions, ${seconds}s each, redis-server dir in ${tmpdir()}`);
  console.log('sync   in-flight  batch-ops     ops/s   batches/s   mean batch ms');
  for (const sync of ['batch', 'none'] as const) {
    for (const inFlight of IN_FLIGHT) {
      for (const batchOps of BATCH_SIZES) {
        const r = await run(sync, batchOps, inFlight, seconds);
        const opsPerSecond = r.ops / r.seconds;
        const batchesPerSecond = r.batches / r.seconds;
        // With k batches in flight each one waits about k batch-times.
        const meanMs = (1000 * r.seconds * inFlight) / r.batches;
        console.log(
          `${sync.padEnd(5)}  ${String(inFlight).padStart(9)}  ${String(batchOps).padStart(9)}  ${opsPerSecond.toFixed(0).padStart(8)}  ${batchesPerSecond.toFixed(0).padStart(10)}  ${meanMs.toFixed(3).padStart(14)}`,
        );
      }
    }
  }
}

await main();
