/**
 * Preconditions every backend shares (DESIGN §8), and the small helpers their results are
 * built with. A violation is a bug in the caller (the core decided something impossible),
 * so it is an InvariantViolation (STYLE §3: broken invariants crash), thrown before
 * anything of the batch is written. Every backend checks each op of a batch with
 * `checkBatchOp`, so a test that passes on memory says something about lmdb and redis.
 */
import {
  type Epoch,
  type LogEntry,
  type PartitionId,
  type RequestTag,
  type Seq,
  InvariantViolation,
  assert,
  assertNever,
} from '../core/types.js';
import type { BatchOp, DedupRecord, LogPosition, PartitionMeta, SnapshotItem } from './backend.js';

export { ZERO_POSITION } from '../core/replica/log.js';

/** The largest partition id a backend stores (its keys hold it in 4 bytes; one value is kept free). */
export const MAX_PARTITION = 0xffff_fffe;

export function checkPartition(partition: PartitionId): void {
  assert(
    Number.isInteger(partition) && partition >= 0 && partition <= MAX_PARTITION,
    `partition id out of range: ${partition}`,
  );
}

/**
 * S10: the longest client id a backend stores, in UTF-8 bytes. The rpc schema admits at
 * most 128 UTF-16 units (at most 384 bytes); lmdb needs the id plus an 8-byte prefix to
 * fit its 1978-byte key limit.
 */
export const MAX_CLIENT_ID_BYTES = 1024;

function violation(partition: PartitionId, message: string): never {
  throw new InvariantViolation(`partition ${partition}: ${message}`);
}

/**
 * appendLog and apply: entries must follow `prev` without a gap (seq prev.seq+1, +2, ...)
 * and their epochs never decrease (S1: an entry keeps the epoch it was proposed in, and a
 * primary of epoch e appends only after entries of epochs <= e).
 */
export function checkEntriesFollow(
  partition: PartitionId,
  what: 'appendLog' | 'apply',
  prev: LogPosition,
  entries: readonly LogEntry[],
): void {
  let expected = prev.seq + 1;
  let lastEpoch: number = prev.epoch;
  for (const entry of entries) {
    if (entry.seq !== expected) {
      violation(partition, `${what}: entry seq ${entry.seq} where seq ${expected} was expected (after ${prev.seq})`);
    }
    if (entry.epoch < lastEpoch) {
      violation(
        partition,
        `${what}: entry ${entry.seq} has epoch ${entry.epoch}, below the previous entry's ${lastEpoch}`,
      );
    }
    lastEpoch = entry.epoch;
    expected += 1;
  }
}

/** What a backend knows of a partition's positions, which a batch op is checked against. */
export interface PartitionPositions {
  readonly meta: PartitionMeta | null;
  readonly applied: LogPosition;
  readonly logBase: LogPosition;
  readonly logLast: LogPosition;
}

/**
 * The preconditions of one batch op (DESIGN §8), against the partition's positions as every
 * earlier op of the batch left them; call it before writing anything of the op. `epochAt`
 * gives the epoch of the log entry at a seq in (logBase.seq, logLast.seq]; keys longer than
 * `maxKeyBytes` cannot be stored by the backend. `dropPartition` has no preconditions.
 */
export function checkBatchOp(
  op: BatchOp,
  state: PartitionPositions,
  maxKeyBytes: number,
  epochAt: (s: Seq) => Epoch,
): void {
  switch (op.kind) {
    case 'appendLog':
      return checkEntriesFollow(op.partition, 'appendLog', state.logLast, op.entries);
    case 'truncateLogFrom':
      return checkTruncateLogFrom(op.partition, op.fromSeq, state.applied);
    case 'truncateLogTo':
      return checkTruncateLogTo(op.partition, op.base, state, epochAt);
    case 'apply':
      checkEntriesFollow(op.partition, 'apply', state.applied, op.entries);
      for (const e of op.entries) {
        if (e.op.kind === 'put' || e.op.kind === 'delete') checkKey(op.partition, e.op.key, maxKeyBytes);
        checkTag(op.partition, e);
      }
      return;
    case 'setMeta':
      return checkSetMeta(op.partition, state.meta, op.meta);
    case 'dropPartition':
      return;
    default:
      return assertNever(op);
  }
}

/**
 * S11, lmdb and redis: an install may start: a valid partition, no other install of it
 * running (`installing`), and a dedup table at `applied`.
 */
export function checkInstallSnapshot(
  partition: PartitionId,
  installing: boolean,
  applied: LogPosition,
  dedup: readonly DedupRecord[],
): void {
  checkPartition(partition);
  if (installing) {
    throw new InvariantViolation(`partition ${partition}: installSnapshot while another install is running`);
  }
  checkDedupTable(partition, applied, dedup);
}

/**
 * lmdb and redis: the seqs a `readLog` asks for, checked and clamped to 1..MAX_SAFE_INTEGER;
 * undefined when none can exist.
 */
export function logReadRange(
  partition: PartitionId,
  options: { fromSeq: Seq; toSeq: Seq; limit: number },
): { from: number; to: number } | undefined {
  checkPageLimit('readLog', options.limit);
  checkPartition(partition);
  const from = Math.max(options.fromSeq, 1);
  const to = Math.min(options.toSeq, Number.MAX_SAFE_INTEGER);
  return from > to ? undefined : { from, to };
}

/** S1: a conflict never deletes an applied (hence committed) entry. */
export function checkTruncateLogFrom(partition: PartitionId, fromSeq: Seq, applied: LogPosition): void {
  if (!Number.isSafeInteger(fromSeq) || fromSeq <= applied.seq) {
    violation(
      partition,
      `truncateLogFrom(${fromSeq}) would delete entries at or below the applied seq ${applied.seq} (S1)`,
    );
  }
}

/**
 * S12: drop only entries at or below the applied seq; the base never moves back, and when
 * the new base is an entry of the log, `base.epoch` must be that entry's epoch.
 */
export function checkTruncateLogTo(
  partition: PartitionId,
  base: LogPosition,
  state: { readonly applied: LogPosition; readonly logBase: LogPosition; readonly logLast: LogPosition },
  epochAt: (s: Seq) => Epoch,
): void {
  if (!Number.isSafeInteger(base.seq) || base.seq > state.applied.seq) {
    violation(partition, `truncateLogTo(${base.seq}) is above the applied seq ${state.applied.seq} (S12)`);
  }
  if (base.seq < state.logBase.seq) {
    violation(partition, `truncateLogTo(${base.seq}) would move the log base back from ${state.logBase.seq}`);
  }
  if (base.seq === state.logBase.seq && base.epoch !== state.logBase.epoch) {
    violation(
      partition,
      `truncateLogTo(${base.seq}, epoch ${base.epoch}) but the base has epoch ${state.logBase.epoch}`,
    );
  }
  if (base.seq > state.logBase.seq && base.seq <= state.logLast.seq) {
    const held = epochAt(base.seq);
    if (held !== base.epoch) {
      violation(partition, `truncateLogTo(${base.seq}, epoch ${base.epoch}) but entry ${base.seq} has epoch ${held}`);
    }
  }
}

/** S3: the adopted epoch never goes back. */
export function checkSetMeta(partition: PartitionId, current: PartitionMeta | null, meta: PartitionMeta): void {
  if (current !== null && meta.epoch < current.epoch) {
    violation(partition, `setMeta: epoch ${meta.epoch} is below the persisted epoch ${current.epoch} (S3)`);
  }
}

/** Snapshot items arrive in strictly ascending key order, none newer than the snapshot. */
export function checkSnapshotItem(
  partition: PartitionId,
  applied: LogPosition,
  previousKey: Uint8Array | undefined,
  item: SnapshotItem,
): void {
  if (item.key.length === 0) violation(partition, 'installSnapshot: empty key');
  if (previousKey !== undefined && compareBytes(previousKey, item.key) >= 0) {
    violation(partition, 'installSnapshot: items are not in strictly ascending key order');
  }
  if (item.version > applied.seq) {
    violation(
      partition,
      `installSnapshot: an item has version ${item.version}, above the snapshot's seq ${applied.seq}`,
    );
  }
}

export function checkKey(partition: PartitionId, key: Uint8Array, maxKeyBytes: number): void {
  if (key.length === 0) violation(partition, 'apply: a put or delete with an empty key');
  if (key.length > maxKeyBytes)
    violation(partition, `apply: a key of ${key.length} bytes, over this backend's ${maxKeyBytes}`);
}

export function checkPageLimit(what: string, limit: number): void {
  assert(Number.isSafeInteger(limit) && limit >= 1, `${what}: limit must be an integer >= 1, got ${limit}`);
}

/** A lone surrogate: such a string has no UTF-8 form, so two ids could share one key. */
const LONE_SURROGATE = /\p{Cs}/u;

/** S10: a client id is a non-empty, well-formed string of at most MAX_CLIENT_ID_BYTES. */
function checkClientId(partition: PartitionId, what: string, clientId: unknown): void {
  if (typeof clientId !== 'string' || clientId.length === 0)
    violation(partition, `${what}: the client id is empty or not a string`);
  if (LONE_SURROGATE.test(clientId)) violation(partition, `${what}: the client id is not well-formed Unicode`);
  const bytes = Buffer.byteLength(clientId, 'utf8');
  if (bytes > MAX_CLIENT_ID_BYTES)
    violation(partition, `${what}: a client id of ${bytes} bytes, over ${MAX_CLIENT_ID_BYTES}`);
}

const isRequestSeq = (n: unknown): boolean => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

/** apply: the tag of an entry (S10) names a client and a request seq a backend can store. */
export function checkTag(partition: PartitionId, entry: LogEntry): void {
  if (entry.tag === undefined) return;
  const what = `apply: entry ${entry.seq}`;
  checkClientId(partition, what, entry.tag.clientId);
  if (!isRequestSeq(entry.tag.requestSeq))
    violation(partition, `${what}: request seq ${entry.tag.requestSeq} is not an integer >= 0`);
}

/**
 * installSnapshot: a dedup table (S10) holds one record per client, each for an entry at
 * or below the snapshot's seq.
 */
export function checkDedupTable(partition: PartitionId, applied: LogPosition, dedup: readonly DedupRecord[]): void {
  const seen = new Set<string>();
  for (const r of dedup) {
    const what = 'installSnapshot: a dedup record';
    checkClientId(partition, what, r.clientId);
    if (seen.has(r.clientId)) violation(partition, `${what}: client ${JSON.stringify(r.clientId)} has two records`);
    seen.add(r.clientId);
    if (!isRequestSeq(r.requestSeq))
      violation(partition, `${what}: request seq ${r.requestSeq} is not an integer >= 0`);
    if (!Number.isSafeInteger(r.seq) || r.seq < 1 || r.seq > applied.seq) {
      violation(partition, `${what}: seq ${r.seq} is not an entry at or below the snapshot's seq ${applied.seq}`);
    }
    if (r.existed !== undefined && typeof r.existed !== 'boolean')
      violation(partition, `${what}: 'existed' is not a boolean`);
  }
}

/** A dedup record in canonical form: `existed` present only for deletes. */
export function dedupRecord(tag: RequestTag, entrySeq: Seq, existed: boolean | undefined): DedupRecord {
  return existed === undefined
    ? { clientId: tag.clientId, requestSeq: tag.requestSeq, seq: entrySeq }
    : { clientId: tag.clientId, requestSeq: tag.requestSeq, seq: entrySeq, existed };
}

/** The order backends return dedup tables in (JavaScript string order of the client id). */
export function byClientId(a: DedupRecord, b: DedupRecord): number {
  return a.clientId < b.clientId ? -1 : a.clientId > b.clientId ? 1 : 0;
}

/** Byte-wise comparison (memcmp order), the order of scans and snapshots. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** A plain Uint8Array copy (never a Buffer), so results compare equal across backends. */
export function copyBytes(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}
