/**
 * The writer lmdb-crash.test.ts kills: opens the lmdb backend in the data dir it is given and
 * writes like a replica does, until it is killed. Each batch appends entry s of every
 * partition, applies entry s - 1 (committed one batch later, as a secondary learns the commit
 * point with the next prepare) and, every 20 entries, truncates the log 40 entries behind the
 * applied point. Every put writes key `k<s % 97>` with value `v<s>`, so keys are overwritten
 * many times. It prints `acked <s>` once the batch writing entry s has resolved (so entry s is
 * durable in the log and entries up to s - 1 are applied). It starts after what the dir holds.
 */
import { createInterface } from 'node:readline';
import type { BatchOp } from '../../src/storage/backend.js';
import { LmdbBackend } from '../../src/storage/lmdb.js';
import { epoch, type LogEntry, seq } from '../../src/core/types.js';
import { CRASH_PARTITIONS, crashEntry } from './lmdb-crash-workload.js';

async function main(): Promise<void> {
  const dir = process.argv[2];
  if (dir === undefined) throw new Error('usage: lmdb-crash-child <data dir>');
  const backend = await LmdbBackend.open({ dataDir: dir, logSegmentBytes: 64 * 1024 });
  const [state] = await backend.partitions();
  let s = (state?.logLast.seq ?? 0) + 1;
  let applied = state?.applied.seq ?? 0;
  // The parent kills this process; stdin closing (the parent gone) ends it too.
  createInterface({ input: process.stdin }).on('close', () => process.exit(0));
  // Bounded: the parent kills it long before; 1,000,000 batches at most.
  for (let i = 0; i < 1_000_000; i++, s++) {
    const ops: BatchOp[] = [];
    for (const partition of CRASH_PARTITIONS) {
      ops.push({ kind: 'appendLog', partition, entries: [crashEntry(s)] });
      if (applied < s - 1) {
        const entries: LogEntry[] = [];
        for (let a = applied + 1; a <= s - 1; a++) entries.push(crashEntry(a));
        ops.push({ kind: 'apply', partition, entries });
      }
      if (s % 20 === 0 && s - 1 - 40 > 0) {
        ops.push({ kind: 'truncateLogTo', partition, base: { seq: seq(s - 1 - 40), epoch: epoch(1) } });
      }
    }
    await backend.writeBatch(ops);
    applied = s - 1;
    process.stdout.write(`acked ${s}\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${String(err)}\n`);
  process.exit(1);
});
