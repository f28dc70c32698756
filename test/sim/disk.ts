/**
 * The simulated durable storage of one storage server: what its backend holds on disk,
 * per partition — log, applied data with versions, dedup table (S10), metadata (S3) —
 * with the same batch semantics and preconditions as src/storage/memory.ts (it calls the
 * same checks in src/storage/preconditions.ts). A batch reaches the disk only when its
 * simulated fsync completes (see SimWriter in storage-node.ts); a crash keeps exactly what
 * reached it, as Jepsen's lazyfs does. Everything here survives crashes; nothing else does.
 */
import type { BatchOp, DedupRecord, LogPosition, PartitionMeta } from '../../src/core/replica/ops.js';
import { assertNever, type LogEntry, type PartitionId, type Seq, InvariantViolation } from '../../src/core/types.js';
import {
  ZERO_POSITION,
  checkDedupTable,
  checkEntriesFollow,
  checkSetMeta,
  checkTag,
  checkTruncateLogFrom,
  checkTruncateLogTo,
  dedupRecord,
} from '../../src/storage/preconditions.js';

const decoder = new TextDecoder();
const encoder = new TextEncoder();
export const text = (b: Uint8Array): string => decoder.decode(b);

export interface StoredValue {
  readonly value: string;
  readonly version: Seq;
  /** §16 (TTL): when the value expires, by the clock of the primary that logged it. */
  readonly expiresAt?: number;
}

export interface PartitionDisk {
  meta: PartitionMeta | null;
  applied: LogPosition;
  logBase: LogPosition;
  /** Entries logBase.seq+1 .. logBase.seq+log.length. */
  log: LogEntry[];
  data: Map<string, StoredValue>;
  dedup: Map<string, DedupRecord>;
}

/** Everything an observer learns from one durable batch. */
export interface DiskEvents {
  /** Per applied entry: the partition, the entry, and a digest of data + dedup after it. */
  onApplied(partition: PartitionId, entry: LogEntry, digest: string): void;
}

export interface SnapshotImage {
  readonly applied: LogPosition;
  readonly data: ReadonlyArray<readonly [string, StoredValue]>;
  readonly dedup: readonly DedupRecord[];
}

export class SimDisk {
  readonly parts = new Map<PartitionId, PartitionDisk>();

  lastPosition(p: PartitionId): LogPosition {
    const d = this.parts.get(p);
    if (!d) return ZERO_POSITION;
    const last = d.log[d.log.length - 1];
    return last ? { seq: last.seq, epoch: last.epoch } : d.logBase;
  }

  /**
   * Writes one batch atomically (the preconditions are checked on a copy first, so a
   * failing batch changes nothing). Returns, for every applied delete, whether the key
   * existed. Throws InvariantViolation when the core asked for something impossible — the
   * real storage server stops there (exit 70).
   */
  write(ops: readonly BatchOp[], events?: DiskEvents): Array<{ partition: PartitionId; seq: Seq; existed: boolean }> {
    // Dry run on copies of the touched partitions, then swap them in.
    const touched = new Map<PartitionId, PartitionDisk | null>();
    const view = (p: PartitionId): PartitionDisk => {
      if (!touched.has(p)) {
        const d = this.parts.get(p);
        touched.set(
          p,
          d
            ? { ...d, log: [...d.log], data: new Map(d.data), dedup: new Map(d.dedup) }
            : {
                meta: null,
                applied: ZERO_POSITION,
                logBase: ZERO_POSITION,
                log: [],
                data: new Map(),
                dedup: new Map(),
              },
        );
      }
      const v = touched.get(p);
      if (v === null || v === undefined) {
        const fresh: PartitionDisk = {
          meta: null,
          applied: ZERO_POSITION,
          logBase: ZERO_POSITION,
          log: [],
          data: new Map(),
          dedup: new Map(),
        };
        touched.set(p, fresh);
        return fresh;
      }
      return v;
    };
    const deletes: Array<{ partition: PartitionId; seq: Seq; existed: boolean }> = [];
    const applied: Array<{ partition: PartitionId; entry: LogEntry; digest: string }> = [];
    for (const op of ops) {
      switch (op.kind) {
        case 'appendLog': {
          const d = view(op.partition);
          checkEntriesFollow(op.partition, 'appendLog', lastOf(d), op.entries);
          d.log.push(...op.entries);
          break;
        }
        case 'truncateLogFrom': {
          const d = view(op.partition);
          checkTruncateLogFrom(op.partition, op.fromSeq, d.applied);
          const keep = Math.max(0, op.fromSeq - d.logBase.seq - 1);
          if (keep < d.log.length) d.log.length = keep;
          break;
        }
        case 'truncateLogTo': {
          const d = view(op.partition);
          checkTruncateLogTo(
            op.partition,
            op.base,
            { applied: d.applied, logBase: d.logBase, logLast: lastOf(d) },
            (s) => d.log[s - d.logBase.seq - 1]!.epoch,
          );
          const drop = Math.min(op.base.seq - d.logBase.seq, d.log.length);
          d.log = d.log.slice(drop);
          d.logBase = op.base;
          break;
        }
        case 'apply': {
          const d = view(op.partition);
          checkEntriesFollow(op.partition, 'apply', d.applied, op.entries);
          for (const e of op.entries) {
            checkTag(op.partition, e);
            let existed: boolean | undefined;
            if (e.op.kind === 'put') {
              const expiry = e.op.expiresAt === undefined ? {} : { expiresAt: e.op.expiresAt };
              d.data.set(text(e.op.key), { value: text(e.op.value), version: e.seq, ...expiry });
            } else if (e.op.kind === 'delete') {
              existed = d.data.delete(text(e.op.key));
              deletes.push({ partition: op.partition, seq: e.seq, existed });
            }
            if (e.tag !== undefined) d.dedup.set(e.tag.clientId, dedupRecord(e.tag, e.seq, existed));
            d.applied = { seq: e.seq, epoch: e.epoch };
            if (events) applied.push({ partition: op.partition, entry: e, digest: digestOf(d) });
          }
          break;
        }
        case 'setMeta': {
          const d = view(op.partition);
          checkSetMeta(op.partition, d.meta, op.meta);
          d.meta = op.meta;
          break;
        }
        case 'dropPartition':
          touched.set(op.partition, null);
          break;
        default:
          assertNever(op);
      }
    }
    for (const [p, d] of touched) {
      if (d === null) this.parts.delete(p);
      else this.parts.set(p, d);
    }
    for (const a of applied) events!.onApplied(a.partition, a.entry, a.digest);
    return deletes;
  }

  /** A point-in-time image of a partition's applied state (what backend.snapshot reads). */
  snapshot(p: PartitionId): SnapshotImage {
    const d = this.parts.get(p);
    if (!d) return { applied: ZERO_POSITION, data: [], dedup: [] };
    return {
      applied: d.applied,
      data: [...d.data.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      dedup: [...d.dedup.values()],
    };
  }

  /** S11: replaces data, dedup table and log with a snapshot's, atomically; keeps the metadata. */
  installSnapshot(p: PartitionId, image: SnapshotImage): void {
    checkDedupTable(p, image.applied, image.dedup);
    for (const [, v] of image.data) {
      if (v.version > image.applied.seq)
        throw new InvariantViolation(
          `partition ${p}: installSnapshot: an item has version ${v.version}, ` +
            `above the snapshot's seq ${image.applied.seq}`,
        );
    }
    const meta = this.parts.get(p)?.meta ?? null;
    this.parts.set(p, {
      meta,
      applied: image.applied,
      logBase: image.applied,
      log: [],
      data: new Map(image.data),
      dedup: new Map(image.dedup.map((r) => [r.clientId, r])),
    });
  }

  /** A deep copy (entries and records are immutable, so they are shared). */
  clone(): SimDisk {
    const c = new SimDisk();
    for (const [p, d] of this.parts)
      c.parts.set(p, { ...d, log: [...d.log], data: new Map(d.data), dedup: new Map(d.dedup) });
    return c;
  }

  digest(p: PartitionId): string {
    const d = this.parts.get(p);
    return d ? digestOf(d) : '';
  }

  get(p: PartitionId, key: string): StoredValue | undefined {
    return this.parts.get(p)?.data.get(key);
  }

  /** §16: the values of `p` with an expiry (what the real server's `scanExpiry` reads from its backend). */
  expiring(p: PartitionId): Array<{ key: Uint8Array; version: number; expiresAt: number }> {
    const out: Array<{ key: Uint8Array; version: number; expiresAt: number }> = [];
    for (const [k, v] of this.parts.get(p)?.data ?? [])
      if (v.expiresAt !== undefined) out.push({ key: encoder.encode(k), version: v.version, expiresAt: v.expiresAt });
    return out;
  }

  dedupRecord(p: PartitionId, clientId: string): DedupRecord | undefined {
    return this.parts.get(p)?.dedup.get(clientId);
  }
}

function lastOf(d: PartitionDisk): LogPosition {
  const last = d.log[d.log.length - 1];
  return last ? { seq: last.seq, epoch: last.epoch } : d.logBase;
}

/** The applied state as one comparable string: data with versions, then the dedup table. */
function digestOf(d: PartitionDisk): string {
  const data = [...d.data.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v.value}@${v.version}${v.expiresAt === undefined ? '' : `~${v.expiresAt}`}`);
  const dedup = [...d.dedup.values()]
    .sort((a, b) => (a.clientId < b.clientId ? -1 : a.clientId > b.clientId ? 1 : 0))
    .map((r) => `${r.clientId}:${r.requestSeq}@${r.seq}${r.existed === undefined ? '' : r.existed ? '+' : '-'}`);
  return `${data.join(',')}|${dedup.join(',')}`;
}
