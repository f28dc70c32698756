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
import type { SyncMode } from '../../src/storage/backend.js';
import { RedisBackend } from '../../src/storage/redis.js';
import { BATCH_SIZES, type BatchRun, PARTITIONS, VALUE_BYTES, measureBatches } from './batch-bench.js';
import { REDIS_SKIP, redisInstalled, startRedis } from './redis-server.js';

const IN_FLIGHT = [1, 8] as const;

async function run(sync: SyncMode, batchOps: number, inFlight: number, seconds: number): Promise<BatchRun> {
  const server = await startRedis({ appendfsync: sync === 'batch' ? 'always' : 'everysec' });
  try {
    const backend = await RedisBackend.open({ url: server.url, sync });
    try {
      return await measureBatches(backend, batchOps, seconds, inFlight);
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
  console.log(
    `redis writeBatch: ops = appendLog+apply of one ${VALUE_BYTES}-byte put, ` +
      `${PARTITIONS} partitions, ${seconds}s each, redis-server dir in ${tmpdir()}`,
  );
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
          `${sync.padEnd(5)}  ${String(inFlight).padStart(9)}  ${String(batchOps).padStart(9)} ` +
            ` ${opsPerSecond.toFixed(0).padStart(8)}  ${batchesPerSecond.toFixed(0).padStart(10)} ` +
            ` ${meanMs.toFixed(3).padStart(14)}`,
        );
      }
    }
  }
}

await main();
