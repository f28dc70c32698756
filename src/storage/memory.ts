/**
 * The in-memory backend (DESIGN §8): for tests and the simulator. Nothing survives the
 * process; a restarted replica on it rejoins as a learner (S4).
 *
 * It implements the same contract as the durable backends, preconditions included, so a
 * test that passes on it says something about lmdb: `writeBatch` runs its ops in order,
 * each checked against the state the earlier ops of the batch left, and either all of a
 * batch takes effect or none of it (an undo list rolls back a batch that throws).
 * Batches take effect in call order. Stored and returned bytes are copies, returned as
 * plain `Uint8Array`s, so callers can neither alias nor corrupt the stored state.
 * The precondition checks every backend shares are in preconditions.ts.
 *
 * S10: each partition keeps a dedup table (client id → its last applied write), changed by
 * `apply` under the same undo list as the data, so it moves atomically with it.
 */
import {
  type LogEntry,
  type Op,
  type PartitionId,
  type Seq,
  type VersionedValue,
  assert,
  assertNever,
} from '../core/types.js';
import { StorageFailureError } from '../core/errors.js';
import { checkScanOptions, hasPrefix, scanStart } from './scan-range.js';
import type {
  Backend,
  BatchOp,
  BatchResult,
  DedupRecord,
  LogPosition,
  PartitionMeta,
  PartitionState,
  ScanOptions,
  ScanPage,
  Snapshot,
  SnapshotItem,
} from './backend.js';
import {
  ZERO_POSITION,
  checkBatchOp,
  byClientId,
  checkDedupTable,
  checkKey,
  checkPageLimit,
  checkSnapshotItem,
  copyBytes,
  dedupRecord,
} from './preconditions.js';

// ---------------------------------------------------------------------------------------
// The memory backend.
// ---------------------------------------------------------------------------------------

/** Keys longer than any sane limit are refused even here, to match lmdb (1970 bytes). */
const MEMORY_MAX_KEY_BYTES = 1970;

interface StoredValue {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  readonly version: Seq;
  readonly expiresAt?: number;
}

interface MemPartition {
  meta: PartitionMeta | null;
  applied: LogPosition;
  logBase: LogPosition;
  /** Entries logBase.seq+1 .. logBase.seq+log.length, without gaps. */
  log: LogEntry[];
  /** Data by latin1 string of the key bytes; latin1 strings sort like the bytes. */
  data: Map<string, StoredValue>;
  /** The keys of `data`, sorted. */
  sortedKeys: string[];
  /** S10: client id → its last applied write. Records are never mutated, only replaced. */
  dedup: Map<string, DedupRecord>;
}

const keyString = (key: Uint8Array): string =>
  Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');

/** Index of the first element of `sorted` greater than `s` (or >= when `inclusive`). */
function lowerBound(sorted: readonly string[], s: string, inclusive: boolean): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const m = sorted[mid]!;
    if (m < s || (!inclusive && m === s)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function lastPosition(p: MemPartition): LogPosition {
  const last = p.log[p.log.length - 1];
  return last ? { seq: last.seq, epoch: last.epoch } : p.logBase;
}

function copyOp(op: Op): Op {
  switch (op.kind) {
    case 'put':
      return op.expiresAt === undefined
        ? { kind: 'put', key: copyBytes(op.key), value: copyBytes(op.value) }
        : { kind: 'put', key: copyBytes(op.key), value: copyBytes(op.value), expiresAt: op.expiresAt };
    case 'delete':
      return { kind: 'delete', key: copyBytes(op.key) };
    case 'epochStart':
      return { kind: 'epochStart' };
    case 'digest':
      return { kind: 'digest', buckets: [...op.buckets] };
    default:
      return assertNever(op);
  }
}

function copyEntry(e: LogEntry): LogEntry {
  const out: { -readonly [K in keyof LogEntry]: LogEntry[K] } = { epoch: e.epoch, seq: e.seq, op: copyOp(e.op) };
  if (e.tag !== undefined) out.tag = { clientId: e.tag.clientId, requestSeq: e.tag.requestSeq };
  return out;
}

export class MemoryBackend implements Backend {
  readonly kind = 'memory';
  private readonly parts = new Map<PartitionId, MemPartition>();
  private closed = false;

  async partitions(): Promise<PartitionState[]> {
    this.checkOpen();
    const out: PartitionState[] = [];
    for (const [partition, p] of this.parts) {
      out.push({ partition, meta: p.meta, applied: p.applied, logBase: p.logBase, logLast: lastPosition(p) });
    }
    return out.sort((a, b) => a.partition - b.partition);
  }

  async writeBatch(ops: readonly BatchOp[]): Promise<BatchResult> {
    this.checkOpen();
    const undo: Array<() => void> = [];
    const deletes: Array<{ partition: PartitionId; seq: Seq; existed: boolean }> = [];
    try {
      for (const op of ops) this.runOp(op, undo, deletes);
    } catch (err) {
      for (let i = undo.length - 1; i >= 0; i--) undo[i]!();
      throw err;
    }
    return { deletes };
  }

  async get(partition: PartitionId, key: Uint8Array): Promise<VersionedValue | undefined> {
    this.checkOpen();
    const stored = this.parts.get(partition)?.data.get(keyString(key));
    if (!stored) return undefined;
    return {
      value: copyBytes(stored.value),
      version: stored.version,
      ...(stored.expiresAt === undefined ? {} : { expiresAt: stored.expiresAt }),
    };
  }

  async scan(partition: PartitionId, options: ScanOptions): Promise<ScanPage> {
    this.checkOpen();
    checkScanOptions(options);
    const p = this.parts.get(partition);
    if (!p) return options.values ? { keys: [], values: [] } : { keys: [] };
    const from = scanStart(options);
    const start = from === undefined ? 0 : lowerBound(p.sortedKeys, keyString(from.key), from.inclusive);
    const keys: Uint8Array[] = [];
    const values: VersionedValue[] = [];
    let bytes = 0;
    let i = start;
    for (; i < p.sortedKeys.length && keys.length < options.limit; i++) {
      const stored = p.data.get(p.sortedKeys[i]!)!;
      if (!hasPrefix(stored.key, options.prefix)) break;
      if (options.values && options.maxBytes !== undefined && keys.length > 0 && bytes >= options.maxBytes) break;
      keys.push(copyBytes(stored.key));
      if (options.values) {
        values.push({
          value: copyBytes(stored.value),
          version: stored.version,
          ...(stored.expiresAt === undefined ? {} : { expiresAt: stored.expiresAt }),
        });
        bytes += stored.key.length + stored.value.length;
      }
    }
    const more = i < p.sortedKeys.length && hasPrefix(p.data.get(p.sortedKeys[i]!)!.key, options.prefix);
    const last = keys[keys.length - 1];
    const page = options.values ? { keys, values } : { keys };
    return more && last !== undefined ? { ...page, nextAfterKey: copyBytes(last) } : page;
  }

  async count(partition: PartitionId): Promise<number> {
    this.checkOpen();
    return this.parts.get(partition)?.data.size ?? 0;
  }

  async readLog(partition: PartitionId, options: { fromSeq: Seq; toSeq: Seq; limit: number }): Promise<LogEntry[]> {
    this.checkOpen();
    checkPageLimit('readLog', options.limit);
    const p = this.parts.get(partition);
    if (!p) return [];
    const from = Math.max(options.fromSeq, p.logBase.seq + 1);
    const to = Math.min(options.toSeq, p.logBase.seq + p.log.length, from + options.limit - 1);
    const out: LogEntry[] = [];
    for (let s = from; s <= to; s++) out.push(copyEntry(p.log[s - p.logBase.seq - 1]!));
    return out;
  }

  async snapshot(partition: PartitionId): Promise<Snapshot> {
    this.checkOpen();
    const p = this.parts.get(partition);
    // Stored values are never mutated in place (a put replaces the object), so copying
    // the sorted list of references is a point-in-time view.
    const items: StoredValue[] = p ? p.sortedKeys.map((k) => p.data.get(k)!) : [];
    const applied = p ? p.applied : ZERO_POSITION;
    const dedup = p ? this.dedupOf(p) : [];
    let open = true;
    return {
      applied,
      dedup,
      async *items(pageItems: number): AsyncIterable<readonly SnapshotItem[]> {
        checkPageLimit('snapshot items', pageItems);
        for (let i = 0; i < items.length; i += pageItems) {
          assert(open, 'snapshot read after close');
          yield items.slice(i, i + pageItems).map((s) => ({
            key: copyBytes(s.key),
            value: copyBytes(s.value),
            version: s.version,
            ...(s.expiresAt === undefined ? {} : { expiresAt: s.expiresAt }),
          }));
        }
      },
      async close(): Promise<void> {
        open = false;
      },
    };
  }

  async installSnapshot(
    partition: PartitionId,
    applied: LogPosition,
    items: AsyncIterable<readonly SnapshotItem[]>,
    dedup: readonly DedupRecord[] = [],
  ): Promise<void> {
    this.checkOpen();
    checkDedupTable(partition, applied, dedup);
    const table = new Map<string, DedupRecord>();
    for (const r of dedup) table.set(r.clientId, dedupRecord(r, r.seq, r.existed));
    const data = new Map<string, StoredValue>();
    const sortedKeys: string[] = [];
    let previousKey: Uint8Array | undefined;
    // Loop bound: the caller's iterator; each page is held in memory until the swap.
    for await (const page of items) {
      for (const item of page) {
        checkSnapshotItem(partition, applied, previousKey, item);
        checkKey(partition, item.key, MEMORY_MAX_KEY_BYTES);
        const stored: StoredValue = {
          key: copyBytes(item.key),
          value: copyBytes(item.value),
          version: item.version,
          ...(item.expiresAt === undefined ? {} : { expiresAt: item.expiresAt }),
        };
        const k = keyString(stored.key);
        data.set(k, stored);
        sortedKeys.push(k);
        previousKey = stored.key;
      }
    }
    this.checkOpen();
    // S11: the swap is one synchronous step, so it is atomic.
    const meta = this.parts.get(partition)?.meta ?? null;
    this.parts.set(partition, { meta, applied, logBase: applied, log: [], data, sortedKeys, dedup: table });
  }

  async dedupTable(partition: PartitionId): Promise<DedupRecord[]> {
    this.checkOpen();
    const p = this.parts.get(partition);
    return p ? this.dedupOf(p) : [];
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private checkOpen(): void {
    if (this.closed) throw new StorageFailureError('the memory backend is closed');
  }

  /** Copies of the partition's dedup records, by client id. */
  private dedupOf(p: MemPartition): DedupRecord[] {
    return [...p.dedup.values()].map((r) => ({ ...r })).sort(byClientId);
  }

  private partition(partition: PartitionId, undo: Array<() => void>): MemPartition {
    const existing = this.parts.get(partition);
    if (existing) return existing;
    const created: MemPartition = {
      meta: null,
      applied: ZERO_POSITION,
      logBase: ZERO_POSITION,
      log: [],
      data: new Map(),
      sortedKeys: [],
      dedup: new Map(),
    };
    this.parts.set(partition, created);
    undo.push(() => this.parts.delete(partition));
    return created;
  }

  private runOp(
    op: BatchOp,
    undo: Array<() => void>,
    deletes: Array<{ partition: PartitionId; seq: Seq; existed: boolean }>,
  ): void {
    if (op.kind !== 'dropPartition') {
      const p = this.partition(op.partition, undo);
      const positions = { meta: p.meta, applied: p.applied, logBase: p.logBase, logLast: lastPosition(p) };
      checkBatchOp(op, positions, MEMORY_MAX_KEY_BYTES, (s) => p.log[s - p.logBase.seq - 1]!.epoch);
    }
    switch (op.kind) {
      case 'appendLog': {
        const p = this.partition(op.partition, undo);
        const lengthBefore = p.log.length;
        for (const e of op.entries) p.log.push(copyEntry(e));
        undo.push(() => {
          p.log.length = lengthBefore;
        });
        return;
      }
      case 'truncateLogFrom': {
        const p = this.partition(op.partition, undo);
        const keep = Math.max(0, op.fromSeq - p.logBase.seq - 1);
        if (keep >= p.log.length) return;
        const removed = p.log.slice(keep);
        p.log.length = keep;
        undo.push(() => {
          for (const e of removed) p.log.push(e);
        });
        return;
      }
      case 'truncateLogTo': {
        const p = this.partition(op.partition, undo);
        const drop = Math.min(op.base.seq - p.logBase.seq, p.log.length);
        const logBefore = p.log;
        const baseBefore = p.logBase;
        p.log = p.log.slice(drop);
        p.logBase = op.base;
        undo.push(() => {
          p.log = logBefore;
          p.logBase = baseBefore;
        });
        return;
      }
      case 'apply': {
        const p = this.partition(op.partition, undo);
        const appliedBefore = p.applied;
        undo.push(() => {
          p.applied = appliedBefore;
        });
        for (const e of op.entries) {
          let existed: boolean | undefined;
          if (e.op.kind === 'put')
            this.putValue(
              p,
              {
                key: copyBytes(e.op.key),
                value: copyBytes(e.op.value),
                version: e.seq,
                ...(e.op.expiresAt === undefined ? {} : { expiresAt: e.op.expiresAt }),
              },
              undo,
            );
          else if (e.op.kind === 'delete') {
            existed = this.deleteValue(p, e.op.key, undo);
            deletes.push({ partition: op.partition, seq: e.seq, existed });
          }
          // S10: the client's record moves with the data, under the same undo list.
          if (e.tag !== undefined) this.recordDedup(p, dedupRecord(e.tag, e.seq, existed), undo);
          p.applied = { seq: e.seq, epoch: e.epoch };
        }
        return;
      }
      case 'setMeta': {
        const p = this.partition(op.partition, undo);
        const before = p.meta;
        p.meta = op.meta;
        undo.push(() => {
          p.meta = before;
        });
        return;
      }
      case 'dropPartition': {
        const before = this.parts.get(op.partition);
        if (!before) return;
        this.parts.delete(op.partition);
        undo.push(() => this.parts.set(op.partition, before));
        return;
      }
      default:
        return assertNever(op);
    }
  }

  private recordDedup(p: MemPartition, record: DedupRecord, undo: Array<() => void>): void {
    const before = p.dedup.get(record.clientId);
    p.dedup.set(record.clientId, record);
    undo.push(() => {
      if (before) p.dedup.set(record.clientId, before);
      else p.dedup.delete(record.clientId);
    });
  }

  private putValue(p: MemPartition, stored: StoredValue, undo: Array<() => void>): void {
    const k = keyString(stored.key);
    const before = p.data.get(k);
    p.data.set(k, stored);
    if (before) {
      undo.push(() => p.data.set(k, before));
      return;
    }
    const at = lowerBound(p.sortedKeys, k, true);
    p.sortedKeys.splice(at, 0, k);
    undo.push(() => {
      p.data.delete(k);
      p.sortedKeys.splice(lowerBound(p.sortedKeys, k, true), 1);
    });
  }

  /** Returns whether the key existed. */
  private deleteValue(p: MemPartition, key: Uint8Array, undo: Array<() => void>): boolean {
    const k = keyString(key);
    const before = p.data.get(k);
    if (!before) return false;
    p.data.delete(k);
    p.sortedKeys.splice(lowerBound(p.sortedKeys, k, true), 1);
    undo.push(() => {
      p.data.set(k, before);
      p.sortedKeys.splice(lowerBound(p.sortedKeys, k, true), 0, k);
    });
    return true;
  }
}
