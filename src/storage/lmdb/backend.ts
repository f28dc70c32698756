/** The lmdb backend (lmdb.ts describes the layout and the write path). */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { open as openLmdb, type Database, type RootDatabase, type Transaction } from 'lmdb';
import {
  type LogEntry,
  type PartitionId,
  type Seq,
  type VersionedValue,
  InvariantViolation,
  assert,
  assertNever,
  seq as toSeq,
} from '../../core/types.js';
import { DstoreError, InvalidArgumentError, OverloadedError, StorageFailureError } from '../../core/errors.js';
import type {
  Backend,
  BackendOptions,
  BatchOp,
  BatchResult,
  DedupRecord,
  LogPosition,
  PartitionState,
  ScanPage,
  Snapshot,
  SnapshotItem,
  SyncMode,
} from '../backend.js';
import {
  MAX_PARTITION,
  ZERO_POSITION,
  checkPartition,
  checkBatchOp,
  byClientId,
  checkInstallSnapshot,
  logReadRange,
  checkKey,
  checkPageLimit,
  checkSnapshotItem,
} from '../preconditions.js';
import { CorruptRecordError, decodeEntry, encodeEntry, encodeStoredValue, isCorruptRecord } from '../log-record.js';
import {
  FORMAT_VERSION,
  UPGRADE_CHUNK,
  LMDB_MAX_KEY_BYTES,
  MAX_GENERATION,
  MAX_QUEUED_JOBS,
  MAX_JOBS_PER_TXN,
  MAX_WEIGHT_PER_TXN,
  STAGE_MAX_ITEMS,
  STAGE_MAX_BYTES,
  GC_CHUNK_KEYS,
  MAX_PARTITIONS_AT_OPEN,
  readU64,
  partKey,
  logKey,
  dataPrefix,
  dataKey,
  view,
  decodeValue,
  dedupKey,
  encodeDedup,
  decodeDedup,
  type PartState,
  encodeState,
  decodeState,
  positionOf,
} from './layout.js';
import { type StateSource, Overlay, type PreparedOp, type Job, type StagedPut, type OpenSnapshot } from './jobs.js';
import { commitFailureCause, describeCause } from './commit-failure.js';
import { readUpgradeMarkers, writeUpgradeMarker } from './corrupt-markers.js';
import { freshPartition, listPartitions, markCorrupt, publishChanges } from '../partition-cache.js';

export class LmdbBackend implements Backend {
  readonly kind = 'lmdb';
  private readonly states = new Map<PartitionId, PartState>();
  private readonly committed: StateSource = { state: (p) => this.states.get(p) };
  private queue: Job[] = [];
  private running: Promise<void> | null = null;
  private closing = false;
  private closePromise: Promise<void> | null = null;
  private nextGeneration = 1;
  /** Partitions with a snapshot being staged, and its generation. */
  private readonly installing = new Map<PartitionId, number>();
  /** Partitions with a garbage-collection job queued. */
  private readonly gcQueued = new Set<PartitionId>();
  private readonly snapshots = new Set<OpenSnapshot>();
  /** The last garbage-collection failure, for diagnostics. */
  gcError: unknown = undefined;
  /** Diagnostics (issue 9): the most stored-value bytes one scan held at once since open (one value). */
  scanPeakBytes = 0;
  /** Data records rewritten by a format upgrade at open (0: none was needed). */
  upgraded = 0;

  private constructor(
    private readonly env: RootDatabase<Buffer, Buffer>,
    private readonly sysDb: Database<Buffer, Buffer>,
    private readonly partDb: Database<Buffer, Buffer>,
    private readonly logDb: Database<Buffer, Buffer>,
    private readonly dataDb: Database<Buffer, Buffer>,
    private readonly dedupDb: Database<Buffer, Buffer>,
    readonly sync: SyncMode,
  ) {}

  /** Opens (creating when needed) the environment in `<dataDir>/lmdb`. */
  static async open(options: BackendOptions): Promise<LmdbBackend> {
    if (options.dataDir === undefined || options.dataDir === '') {
      throw new InvalidArgumentError('the lmdb backend needs a data dir (--data-dir)');
    }
    const sync = options.sync ?? 'batch';
    const path = join(options.dataDir, 'lmdb');
    let env: RootDatabase<Buffer, Buffer>;
    try {
      await mkdir(path, { recursive: true });
      env = openLmdb<Buffer, Buffer>({
        path,
        maxDbs: 8,
        keyEncoding: 'binary',
        encoding: 'binary',
        // The commit itself fsyncs, so a resolved transaction is durable ('batch'), or
        // nothing is flushed explicitly ('none': the other replicas keep the data).
        overlappingSync: false,
        noSync: sync === 'none',
        // Every write goes through our own queue (`runGroup`, one transaction at a time). With
        // lmdb's event-turn batching on, it also opens a batch of its own whose commit promise
        // it keeps to itself: when that commit fails (a full or failing disk) the promise
        // rejects with nobody to handle it and Node exits the process (issue 9).
        eventTurnBatching: false,
      });
    } catch (err) {
      throw new StorageFailureError(`cannot open lmdb in ${path}`, { cause: err });
    }
    const dbOptions = { keyEncoding: 'binary', encoding: 'binary' } as const;
    let backend: LmdbBackend;
    try {
      // Opening a named database for the first time creates it: a write (and a commit) that
      // a full disk fails, synchronously.
      backend = new LmdbBackend(
        env,
        env.openDB<Buffer, Buffer>('sys', dbOptions),
        env.openDB<Buffer, Buffer>('part', dbOptions),
        env.openDB<Buffer, Buffer>('log', dbOptions),
        env.openDB<Buffer, Buffer>('data', dbOptions),
        env.openDB<Buffer, Buffer>('dedup', dbOptions),
        sync,
      );
    } catch (err) {
      await env.close().catch(() => undefined);
      throw new StorageFailureError(`cannot open lmdb in ${path}: ${describeCause(err)}`, { cause: err });
    }
    try {
      await backend.load();
    } catch (err) {
      // The load's error is the one to report; closing after it may fail too (a full disk).
      await env.close().catch(() => undefined);
      if (err instanceof StorageFailureError) throw err;
      throw new StorageFailureError(`cannot load lmdb state from ${path}`, { cause: err });
    }
    return backend;
  }

  // -------------------------------------------------------------------------------------
  // Reads.
  // -------------------------------------------------------------------------------------

  async partitions(): Promise<PartitionState[]> {
    this.checkOpen();
    return listPartitions(this.states);
  }

  async get(partition: PartitionId, key: Uint8Array): Promise<VersionedValue | undefined> {
    this.checkOpen();
    const s = this.states.get(partition);
    if (!s || key.length > LMDB_MAX_KEY_BYTES) return undefined; // such a key is never stored
    const k = dataKey(partition, s.generation, key);
    const raw = this.dataDb.get(k);
    return raw === undefined ? undefined : decodeValue(k, raw, partition);
  }

  async scan(partition: PartitionId, options: { afterKey?: Uint8Array; limit: number }): Promise<ScanPage> {
    this.checkOpen();
    checkPageLimit('scan', options.limit);
    const s = this.states.get(partition);
    if (!s) return { keys: [] };
    const keys: Uint8Array[] = [];
    let more = false;
    // Stored keys are at most LMDB_MAX_KEY_BYTES long, so the stored keys after a longer
    // afterKey are exactly those after its prefix of that length.
    const afterKey = options.afterKey?.subarray(0, LMDB_MAX_KEY_BYTES);
    const range = this.dataDb.getRange({
      start: afterKey === undefined ? dataPrefix(partition, s.generation) : dataKey(partition, s.generation, afterKey),
      end: dataPrefix(partition, s.generation + 1),
      exclusiveStart: afterKey !== undefined,
      limit: options.limit + 1, // one more tells whether the scan is complete
    });
    // Issue 9: the range is read lazily, one record at a time (lmdb copies each value out of
    // the map as the cursor reaches it), so a page holds one value at a time, never the page's.
    for (const { key, value } of range) {
      if (keys.length === options.limit) {
        more = true;
        break;
      }
      decodeValue(key, value, partition); // S13: a scan lists no key whose record is corrupt
      this.scanPeakBytes = Math.max(this.scanPeakBytes, value.length);
      keys.push(view(key, 8));
    }
    const last = keys[keys.length - 1];
    return more && last !== undefined ? { keys, nextAfterKey: last } : { keys };
  }

  async count(partition: PartitionId): Promise<number> {
    this.checkOpen();
    return this.states.get(partition)?.keyCount ?? 0;
  }

  /**
   * Bounded by what the log holds now (not by cached positions), so a read racing a
   * commit sees either side of it. Entries are checked: checksum, key = seq, no gaps.
   */
  async readLog(partition: PartitionId, options: { fromSeq: Seq; toSeq: Seq; limit: number }): Promise<LogEntry[]> {
    this.checkOpen();
    const seqs = logReadRange(partition, options);
    if (seqs === undefined) return [];
    const { from, to } = seqs;
    const out: LogEntry[] = [];
    const range = this.logDb.getRange({
      start: logKey(partition, from),
      end: logKey(partition, to),
      inclusiveEnd: true,
      limit: options.limit,
    });
    for (const { key, value } of range) {
      const keySeq = readU64(key, 4);
      const entry = decodeEntry(value, `partition ${partition} log entry ${keySeq}`, view);
      if (entry.seq !== keySeq)
        throw new CorruptRecordError(`partition ${partition}: log key ${keySeq} holds entry ${entry.seq}`);
      const prev = out[out.length - 1];
      if (prev !== undefined && entry.seq !== prev.seq + 1) {
        throw new CorruptRecordError(`partition ${partition}: the log jumps from ${prev.seq} to ${entry.seq}`);
      }
      out.push(entry);
    }
    return out;
  }

  async snapshot(partition: PartitionId): Promise<Snapshot> {
    this.checkOpen();
    checkPartition(partition);
    // One read transaction gives the state record and the data at the same instant (S11).
    const txn = this.dataDb.useReadTransaction();
    let open = true;
    const handle: OpenSnapshot = {
      done: () => {
        if (!open) return;
        open = false;
        this.snapshots.delete(handle);
        txn.done();
      },
    };
    this.snapshots.add(handle);
    let applied: LogPosition = ZERO_POSITION;
    let generation: number | undefined;
    let dedup: DedupRecord[] = [];
    try {
      const raw = this.partDb.get(partKey(partition), { transaction: txn });
      if (raw !== undefined) {
        const s = decodeState(raw, `partition ${partition} state`);
        applied = s.applied;
        generation = s.generation;
        // S10: the dedup table in the same read transaction, so at exactly `applied`.
        dedup = this.readDedup(partition, s.generation, txn);
      }
    } catch (err) {
      handle.done();
      throw err;
    }
    const dataDb = this.dataDb;
    return {
      applied,
      dedup,
      async *items(pageItems: number): AsyncIterable<readonly SnapshotItem[]> {
        checkPageLimit('snapshot items', pageItems);
        if (generation === undefined) return;
        const end = dataPrefix(partition, generation + 1);
        let start = dataPrefix(partition, generation);
        let exclusiveStart = false;
        // Bounded: every round but the last yields a full page of distinct, ascending keys.
        for (let round = 0; ; round++) {
          assert(round <= Number.MAX_SAFE_INTEGER / pageItems, 'snapshot paging did not end');
          if (!open) throw new StorageFailureError('snapshot read after close');
          const page: SnapshotItem[] = [];
          for (const { key, value } of dataDb.getRange({
            start,
            end,
            exclusiveStart,
            limit: pageItems,
            transaction: txn,
          })) {
            const v = decodeValue(key, value, partition);
            page.push({ key: view(key, 8), value: v.value, version: v.version });
            start = key;
          }
          exclusiveStart = true;
          if (page.length > 0) yield page;
          if (page.length < pageItems) return;
        }
      },
      async close(): Promise<void> {
        handle.done();
      },
    };
  }

  // -------------------------------------------------------------------------------------
  // Writes.
  // -------------------------------------------------------------------------------------

  /**
   * The batch's bytes are encoded (copied) now, so the caller may reuse its buffers and
   * the write transaction does less; its preconditions are checked when it runs, in order.
   */
  async writeBatch(ops: readonly BatchOp[]): Promise<BatchResult> {
    this.checkOpen();
    let weight = ops.length;
    const prepared = ops.map((op): PreparedOp => {
      if (op.kind === 'appendLog') {
        weight += op.entries.length;
        return { records: op.entries.map(encodeEntry) };
      }
      if (op.kind === 'apply') {
        weight += op.entries.length;
        // The generation (bytes 4..8 of a data key) is filled in by the transaction.
        const keys = op.entries.map((e) => (e.op.kind === 'epochStart' ? null : dataKey(op.partition, 0, e.op.key)));
        const values = op.entries.map((e) =>
          e.op.kind === 'put' ? encodeStoredValue(e.op.key, e.seq, e.op.value) : null,
        );
        if (!op.entries.some((e) => e.tag !== undefined)) return { keys, values };
        // A malformed client id gets no key here: checkTag rejects it in the transaction.
        const dedupKeys = op.entries.map((e) =>
          e.tag === undefined || typeof e.tag.clientId !== 'string' ? null : dedupKey(op.partition, 0, e.tag.clientId),
        );
        const dedupValues = op.entries.map((e) =>
          e.tag === undefined || e.op.kind === 'delete' ? null : encodeDedup(e.tag.requestSeq, e.seq, undefined),
        );
        return { keys, values, dedupKeys, dedupValues };
      }
      return {};
    });
    const outcome = await this.enqueue(weight, false, (v) => this.execBatch(ops, prepared, v));
    for (const p of outcome.dropped) this.scheduleGc(p);
    return outcome.result;
  }

  async installSnapshot(
    partition: PartitionId,
    applied: LogPosition,
    items: AsyncIterable<readonly SnapshotItem[]>,
    dedup: readonly DedupRecord[] = [],
  ): Promise<void> {
    this.checkOpen();
    checkInstallSnapshot(partition, this.installing.has(partition), applied, dedup);
    const generation = this.allocateGeneration();
    this.installing.set(partition, generation);
    try {
      let staged: StagedPut[] = [];
      let stagedBytes = 0;
      const flushIfFull = async (): Promise<void> => {
        if (staged.length < STAGE_MAX_ITEMS && stagedBytes < STAGE_MAX_BYTES) return;
        await this.stage(staged);
        staged = [];
        stagedBytes = 0;
      };
      // S10: the dedup table is staged under the new generation too, in the same stages as
      // the data, so the switch below installs both and an interrupted install leaves only
      // garbage. Bounded by the table's length (checked above).
      for (const r of dedup) {
        const key = dedupKey(partition, generation, r.clientId);
        const value = encodeDedup(r.requestSeq, r.seq, r.existed);
        staged.push([this.dedupDb, key, value]);
        stagedBytes += key.length + value.length;
        await flushIfFull();
      }
      let keyCount = 0;
      let previousKey: Uint8Array | undefined;
      // Bounded by the caller's iterator; at most one stage (8 MiB) is held in memory.
      for await (const page of items) {
        for (const item of page) {
          checkSnapshotItem(partition, applied, previousKey, item);
          checkKey(partition, item.key, LMDB_MAX_KEY_BYTES);
          const key = dataKey(partition, generation, item.key);
          staged.push([this.dataDb, key, encodeStoredValue(item.key, item.version, item.value)]);
          stagedBytes += key.length + item.value.length + 8;
          keyCount += 1;
          previousKey = view(key, 8);
          await flushIfFull();
        }
      }
      if (staged.length > 0) await this.stage(staged);
      // S11: the switch is one transaction: state record, applied, log base, empty log.
      await this.enqueue(1, false, (v) => {
        const before = v.state(partition);
        if (before) this.deleteLog(partition, before.logBase.seq + 1, before.logLast.seq);
        const after: PartState = {
          meta: before?.meta ?? null,
          applied,
          logBase: applied,
          logLast: applied,
          generation,
          keyCount,
        };
        v.set(partition, after);
        this.partDb.putSync(partKey(partition), encodeState(after));
      });
    } finally {
      this.installing.delete(partition);
      // Either the old generation (installed) or the staged one (failed) is garbage now.
      this.scheduleGc(partition);
    }
  }

  async dedupTable(partition: PartitionId): Promise<DedupRecord[]> {
    this.checkOpen();
    const s = this.states.get(partition);
    return s ? this.readDedup(partition, s.generation) : [];
  }

  /** Resolves once no write or garbage collection is queued or running (tests, shutdown). */
  async idle(): Promise<void> {
    for (let i = 0; i < 1_000_000 && (this.running !== null || this.gcQueued.size > 0); i++) {
      if (this.running) await this.running;
      else await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  close(): Promise<void> {
    this.closePromise ??= this.shutDown();
    return this.closePromise;
  }

  private async shutDown(): Promise<void> {
    this.closing = true;
    // Garbage collection resumes at the next open; queued batches still complete.
    this.queue = this.queue.filter((job) => !job.internal);
    this.gcQueued.clear();
    if (this.running) await this.running;
    for (const s of [...this.snapshots]) s.done();
    try {
      await this.env.close();
    } catch (err) {
      throw new StorageFailureError('closing lmdb failed', { cause: err });
    }
  }

  // -------------------------------------------------------------------------------------
  // Internals.
  // -------------------------------------------------------------------------------------

  private checkOpen(): void {
    if (this.closing) throw new StorageFailureError('the lmdb backend is closed');
  }

  private allocateGeneration(): number {
    const g = this.nextGeneration++;
    assert(g <= MAX_GENERATION, 'data generations exhausted');
    return g;
  }

  private enqueue<T>(weight: number, internal: boolean, run: (v: Overlay) => T): Promise<T> {
    if (this.closing) return Promise.reject(new StorageFailureError('the lmdb backend is closed'));
    if (!internal && this.queue.length >= MAX_QUEUED_JOBS) {
      return Promise.reject(new OverloadedError(`${this.queue.length} storage batches queued`));
    }
    return new Promise<T>((resolve, reject) => {
      this.queue.push({
        weight,
        internal,
        run,
        settle: (outcome) => (outcome.ok ? resolve(outcome.value as T) : reject(outcome.error)),
      });
      this.running ??= this.drain();
    });
  }

  /** Runs queued jobs, a group per transaction, until the queue is empty. */
  private async drain(): Promise<void> {
    // Bounded: each round takes at least one job off a queue of at most MAX_QUEUED_JOBS
    // user jobs (plus one GC job per partition); it ends when callers stop writing.
    while (this.queue.length > 0) {
      let weight = 0;
      let n = 0;
      while (
        n < this.queue.length &&
        n < MAX_JOBS_PER_TXN &&
        (n === 0 || weight + this.queue[n]!.weight <= MAX_WEIGHT_PER_TXN)
      ) {
        weight += this.queue[n]!.weight;
        n += 1;
      }
      const group = this.queue.slice(0, n);
      this.queue = this.queue.slice(n);
      await this.runGroup(group);
    }
    this.running = null;
  }

  private async runGroup(group: readonly Job[]): Promise<void> {
    const groupView = new Overlay(this.committed);
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    try {
      await this.env.transaction(() => {
        for (const job of group) {
          const jobView = new Overlay(groupView);
          try {
            // A child transaction: a job that throws leaves nothing behind.
            const value = this.dataDb.transactionSync(() => job.run(jobView));
            jobView.mergeInto(groupView);
            outcomes.push({ ok: true, value });
          } catch (error) {
            // Precondition violations and typed errors as they are; an engine error is a storage failure.
            const known = error instanceof InvariantViolation || error instanceof DstoreError;
            outcomes.push({
              ok: false,
              error: known ? error : new StorageFailureError('lmdb write failed', { cause: error }),
            });
          }
        }
      });
    } catch (err) {
      const cause = await commitFailureCause(err);
      const error = new StorageFailureError(`lmdb transaction failed: ${describeCause(cause)}`, { cause });
      for (const job of group) job.settle({ ok: false, error });
      return;
    }
    // Committed (and, with sync 'batch', fsynced): publish the new positions.
    publishChanges(this.states, groupView.changes);
    group.forEach((job, i) =>
      job.settle(outcomes[i] ?? { ok: false, error: new InvariantViolation('a job has no outcome') }),
    );
  }

  /** Writes one staged chunk of a snapshot (data and dedup records); no state changes. */
  private stage(items: readonly StagedPut[]): Promise<void> {
    return this.enqueue(items.length, false, () => {
      for (const [db, key, value] of items) db.putSync(key, value);
    });
  }

  /**
   * The dedup table of one generation, by client id. Not paged: it holds one record per
   * client of the partition, which session expiry bounds (S10).
   */
  private readDedup(partition: PartitionId, generation: number, transaction?: Transaction): DedupRecord[] {
    const out: DedupRecord[] = [];
    const range = this.dedupDb.getRange({
      start: dataPrefix(partition, generation),
      end: dataPrefix(partition, generation + 1),
      ...(transaction === undefined ? {} : { transaction }),
    });
    for (const { key, value } of range) out.push(decodeDedup(key, value, `partition ${partition} dedup record`));
    // LMDB returns UTF-8 byte order; the interface's order is JavaScript string order.
    return out.sort(byClientId);
  }

  /** Deletes log entries from..to (inclusive); they must all be there (no gaps). */
  private deleteLog(partition: PartitionId, from: number, to: number): void {
    for (let s = from; s <= to; s++) {
      if (!this.logDb.removeSync(logKey(partition, s))) {
        throw new CorruptRecordError(`partition ${partition}: log entry ${s} is missing`);
      }
    }
  }

  private readEntry(partition: PartitionId, s: number): LogEntry {
    const raw = this.logDb.get(logKey(partition, s));
    if (raw === undefined) throw new CorruptRecordError(`partition ${partition}: log entry ${s} is missing`);
    const entry = decodeEntry(raw, `partition ${partition} log entry ${s}`, view);
    if (entry.seq !== s) throw new CorruptRecordError(`partition ${partition}: log key ${s} holds entry ${entry.seq}`);
    return entry;
  }

  /** One batch, inside its child transaction; throws before writing when a precondition fails. */
  private execBatch(
    ops: readonly BatchOp[],
    prepared: readonly PreparedOp[],
    v: Overlay,
  ): { result: BatchResult; dropped: PartitionId[] } {
    const persist = new Set<PartitionId>();
    const dropped: PartitionId[] = [];
    const deletes: Array<{ partition: PartitionId; seq: Seq; existed: boolean }> = [];
    const stateOf = (partition: PartitionId): PartState => {
      checkPartition(partition);
      const existing = v.state(partition);
      if (existing) return existing;
      const created: PartState = { ...freshPartition(this.allocateGeneration()), keyCount: 0 };
      v.set(partition, created);
      persist.add(partition);
      return created;
    };
    for (const [i, op] of ops.entries()) {
      const p = op.partition;
      const prep = prepared[i]!;
      if (op.kind !== 'dropPartition')
        checkBatchOp(op, stateOf(p), LMDB_MAX_KEY_BYTES, (at) => this.readEntry(p, at).epoch);
      switch (op.kind) {
        case 'appendLog': {
          const s = stateOf(p);
          const last = op.entries[op.entries.length - 1];
          if (last === undefined) break;
          op.entries.forEach((e, j) => this.logDb.putSync(logKey(p, e.seq), prep.records![j]!));
          v.set(p, { ...s, logLast: { seq: last.seq, epoch: last.epoch } });
          break;
        }
        case 'truncateLogFrom': {
          const s = stateOf(p);
          if (op.fromSeq > s.logLast.seq) break;
          const from = Math.max(op.fromSeq, s.logBase.seq + 1);
          const logLast = from - 1 === s.logBase.seq ? s.logBase : positionOf(this.readEntry(p, from - 1));
          this.deleteLog(p, from, s.logLast.seq);
          v.set(p, { ...s, logLast });
          break;
        }
        case 'truncateLogTo': {
          const s = stateOf(p);
          this.deleteLog(p, s.logBase.seq + 1, Math.min(op.base.seq, s.logLast.seq));
          const logLast = op.base.seq >= s.logLast.seq ? op.base : s.logLast;
          v.set(p, { ...s, logBase: op.base, logLast });
          persist.add(p);
          break;
        }
        case 'apply': {
          const s = stateOf(p);
          const last = op.entries[op.entries.length - 1];
          if (last === undefined) break;
          let keyCount = s.keyCount;
          for (const [j, e] of op.entries.entries()) {
            let existed: boolean | undefined;
            if (e.op.kind !== 'epochStart') {
              const key = prep.keys![j]!;
              key.writeUInt32BE(s.generation, 4);
              if (e.op.kind === 'put') {
                if (!this.dataDb.doesExist(key)) keyCount += 1;
                this.dataDb.putSync(key, prep.values![j]!);
              } else {
                existed = this.dataDb.removeSync(key);
                if (existed) keyCount -= 1;
                deletes.push({ partition: p, seq: e.seq, existed });
              }
            }
            if (e.tag !== undefined) {
              // S10: one put, in this transaction, replacing the client's previous record.
              const key = prep.dedupKeys![j]!;
              key.writeUInt32BE(s.generation, 4);
              this.dedupDb.putSync(key, prep.dedupValues![j] ?? encodeDedup(e.tag.requestSeq, e.seq, existed));
            }
          }
          v.set(p, { ...s, applied: { seq: last.seq, epoch: last.epoch }, keyCount });
          persist.add(p);
          break;
        }
        case 'setMeta': {
          const s = stateOf(p);
          v.set(p, { ...s, meta: op.meta });
          persist.add(p);
          break;
        }
        case 'dropPartition': {
          checkPartition(p);
          const s = v.state(p);
          if (!s) break;
          this.deleteLog(p, s.logBase.seq + 1, s.logLast.seq);
          v.set(p, null); // its data is garbage from now on
          persist.add(p);
          dropped.push(p);
          break;
        }
        default:
          return assertNever(op);
      }
    }
    for (const p of persist) {
      const s = v.state(p);
      if (s) this.partDb.putSync(partKey(p), encodeState(s));
      else this.partDb.removeSync(partKey(p));
    }
    return { result: { deletes }, dropped };
  }

  private scheduleGc(partition: PartitionId): void {
    if (this.closing || this.gcQueued.has(partition)) return;
    this.gcQueued.add(partition);
    this.enqueue(GC_CHUNK_KEYS / 16, true, (v) => this.collectGarbage(partition, v)).then(
      (more) => {
        this.gcQueued.delete(partition);
        if (more) this.scheduleGc(partition);
      },
      (err: unknown) => {
        // The garbage stays; the next open finds it again. Nothing is lost, so this is
        // not the writer's failure: its own batches report a failed commit themselves.
        this.gcQueued.delete(partition);
        this.gcError = err;
      },
    );
  }

  /**
   * Deletes up to GC_CHUNK_KEYS keys (data and dedup records) of the partition outside its
   * current generation; true when there may be more.
   */
  private collectGarbage(partition: PartitionId, v: Overlay): boolean {
    if (this.installing.has(partition)) return false; // rescheduled when the install ends
    const current = v.state(partition)?.generation;
    const lo = dataPrefix(partition, 0);
    const hi = partition < MAX_PARTITION ? dataPrefix(partition + 1, 0) : undefined;
    const ranges: Array<{ start: Buffer; end: Buffer | undefined }> =
      current === undefined
        ? [{ start: lo, end: hi }]
        : [
            { start: lo, end: dataPrefix(partition, current) },
            { start: dataPrefix(partition, current + 1), end: hi },
          ];
    let budget = GC_CHUNK_KEYS;
    for (const db of [this.dataDb, this.dedupDb]) {
      for (const range of ranges) {
        const keys = [...db.getKeys({ start: range.start, end: range.end, limit: budget })];
        for (const key of keys) db.removeSync(key);
        budget -= keys.length;
        if (budget === 0) return true;
      }
    }
    return false;
  }

  /**
   * One transaction of the open (the format record, the format upgrade, marker cleanup). A
   * failed commit (a full or failing disk) is a StorageFailureError naming its cause, as for a
   * batch (runGroup): lmdb's commitError is handled here too, never left to reject unhandled
   * before the crash guard is installed (issue 9).
   */
  private async commitAtOpen<T>(what: string, body: () => T): Promise<T> {
    try {
      return await this.env.transaction(body);
    } catch (err) {
      if (err instanceof DstoreError || err instanceof InvariantViolation) throw err;
      const cause = await commitFailureCause(err);
      throw new StorageFailureError(`${what}: lmdb transaction failed: ${describeCause(cause)}`, { cause });
    }
  }

  /**
   * Format 1 → 2 (S13): every data record (any generation) becomes a checksummed record, in
   * transactions of UPGRADE_CHUNK records. `sys/upgrade` holds the last data key rewritten, in
   * the same transaction as the records, so an upgrade interrupted by a crash resumes after
   * it and never reads a record twice; the format becomes 2 in the last transaction.
   *
   * A format-1 value too short to hold its version cannot be upgraded (format 1 kept no
   * checksum, so that is all it can show): it stays as it is, so every read of it fails the
   * format-2 check (a record of fewer than 8 bytes holds no stored value record, whose
   * smallest payload is 4 bytes), and a marker in `sys` (see `markUpgradeCorrupt`) names
   * its partition and generation, written with it. The upgrade goes on with the others: per
   * S13 that one partition is corrupt (relearned), not the whole server.
   */
  private async upgradeFrom1(): Promise<number> {
    const formatKey = Buffer.from('format');
    const cursorKey = Buffer.from('upgrade');
    let records = 0;
    // Bounded: every round but the last rewrites UPGRADE_CHUNK records of a finite database.
    for (let round = 0; ; round++) {
      assert(round <= Number.MAX_SAFE_INTEGER / UPGRADE_CHUNK, 'the format upgrade did not end');
      const done = await this.commitAtOpen('upgrading lmdb format 1 to 2', () => {
        const cursor = this.sysDb.get(cursorKey);
        const chunk: Array<[Buffer, Buffer]> = [];
        for (const { key, value } of this.dataDb.getRange({
          ...(cursor === undefined ? {} : { start: Buffer.from(cursor), exclusiveStart: true }),
          limit: UPGRADE_CHUNK,
        })) {
          chunk.push([Buffer.from(key), Buffer.from(value)]);
        }
        for (const [key, value] of chunk) {
          if (value.length < 8) {
            const why = `upgrading lmdb format 1: a data value of ${value.length} bytes is shorter than its version`;
            writeUpgradeMarker(this.sysDb, key, why);
            continue;
          }
          this.dataDb.putSync(key, encodeStoredValue(key.subarray(8), readU64(value, 0), value.subarray(8)));
        }
        records += chunk.length;
        const last = chunk[chunk.length - 1];
        if (chunk.length < UPGRADE_CHUNK || last === undefined) {
          this.sysDb.removeSync(cursorKey);
          this.sysDb.putSync(formatKey, Buffer.from([FORMAT_VERSION]));
          return true;
        }
        this.sysDb.putSync(cursorKey, last[0]);
        return false;
      });
      if (done) return records;
    }
  }

  /**
   * S13: a partition whose current data holds a record the format upgrade could not read
   * opens marked corrupt (its replica relearns it, like one whose log is corrupt), at this
   * open and every later one until the partition is replaced: its data then lives under
   * another generation and the marker, stale, is deleted. Markers are few (one per partition
   * and generation the upgrade found a bad record in), written once.
   */
  private async markUpgradeCorrupt(): Promise<void> {
    const { marked, stale } = readUpgradeMarkers(this.sysDb, (p) => this.states.get(p)?.generation);
    for (const [partition, reason] of marked) {
      const s = this.states.get(partition);
      if (s !== undefined) this.states.set(partition, markCorrupt(s, reason));
    }
    if (stale.length > 0) {
      await this.commitAtOpen('deleting stale lmdb upgrade markers', () => {
        for (const key of stale) this.sysDb.removeSync(key);
      });
    }
  }

  /** Loads the states, checks the logs, finds garbage. */
  private async load(): Promise<void> {
    const format = this.sysDb.get(Buffer.from('format'));
    if (format === undefined) {
      await this.commitAtOpen('writing the lmdb format record', () =>
        this.sysDb.putSync(Buffer.from('format'), Buffer.from([FORMAT_VERSION])),
      );
    } else if (format.length === 1 && format[0] === 1) {
      this.upgraded = await this.upgradeFrom1();
    } else if (format.length !== 1 || format[0] !== FORMAT_VERSION) {
      throw new StorageFailureError(
        `lmdb data format ${Buffer.from(format).toString('hex')} is not one this ` +
          `version reads (1, upgraded at open, or ${FORMAT_VERSION}); use the dstore ` +
          `version that wrote it`,
      );
    }
    let maxGeneration = 0;
    for (const { key, value } of this.partDb.getRange({})) {
      if (key.length !== 4) throw new CorruptRecordError(`a state record has a key of ${key.length} bytes`);
      const partition = key.readUInt32BE(0) as PartitionId;
      const what = `partition ${partition}`;
      const s = decodeState(value, `${what} state`);
      let logLast = s.logBase;
      const lastKeys = [
        ...this.logDb.getKeys({
          start: logKey(partition, Number.MAX_SAFE_INTEGER),
          end: partKey(partition),
          reverse: true,
          limit: 1,
        }),
      ];
      const firstKeys = [...this.logDb.getKeys({ start: partKey(partition), end: partKey(partition + 1), limit: 1 })];
      const lastKey = lastKeys[0];
      const firstKey = firstKeys[0];
      if (lastKey !== undefined && firstKey !== undefined) {
        const first = readU64(firstKey, 4);
        if (first !== s.logBase.seq + 1)
          throw new CorruptRecordError(`${what}: the log starts at ${first}, not after its base ${s.logBase.seq}`);
        const lastSeq = readU64(lastKey, 4);
        try {
          logLast = positionOf(this.readEntry(partition, lastSeq));
        } catch (err) {
          if (!isCorruptRecord(err)) throw err;
          // S13: the partition opens, marked corrupt; its replica applies nothing from this
          // log and relearns the partition from a healthy member. The log keeps its length
          // (its keys), so dropping the partition deletes every record.
          this.states.set(
            partition,
            markCorrupt({ ...s, logLast: { seq: toSeq(lastSeq), epoch: s.logBase.epoch } }, err.message),
          );
          maxGeneration = Math.max(maxGeneration, s.generation);
          continue;
        }
      }
      this.states.set(partition, { ...s, logLast });
      maxGeneration = Math.max(maxGeneration, s.generation);
    }
    await this.markUpgradeCorrupt();
    // Walk the partitions present in `data` and `dedup`: the highest generation bounds the
    // next one (a half-installed snapshot may have staged dedup records and no data), and
    // any generation but the current one is garbage (a dropped partition, a replaced or
    // half-installed snapshot).
    const garbage = new Set<PartitionId>();
    for (const db of [this.dataDb, this.dedupDb]) {
      let start = dataPrefix(0, 0);
      for (let i = 0; i < MAX_PARTITIONS_AT_OPEN; i++) {
        const first = [...db.getKeys({ start, limit: 1 })][0];
        if (first === undefined) break;
        const partition = first.readUInt32BE(0) as PartitionId;
        const end = partition < MAX_PARTITION ? dataPrefix(partition + 1, 0) : Buffer.alloc(8, 0xff);
        const last = [...db.getKeys({ start: end, end: dataPrefix(partition, 0), reverse: true, limit: 1 })][0];
        const lowest = first.readUInt32BE(4);
        const highest = last === undefined ? lowest : last.readUInt32BE(4);
        maxGeneration = Math.max(maxGeneration, highest);
        const current = this.states.get(partition)?.generation;
        if (current !== lowest || current !== highest) garbage.add(partition);
        if (partition >= MAX_PARTITION) break;
        start = end;
      }
    }
    this.nextGeneration = maxGeneration + 1;
    for (const p of garbage) this.scheduleGc(p);
  }
}
