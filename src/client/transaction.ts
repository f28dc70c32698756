/**
 * Multi-key transactions across partitions by two-phase commit through the partitions'
 * primaries (DESIGN §16; the design and its safety argument: docs/transactions.md). The client
 * coordinates; the transaction record, an ordinary replicated key, is the truth.
 *
 * - Reads (`tx.get`) remember each key's version; writes are buffered.
 * - Commit: the record `pending` with a TTL (the transaction's timeout, judged by the record's
 *   primary); phase 1, an intent on every key read or written, each conditional on the key
 *   still being at the version read and on no other intent; phase 2, the record `committed`
 *   (conditional on its pending version: it fails once the TTL passed); then each intent is
 *   resolved to its value and the record deleted.
 * - Whoever meets an intent resolves it (`resolveIntent`): committed → forward, aborted →
 *   drop, pending → wait. An abort is made durable in the record's log (`ensureAborted`)
 *   before any intent is dropped, so a clock that disagrees after a failover cannot let a
 *   commit through afterwards.
 * - Read-only transactions take no locks: every key is read twice, and the transaction
 *   returns when both rounds saw the same versions.
 */
import { randomBytes } from 'node:crypto';
import {
  ConditionFailedError,
  InvalidArgumentError,
  OutcomeUnknownError,
  TimeoutError,
  TransactionAbortedError,
} from '../core/errors.js';
import { intentKey, recordKey } from '../core/txn-keys.js';

/** What a read of a key returns before any intent on it is resolved. */
export interface RawRead {
  readonly found: boolean;
  readonly value?: Uint8Array;
  readonly version?: number;
  readonly ttlMs?: number;
  readonly intent?: { readonly value: Uint8Array; readonly version: number };
}

/** A condition on another key of the written key's partition. */
export interface KeyVersion {
  readonly key: Uint8Array;
  readonly v: number;
}

/** The calls transactions make (the client's, as `sys` writes: reserved keys allowed, intents not in the way). */
export interface TxnIO {
  readRaw(key: Uint8Array): Promise<RawRead>;
  sysPut(
    key: Uint8Array,
    value: Uint8Array,
    options: { ifVersion?: number; ifk?: readonly KeyVersion[]; ttlMs?: number },
  ): Promise<number>;
  sysDelete(key: Uint8Array, options: { ifVersion?: number; ifk?: readonly KeyVersion[] }): Promise<boolean>;
}

export interface TransactionOptions {
  /** The transaction's timeout in ms (default 10 000): past it, uncommitted, it aborts (the record's TTL). */
  readonly timeoutMs?: number;
  /** Most keys read and written together (default 64). */
  readonly maxKeys?: number;
  /** Most bytes of keys and values written (default 4 MiB). */
  readonly maxBytes?: number;
  /** Runs of the function after a conflict before giving up with TransactionConflictError (default 10). */
  readonly maxAttempts?: number;
}

export const TXN_DEFAULTS = { timeoutMs: 10_000, maxKeys: 64, maxBytes: 4 * 1024 * 1024, maxAttempts: 10 } as const;
/** An abort marker outlives the transaction's timeout by this much, then expires (docs/transactions.md). */
const ABORTED_TTL_MS = 10 * 60_000;
/** Waiting on another transaction's pending intent: from this, doubling, up to PENDING_MAX_DELAY_MS. */
const PENDING_FIRST_DELAY_MS = 5;
const PENDING_MAX_DELAY_MS = 200;
/** A read-only transaction may run this many times `maxAttempts` (it only reads). */
export const READ_ONLY_ATTEMPTS_FACTOR = 5;

const PENDING = Uint8Array.of(0x70); // 'p'
const COMMITTED = Uint8Array.of(0x63); // 'c'
const ABORTED = Uint8Array.of(0x61); // 'a'

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');
const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0;

// ---- intent values ----

type IntentOp = { kind: 'put'; value: Uint8Array } | { kind: 'delete' } | { kind: 'read' };

/** An intent's value: [kind: 0 put, 1 delete, 2 read] · u16 record key length · record key · value. */
export function encodeIntent(record: Uint8Array, op: IntentOp): Uint8Array {
  const value = op.kind === 'put' ? op.value : new Uint8Array(0);
  const out = new Uint8Array(3 + record.length + value.length);
  out[0] = op.kind === 'put' ? 0 : op.kind === 'delete' ? 1 : 2;
  out[1] = record.length >> 8;
  out[2] = record.length & 0xff;
  out.set(record, 3);
  out.set(value, 3 + record.length);
  return out;
}

export function decodeIntent(bytes: Uint8Array): { record: Uint8Array; op: IntentOp } {
  const n = bytes.length >= 3 ? (bytes[1]! << 8) | bytes[2]! : -1;
  if (n < 0 || 3 + n > bytes.length || bytes[0]! > 2)
    throw new InvalidArgumentError(`a malformed transaction intent (${bytes.length} bytes)`);
  const record = bytes.subarray(3, 3 + n);
  const kind = bytes[0]!;
  const op: IntentOp =
    kind === 0 ? { kind: 'put', value: bytes.subarray(3 + n) } : kind === 1 ? { kind: 'delete' } : { kind: 'read' };
  return { record, op };
}

// ---- resolving what others left ----

type RecordState = 'pending' | 'committed' | 'aborted';

function recordState(r: RawRead): RecordState | 'absent' {
  if (!r.found || r.value === undefined) return 'absent';
  if (same(r.value, COMMITTED)) return 'committed';
  if (same(r.value, PENDING)) return 'pending';
  return 'aborted';
}

/**
 * Makes sure the transaction of `record` can never commit, and says whether that holds (false:
 * it is committed). An absent record (its pending TTL passed, or an abort marker expired) gets
 * an abort marker written with `ifVersion: 0`, so the abort is in the record's log before any
 * intent is dropped.
 */
export async function ensureAborted(io: TxnIO, record: Uint8Array, pendingVersion?: number): Promise<boolean> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const r = pendingVersion === undefined ? await io.readRaw(record) : undefined;
    const state = r === undefined ? 'pending' : recordState(r);
    if (state === 'committed') return false;
    if (state === 'aborted') return true;
    const ifVersion = state === 'absent' ? 0 : (pendingVersion ?? r!.version!);
    try {
      await io.sysPut(record, ABORTED, { ifVersion, ttlMs: ABORTED_TTL_MS });
      return true;
    } catch (err) {
      if (!(err instanceof ConditionFailedError)) throw err;
      pendingVersion = undefined; // moved on: read it again
    }
  }
  throw new OutcomeUnknownError(`the transaction record ${hex(record)} kept changing while it was being aborted`);
}

/**
 * Resolves the intent `intent` on `key`: forward when its transaction committed, dropped when
 * it aborted. Returns 'pending' (nothing done) while its transaction is undecided.
 */
export async function resolveIntent(
  io: TxnIO,
  key: Uint8Array,
  intent: { readonly value: Uint8Array; readonly version: number },
): Promise<'resolved' | 'pending'> {
  const { record, op } = decodeIntent(intent.value);
  const state = recordState(await io.readRaw(record));
  if (state === 'pending') return 'pending';
  const committed = state === 'committed' || (state === 'absent' && !(await ensureAborted(io, record)));
  const ik = intentKey(key);
  const onIntent = [{ key: ik, v: intent.version }];
  try {
    if (committed && op.kind === 'put') await io.sysPut(key, op.value, { ifk: onIntent });
    else if (committed && op.kind === 'delete') await io.sysDelete(key, { ifk: onIntent });
  } catch (err) {
    if (!(err instanceof ConditionFailedError)) throw err; // resolved by someone else meanwhile
  }
  try {
    await io.sysDelete(ik, { ifVersion: intent.version });
  } catch (err) {
    if (!(err instanceof ConditionFailedError)) throw err;
  }
  return 'resolved';
}

/**
 * Reads `key` with every intent on it resolved: a committed transaction's value, never half of
 * one. While the intent's transaction is undecided, the value is the one before it (the read
 * takes effect before that transaction's commit point).
 */
export async function readResolved(io: TxnIO, key: Uint8Array, deadlineMs: number): Promise<RawRead> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const r = await io.readRaw(key);
    if (r.intent === undefined) return r;
    const outcome = await resolveIntent(io, key, r.intent);
    if (outcome === 'pending') return { ...r, intent: r.intent };
    if (Date.now() > deadlineMs) break;
  }
  throw new TimeoutError(`the intents on key ${hex(key)} did not resolve in time`);
}

/**
 * Reads `key` once no undecided transaction holds it (resolving decided ones, waiting with
 * backoff on undecided ones), bounded by `deadlineMs`: TimeoutError past it.
 */
export async function readUnlocked(io: TxnIO, key: Uint8Array, deadlineMs: number): Promise<RawRead> {
  let delay = PENDING_FIRST_DELAY_MS;
  for (let attempt = 0; attempt < 100_000; attempt++) {
    const r = await io.readRaw(key);
    if (r.intent === undefined) return r;
    if ((await resolveIntent(io, key, r.intent)) === 'resolved') continue;
    if (Date.now() + delay > deadlineMs) break;
    await sleep(delay);
    delay = Math.min(delay * 2, PENDING_MAX_DELAY_MS);
  }
  throw new TimeoutError(`key ${hex(key)} is held by a transaction that did not end in time`);
}

// ---- running a transaction ----

interface Written {
  readonly key: Uint8Array;
  readonly op: { kind: 'put'; value: Uint8Array } | { kind: 'delete' };
}

/** The handle a transaction function gets: reads see the transaction's own writes. */
export class Transaction {
  /** Versions read (0: absent), by key hex. */
  readonly reads = new Map<string, { key: Uint8Array; version: number }>();
  readonly writes = new Map<string, Written>();
  private bytes = 0;

  constructor(
    private readonly io: TxnIO,
    private readonly limits: Required<TransactionOptions>,
    private readonly deadlineMs: number,
    private readonly checkKey: (method: string, key: unknown) => Uint8Array,
    private readonly checkValue: (value: unknown) => Uint8Array,
  ) {}

  async get(key: Uint8Array | string): Promise<{ value: Uint8Array; version: number } | undefined> {
    const k = this.checkKey('tx.get', key);
    const id = hex(k);
    const own = this.writes.get(id);
    if (own) return own.op.kind === 'put' ? { value: own.op.value, version: 0 } : undefined;
    this.count(id);
    // A key held by an undecided transaction: wait for it to end (it would conflict with us anyway).
    let r: RawRead;
    try {
      r = await readUnlocked(this.io, k, this.deadlineMs);
    } catch (err) {
      if (err instanceof TimeoutError) throw new ConflictSignal(err.message);
      throw err;
    }
    const version = r.found ? r.version! : 0;
    if (!this.reads.has(id)) this.reads.set(id, { key: k, version });
    else if (this.reads.get(id)!.version !== version)
      throw new ConflictSignal(`key ${id} changed during the transaction`);
    return r.found ? { value: r.value!, version } : undefined;
  }

  put(key: Uint8Array | string, value: Uint8Array | string): void {
    const k = this.checkKey('tx.put', key);
    const v = this.checkValue(value);
    this.write(k, { kind: 'put', value: v }, k.length + v.length);
  }

  delete(key: Uint8Array | string): void {
    const k = this.checkKey('tx.delete', key);
    this.write(k, { kind: 'delete' }, k.length);
  }

  private write(k: Uint8Array, op: Written['op'], bytes: number): void {
    const id = hex(k);
    this.count(id);
    this.bytes += bytes;
    if (this.bytes > this.limits.maxBytes)
      throw new InvalidArgumentError(
        `transaction over its size limit: ${this.bytes} bytes of keys and values written, more than ` +
          `maxBytes ${this.limits.maxBytes}`,
      );
    this.writes.set(id, { key: k, op });
  }

  private count(id: string): void {
    if (this.reads.has(id) || this.writes.has(id)) return;
    if (this.reads.size + this.writes.size + 1 > this.limits.maxKeys)
      throw new InvalidArgumentError(
        `transaction over its key limit: more than maxKeys ${this.limits.maxKeys} keys read and written`,
      );
  }
}

/** A conflict found while the function ran (a key read twice changed): run it again. */
class ConflictSignal extends Error {}

/**
 * Runs `fn` in a transaction and commits it; on a conflict (another transaction or writer got
 * to a key first) runs it again, up to `maxAttempts`. Resolves to `fn`'s result once committed.
 */
export async function runTransaction<T>(
  io: TxnIO,
  fn: (tx: Transaction) => Promise<T>,
  options: TransactionOptions,
  check: { key: (method: string, key: unknown) => Uint8Array; value: (value: unknown) => Uint8Array },
): Promise<T> {
  const limits = { ...TXN_DEFAULTS, ...options };
  let lastConflict = '';
  let attempts = limits.maxAttempts;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const deadlineMs = Date.now() + limits.timeoutMs;
    const tx = new Transaction(io, limits, deadlineMs, check.key, check.value);
    let result: T;
    try {
      result = await fn(tx);
      const readOnly = tx.writes.size === 0;
      // A read-only run costs reads only, and loses to every writer of its keys: it may run more often.
      if (readOnly) attempts = limits.maxAttempts * READ_ONLY_ATTEMPTS_FACTOR;
      const outcome = readOnly ? await validateReadOnly(io, tx, deadlineMs) : await commit(io, tx, limits);
      if (outcome === 'committed') return result;
      lastConflict = outcome;
    } catch (err) {
      if (!(err instanceof ConflictSignal)) throw err;
      lastConflict = err.message;
    }
    await sleep(Math.min(PENDING_MAX_DELAY_MS, PENDING_FIRST_DELAY_MS * 2 ** attempt) * Math.random());
  }
  throw new TransactionAbortedError(`transaction aborted after ${attempts} attempts; the last: ${lastConflict}`);
}

/**
 * A read-only transaction: every key read again; when all are at the versions first read,
 * every value held at one instant between the two rounds. Otherwise, read them again.
 */
async function validateReadOnly(io: TxnIO, tx: Transaction, deadlineMs: number): Promise<'committed' | string> {
  // All at once: the shorter the second round, the likelier no write fell between the rounds.
  const again = await Promise.all([...tx.reads].map(([, r]) => readResolved(io, r.key, deadlineMs)));
  const reads = [...tx.reads];
  for (let i = 0; i < reads.length; i++) {
    const [id, r] = reads[i]!;
    const now = again[i]!;
    if ((now.found ? now.version! : 0) !== r.version) return `key ${id} changed while the read-only transaction read`;
  }
  return 'committed';
}

/** Phase 1, phase 2, resolution (file comment). Returns 'committed' or why it aborted. */
async function commit(io: TxnIO, tx: Transaction, limits: Required<TransactionOptions>): Promise<'committed' | string> {
  const first = [...tx.writes.values()][0]!;
  const id = randomBytes(8).toString('hex');
  const record = recordKey(id, first.key);
  const pendingVersion = await io.sysPut(record, PENDING, { ifVersion: 0, ttlMs: limits.timeoutMs });
  // Phase 1: an intent on every key read or written.
  const keys = new Map<string, { key: Uint8Array; op: IntentOp; readVersion?: number }>();
  for (const [hid, r] of tx.reads) keys.set(hid, { key: r.key, op: { kind: 'read' }, readVersion: r.version });
  for (const [hid, w] of tx.writes) {
    const read = tx.reads.get(hid);
    keys.set(hid, { key: w.key, op: w.op, ...(read ? { readVersion: read.version } : {}) });
  }
  const placed = new Map<string, number | 'unknown'>();
  let conflict: string | undefined;
  await Promise.all(
    [...keys].map(async ([hid, k]) => {
      const ifk = k.readVersion === undefined ? [] : [{ key: k.key, v: k.readVersion }];
      try {
        placed.set(hid, await io.sysPut(intentKey(k.key), encodeIntent(record, k.op), { ifVersion: 0, ifk }));
      } catch (err) {
        if (err instanceof ConditionFailedError) conflict ??= `key ${hid} is held or changed (${err.message})`;
        else {
          placed.set(hid, 'unknown');
          conflict ??= `placing the intent on key ${hid} failed: ${(err as Error).message}`;
        }
      }
    }),
  );
  if (conflict !== undefined) {
    await abort(io, record, pendingVersion, keys, placed);
    return conflict;
  }
  // Phase 2: the commit point.
  let committed: boolean;
  let committedVersion: number | undefined;
  try {
    committedVersion = await io.sysPut(record, COMMITTED, { ifVersion: pendingVersion });
    committed = true;
  } catch (err) {
    if (err instanceof ConditionFailedError) committed = false;
    else {
      // The outcome is unknown: the record says; an undecided one is aborted now.
      const r = await io.readRaw(record);
      committed = recordState(r) === 'committed' || !(await ensureAborted(io, record));
      if (recordState(r) === 'committed') committedVersion = r.version;
    }
  }
  if (!committed) {
    await abort(io, record, pendingVersion, keys, placed);
    return 'the transaction timed out before it committed';
  }
  // Resolution: every key forward, then the record (only once every intent is gone).
  let allResolved = true;
  await Promise.all(
    [...keys].map(async ([hid, k]) => {
      const version = placed.get(hid);
      try {
        if (typeof version !== 'number') throw new Error('unknown intent version');
        await resolveIntent(io, k.key, { value: encodeIntent(record, k.op), version });
      } catch {
        allResolved = false; // whoever meets the intent resolves it: the record stays committed for them
      }
    }),
  );
  if (allResolved && committedVersion !== undefined)
    await io.sysDelete(record, { ifVersion: committedVersion }).catch(() => undefined);
  return 'committed';
}

/** Makes the abort durable, then drops the intents placed (and any whose outcome is unknown). */
async function abort(
  io: TxnIO,
  record: Uint8Array,
  pendingVersion: number,
  keys: ReadonlyMap<string, { key: Uint8Array }>,
  placed: ReadonlyMap<string, number | 'unknown'>,
): Promise<void> {
  if (!(await ensureAborted(io, record, pendingVersion))) return; // it committed after all: leave it to readers
  await Promise.all(
    [...placed].map(async ([hid, version]) => {
      const key = keys.get(hid)!.key;
      try {
        let v = version;
        if (v === 'unknown') {
          const r = await io.readRaw(intentKey(key));
          if (!r.found || !same(decodeIntent(r.value!).record, record)) return;
          v = r.version!;
        }
        await io.sysDelete(intentKey(key), { ifVersion: v });
      } catch {
        // Left for whoever meets it: the record says aborted.
      }
    }),
  );
}
