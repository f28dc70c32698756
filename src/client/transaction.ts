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
import { intentKey, recordKey, TXN_ID_CHARS } from '../core/txn-keys.js';
import { assertNever } from '../core/types.js';
import { TXN_DEFAULTS } from './txn-defaults.js';

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

export { TXN_DEFAULTS };
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

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');
const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0;

// ---- the protocol as coroutines (sans-IO) ----
//
// Every step that waits — a call to the cluster, a pause, the clock, a random draw — is a
// yielded `Call`; a driver performs it and resumes the coroutine with the result (or throws
// the error into it). The client drives them with promises (`drive` below); the simulator
// with its simulated network, clock and random numbers, so it runs this very code.

export type Call =
  | { readonly kind: 'read'; readonly key: Uint8Array }
  | {
      readonly kind: 'put';
      readonly key: Uint8Array;
      readonly value: Uint8Array;
      readonly options: { ifVersion?: number; ifk?: readonly KeyVersion[]; ttlMs?: number };
    }
  | {
      readonly kind: 'delete';
      readonly key: Uint8Array;
      readonly options: { ifVersion?: number; ifk?: readonly KeyVersion[] };
    }
  | { readonly kind: 'sleep'; readonly ms: number }
  /** The clock, ms. */
  | { readonly kind: 'now' }
  /** A number in [0, 1). */
  | { readonly kind: 'random' }
  /** A fresh transaction id: TXN_ID_CHARS hex digits. */
  | { readonly kind: 'txnId' }
  /** Runs the coroutines concurrently; resumes with each one's `Settled` outcome, in order. */
  | { readonly kind: 'all'; readonly tasks: ReadonlyArray<Proc<unknown>> }
  /** The user's transaction function (the promise driver only). */
  | { readonly kind: 'user'; readonly run: () => Promise<unknown> };

export type Proc<T> = Generator<Call, T, unknown>;
export type Settled<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

function* perform<T>(call: Call): Proc<T> {
  return (yield call) as T;
}
const read = (key: Uint8Array) => perform<RawRead>({ kind: 'read', key });
const put = (key: Uint8Array, value: Uint8Array, options: Extract<Call, { kind: 'put' }>['options']) =>
  perform<number>({ kind: 'put', key, value, options });
const del = (key: Uint8Array, options: Extract<Call, { kind: 'delete' }>['options']) =>
  perform<boolean>({ kind: 'delete', key, options });
const pause = (ms: number) => perform<void>({ kind: 'sleep', ms });
const now = () => perform<number>({ kind: 'now' });
const all = <T>(tasks: ReadonlyArray<Proc<T>>) => perform<Array<Settled<T>>>({ kind: 'all', tasks });

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
export function* ensureAborted(record: Uint8Array, pendingVersion?: number): Proc<boolean> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const r = pendingVersion === undefined ? yield* read(record) : undefined;
    const state = r === undefined ? 'pending' : recordState(r);
    if (state === 'committed') return false;
    if (state === 'aborted') return true;
    const ifVersion = state === 'absent' ? 0 : (pendingVersion ?? r!.version!);
    try {
      yield* put(record, ABORTED, { ifVersion, ttlMs: ABORTED_TTL_MS });
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
export function* resolveIntent(
  key: Uint8Array,
  intent: { readonly value: Uint8Array; readonly version: number },
): Proc<'resolved' | 'pending'> {
  const { record, op } = decodeIntent(intent.value);
  const state = recordState(yield* read(record));
  if (state === 'pending') return 'pending';
  const committed = state === 'committed' || (state === 'absent' && !(yield* ensureAborted(record)));
  const ik = intentKey(key);
  const onIntent = [{ key: ik, v: intent.version }];
  try {
    if (committed && op.kind === 'put') yield* put(key, op.value, { ifk: onIntent });
    else if (committed && op.kind === 'delete') yield* del(key, { ifk: onIntent });
  } catch (err) {
    if (!(err instanceof ConditionFailedError)) throw err; // resolved by someone else meanwhile
  }
  try {
    yield* del(ik, { ifVersion: intent.version });
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
export function* readResolved(key: Uint8Array, deadlineMs: number): Proc<RawRead> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const r = yield* read(key);
    if (r.intent === undefined) return r;
    if ((yield* resolveIntent(key, r.intent)) === 'pending') return r;
    if ((yield* now()) > deadlineMs) break;
  }
  throw new TimeoutError(`the intents on key ${hex(key)} did not resolve in time`);
}

/**
 * Reads `key` once no undecided transaction holds it (resolving decided ones, waiting with
 * backoff on undecided ones), bounded by `deadlineMs`: TimeoutError past it.
 */
export function* readUnlocked(key: Uint8Array, deadlineMs: number): Proc<RawRead> {
  let delay = PENDING_FIRST_DELAY_MS;
  for (let attempt = 0; attempt < 100_000; attempt++) {
    const r = yield* read(key);
    if (r.intent === undefined) return r;
    if ((yield* resolveIntent(key, r.intent)) === 'resolved') continue;
    if ((yield* now()) + delay > deadlineMs) break;
    yield* pause(delay);
    delay = Math.min(delay * 2, PENDING_MAX_DELAY_MS);
  }
  throw new TimeoutError(`key ${hex(key)} is held by a transaction that did not end in time`);
}

// ---- running a transaction ----

interface Written {
  readonly key: Uint8Array;
  readonly op: { kind: 'put'; value: Uint8Array } | { kind: 'delete' };
}

/** What the checks of a transaction's arguments are (the client's). */
export interface TxnChecks {
  key(method: string, key: unknown): Uint8Array;
  value(value: unknown): Uint8Array;
}

/** One attempt of a transaction: its reads (versions) and buffered writes. */
export class TxnState {
  /** Versions read (0: absent), by key hex. */
  readonly reads = new Map<string, { key: Uint8Array; version: number }>();
  readonly writes = new Map<string, Written>();
  private bytes = 0;

  constructor(
    private readonly limits: Required<TransactionOptions>,
    readonly deadlineMs: number,
    private readonly checks: TxnChecks,
  ) {}

  /** `tx.get`: the transaction's own write, or the key read (waiting out other transactions' intents). */
  *get(key: Uint8Array | string): Proc<{ value: Uint8Array; version: number } | undefined> {
    const k = this.checks.key('tx.get', key);
    const id = hex(k);
    const own = this.writes.get(id);
    if (own) return own.op.kind === 'put' ? { value: own.op.value, version: 0 } : undefined;
    this.count(id);
    // A key held by an undecided transaction: wait for it to end (it would conflict with us anyway).
    let r: RawRead;
    try {
      r = yield* readUnlocked(k, this.deadlineMs);
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
    const k = this.checks.key('tx.put', key);
    const v = this.checks.value(value);
    this.write(k, { kind: 'put', value: v }, k.length + v.length);
  }

  delete(key: Uint8Array | string): void {
    const k = this.checks.key('tx.delete', key);
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
 * Runs `body` in a transaction and commits it; on a conflict (another transaction or writer
 * got to a key first) runs it again, up to `maxAttempts`. Returns `body`'s result once
 * committed; TransactionAbortedError when it never could.
 */
export function* transactionProc<T>(
  body: (tx: TxnState) => Proc<T>,
  options: TransactionOptions,
  checks: TxnChecks,
): Proc<T> {
  const limits = { ...TXN_DEFAULTS, ...options };
  let lastConflict = '';
  let attempts = limits.maxAttempts;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const tx = new TxnState(limits, (yield* now()) + limits.timeoutMs, checks);
    try {
      const result = yield* body(tx);
      const readOnly = tx.writes.size === 0;
      // A read-only run costs reads only, and loses to every writer of its keys: it may run more often.
      if (readOnly) attempts = limits.maxAttempts * READ_ONLY_ATTEMPTS_FACTOR;
      const outcome = readOnly ? yield* validateReadOnly(tx) : yield* commit(tx, limits);
      if (outcome === 'committed') return result;
      lastConflict = outcome;
    } catch (err) {
      if (!(err instanceof ConflictSignal)) throw err;
      lastConflict = err.message;
    }
    const jitter = yield* perform<number>({ kind: 'random' });
    yield* pause(Math.min(PENDING_MAX_DELAY_MS, PENDING_FIRST_DELAY_MS * 2 ** attempt) * jitter);
  }
  throw new TransactionAbortedError(`transaction aborted after ${attempts} attempts; the last: ${lastConflict}`);
}

/**
 * A read-only transaction: every key read again; when all are at the versions first read,
 * every value held at one instant between the two rounds. Otherwise, read them again.
 */
function* validateReadOnly(tx: TxnState): Proc<'committed' | string> {
  // All at once: the shorter the second round, the likelier no write fell between the rounds.
  const reads = [...tx.reads];
  const again = yield* all(reads.map(([, r]) => readResolved(r.key, tx.deadlineMs)));
  for (let i = 0; i < reads.length; i++) {
    const [id, r] = reads[i]!;
    const now = again[i]!;
    if (!now.ok) throw now.error;
    if ((now.value.found ? now.value.version! : 0) !== r.version)
      return `key ${id} changed while the read-only transaction read`;
  }
  return 'committed';
}

/** Phase 1, phase 2, resolution (file comment). Returns 'committed' or why it aborted. */
function* commit(tx: TxnState, limits: Required<TransactionOptions>): Proc<'committed' | string> {
  const first = [...tx.writes.values()][0]!;
  const record = recordKey(yield* perform<string>({ kind: 'txnId' }), first.key);
  const pendingVersion = yield* put(record, PENDING, { ifVersion: 0, ttlMs: limits.timeoutMs });
  // Phase 1: an intent on every key read or written.
  const keys = new Map<string, { key: Uint8Array; op: IntentOp; readVersion?: number }>();
  for (const [hid, r] of tx.reads) keys.set(hid, { key: r.key, op: { kind: 'read' }, readVersion: r.version });
  for (const [hid, w] of tx.writes) {
    const read = tx.reads.get(hid);
    keys.set(hid, { key: w.key, op: w.op, ...(read ? { readVersion: read.version } : {}) });
  }
  const entries = [...keys];
  const outcomes = yield* all(
    entries.map(([, k]) =>
      put(intentKey(k.key), encodeIntent(record, k.op), {
        ifVersion: 0,
        ifk: k.readVersion === undefined ? [] : [{ key: k.key, v: k.readVersion }],
      }),
    ),
  );
  const placed = new Map<string, number | 'unknown'>();
  let conflict: string | undefined;
  outcomes.forEach((o, i) => {
    const hid = entries[i]![0];
    if (o.ok) placed.set(hid, o.value);
    else if (o.error instanceof ConditionFailedError) conflict ??= `key ${hid} is held or changed (${o.error.message})`;
    else {
      placed.set(hid, 'unknown');
      conflict ??= `placing the intent on key ${hid} failed: ${(o.error as Error).message}`;
    }
  });
  if (conflict !== undefined) {
    yield* abort(record, pendingVersion, keys, placed);
    return conflict;
  }
  // Phase 2: the commit point.
  let committed: boolean;
  let committedVersion: number | undefined;
  try {
    committedVersion = yield* put(record, COMMITTED, { ifVersion: pendingVersion });
    committed = true;
  } catch (err) {
    if (err instanceof ConditionFailedError) committed = false;
    else {
      // The outcome is unknown: the record says; an undecided one is aborted now.
      const r = yield* read(record);
      committed = recordState(r) === 'committed' || !(yield* ensureAborted(record));
      if (recordState(r) === 'committed') committedVersion = r.version;
    }
  }
  if (!committed) {
    yield* abort(record, pendingVersion, keys, placed);
    return 'the transaction timed out before it committed';
  }
  // Resolution: every key forward, then the record (only once every intent is gone).
  const resolved = yield* all(
    entries.map(([hid, k]) => {
      const version = placed.get(hid);
      return resolveIntent(k.key, { value: encodeIntent(record, k.op), version: version as number });
    }),
  );
  // Whoever meets an intent left resolves it: the record stays committed for them.
  if (resolved.every((r) => r.ok) && committedVersion !== undefined) {
    try {
      yield* del(record, { ifVersion: committedVersion });
    } catch {
      // Left committed: harmless, found by nobody once every intent is gone.
    }
  }
  return 'committed';
}

/** Makes the abort durable, then drops the intents placed (and any whose outcome is unknown). */
function* abort(
  record: Uint8Array,
  pendingVersion: number,
  keys: ReadonlyMap<string, { key: Uint8Array }>,
  placed: ReadonlyMap<string, number | 'unknown'>,
): Proc<void> {
  if (!(yield* ensureAborted(record, pendingVersion))) return; // it committed after all: leave it to readers
  yield* all(
    [...placed].map(function* ([hid, version]): Proc<void> {
      const key = keys.get(hid)!.key;
      let v = version;
      if (v === 'unknown') {
        const r = yield* read(intentKey(key));
        if (!r.found || !same(decodeIntent(r.value!).record, record)) return;
        v = r.version!;
      }
      yield* del(intentKey(key), { ifVersion: v });
      // A failure (it is left for whoever meets it: the record says aborted) is its `Settled`.
    }),
  );
}

// ---- the promise driver (the client's) ----

/** Runs `proc` with the client's calls, timers, clock and random numbers. */
export async function drive<T>(proc: Proc<T>, io: TxnIO): Promise<T> {
  let input: Settled<unknown> = { ok: true, value: undefined };
  // Bounded by the coroutine: every protocol loop above is bounded.
  for (;;) {
    const step: IteratorResult<Call, T> = input.ok ? proc.next(input.value) : proc.throw(input.error);
    if (step.done) return step.value;
    input = await settle(performAsync(step.value, io));
  }
}

async function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  try {
    return { ok: true, value: await p };
  } catch (error) {
    return { ok: false, error };
  }
}

async function performAsync(call: Call, io: TxnIO): Promise<unknown> {
  switch (call.kind) {
    case 'read':
      return io.readRaw(call.key);
    case 'put':
      return io.sysPut(call.key, call.value, call.options);
    case 'delete':
      return io.sysDelete(call.key, call.options);
    case 'sleep':
      return new Promise<void>((r) => setTimeout(r, call.ms));
    case 'now':
      return Date.now();
    case 'random':
      return Math.random();
    case 'txnId':
      return randomBytes(TXN_ID_CHARS / 2).toString('hex');
    case 'all':
      return Promise.all(call.tasks.map((t) => settle(drive(t, io))));
    case 'user':
      return call.run();
    default:
      return assertNever(call);
  }
}

/** The handle an async transaction function gets (`db.transaction`): reads see the transaction's own writes. */
export class Transaction {
  constructor(
    private readonly state: TxnState,
    private readonly io: TxnIO,
  ) {}

  get(key: Uint8Array | string): Promise<{ value: Uint8Array; version: number } | undefined> {
    return drive(this.state.get(key), this.io);
  }

  put(key: Uint8Array | string, value: Uint8Array | string): void {
    this.state.put(key, value);
  }

  delete(key: Uint8Array | string): void {
    this.state.delete(key);
  }
}

/** `db.transaction(fn)`: the protocol driven with promises, `fn` run as its body. */
export function runTransaction<T>(
  io: TxnIO,
  fn: (tx: Transaction) => Promise<T>,
  options: TransactionOptions,
  checks: TxnChecks,
): Promise<T> {
  const body = (state: TxnState) => perform<T>({ kind: 'user', run: () => fn(new Transaction(state, io)) });
  return drive(transactionProc(body, options, checks), io);
}
