/** The lmdb backend (lmdb.ts describes the layout and the write path). */
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { open as openLmdb, type Database, type RootDatabase, type Transaction } from 'lmdb';
import {
  type LogEntry,
  type PartitionId,
  type Epoch,
  type Seq,
  type VersionedValue,
  InvariantViolation,
  assert,
  isDataOp,
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
  ScanOptions,
  ScanPage,
  Snapshot,
  SnapshotItem,
  SyncMode,
  BackendHealth,
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
  copyBytes,
} from '../preconditions.js';
import { checkScanOptions, hasPrefix, prefixEnd, scanStart } from '../scan-range.js';
import { CorruptRecordError, decodeEntry, encodeStoredValue, isCorruptRecord } from '../log-record.js';
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
} from './layout.js';
import { type StateSource, Overlay, type PreparedOp, type Job, type StagedPut, type OpenSnapshot } from './jobs.js';
import { commitFailureCause, describeCause } from './commit-failure.js';
import { readUpgradeMarkers, writeUpgradeMarker } from './corrupt-markers.js';
import { freshPartition, listPartitions, markCorrupt, publishChanges } from '../partition-cache.js';
import { type LogOp, LogStore } from '../log-store.js';

/**
 * Batches with applies LMDB may be behind the log by before writers wait: bounds the memory
 * pending applies hold, and the write queue (below MAX_QUEUED_JOBS, which snapshot stages share).
 */
const APPLY_BACKLOG = 1024;

/**
 * Applies are committed to LMDB at most this long after they are accepted, all of them in one
 * transaction (one sync for many batches: the log already holds them durably), or at once
 * when APPLY_GROUP batches wait.
 */
const APPLY_DELAY_MS = 50;
const APPLY_GROUP = 256;

/** A batch's LMDB half waiting for the next apply transaction. */
interface BufferedApplies {
  readonly work: readonly ApplyWork[];
  readonly dropped: ReadonlyArray<{ partition: PartitionId; generation: number }>;
  readonly logged: () => Promise<void>;
  resolve(): void;
  reject(err: unknown): void;
}

/** An apply accepted and not yet committed to LMDB: what `get` returns for the key meanwhile. */
interface Pending {
  readonly value: VersionedValue | null;
  readonly seq: number;
  readonly generation: number;
}

/** The LMDB half of one accepted `apply`: run by the apply queue once its entries are durable in the log. */
interface ApplyWork {
  readonly partition: PartitionId;
  readonly entries: readonly LogEntry[];
  readonly prepared: PreparedOp;
  /** Per entry: whether its key existed just before it (decided at acceptance). */
  readonly existed: ReadonlyArray<boolean | undefined>;
  /** The partition's state right after this apply (its LMDB record). */
  readonly after: PartState;
}

/** The map key of a data key's bytes in the pending applies. */
const pendingKey = (key: Uint8Array): string => Buffer.from(key.buffer, key.byteOffset, key.length).toString('latin1');

/** An apply's bytes, encoded (copied) at acceptance; the generation (bytes 4..8 of a key) is set when written. */
function prepareApply(partition: PartitionId, entries: readonly LogEntry[]): PreparedOp {
  const keys = entries.map((e) => (isDataOp(e.op) ? dataKey(partition, 0, e.op.key) : null));
  const values = entries.map((e) =>
    e.op.kind === 'put' ? encodeStoredValue(e.op.key, e.seq, e.op.value, e.op.expiresAt) : null,
  );
  if (!entries.some((e) => e.tag !== undefined)) return { keys, values };
  // A malformed client id gets no key here: checkTag rejected it before.
  const dedupKeys = entries.map((e) =>
    e.tag === undefined || typeof e.tag.clientId !== 'string' ? null : dedupKey(partition, 0, e.tag.clientId),
  );
  const dedupValues = entries.map((e) =>
    e.tag === undefined || e.op.kind === 'delete' ? null : encodeDedup(e.tag.requestSeq, e.seq, undefined),
  );
  return { keys, values, dedupKeys, dedupValues };
}

export class LmdbBackend implements Backend {
  readonly kind = 'lmdb';
  private readonly states = new Map<PartitionId, PartState>();
  private readonly committed: StateSource = { state: (p) => this.states.get(p) };
  private queue: Job[] = [];
  private running: Promise<void> | null = null;
  private closing = false;
  /** Set once close has let every accepted apply through: the write queue takes nothing more. */
  private queueClosed = false;
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
  /** Log entries moved out of LMDB into the segment log at open (format 2 → 3; 0: none). */
  migrated = 0;
  /** The replica logs (format 3): assigned by `load`. */
  private logs!: LogStore;
  /** Accepted applies not yet committed to LMDB, by partition and key (see `get`). */
  private readonly pending = new Map<PartitionId, Map<string, Pending>>();
  /** Per partition, the applied seq LMDB holds durably: no log truncation may pass it. */
  private readonly durableApplied = new Map<PartitionId, number>();
  /** Per partition, the log base asked for (truncateLogTo) and not yet written to the log. */
  private readonly truncations = new Map<PartitionId, LogPosition>();
  /** Hands accepted applies to the write queue, in order, once their log records are durable. */
  private applyTail: Promise<void> = Promise.resolve();
  /** Batches whose applies are accepted and not yet committed to LMDB; and the queue of writers admitted. */
  private applyBacklog = 0;
  private admission: Promise<void> = Promise.resolve();
  private waiting = 0;
  private compacting: Promise<void> | null = null;
  /** LMDB halves waiting for the next apply transaction (`flushApplies`), and its timer. */
  private buffered: BufferedApplies[] = [];
  /** Settles when the last batch buffered so far is committed (see `appliesCommitted`). */
  private bufferedCommitted: Promise<void> | undefined;
  private applyTimer: NodeJS.Timeout | undefined;
  /** Why writes stopped (LMDB failed to commit applies the log holds): the backend must be reopened. */
  private failure: StorageFailureError | undefined;

  private constructor(
    private readonly env: RootDatabase<Buffer, Buffer>,
    private readonly sysDb: Database<Buffer, Buffer>,
    private readonly partDb: Database<Buffer, Buffer>,
    private readonly logDb: Database<Buffer, Buffer>,
    private readonly dataDb: Database<Buffer, Buffer>,
    private readonly dedupDb: Database<Buffer, Buffer>,
    readonly sync: SyncMode,
    private readonly logDir: string,
    private readonly logSegmentBytes: number | undefined,
  ) {}

  /** Opens (creating when needed) the environment in `<dataDir>/lmdb` and the log in `<dataDir>/log`. */
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
        join(options.dataDir, 'log'),
        options.logSegmentBytes,
      );
    } catch (err) {
      await env.close().catch(() => undefined);
      throw new StorageFailureError(`cannot open lmdb in ${path}: ${describeCause(err)}`, { cause: err });
    }
    try {
      await backend.load();
    } catch (err) {
      // The load's error is the one to report; closing after it may fail too (a full disk).
      await backend.logs?.close().catch(() => undefined);
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
    const pending = this.pending.get(partition)?.get(pendingKey(key));
    if (pending !== undefined && pending.generation === s.generation) {
      if (pending.value === null) return undefined;
      const { value, version, expiresAt } = pending.value;
      return expiresAt === undefined
        ? { value: copyBytes(value), version }
        : { value: copyBytes(value), version, expiresAt };
    }
    const k = dataKey(partition, s.generation, key);
    const raw = this.dataDb.get(k);
    return raw === undefined ? undefined : decodeValue(k, raw, partition);
  }

  async scan(partition: PartitionId, options: ScanOptions): Promise<ScanPage> {
    this.checkOpen();
    checkScanOptions(options);
    await this.appliesCommitted();
    const s = this.states.get(partition);
    if (!s) return options.values ? { keys: [], values: [] } : { keys: [] };
    const keys: Uint8Array[] = [];
    const values: VersionedValue[] = [];
    let bytes = 0;
    let more = false;
    // Stored keys are at most LMDB_MAX_KEY_BYTES long, so the stored keys after a longer
    // afterKey are exactly those after its prefix of that length (and a longer prefix matches
    // none: hasPrefix drops them).
    const from = scanStart(options);
    const startKey = from?.key.subarray(0, LMDB_MAX_KEY_BYTES);
    const end = prefixEnd(options.prefix?.subarray(0, LMDB_MAX_KEY_BYTES));
    const range = this.dataDb.getRange({
      start: startKey === undefined ? dataPrefix(partition, s.generation) : dataKey(partition, s.generation, startKey),
      end: end === undefined ? dataPrefix(partition, s.generation + 1) : dataKey(partition, s.generation, end),
      exclusiveStart: from !== undefined && !from.inclusive,
      limit: options.limit + 1, // one more tells whether the scan is complete
    });
    // Issue 9: the range is read lazily, one record at a time (lmdb copies each value out of
    // the map as the cursor reaches it), so a page holds one value at a time, never the page's.
    for (const { key, value } of range) {
      const k = view(key, 8);
      if (!hasPrefix(k, options.prefix)) break;
      const full = options.values && options.maxBytes !== undefined && keys.length > 0 && bytes >= options.maxBytes;
      if (keys.length === options.limit || full) {
        more = true;
        break;
      }
      const v = decodeValue(key, value, partition); // S13: a scan lists no key whose record is corrupt
      this.scanPeakBytes = Math.max(this.scanPeakBytes, value.length);
      keys.push(k);
      if (options.values) {
        values.push(v);
        bytes += k.length + v.value.length;
      }
    }
    const last = keys[keys.length - 1];
    const page = options.values ? { keys, values } : { keys };
    return more && last !== undefined ? { ...page, nextAfterKey: last } : page;
  }

  async count(partition: PartitionId): Promise<number> {
    this.checkOpen();
    return this.states.get(partition)?.keyCount ?? 0;
  }

  /** Entries the log holds above its base (a truncated prefix waiting to be written is not read). */
  async readLog(partition: PartitionId, options: { fromSeq: Seq; toSeq: Seq; limit: number }): Promise<LogEntry[]> {
    this.checkOpen();
    const seqs = logReadRange(partition, options);
    const s = this.states.get(partition);
    if (seqs === undefined || s === undefined) return [];
    const from = Math.max(seqs.from, s.logBase.seq + 1);
    const out = await this.logs.read(partition, from, Math.min(seqs.to, s.logLast.seq), options.limit);
    for (const [i, e] of out.entries()) {
      if (e.seq !== from + i) throw new CorruptRecordError(`partition ${partition}: the log jumps to ${e.seq}`);
    }
    return out;
  }

  async snapshot(partition: PartitionId): Promise<Snapshot> {
    this.checkOpen();
    checkPartition(partition);
    // Not an early commit: a snapshot (a learner's, a digest's, S16) is rare and may wait the
    // APPLY_DELAY_MS of the applies buffered now; forcing a commit per snapshot cost writes.
    await this.appliesCommitted(false);
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
            page.push(
              v.expiresAt === undefined
                ? { key: view(key, 8), value: v.value, version: v.version }
                : { key: view(key, 8), value: v.value, version: v.version, expiresAt: v.expiresAt },
            );
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
   * Format 3: a batch is checked and takes effect in memory at once, in call order (so reads
   * and later batches see it); it resolves when its log half (appends, truncations from,
   * metadata, drops) is durable in the segment log: one append and one sync for every batch
   * that arrived meanwhile. Its applies are then committed to LMDB in the background, in
   * large synced transactions after the entries they apply are durable in the log; until
   * then `get` answers from the accepted applies. Nothing acknowledged depends on those
   * commits: the log keeps every entry above what LMDB holds durably (a truncation is written
   * to the log only once the applies below it are committed), and a restart re-applies them.
   */
  async writeBatch(ops: readonly BatchOp[]): Promise<BatchResult> {
    this.checkOpen();
    let batch = ops;
    if (this.waiting > 0 || this.applyBacklog >= APPLY_BACKLOG) {
      // LMDB is APPLY_BACKLOG batches behind (bounded memory): wait, in call order, with the
      // batch copied now (a batch is taken when it is called).
      batch = structuredClone(ops);
      this.waiting += 1;
      const turn = this.admission.then(() => this.admit());
      this.admission = turn;
      try {
        await turn;
      } finally {
        this.waiting -= 1;
      }
      this.checkOpen();
    }
    if (this.failure) throw this.failure;
    const { logOps, work, deletes, dropped, publish } = this.accept(batch);
    const truncations = this.readyTruncations();
    logOps.push(...truncations);
    if (truncations.length > 0) this.compactSoon();
    if (dropped.length === 0) {
      const logged = this.logs.write(logOps); // checks the log half again; throws before any change
      publish();
      // Nobody waits for it; a failure is kept (`fail`) and fails every later write.
      if (work.length > 0) this.commitLater(work, dropped, () => logged).catch(() => undefined);
      await logged;
      return { deletes };
    }
    // A drop: its LMDB half commits first, then the log's (so at open a partition LMDB holds
    // is never one whose drop was acknowledged, see `load`). Later batches wait for it, so
    // their log records follow the drop's.
    publish();
    const lmdb = this.commitLater(work, dropped, () => this.logs.write([]));
    this.waiting += 1;
    this.admission = this.admission
      .then(() => lmdb)
      .catch(() => undefined)
      .finally(() => {
        this.waiting -= 1;
      });
    await lmdb;
    await this.logs.write(logOps);
    return { deletes };
  }

  /**
   * Queues the batch's LMDB half: it is committed with every other one queued within
   * APPLY_DELAY_MS (a drop at once), once `logged` (the log records it depends on) is
   * durable. A failure stops all writes (`fail`).
   */
  private commitLater(
    work: readonly ApplyWork[],
    dropped: ReadonlyArray<{ partition: PartitionId; generation: number }>,
    logged: () => Promise<void>,
  ): Promise<void> {
    this.applyBacklog += 1;
    const done = new Promise<void>((resolve, reject) => this.buffered.push({ work, dropped, logged, resolve, reject }));
    this.bufferedCommitted = done;
    if (dropped.length > 0 || this.buffered.length >= APPLY_GROUP) this.flushApplies();
    else this.applyTimer ??= setTimeout(() => this.flushApplies(), APPLY_DELAY_MS);
    return done;
  }

  /** Hands every buffered LMDB half to the write queue as one job (one transaction, one sync). */
  private flushApplies(): void {
    if (this.applyTimer !== undefined) clearTimeout(this.applyTimer);
    this.applyTimer = undefined;
    const batches = this.buffered;
    if (batches.length === 0) return;
    this.buffered = [];
    const weight = batches.reduce((n, b) => n + b.dropped.length + b.work.reduce((m, w) => m + w.entries.length, 0), 0);
    const last = batches[batches.length - 1] as BufferedApplies;
    // Log records are durable in order: the last batch's cover the earlier ones'.
    const run = this.applyTail
      .then(last.logged)
      .then(() =>
        this.enqueue(weight, false, (v) => {
          for (const b of batches) this.commitApplies(b.work, b.dropped, v);
        }),
      )
      .then(() => {
        for (const b of batches) this.afterCommit(b.work, b.dropped);
      });
    this.applyTail = run
      .catch((err: unknown) => this.fail(err))
      .finally(() => {
        this.applyBacklog -= batches.length;
      });
    run.then(
      () => {
        for (const b of batches) b.resolve();
      },
      (err: unknown) => {
        for (const b of batches) b.reject(err);
      },
    );
  }

  /** Waits while LMDB is APPLY_BACKLOG batches of applies behind the log. */
  private async admit(): Promise<void> {
    // Bounded: each wait ends when the applies queued before it are committed (or failed).
    for (let i = 0; this.applyBacklog >= APPLY_BACKLOG && !this.failure && i < 1_000_000; i++) {
      await this.appliesCommitted();
    }
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
          staged.push([this.dataDb, key, encodeStoredValue(item.key, item.version, item.value, item.expiresAt)]);
          stagedBytes += key.length + item.value.length + 8;
          keyCount += 1;
          previousKey = view(key, 8);
          await flushIfFull();
        }
      }
      if (staged.length > 0) await this.stage(staged);
      // S11: first the log is emptied at `applied` (durably), then one transaction switches the
      // state record to the staged generation, after the partition's earlier applies. A crash
      // between the two leaves the applied state behind the log's base: the partition opens
      // corrupt and is relearned (`load`).
      await this.appliesCommitted();
      await this.logs.write([{ kind: 'reset', partition, at: applied }]);
      this.truncations.delete(partition);
      const switched = this.enqueue(1, false, (v) => {
        const after: PartState = {
          meta: v.state(partition)?.meta ?? null,
          applied,
          logBase: applied,
          logLast: applied,
          generation,
          keyCount,
        };
        v.set(partition, after);
        this.partDb.putSync(partKey(partition), encodeState(after));
      });
      // The log is emptied already: without the switch the two disagree until a reopen.
      await switched.catch((err: unknown) => {
        this.fail(err);
        throw err;
      });
      this.pending.delete(partition);
      this.durableApplied.set(partition, applied.seq);
    } finally {
      this.installing.delete(partition);
      // Either the old generation (installed) or the staged one (failed) is garbage now.
      this.scheduleGc(partition);
    }
  }

  async dedupTable(partition: PartitionId): Promise<DedupRecord[]> {
    this.checkOpen();
    await this.appliesCommitted();
    const s = this.states.get(partition);
    return s ? this.readDedup(partition, s.generation) : [];
  }

  /** Resolves once no write or garbage collection is queued or running (tests, shutdown). */
  async idle(): Promise<void> {
    await this.appliesCommitted().catch(() => undefined);
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
    // Accepted batches and their applies complete (so a clean close leaves nothing to re-apply);
    // garbage collection resumes at the next open.
    await this.admission;
    this.closing = true;
    this.flushApplies();
    await this.applyTail;
    await this.compacting;
    this.queueClosed = true;
    this.queue = this.queue.filter((job) => !job.internal);
    this.gcQueued.clear();
    if (this.running) await this.running;
    for (const s of [...this.snapshots]) s.done();
    try {
      const truncations = this.failure ? [] : this.readyTruncations();
      await this.logs.write(truncations).catch(() => undefined); // lost, it only keeps more log
      await this.logs.close();
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
    if (this.queueClosed) return Promise.reject(new StorageFailureError('the lmdb backend is closed'));
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

  /**
   * Checks a batch against the accepted state; returns its log half, its LMDB half, and
   * `publish`, which makes it take effect in memory. Throws when a precondition fails.
   */
  private accept(ops: readonly BatchOp[]): {
    logOps: LogOp[];
    work: ApplyWork[];
    deletes: BatchResult['deletes'];
    dropped: Array<{ partition: PartitionId; generation: number }>;
    publish: () => void;
  } {
    const v = new Overlay(this.committed);
    const logOps: LogOp[] = [];
    const work: ApplyWork[] = [];
    const deletes: Array<{ partition: PartitionId; seq: Seq; existed: boolean }> = [];
    const dropped: Array<{ partition: PartitionId; generation: number }> = [];
    // What this batch changes of the pending applies, and the epochs of the entries it appends.
    const values = new Map<PartitionId, Map<string, Pending>>();
    const appended = new Map<PartitionId, Map<number, Epoch>>();
    const truncatedNow = new Set<PartitionId>();
    const truncatedLater = new Map<PartitionId, LogPosition>();
    const epochAt = (p: PartitionId, at: number): Epoch => {
      const e = appended.get(p)?.get(at) ?? this.logs.epochAt(p, at);
      if (e === undefined) throw new CorruptRecordError(`partition ${p}: log entry ${at} is missing`);
      return e as Epoch;
    };
    const stateOf = (partition: PartitionId): PartState => {
      checkPartition(partition);
      const existing = v.state(partition);
      if (existing) return existing;
      const created: PartState = { ...freshPartition(this.allocateGeneration()), keyCount: 0 };
      v.set(partition, created);
      // Every partition is in the log from its start (an empty base record), so at open a
      // partition LMDB holds and the log does not is one whose log was lost (`load`).
      logOps.push({ kind: 'truncateTo', partition, base: ZERO_POSITION });
      return created;
    };
    const lookup = (p: PartitionId, generation: number, key: Uint8Array, k: string): boolean => {
      const mine = values.get(p)?.get(k) ?? this.pending.get(p)?.get(k);
      if (mine !== undefined && mine.generation === generation) return mine.value !== null;
      return this.dataDb.doesExist(dataKey(p, generation, key));
    };
    for (const op of ops) {
      const p = op.partition;
      if (op.kind !== 'dropPartition') checkBatchOp(op, stateOf(p), LMDB_MAX_KEY_BYTES, (at) => epochAt(p, at));
      switch (op.kind) {
        case 'appendLog': {
          const s = stateOf(p);
          const last = op.entries[op.entries.length - 1];
          if (last === undefined) break;
          const epochs = appended.get(p) ?? new Map<number, Epoch>();
          for (const e of op.entries) epochs.set(e.seq, e.epoch);
          appended.set(p, epochs);
          logOps.push({ kind: 'append', partition: p, entries: op.entries });
          v.set(p, { ...s, logLast: { seq: last.seq, epoch: last.epoch } });
          break;
        }
        case 'truncateLogFrom': {
          const s = stateOf(p);
          if (op.fromSeq > s.logLast.seq) break;
          const from = Math.max(op.fromSeq, s.logBase.seq + 1);
          const logLast =
            from - 1 === s.logBase.seq ? s.logBase : { seq: toSeq(from - 1), epoch: epochAt(p, from - 1) };
          logOps.push({ kind: 'truncateFrom', partition: p, fromSeq: from });
          v.set(p, { ...s, logLast });
          break;
        }
        case 'truncateLogTo': {
          // Logical now; written to the log once LMDB holds the applies below it (`readyTruncations`).
          const s = stateOf(p);
          const logLast = op.base.seq >= s.logLast.seq ? op.base : s.logLast;
          v.set(p, { ...s, logBase: op.base, logLast });
          const held = this.logs.partitions().get(p)?.last.seq ?? 0;
          if (held <= (this.durableApplied.get(p) ?? 0) && appended.get(p) === undefined) {
            // The log holds nothing LMDB does not hold durably (entries applied without being
            // logged here): nothing to keep, and the log must continue after the base.
            logOps.push({ kind: 'truncateTo', partition: p, base: op.base });
            truncatedNow.add(p);
          } else {
            truncatedNow.delete(p);
            truncatedLater.set(p, op.base);
          }
          break;
        }
        case 'apply': {
          const s = stateOf(p);
          const last = op.entries[op.entries.length - 1];
          if (last === undefined) break;
          const prepared = prepareApply(op.partition, op.entries);
          const mine = values.get(p) ?? new Map<string, Pending>();
          values.set(p, mine);
          let keyCount = s.keyCount;
          const existed: Array<boolean | undefined> = [];
          for (const e of op.entries) {
            if (!isDataOp(e.op)) {
              existed.push(undefined);
              continue;
            }
            const k = pendingKey(e.op.key);
            const was = lookup(p, s.generation, e.op.key, k);
            existed.push(was);
            if (e.op.kind === 'put') {
              if (!was) keyCount += 1;
              const value: VersionedValue =
                e.op.expiresAt === undefined
                  ? { value: copyBytes(e.op.value), version: e.seq }
                  : { value: copyBytes(e.op.value), version: e.seq, expiresAt: e.op.expiresAt };
              mine.set(k, { value, seq: e.seq, generation: s.generation });
            } else {
              if (was) keyCount -= 1;
              mine.set(k, { value: null, seq: e.seq, generation: s.generation });
              deletes.push({ partition: p, seq: e.seq, existed: was });
            }
          }
          const after: PartState = { ...s, applied: { seq: last.seq, epoch: last.epoch }, keyCount };
          v.set(p, after);
          work.push({ partition: p, entries: op.entries, prepared, existed, after });
          break;
        }
        case 'setMeta': {
          const s = stateOf(p);
          v.set(p, { ...s, meta: op.meta });
          logOps.push({ kind: 'setMeta', partition: p, meta: op.meta });
          break;
        }
        case 'dropPartition': {
          checkPartition(p);
          const s = v.state(p);
          if (!s) break;
          v.set(p, null); // its data is garbage from now on
          values.delete(p);
          appended.delete(p);
          logOps.push({ kind: 'drop', partition: p });
          dropped.push({ partition: p, generation: s.generation });
          break;
        }
        default:
          return assertNever(op);
      }
    }
    // Every precondition held: the batch takes effect when published.
    const publish = (): void => this.publish(v, { truncatedNow, truncatedLater, dropped, values });
    return { logOps, work, deletes, dropped, publish };
  }

  /** A checked batch takes effect in memory: states, log truncations asked for, pending applies. */
  private publish(
    v: Overlay,
    changes: {
      truncatedNow: ReadonlySet<PartitionId>;
      truncatedLater: ReadonlyMap<PartitionId, LogPosition>;
      dropped: ReadonlyArray<{ partition: PartitionId }>;
      values: ReadonlyMap<PartitionId, ReadonlyMap<string, Pending>>;
    },
  ): void {
    const { truncatedNow, truncatedLater, dropped, values } = changes;
    publishChanges(this.states, v.changes);
    for (const p of truncatedNow) this.truncations.delete(p);
    for (const [p, base] of truncatedLater) this.truncations.set(p, base);
    for (const { partition } of dropped) {
      this.pending.delete(partition);
      this.truncations.delete(partition);
      this.durableApplied.delete(partition);
    }
    for (const [p, mine] of values) {
      const into = this.pending.get(p) ?? new Map<string, Pending>();
      for (const [k, value] of mine) into.set(k, value);
      if (into.size > 0) this.pending.set(p, into);
    }
  }

  /** In the write transaction: accepted applies and drops, in order (their log records are durable). */
  private commitApplies(
    work: readonly ApplyWork[],
    dropped: ReadonlyArray<{ partition: PartitionId; generation: number }>,
    v: Overlay,
  ): void {
    for (const w of work) {
      const g = w.after.generation;
      w.entries.forEach((e, j) => {
        if (isDataOp(e.op)) {
          const key = w.prepared.keys![j]!;
          key.writeUInt32BE(g, 4);
          if (e.op.kind === 'put') this.dataDb.putSync(key, w.prepared.values![j]!);
          else this.dataDb.removeSync(key);
        }
        if (e.tag !== undefined) {
          // S10: one put, in this transaction, replacing the client's previous record.
          const key = w.prepared.dedupKeys![j]!;
          key.writeUInt32BE(g, 4);
          this.dedupDb.putSync(key, w.prepared.dedupValues![j] ?? encodeDedup(e.tag.requestSeq, e.seq, w.existed[j]));
        }
      });
      // A partition dropped or replaced since: its data is garbage, its state record not ours.
      if (v.state(w.partition)?.generation === g) this.partDb.putSync(partKey(w.partition), encodeState(w.after));
    }
    for (const d of dropped) {
      const raw = this.partDb.get(partKey(d.partition));
      if (raw !== undefined && decodeState(raw, `partition ${d.partition} state`).generation === d.generation) {
        this.partDb.removeSync(partKey(d.partition));
      }
    }
  }

  /** After the applies' commit: LMDB holds them, so `get` reads them there and the log may be truncated below. */
  private afterCommit(work: readonly ApplyWork[], dropped: ReadonlyArray<{ partition: PartitionId }>): void {
    for (const w of work) {
      const p = w.partition;
      if (this.states.get(p)?.generation !== w.after.generation) continue;
      this.durableApplied.set(p, Math.max(this.durableApplied.get(p) ?? 0, w.after.applied.seq));
      const mine = this.pending.get(p);
      if (mine === undefined) continue;
      for (const e of w.entries) {
        if (!isDataOp(e.op)) continue;
        const k = pendingKey(e.op.key);
        if (mine.get(k)?.seq === e.seq) mine.delete(k);
      }
      if (mine.size === 0) this.pending.delete(p);
    }
    for (const { partition } of dropped) this.scheduleGc(partition);
  }

  /**
   * S12: once truncations free whole segments of the log, delete them (one compaction at a
   * time, after the write that carries the truncations).
   */
  private compactSoon(): void {
    if (this.compacting !== null || this.logs.segments < 2) return;
    this.compacting = Promise.resolve()
      .then(() => this.logs.compact())
      .then(
        () => undefined,
        (err: unknown) => this.fail(err),
      )
      .finally(() => {
        this.compacting = null;
      });
  }

  /** Log truncations whose applies LMDB holds durably: written with the next log write. */
  private readyTruncations(): LogOp[] {
    const out: LogOp[] = [];
    for (const [partition, base] of this.truncations) {
      // As far as asked, or as far as LMDB holds (the rest waits for the next commit).
      const target = Math.min(base.seq, this.durableApplied.get(partition) ?? 0);
      if (target <= (this.logs.partitions().get(partition)?.base.seq ?? 0)) continue;
      const epoch = target === base.seq ? base.epoch : this.logs.epochAt(partition, target);
      if (epoch === undefined) continue;
      out.push({ kind: 'truncateTo', partition, base: { seq: toSeq(target), epoch: epoch as Epoch } });
      if (target === base.seq) this.truncations.delete(partition);
    }
    return out;
  }

  /** LMDB failed to commit applies the log holds: stop writing; a reopen re-applies them from the log. */
  private fail(err: unknown): void {
    this.failure ??=
      err instanceof StorageFailureError ? err : new StorageFailureError('lmdb apply failed', { cause: err });
  }

  /**
   * Resolves once every apply and drop accepted so far is committed to LMDB (reads of more than
   * one key: scans, snapshots, dedup tables; they are rare next to gets and writes).
   */
  private async appliesCommitted(now = true): Promise<void> {
    if (this.applyBacklog === 0) return;
    if (now || this.buffered.length === 0) this.flushApplies();
    else await this.bufferedCommitted?.catch(() => undefined); // at the timer, APPLY_DELAY_MS at most
    await this.applyTail;
    if (this.failure) throw this.failure;
  }

  private scheduleGc(partition: PartitionId): void {
    if (this.queueClosed || this.gcQueued.has(partition)) return;
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
          this.sysDb.putSync(formatKey, Buffer.from([2])); // then format 2 → 3 (`moveLogsOut`)
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

  /** Loads the states and the logs (upgrading older formats), reconciles them, finds garbage. */
  private async load(): Promise<void> {
    const formatKey = Buffer.from('format');
    const format = this.sysDb.get(formatKey);
    let found = FORMAT_VERSION;
    if (format !== undefined) {
      if (format.length !== 1 || format[0] === undefined || format[0] < 1 || format[0] > FORMAT_VERSION) {
        throw new StorageFailureError(
          `lmdb data format ${Buffer.from(format).toString('hex')} is not one this ` +
            `version reads (1 or 2, upgraded at open, or ${FORMAT_VERSION}); use the dstore ` +
            `version that wrote it`,
        );
      }
      found = format[0];
    }
    if (found === 1) {
      this.upgraded = await this.upgradeFrom1();
      found = 2;
    }
    // Before format 3 the log lives in LMDB: a segment log beside it is what an interrupted move left.
    if (found < FORMAT_VERSION) await rm(this.logDir, { recursive: true, force: true });
    const logCorrupt = await this.openLogs();
    this.lostLog = logCorrupt;
    if (found === 2) await this.moveLogsOut();
    else if (format === undefined) {
      await this.commitAtOpen('writing the lmdb format record', () =>
        this.sysDb.putSync(formatKey, Buffer.from([FORMAT_VERSION])),
      );
    }
    await this.deleteOldLog();
    let maxGeneration = 0;
    const logs = this.logs.partitions();
    for (const { key, value } of this.partDb.getRange({})) {
      if (key.length !== 4) throw new CorruptRecordError(`a state record has a key of ${key.length} bytes`);
      const partition = key.readUInt32BE(0) as PartitionId;
      const r = decodeState(value, `partition ${partition} state`);
      maxGeneration = Math.max(maxGeneration, r.generation);
      const l = logs.get(partition);
      if (l === undefined) {
        // S13: its log failed its checks, or is gone (every partition is in the log from its
        // start): what it acknowledged above its applied state may be lost. It relearns.
        const s: PartState = { ...r, meta: null, logBase: r.applied, logLast: r.applied };
        this.states.set(partition, markCorrupt(s, logCorrupt ?? `its replica log is missing from ${this.logDir}`));
      } else {
        const s: PartState = { ...r, meta: l.meta, logBase: l.base, logLast: l.last };
        this.states.set(partition, mismatch(s) === undefined ? s : markCorrupt(s, mismatch(s) as string));
      }
      this.durableApplied.set(partition, r.applied.seq);
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
    // Partitions with a log and nothing applied yet: a fresh generation (no data is under any).
    for (const [partition, l] of logs) {
      if (this.states.has(partition)) continue;
      const s: PartState = {
        ...freshPartition(this.allocateGeneration()),
        meta: l.meta,
        logBase: l.base,
        logLast: l.last,
        keyCount: 0,
      };
      this.states.set(partition, mismatch(s) === undefined ? s : markCorrupt(s, mismatch(s) as string));
    }
    for (const p of garbage) this.scheduleGc(p);
  }

  /**
   * Opens the segment log. S13: one that fails its checks is moved aside (kept for a look) and
   * a new one started; the returned reason then marks every partition corrupt, so each is
   * relearned from a healthy member.
   */
  /**
   * S4, S13: why the replica log was moved aside at open, if it was. Partitions this store
   * knew only from that log (no apply written yet) are gone from it altogether, so the store
   * may not say it holds every partition it was a member of: the server registers as not
   * durable and relearns them all.
   */
  logLost(): string | undefined {
    return this.lostLog;
  }

  private lostLog: string | undefined;

  private async openLogs(): Promise<string | undefined> {
    const options = {
      sync: this.sync === 'batch',
      ...(this.logSegmentBytes === undefined ? {} : { segmentBytes: this.logSegmentBytes }),
    };
    try {
      this.logs = (await LogStore.open(this.logDir, options)).store;
      return undefined;
    } catch (err) {
      if (!isCorruptRecord(err)) throw new StorageFailureError(`cannot open the log in ${this.logDir}`, { cause: err });
      const aside = `${this.logDir}.corrupt-${Date.now()}`;
      await rename(this.logDir, aside);
      this.logs = (await LogStore.open(this.logDir, options)).store;
      return `the replica log failed its checks at open (moved to ${aside}): ${(err as Error).message}`;
    }
  }

  /**
   * Format 2 → 3: every partition's metadata, log base and log entries are written to the
   * segment log (durably), then the format becomes 3; LMDB's copies are deleted after that
   * (`deleteOldLog`). Interrupted before the format changes, the next open starts again
   * from a new segment log. A log entry that fails its checksum is not moved: its
   * partition's log stops before it, and the partition opens corrupt (`mismatch`) or with a
   * shorter log than it had (entries above what it applied, unacknowledged or held by others).
   */
  private async moveLogsOut(): Promise<void> {
    for (const { key, value } of this.partDb.getRange({})) {
      const partition = key.readUInt32BE(0) as PartitionId;
      const s = decodeState(value, `partition ${partition} state`);
      const head: LogOp[] = [{ kind: 'truncateTo', partition, base: s.logBase }];
      if (s.meta) head.push({ kind: 'setMeta', partition, meta: s.meta });
      await this.logs.write(head);
      let from = s.logBase.seq + 1;
      // Bounded: each round moves up to UPGRADE_CHUNK entries of a finite log.
      for (let round = 0; ; round++) {
        assert(round <= Number.MAX_SAFE_INTEGER / UPGRADE_CHUNK, 'the log move did not end');
        const entries: LogEntry[] = [];
        try {
          for (const { key: k, value: raw } of this.logDb.getRange({
            start: logKey(partition, from),
            end: partKey(partition + 1),
            limit: UPGRADE_CHUNK,
          })) {
            const entry = decodeEntry(raw, `partition ${partition} log entry ${readU64(k, 4)}`, (b) => Buffer.from(b));
            if (entry.seq !== from + entries.length) break;
            entries.push(entry);
          }
        } catch (err) {
          if (!isCorruptRecord(err)) throw err;
        }
        await this.logs.write(entries.length > 0 ? [{ kind: 'append', partition, entries }] : []);
        this.migrated += entries.length;
        if (entries.length < UPGRADE_CHUNK) break;
        from += entries.length;
      }
    }
    await this.commitAtOpen('upgrading lmdb format 2 to 3', () =>
      this.sysDb.putSync(Buffer.from('format'), Buffer.from([FORMAT_VERSION])),
    );
  }

  /** Deletes what format 2 left in LMDB's `log` database, in bounded transactions. */
  private async deleteOldLog(): Promise<void> {
    // Bounded: each round deletes up to UPGRADE_CHUNK records of a finite database.
    for (let round = 0; ; round++) {
      assert(round <= Number.MAX_SAFE_INTEGER / UPGRADE_CHUNK, 'deleting the old log did not end');
      const keys = [...this.logDb.getKeys({ limit: UPGRADE_CHUNK })].map((k) => Buffer.from(k));
      if (keys.length === 0) return;
      await this.commitAtOpen('deleting the format-2 log', () => {
        for (const k of keys) this.logDb.removeSync(k);
      });
    }
  }

  /** Broken once the log or LMDB failed a write: the storage server then reopens the backend. */
  health(): BackendHealth {
    const failure = this.failure ?? this.logs.failed;
    return failure === undefined ? { connected: true } : { connected: true, broken: failure.message };
  }
}

/**
 * S13: why a partition's applied state (LMDB) and its log (segment log) do not fit together
 * at open, if they do not: the applied seq must lie within the log's [base, last]. Behind the
 * base: an interrupted snapshot install (the log was emptied, the switch did not commit).
 * Beyond the last entry: never written so (applies commit after their entries are durable).
 */
function mismatch(s: PartState): string | undefined {
  if (s.applied.seq < s.logBase.seq) {
    return `applied state at ${s.applied.seq} is behind the log's base ${s.logBase.seq} (an interrupted snapshot install)`;
  }
  if (s.applied.seq > s.logLast.seq) {
    return `applied state at ${s.applied.seq} is beyond the log's last entry ${s.logLast.seq}`;
  }
  return undefined;
}
