/** The redis backend (redis.ts describes the key layout and the fences). */
import { randomBytes } from 'node:crypto';
import {
  type LogEntry,
  type PartitionId,
  type Seq,
  type VersionedValue,
  InvariantViolation,
  assert,
  assertNever,
  epoch as toEpoch,
  seq as toSeq,
} from '../../core/types.js';
import { DstoreError, OverloadedError, StorageFailureError } from '../../core/errors.js';
import { SCAN_VERIFY_BATCH_BYTES } from '../../core/limits.js';
import type {
  Backend,
  BackendHealth,
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
} from '../backend.js';
import { CorruptRecordError, encodeEntry, encodeStoredValue, isCorruptRecord, isUint } from '../log-record.js';
import {
  MAX_PARTITION,
  ZERO_POSITION,
  checkPartition,
  checkBatchOp,
  checkInstallSnapshot,
  logReadRange,
  checkKey,
  checkPageLimit,
  checkSnapshotItem,
  compareBytes,
} from '../preconditions.js';
import { checkScanOptions, prefixEnd, scanStart } from '../scan-range.js';
import { describeRedisUrl, parseRedisUrl } from '../redis-url.js';
import type { Client } from './lua.js';
import { freshPartition, listPartitions, markCorrupt, publishChanges } from '../partition-cache.js';
import {
  FORMAT_VERSION,
  REDIS_MAX_KEY_BYTES,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_COMMAND_TIMEOUT_MS,
  MAX_WRITES_IN_FLIGHT,
  STAGE_MAX_ITEMS,
  STAGE_MAX_BYTES,
  LOAD_CHUNK,
  SNAPSHOT_FETCH_KEYS,
  SNAPSHOT_FETCH_BYTES,
  MAX_PARTITIONS_AT_OPEN,
  type Arg,
  bytesOf,
  decodeValue,
  decodeEntry,
  dedupPrefix,
  decodeDedupTable,
  decodeMetaJson,
  lexAfter,
  type EpochRun,
  type PartState,
  epochAt,
  appendRuns,
  runsBefore,
  runsAfter,
  stateFields,
  type Plan,
  type Durability,
} from './layout.js';
import { lastErrors, noteError, createClient, connectWithin, checkConfig, checkNoOtherOwner } from './connection.js';

export interface RedisBackendOptions extends BackendOptions {
  /** `redis://HOST:PORT[/DB]`, optionally with `:PASSWORD@` or `USER:PASSWORD@`. */
  readonly url: string;
  /** Bound on reaching Redis when opening, in ms (default 10 000). */
  readonly connectTimeoutMs?: number;
  /** A command without a reply after this long fails, in ms (default 10 000). */
  readonly commandTimeoutMs?: number;
}
// ---------------------------------------------------------------------------------------
// The backend.
// ---------------------------------------------------------------------------------------

export class RedisBackend implements Backend {
  readonly kind = 'redis';
  /** After every write sent; plans build on it. */
  private readonly pending = new Map<PartitionId, PartState>();
  /** After every write Redis confirmed; what `partitions()` reports. */
  private readonly committed = new Map<PartitionId, PartState>();
  private batchCount: number;
  private nextGeneration: number;
  private writesInFlight = 0;
  private lastWrite: Promise<unknown> = Promise.resolve();
  private broken: StorageFailureError | undefined;
  private closing = false;
  private closePromise: Promise<void> | null = null;
  private readonly installing = new Set<PartitionId>();
  private readonly openSnapshots = new Set<string>();
  /**
   * Diagnostics (issue 9): the most stored-value bytes one scan read returned since open;
   * at most SCAN_VERIFY_BATCH_BYTES, or one value when a single value is larger.
   */
  scanPeakBytes = 0;

  private constructor(
    private readonly redis: Client,
    private readonly owner: string,
    private readonly where: string,
    private readonly durability: Durability,
    private readonly commandTimeoutMs: number,
    init: { batchCount: number; nextGeneration: number },
  ) {
    this.batchCount = init.batchCount;
    this.nextGeneration = init.nextGeneration;
  }

  /** The last error ioredis reported (connection errors, mostly). */
  private get lastError(): Error | undefined {
    return lastErrors.get(this.redis);
  }

  /**
   * Connects (waiting up to `connectTimeoutMs` for Redis to come up), checks how Redis is
   * configured (S14), takes the database over and loads every partition's positions.
   */
  static async open(options: RedisBackendOptions): Promise<RedisBackend> {
    const url = parseRedisUrl(options.url);
    const where = describeRedisUrl(url);
    const sync = options.sync ?? 'batch';
    const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const commandTimeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    const owner = randomBytes(12).toString('hex');
    const redis = createClient(url, owner, commandTimeoutMs);
    try {
      await connectWithin(redis, connectTimeoutMs, where);
      const durability = await checkConfig(redis, sync, where);
      await checkNoOtherOwner(redis, owner, url, where);
      const init = (await redis.dsInitBuffer(owner, FORMAT_VERSION)) as [Buffer, Buffer, Buffer[]];
      const batchCount = Number(init[0].toString());
      const nextGeneration = Number(init[1].toString());
      if (!isUint(batchCount) || !isUint(nextGeneration) || nextGeneration < 1) {
        throw new CorruptRecordError(`${where}: bad ds:bseq or ds:nextgen`);
      }
      const backend = new RedisBackend(redis, owner, where, durability, commandTimeoutMs, {
        batchCount,
        nextGeneration,
      });
      await backend.load(init[2].map((b) => b.toString()));
      return backend;
    } catch (err) {
      redis.disconnect();
      if (err instanceof DstoreError || err instanceof InvariantViolation) throw err;
      throw new StorageFailureError(`cannot open the redis backend at ${where}: ${messageOf(err)}`, { cause: err });
    }
  }

  /** Whether writes can go through now; `broken` says why they cannot until reopened. */
  health(): BackendHealth {
    return {
      connected: this.redis.status === 'ready',
      ...(this.broken ? { broken: this.broken.message } : {}),
      ...(this.lastError ? { lastError: this.lastError.message } : {}),
    };
  }

  // -------------------------------------------------------------------------------------
  // Reads: each one script, so each sees one consistent state.
  // -------------------------------------------------------------------------------------

  async partitions(): Promise<PartitionState[]> {
    this.checkOpen();
    return listPartitions(this.committed);
  }

  async get(partition: PartitionId, key: Uint8Array): Promise<VersionedValue | undefined> {
    this.checkOpen();
    checkPartition(partition);
    if (key.length > REDIS_MAX_KEY_BYTES || key.length === 0) return undefined; // never stored
    const raw = (await this.read(this.redis.dsGetBuffer(String(partition), Buffer.from(key)))) as Buffer | null;
    return raw === null ? undefined : decodeValue(key, raw, `partition ${partition} stored value`);
  }

  /**
   * S13: every listed key's stored value is read and verified, in round trips of at most
   * SCAN_VERIFY_BATCH_BYTES of values (issue 9: one reply of a page's values would be up to
   * 1,001 × 64 MiB), each one script. A page may so span several reads of the partition;
   * each continues strictly after the previous one's last key, so the page is still keys in
   * byte order after `afterKey`, as a shorter page size would give.
   */
  async scan(partition: PartitionId, options: ScanOptions): Promise<ScanPage> {
    this.checkOpen();
    checkScanOptions(options);
    checkPartition(partition);
    // One more than asked tells whether the scan is complete.
    const wanted = options.limit + 1;
    const found: Uint8Array[] = [];
    const values: VersionedValue[] = [];
    let bytes = 0;
    let full = false; // with maxBytes: the page is full, keys are left
    // The sorted set's lex range: from the scan's start, up to the end of the prefix's keys.
    const from = scanStart(options);
    const end = prefixEnd(options.prefix);
    const max: Arg = end === undefined ? '+' : Buffer.concat([Buffer.from('('), end]);
    let min: Arg =
      from === undefined || !from.inclusive ? lexAfter(from?.key) : Buffer.concat([Buffer.from('['), from.key]);
    // Bounded: every round but the last adds at least one key (the first value always fits).
    for (let round = 0; found.length < wanted && !full; round++) {
      assert(round <= wanted, 'scan: a round added no key');
      const reply = (await this.read(
        this.redis.dsScanBuffer(
          String(partition),
          min,
          String(wanted - found.length),
          String(SCAN_VERIFY_BATCH_BYTES),
          max,
        ),
      )) as [number, Array<Buffer | null>];
      const [exhausted, pairs] = reply;
      let roundBytes = 0;
      for (let i = 0; i + 1 < pairs.length; i += 2) {
        const k = pairs[i]!;
        const raw = pairs[i + 1];
        // S13: a scan lists no key whose stored value is missing or corrupt.
        if (raw === null || raw === undefined)
          throw new CorruptRecordError(`partition ${partition}: key listed in its index has no stored value`);
        const v = decodeValue(k, raw, `partition ${partition} stored value`);
        roundBytes += raw.length;
        if (options.values && options.maxBytes !== undefined && found.length > 0 && bytes >= options.maxBytes) {
          full = true;
          break;
        }
        found.push(bytesOf(k));
        if (options.values) {
          values.push(v);
          bytes += k.length + v.value.length;
        }
      }
      this.scanPeakBytes = Math.max(this.scanPeakBytes, roundBytes);
      if (full || Number(exhausted) === 1) break;
      assert(pairs.length >= 2, 'scan: a round that is not the last returned no key');
      min = lexAfter(found[found.length - 1]);
    }
    const keys = found.slice(0, options.limit);
    const last = keys[keys.length - 1];
    const page = options.values ? { keys, values: values.slice(0, options.limit) } : { keys };
    return (full || found.length > options.limit) && last !== undefined ? { ...page, nextAfterKey: last } : page;
  }

  async count(partition: PartitionId): Promise<number> {
    this.checkOpen();
    checkPartition(partition);
    return Number(await this.read(this.redis.dsCountBuffer(String(partition))));
  }

  /** Entries are checked: checksum (S13), and seqs following each other from the first. */
  async readLog(partition: PartitionId, options: { fromSeq: Seq; toSeq: Seq; limit: number }): Promise<LogEntry[]> {
    this.checkOpen();
    const seqs = logReadRange(partition, options);
    if (seqs === undefined) return [];
    const { from, to } = seqs;
    const [first, records] = (await this.read(
      this.redis.dsReadLogBuffer(String(partition), String(from), String(to), String(options.limit)),
    )) as [Buffer, Buffer[]];
    const firstSeq = Number(first.toString());
    return records.map((raw, i) => {
      const at = firstSeq + i;
      const entry = decodeEntry(raw, `partition ${partition} log entry ${at}`);
      if (entry.seq !== at)
        throw new CorruptRecordError(`partition ${partition}: log position ${at} holds entry ${entry.seq}`);
      return entry;
    });
  }

  async dedupTable(partition: PartitionId): Promise<DedupRecord[]> {
    this.checkOpen();
    checkPartition(partition);
    return decodeDedupTable(await this.read(this.redis.dsDedupBuffer(String(partition))), partition);
  }

  async snapshot(partition: PartitionId): Promise<Snapshot> {
    this.checkOpen();
    checkPartition(partition);
    const sid = randomBytes(8).toString('hex');
    const reply = (await this.read(this.redis.dsSnapOpenBuffer(this.owner, sid, String(partition)))) as
      | [Buffer, Buffer, Buffer, Buffer[]]
      | [];
    if (reply.length === 0) return emptySnapshot();
    this.openSnapshots.add(sid);
    const [appliedSeq, appliedEpoch, generation, dedupReply] = reply;
    const applied: LogPosition = {
      seq: toSeq(Number(appliedSeq.toString())),
      epoch: toEpoch(Number(appliedEpoch.toString())),
    };
    const dedup = decodeDedupTable(dedupReply, partition);
    let open = true;
    const close = async (): Promise<void> => {
      if (!open) return;
      open = false;
      await this.closeSnapshot(sid);
    };
    const pageOf = (min: Arg) =>
      this.read(
        this.redis.dsSnapPageBuffer(
          sid,
          String(partition),
          generation.toString(),
          min,
          String(SNAPSHOT_FETCH_KEYS),
          String(SNAPSHOT_FETCH_BYTES),
        ),
      );
    const checkReadable = (): void => {
      if (!open) throw new StorageFailureError('snapshot read after close');
      this.checkOpen();
    };
    return {
      applied,
      dedup,
      async *items(pageItems: number): AsyncIterable<readonly SnapshotItem[]> {
        checkPageLimit('snapshot items', pageItems);
        let buffer: SnapshotItem[] = [];
        let after: Uint8Array | undefined;
        // Bounded: every round consumes at least one key of the view, or ends it.
        for (let round = 0; ; round++) {
          assert(round <= Number.MAX_SAFE_INTEGER, 'snapshot paging did not end');
          checkReadable();
          const [liveDone, live, preDone, pre] = (await pageOf(lexAfter(after))) as [
            number,
            Buffer[],
            number,
            Buffer[],
          ];
          const merged = mergePage(live, liveDone === 1, pre, preDone === 1, applied, partition);
          buffer.push(...merged.items);
          while (buffer.length >= pageItems) {
            yield buffer.slice(0, pageItems);
            buffer = buffer.slice(pageItems);
          }
          if (merged.upTo === undefined) break;
          after = merged.upTo;
        }
        if (buffer.length > 0) yield buffer;
      },
      close,
    };
  }

  // -------------------------------------------------------------------------------------
  // Writes.
  // -------------------------------------------------------------------------------------

  /**
   * Checked and encoded (copied) now, against the state every earlier call leaves, and sent
   * at once; batches take effect in call order. Resolves once Redis confirmed the script
   * (and, in 'waitaof' mode, its fsync).
   */
  async writeBatch(ops: readonly BatchOp[]): Promise<BatchResult> {
    this.checkWritable();
    if (ops.length === 0) return { deletes: [] };
    const plan = this.plan(ops);
    const reply = (await this.send(plan)) as number[];
    if (!Array.isArray(reply) || reply.length !== plan.deletes.length) {
      throw this.breakWith(new StorageFailureError(`${this.where}: a write script answered ${JSON.stringify(reply)}`));
    }
    return { deletes: plan.deletes.map((d, i) => ({ partition: d.partition, seq: d.seq, existed: reply[i] === 1 })) };
  }

  async installSnapshot(
    partition: PartitionId,
    applied: LogPosition,
    items: AsyncIterable<readonly SnapshotItem[]>,
    dedup: readonly DedupRecord[] = [],
  ): Promise<void> {
    this.checkWritable();
    checkInstallSnapshot(partition, this.installing.has(partition), applied, dedup);
    const generation = this.nextGeneration++;
    const p = String(partition);
    const g = String(generation);
    this.installing.add(partition);
    try {
      // S10: the dedup table is staged under the new generation too, so the switch below
      // installs both, and an interrupted install leaves only an orphan.
      for (let i = 0; i < dedup.length; i += STAGE_MAX_ITEMS) {
        const args: Arg[] = [];
        for (const r of dedup.slice(i, i + STAGE_MAX_ITEMS)) {
          args.push(
            r.clientId,
            dedupPrefix(r.requestSeq, r.seq) + (r.existed === undefined ? '' : r.existed ? '1' : '0'),
          );
        }
        await this.stage(p, g, 'u', args);
      }
      let staged: Arg[] = [];
      let stagedBytes = 0;
      let previousKey: Uint8Array | undefined;
      // Bounded by the caller's iterator; at most one stage (8 MiB) is held in memory.
      for await (const page of items) {
        for (const item of page) {
          checkSnapshotItem(partition, applied, previousKey, item);
          checkKey(partition, item.key, REDIS_MAX_KEY_BYTES);
          const key = Buffer.from(item.key);
          staged.push(key, encodeStoredValue(item.key, item.version, item.value, item.expiresAt));
          stagedBytes += key.length + item.value.length + 8;
          previousKey = key;
          if (staged.length / 2 >= STAGE_MAX_ITEMS || stagedBytes >= STAGE_MAX_BYTES) {
            await this.stage(p, g, 'd', staged);
            staged = [];
            stagedBytes = 0;
          }
        }
      }
      if (staged.length > 0) await this.stage(p, g, 'd', staged);
      // S11: the switch is one write script: state, applied, log base, empty log, old data released.
      this.checkWritable();
      const before = this.pending.get(partition);
      const after: PartState = {
        meta: before?.meta ?? null,
        applied,
        logBase: applied,
        logLast: applied,
        generation,
        runs: [],
      };
      const fields = stateFields(after);
      const args: Arg[] = [
        'W',
        p,
        g,
        before ? String(before.generation) : '',
        'S',
        p,
        String(fields.length / 2),
        ...fields,
      ];
      await this.send({
        args,
        states: new Map([[partition, after]]),
        deletes: [],
        nextGeneration: this.nextGeneration,
      });
    } catch (err) {
      // Never the installed generation: the script checks (the switch may have run even if it failed here).
      await this.discard(p, g);
      throw err;
    } finally {
      this.installing.delete(partition);
    }
  }

  close(): Promise<void> {
    this.closePromise ??= this.shutDown();
    return this.closePromise;
  }

  private async shutDown(): Promise<void> {
    this.closing = true;
    // Writes already sent complete (or fail) first, as on lmdb.
    await this.lastWrite.then(
      () => undefined,
      () => undefined, // its caller got the failure
    );
    for (const sid of [...this.openSnapshots]) await this.closeSnapshot(sid);
    if (this.redis.status === 'ready') {
      try {
        await this.redis.quit();
      } catch (err) {
        // Redis went away while we said goodbye: nothing is left to flush on our side.
        noteError(this.redis, err);
      }
    }
    this.redis.disconnect();
  }

  // -------------------------------------------------------------------------------------
  // Internals.
  // -------------------------------------------------------------------------------------

  private checkOpen(): void {
    if (this.closing) throw new StorageFailureError('the redis backend is closed');
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.broken) {
      throw new StorageFailureError(
        `the redis backend at ${this.where} stopped writing after a write whose ` +
          `outcome is unknown (${this.broken.message}); reopen it to reload its state`,
        {
          cause: this.broken,
        },
      );
    }
    if (this.redis.status !== 'ready') {
      const why = this.lastError ? `: ${this.lastError.message}` : '';
      throw new StorageFailureError(`Redis at ${this.where} is not reachable (${this.redis.status})${why}`);
    }
  }

  private breakWith(err: StorageFailureError): StorageFailureError {
    this.broken ??= err;
    return err;
  }

  /** A read command; Redis' errors become StorageFailureErrors. */
  private async read(command: Promise<unknown>): Promise<unknown> {
    try {
      return await command;
    } catch (err) {
      throw this.failure('read', err);
    }
  }

  private failure(what: string, err: unknown): StorageFailureError {
    if (err instanceof StorageFailureError) return err;
    const message = messageOf(err);
    if (message.includes('DSCORRUPT')) return new CorruptRecordError(`${this.where}: ${message}`, { cause: err });
    return new StorageFailureError(`${what} on Redis at ${this.where} failed: ${message}`, { cause: err });
  }

  /**
   * Sends a write script planned on `pending`, and updates `pending` at once so the next
   * plan builds on it. Any failure after sending breaks the backend: the script may or may
   * not have run.
   */
  private send(plan: Plan): Promise<unknown> {
    if (this.writesInFlight >= MAX_WRITES_IN_FLIGHT) {
      return Promise.reject(new OverloadedError(`${this.writesInFlight} storage writes in flight to Redis`));
    }
    const expected = this.batchCount;
    const command = this.redis.dsWriteBuffer(
      this.owner,
      String(expected),
      String(expected + 1),
      String(plan.nextGeneration),
      ...plan.args,
    );
    const fsync =
      this.durability === 'waitaof' ? this.redis.call('WAITAOF', '1', '0', String(this.commandTimeoutMs)) : undefined;
    this.batchCount = expected + 1;
    this.nextGeneration = Math.max(this.nextGeneration, plan.nextGeneration);
    publishChanges(this.pending, plan.states);
    this.writesInFlight += 1;
    const done = (async () => {
      try {
        const [reply, synced] = await Promise.allSettled([command, fsync]);
        if (reply.status === 'rejected') throw reply.reason;
        if (synced.status === 'rejected') throw synced.reason;
        if (fsync !== undefined) {
          const local = Array.isArray(synced.value) ? Number(synced.value[0]) : 0;
          if (local < 1)
            throw new Error(`WAITAOF answered ${JSON.stringify(synced.value)}: the write is not known to be on disk`);
        }
        // Confirmed (replies come in order, so `committed` moves in call order too).
        publishChanges(this.committed, plan.states);
        return reply.value;
      } catch (err) {
        throw this.breakWith(this.failure('a write', err));
      } finally {
        this.writesInFlight -= 1;
      }
    })();
    this.lastWrite = done;
    return done;
  }

  /** Stages snapshot data or dedup records under a generation nobody reads yet. */
  private async stage(p: string, g: string, kind: 'd' | 'u', pairs: Arg[]): Promise<void> {
    this.checkWritable();
    try {
      await this.redis.dsStageBuffer(this.owner, p, g, kind, ...pairs);
    } catch (err) {
      // Not a fence: staged data changes nothing until the switch, so the backend goes on.
      throw this.failure('staging a snapshot', err);
    }
  }

  /** Best effort: an orphan left behind is deleted at the next open. */
  private async discard(p: string, g: string): Promise<void> {
    if (this.redis.status !== 'ready') return;
    try {
      await this.redis.dsDiscardBuffer(this.owner, p, g);
    } catch (err) {
      noteError(this.redis, err);
    }
  }

  /** Best effort: pins and pre-images left behind are deleted at the next open. */
  private async closeSnapshot(sid: string): Promise<void> {
    this.openSnapshots.delete(sid);
    if (this.redis.status !== 'ready') return;
    try {
      await this.redis.dsSnapCloseBuffer(this.owner, sid);
    } catch (err) {
      noteError(this.redis, err);
    }
  }

  /**
   * Checks `ops` against `pending` (the same preconditions as memory and lmdb) and encodes
   * them as one write script. Throws, leaving everything as it was, on a violation.
   */
  private plan(ops: readonly BatchOp[]): Plan {
    const view = new Map<PartitionId, PartState | null>();
    const stateOf = (p: PartitionId): PartState | undefined =>
      view.has(p) ? (view.get(p) ?? undefined) : this.pending.get(p);
    let nextGeneration = this.nextGeneration;
    const dirty = new Set<PartitionId>();
    const args: Arg[] = [];
    const deletes: Array<{ partition: PartitionId; seq: Seq }> = [];
    const existing = (p: PartitionId): PartState => {
      checkPartition(p);
      const s = stateOf(p);
      if (s) return s;
      const created: PartState = { ...freshPartition(nextGeneration++), runs: [] };
      view.set(p, created);
      dirty.add(p);
      return created;
    };
    for (const op of ops) {
      const p = op.partition;
      const ps = String(p);
      if (op.kind !== 'dropPartition') {
        const s = existing(p);
        checkBatchOp(op, s, REDIS_MAX_KEY_BYTES, (at) => epochAt(s, at));
      }
      switch (op.kind) {
        case 'appendLog': {
          const s = existing(p);
          const last = op.entries[op.entries.length - 1];
          if (last === undefined) break;
          args.push('L', ps, String(op.entries.length));
          for (const e of op.entries) args.push(encodeEntry(e));
          view.set(p, { ...s, logLast: { seq: last.seq, epoch: last.epoch }, runs: appendRuns(s.runs, op.entries) });
          break;
        }
        case 'truncateLogFrom': {
          const s = existing(p);
          if (op.fromSeq > s.logLast.seq) break;
          const from = Math.max(op.fromSeq, s.logBase.seq + 1);
          const logLast =
            from - 1 === s.logBase.seq ? s.logBase : { seq: toSeq(from - 1), epoch: epochAt(s, from - 1) };
          args.push('F', ps, String(from - s.logBase.seq - 1));
          view.set(p, { ...s, logLast, runs: runsBefore(s.runs, from) });
          break;
        }
        case 'truncateLogTo': {
          const s = existing(p);
          const drop = Math.min(op.base.seq, s.logLast.seq) - s.logBase.seq;
          if (drop > 0) args.push('T', ps, String(drop));
          const emptied = op.base.seq >= s.logLast.seq;
          view.set(p, {
            ...s,
            logBase: op.base,
            logLast: emptied ? op.base : s.logLast,
            runs: emptied ? [] : runsAfter(s.runs, op.base.seq),
          });
          dirty.add(p);
          break;
        }
        case 'apply': {
          const s = existing(p);
          const last = op.entries[op.entries.length - 1];
          if (last === undefined) break;
          args.push('A', ps, String(s.generation), String(op.entries.length));
          for (const e of op.entries) {
            const client = e.tag === undefined ? '' : e.tag.clientId;
            const rec = e.tag === undefined ? '' : dedupPrefix(e.tag.requestSeq, e.seq);
            if (e.op.kind === 'put')
              args.push(
                'p',
                Buffer.from(e.op.key),
                encodeStoredValue(e.op.key, e.seq, e.op.value, e.op.expiresAt),
                client,
                rec,
              );
            else if (e.op.kind === 'delete') {
              args.push('d', Buffer.from(e.op.key), '', client, rec);
              deletes.push({ partition: p, seq: e.seq });
            } else args.push('e', '', '', client, rec);
          }
          view.set(p, { ...s, applied: { seq: last.seq, epoch: last.epoch } });
          dirty.add(p);
          break;
        }
        case 'setMeta': {
          const s = existing(p);
          view.set(p, { ...s, meta: op.meta });
          dirty.add(p);
          break;
        }
        case 'dropPartition': {
          checkPartition(p);
          const s = stateOf(p);
          if (!s) break;
          args.push('X', ps, String(s.generation));
          view.set(p, null); // its data is released; a snapshot reading it keeps it until closed
          break;
        }
        default:
          return assertNever(op);
      }
    }
    for (const p of dirty) {
      const s = stateOf(p);
      if (!s) continue;
      const fields = stateFields(s);
      args.push('S', String(p), String(fields.length / 2), ...fields);
    }
    return { args, states: view, deletes, nextGeneration };
  }

  /** Loads every partition's state and its log's epochs, checking every record (S13). */
  private async load(parts: readonly string[]): Promise<void> {
    assert(parts.length <= MAX_PARTITIONS_AT_OPEN, `${parts.length} partitions in ${this.where}`);
    for (const ps of parts) {
      const partition = Number(ps) as PartitionId;
      const what = `${this.where} partition ${ps}`;
      if (!/^\d{1,10}$/.test(ps) || partition > MAX_PARTITION)
        throw new CorruptRecordError(`${this.where}: bad partition id '${ps}' in ds:parts`);
      const h = await this.redis.hgetall(`ds:p:${ps}`);
      const nums = [h.as, h.ae, h.bs, h.be, h.g].map((v) =>
        v !== undefined && /^\d{1,16}$/.test(v) ? Number(v) : NaN,
      );
      if (!nums.every(isUint)) throw new CorruptRecordError(`${what}: bad state record ${JSON.stringify(h)}`);
      const [as, ae, bs, be, g] = nums as [number, number, number, number, number];
      const logBase: LogPosition = { seq: toSeq(bs), epoch: toEpoch(be) };
      let logLast = logBase;
      let runs: readonly EpochRun[] = [];
      let corrupt: string | undefined;
      const length = await this.redis.llen(`ds:l:${ps}`);
      for (let start = 0; start < length && corrupt === undefined; start += LOAD_CHUNK) {
        const records = await this.redis.lrangeBuffer(`ds:l:${ps}`, start, Math.min(start + LOAD_CHUNK, length) - 1);
        const entries: LogEntry[] = [];
        for (const [i, raw] of records.entries()) {
          const at = bs + start + i + 1;
          try {
            const entry = decodeEntry(raw, `${what} log entry ${at}`);
            if (entry.seq !== at) throw new CorruptRecordError(`${what}: log position ${at} holds entry ${entry.seq}`);
            entries.push(entry);
          } catch (err) {
            // S13: the partition opens, marked corrupt; its replica relearns it.
            if (!isCorruptRecord(err)) throw err;
            corrupt = err.message;
            break;
          }
        }
        const last = entries[entries.length - 1];
        if (last !== undefined) logLast = { seq: last.seq, epoch: last.epoch };
        runs = appendRuns(runs, entries);
      }
      const state: PartState = {
        meta: h.m === undefined ? null : decodeMetaJson(h.m, what),
        applied: { seq: toSeq(as), epoch: toEpoch(ae) },
        logBase,
        logLast,
        generation: g,
        runs,
      };
      const cached = corrupt === undefined ? state : markCorrupt(state, corrupt);
      this.pending.set(partition, cached);
      this.committed.set(partition, cached);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function emptySnapshot(): Snapshot {
  return {
    applied: ZERO_POSITION,
    dedup: [],
    // biome-ignore lint/correctness/useYield: an empty partition's snapshot has no page to yield.
    async *items(pageItems: number): AsyncIterable<readonly SnapshotItem[]> {
      checkPageLimit('snapshot items', pageItems);
    },
    async close(): Promise<void> {},
  };
}

/**
 * One page of a point-in-time view: the live keys and the snapshot's pre-images, each in
 * key order, merged up to the last key both lists are known complete to. A pre-image wins
 * over the live value; an empty one marks a key that was absent. Returns the items and the
 * key to continue after (undefined when the view is exhausted).
 */
export function mergePage(
  live: readonly Buffer[],
  liveDone: boolean,
  pre: readonly Buffer[],
  preDone: boolean,
  applied: LogPosition,
  partition: PartitionId,
): { items: SnapshotItem[]; upTo: Uint8Array | undefined } {
  const lastLive = liveDone ? undefined : live[live.length - 2];
  const lastPre = preDone ? undefined : pre[pre.length - 2];
  let upTo: Buffer | undefined;
  if (lastLive !== undefined && lastPre !== undefined) upTo = compareBytes(lastLive, lastPre) <= 0 ? lastLive : lastPre;
  else upTo = lastLive ?? lastPre;
  const within = (k: Buffer): boolean => upTo === undefined || compareBytes(k, upTo) <= 0;
  const items: SnapshotItem[] = [];
  let i = 0;
  let j = 0;
  const what = `partition ${partition} snapshot`;
  // Bounded by the two lists.
  while (i < live.length || j < pre.length) {
    const lk = i < live.length ? live[i]! : undefined;
    const pk = j < pre.length ? pre[j]! : undefined;
    const order = lk === undefined ? 1 : pk === undefined ? -1 : compareBytes(lk, pk);
    const key = order <= 0 ? lk! : pk!;
    if (!within(key)) break;
    let raw: Buffer;
    if (order < 0) {
      raw = live[i + 1]!;
      i += 2;
    } else {
      raw = pre[j + 1]!;
      j += 2;
      if (order === 0) i += 2; // the pre-image is the value as of the snapshot
      if (raw.length === 0) continue; // absent when the snapshot was taken
    }
    const v = decodeValue(key, raw, what);
    assert(
      v.version <= applied.seq,
      `${what}: an item of version ${v.version} above the snapshot's seq ${applied.seq} has no pre-image`,
    );
    items.push({
      key: bytesOf(key),
      value: v.value,
      version: v.version,
      ...(v.expiresAt === undefined ? {} : { expiresAt: v.expiresAt }),
    });
  }
  return { items, upTo: upTo === undefined ? undefined : bytesOf(upTo) };
}
