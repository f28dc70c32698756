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
import type { SyncMode } from '../../src/storage/backend.js';
import { LmdbBackend } from '../../src/storage/lmdb.js';
import { BATCH_SIZES, type BatchRun, PARTITIONS, VALUE_BYTES, measureBatches } from './batch-bench.js';

async function run(sync: SyncMode, batchOps: number, seconds: number): Promise<BatchRun> {
  const dir = await mkdtemp(join(tmpdir(), 'dstore-lmdb-bench-'));
  const backend = await LmdbBackend.open({ dataDir: dir, sync });
  try {
    return await measureBatches(backend, batchOps, seconds);
  } finally {
    await backend.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[2] ?? 3);
  console.log(
    `lmdb writeBatch: ops = appendLog+apply of one ${VALUE_BYTES}-byte put, ` +
      `${PARTITIONS} partitions, one batch in flight, ${seconds}s each, tmpdir ` +
      `${tmpdir()}`,
  );
  console.log('sync   batch-ops     ops/s   batches/s   mean batch ms');
  for (const sync of ['batch', 'none'] as const) {
    for (const batchOps of BATCH_SIZES) {
      const r = await run(sync, batchOps, seconds);
      const opsPerSecond = r.ops / r.seconds;
      const batchesPerSecond = r.batches / r.seconds;
      console.log(
        `${sync.padEnd(5)}  ${String(batchOps).padStart(9)}  ${opsPerSecond.toFixed(0).padStart(8)} ` +
          ` ${batchesPerSecond.toFixed(0).padStart(10)}  ${((1000 * r.seconds) / r.batches).toFixed(3).padStart(14)}`,
      );
    }
  }
}

await main();
