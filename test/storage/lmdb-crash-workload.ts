/** What lmdb-crash-child.ts writes and lmdb-crash.test.ts checks. */
import { epoch, type LogEntry, partitionId, seq } from '../../src/core/types.js';

export const CRASH_PARTITIONS = [partitionId(1), partitionId(2)];

export function crashEntry(s: number): LogEntry {
  return {
    seq: seq(s),
    epoch: epoch(1),
    op: { kind: 'put', key: Buffer.from(`k${s % 97}`), value: Buffer.from(`v${s}`) },
  };
}
