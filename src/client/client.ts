/**
 * The client library (DESIGN §1, §3, S9): routes each request to its partition's primary
 * from a cached cluster map, refreshes the map on NOT_PRIMARY / UNAVAILABLE / lost
 * connections, and retries with backoff until the call's deadline. Every write carries
 * (clientId, requestSeq) and keeps them across retries, so the primary can recognise a
 * retry (S10). A write that may have reached a primary and then failed is reported as
 * OutcomeUnknownError, never as failed.
 */
import { randomBytes } from 'node:crypto';
import type { Static } from '@sinclair/typebox';
import {
  BatchFailedError,
  type BatchOutcome,
  BatchTooLargeError,
  ConnectionClosedError,
  DstoreError,
  errorFromWire,
  errorToWire,
  OutcomeUnknownError,
  InvalidArgumentError,
  KeyEmptyError,
  KeyLockedError,
  KeyTooLargeError,
  TimeoutError,
  UnavailableError,
  ValueTooLargeError,
} from '../core/errors.js';
import { defaultLimits } from '../core/limits.js';
import { partitionOf } from '../core/partitioning.js';
import { isReserved } from '../core/txn-keys.js';
import { assertNever } from '../core/types.js';
import {
  ClusterInfo as ClusterInfoSchema,
  DrainReply as DrainReplySchema,
  ClusterOverview as ClusterOverviewSchema,
  ConfigReply as ConfigReplySchema,
  type ConfigReply,
  DelReply,
  DigestAtReply,
  SnapshotReadReply,
  DumpReply,
  GetManyReply,
  GetReply,
  MAX_VALUE_BYTES_CEILING,
  PutManyReply,
  MapReply,
  PutReply,
  ScanReply,
  codec,
  type ClusterLimits,
} from '../rpc/messages.js';
import { tokenField } from '../rpc/token.js';
import { NameserverSeeds, parseSeeds } from '../rpc/seeds.js';
import { RpcPool } from '../rpc/transport.js';
import type {
  ClusterInfo,
  ClusterOverview,
  Db,
  GetResult,
  ReadOptions,
  ScanOptions,
  StorageDump,
  WriteOptions,
} from './api.js';
import { type FetchPage, type ScanResult, mergeScan } from './scan-merge.js';
import { type CallEnd, CallRetry, cachedMapForRetry, primaryOf } from './retry.js';
import {
  bytesArgument,
  checkConnectArguments,
  checkDumpOptions,
  describeValue,
  readModeArgument,
  writeOptions,
} from './arguments.js';
import {
  drive,
  readResolved,
  readUnlocked,
  runTransaction,
  type Transaction,
  type TransactionOptions,
  type TxnIO,
} from './transaction.js';

export interface ConnectOptions {
  /** Deadline of each call including retries, in ms (default 10000). */
  readonly timeoutMs?: number;
  /**
   * Bound on one attempt of a call, in ms (default 2000, never more than `timeoutMs`). An
   * attempt that gets no answer in time (a paused or partitioned primary, a lost reply) is
   * abandoned and the call retried — a write with the same (clientId, requestSeq), so the
   * primary applies it at most once (S10) — after refreshing the cluster map, until
   * `timeoutMs`. A write whose last attempts timed out ends as OutcomeUnknownError (S9).
   */
  readonly attemptTimeoutMs?: number;
  /** Shared secret of the cluster (--cluster-token / DSTORE_CLUSTER_TOKEN). */
  readonly clusterToken?: string;
  /**
   * False (default): `connect` asks the nameserver for the cluster map before it resolves,
   * so a wrong address, a closed port, another service or a wrong token fail `connect`
   * itself. True: connect without asking; the first call does (for a cluster still starting).
   */
  readonly lazy?: boolean;
  /** Receives the details of failed attempts that were retried (debug level). */
  readonly logger?: ClientLogger;
  /**
   * Issue 15: the reads `get` makes unless a call says otherwise (absent: the cluster's read
   * mode, from its map). `fast` reads may be stale (DESIGN §7); transactions always read
   * linearizably.
   */
  readonly read?: 'linearizable' | 'fast';
}

/** The part of a (pino) logger the client uses. */
export interface ClientLogger {
  debug(obj: object, msg: string): void;
}

/** Default bound on one attempt of a call, in ms (ConnectOptions.attemptTimeoutMs). */
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 2000;

const mapReply = codec(MapReply);
const clusterInfo = codec(ClusterInfoSchema);
const drainReply = codec(DrainReplySchema);
const clusterOverview = codec(ClusterOverviewSchema);
const configReply = codec(ConfigReplySchema);
const putReply = codec(PutReply);
const delReply = codec(DelReply);
const getReply = codec(GetReply);
const getManyReply = codec(GetManyReply);
const putManyReply = codec(PutManyReply);
type GetManyResults = Static<typeof GetManyReply>;
type PutManyResults = Static<typeof PutManyReply>;
const scanReply = codec(ScanReply);
const dumpReply = codec(DumpReply);
const digestAtReply = codec(DigestAtReply);
const snapshotReadReply = codec(SnapshotReadReply);
/** Issue 14: keys a `scan` call returns unless told (`limit`), and the most it accepts. */
export const SCAN_DEFAULT_LIMIT = 1000;
export const SCAN_MAX_LIMIT = 100_000;
/** Keys and bytes (with values) asked of one partition per scan page (the server caps both). */
const SCAN_PAGE_KEYS = 1000;
const SCAN_PAGE_BYTES = 1024 * 1024;
/** Keys and bytes of keys asked for per `dump` page (the server caps both; 1 MiB fits any frame). */
const DUMP_PAGE_KEYS = 1000;
const DUMP_PAGE_BYTES = 1024 * 1024;

/**
 * Frames the client accepts: those of the largest --max-value-bytes any dstore server may
 * have. What it sends is bounded by the cluster's own limits, checked before sending.
 */
const CLIENT_MAX_FRAME_BYTES = defaultLimits({ maxValueBytes: MAX_VALUE_BYTES_CEILING }).maxFrameBytes;

/** Where the last attempt of a call went, for the final error. */
type Target =
  | { readonly kind: 'nameserver' }
  | { readonly kind: 'primary'; readonly node: string; readonly address: string; readonly members: readonly string[] };

export class Client implements Db {
  private readonly pool: RpcPool;
  /** The nameservers: calls go to the leader among them (issue 12). */
  private readonly nameservers: NameserverSeeds;
  private map: MapReply | undefined;
  private mapFetch: Promise<MapReply> | undefined;
  private readonly clientId = randomBytes(8).toString('hex');
  /**
   * S10: the server remembers one request per client id, so each concurrent write uses a
   * slot of its own (`<id>-<n>`) with its own request sequence, kept across retries.
   */
  private readonly freeSlots: Array<{ id: string; seq: number }> = [];
  private slotCount = 0;
  /** The key limit of the protocol; the cluster's own limits once the map told them. */
  private readonly maxKeyBytes = defaultLimits().maxKeyBytes;
  private clusterLimits: ClusterLimits | undefined;
  private closed = false;

  constructor(
    seeds: readonly string[],
    private readonly opts: Required<Pick<ConnectOptions, 'timeoutMs' | 'attemptTimeoutMs'>> & ConnectOptions,
  ) {
    this.pool = new RpcPool({ maxFrameBytes: CLIENT_MAX_FRAME_BYTES });
    this.nameservers = new NameserverSeeds(seeds, this.pool, {
      hopTimeoutMs: opts.attemptTimeoutMs,
      ...(opts.logger ? { logger: opts.logger } : {}),
    });
  }

  /** How messages name the nameserver: its address, or the list of seeds. */
  private get nameserver(): string {
    return this.nameservers.describe();
  }

  /** The cluster's limits as the nameserver's map reported them; undefined until known. */
  get limits(): ClusterLimits | undefined {
    return this.clusterLimits;
  }

  async put(key: Uint8Array | string, value: Uint8Array | string, options?: WriteOptions): Promise<number> {
    const k = this.checkKey('put', key);
    const v = bytesArgument('put', 'value', value);
    const { ifVersion, ttlMs } = writeOptions('put', options);
    // The cluster's value limit, checked before sending: a value over it gets
    // VALUE_TOO_LARGE, never a frame-size error, and is not sent at all.
    await this.currentMap();
    const max = this.clusterLimits?.maxValueBytes;
    if (max !== undefined && v.length > max) throw new ValueTooLargeError(v.length, max);
    const cond = {
      ...(ifVersion === undefined ? {} : { ifv: ifVersion }),
      ...(ttlMs === undefined ? {} : { ttl: ttlMs }),
    };
    const reply = await this.unlocked(k, () =>
      this.tagged((tag) => this.routed(k, { t: 'put', key: k, value: v, ...tag, ...cond }, true)),
    );
    return decodeOrThrow(putReply, reply).version;
  }

  /** §16: never half a transaction: an intent on the key is resolved first (transaction.ts). */
  async get(key: Uint8Array | string, options?: ReadOptions): Promise<GetResult | undefined> {
    const k = this.checkKey('get', key);
    const asked = readModeArgument('get: options.read', (options as { read?: unknown } | undefined)?.read);
    const mode = asked ?? this.opts.read ?? (await this.currentMap()).readMode ?? 'linearizable';
    if (mode === 'fast') {
      const fast = await this.fastGet(k);
      // §16: a fast read never shows what an intent would hide: with an intent on the key the
      // read goes the linearizable way, which resolves it (transaction.ts).
      if (fast.intent === undefined) {
        if (!fast.found) return undefined;
        const ttl = fast.ttl === undefined ? {} : { ttlMs: fast.ttl };
        return { value: fast.value, version: fast.version, ...ttl, stale: true };
      }
    }
    const first = await this.txnIO.readRaw(k);
    // No intent on the key (nearly always): the answer, with no coroutine to drive.
    const r =
      first.intent === undefined ? first : await drive(readResolved(k, Date.now() + this.opts.timeoutMs), this.txnIO);
    if (!r.found) return undefined;
    return r.ttlMs === undefined
      ? { value: r.value!, version: r.version! }
      : { value: r.value!, version: r.version!, ttlMs: r.ttlMs };
  }

  async delete(key: Uint8Array | string, options?: WriteOptions): Promise<boolean> {
    const k = this.checkKey('delete', key);
    const { ifVersion } = writeOptions('delete', options);
    const cond = ifVersion === undefined ? {} : { ifv: ifVersion };
    const reply = await this.unlocked(k, () =>
      this.tagged((tag) => this.routed(k, { t: 'del', key: k, ...tag, ...cond }, true)),
    );
    return decodeOrThrow(delReply, reply).existed;
  }

  // ---- transactions (issue 14, docs/transactions.md) ----

  /**
   * Runs `fn` in a serializable transaction over any keys of the cluster and commits it by
   * two-phase commit (transaction.ts); on a conflict runs `fn` again (up to `maxAttempts`).
   * Resolves to `fn`'s result once committed; TransactionAbortedError when it never could.
   */
  async transaction<T>(fn: (tx: Transaction) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    await this.currentMap();
    const value = (v: unknown): Uint8Array => {
      const bytes = bytesArgument('tx.put', 'value', v);
      const max = this.clusterLimits?.maxValueBytes;
      if (max !== undefined && bytes.length > max) throw new ValueTooLargeError(bytes.length, max);
      return bytes;
    };
    return runTransaction(this.txnIO, fn, options, { key: (m, k) => this.checkKey(m, k), value });
  }

  /**
   * DESIGN §7, issue 15: a fast read: any active replica of the key's partition (primary or
   * secondary, starting at a random one) answers from its applied state. One that does not
   * answer within `attemptTimeoutMs` or refuses (inactive, learner, still taking over: a
   * retryable UNAVAILABLE) sends the read to the next; after a whole round the map is fetched
   * again, until the call's deadline.
   */
  private async fastGet(key: Uint8Array): Promise<Static<typeof GetReply>> {
    const deadline = Date.now() + this.opts.timeoutMs;
    let lastError: unknown = new TimeoutError(`no replica answered a fast read within ${this.opts.timeoutMs} ms`);
    for (let round = 0; Date.now() < deadline; round++) {
      if (this.closed) throw new ConnectionClosedError('client closed');
      const left = () => Math.max(1, deadline - Date.now());
      let map: MapReply;
      try {
        map =
          round === 0
            ? await this.currentMap(left())
            : await this.mapForRetry(Math.min(this.opts.attemptTimeoutMs, left()));
      } catch (err) {
        lastError = err;
        await sleep(Math.min(50 * 2 ** Math.min(round, 5), left()));
        continue;
      }
      const p = partitionOf(key, map.partitions);
      const config = map.configs[p];
      const members = config ? [config.primary, ...config.secondaries] : [];
      const start = Math.floor(Math.random() * Math.max(1, members.length));
      for (let i = 0; i < members.length && Date.now() < deadline; i++) {
        const node = members[(start + i) % members.length]!;
        const address = map.addresses[node];
        if (address === undefined) continue;
        try {
          const request = { t: 'get', p, key, fast: true, ...tokenField(this.opts.clusterToken) };
          const timeoutMs = Math.min(this.opts.attemptTimeoutMs, left());
          return decodeOrThrow(getReply, await this.pool.get(address, 'storage').call(request, { timeoutMs }));
        } catch (err) {
          lastError = err;
          // A definite refusal that no other replica changes (a bad key, a wrong token): end here.
          if (
            err instanceof DstoreError &&
            !err.retryable &&
            err.code !== 'TIMEOUT' &&
            err.code !== 'CONNECTION_CLOSED'
          )
            throw err;
          this.opts.logger?.debug({ partition: p, node, err: (err as Error).message }, 'fast read attempt failed');
        }
      }
      await sleep(Math.min(50 * 2 ** Math.min(round, 5), left()));
    }
    throw lastError;
  }

  /** A write refused with KEY_LOCKED waits for the transaction that holds the key, then goes again. */
  private async unlocked<T>(key: Uint8Array, write: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.opts.timeoutMs;
    for (let attempt = 0; ; attempt++) {
      try {
        return await write();
      } catch (err) {
        if (!(err instanceof KeyLockedError) || attempt >= 1000) throw err;
        await drive(readUnlocked(key, deadline), this.txnIO);
      }
    }
  }

  /** What transactions call: reads that report intents, and `sys` writes (transaction.ts). */
  private readonly txnIO: TxnIO = {
    readRaw: async (key) => {
      const reply = decodeOrThrow(getReply, await this.routed(key, { t: 'get', key }, false));
      const intent = reply.intent === undefined ? {} : { intent: reply.intent };
      if (!reply.found) return { found: false, ...intent };
      const ttl = reply.ttl === undefined ? {} : { ttlMs: reply.ttl };
      return { found: true, value: reply.value, version: reply.version, ...ttl, ...intent };
    },
    sysPut: async (key, value, o) => {
      const body = {
        t: 'put',
        key,
        value,
        sys: true,
        ...(o.ifVersion === undefined ? {} : { ifv: o.ifVersion }),
        ...(o.ifk === undefined || o.ifk.length === 0 ? {} : { ifk: o.ifk }),
        ...(o.ttlMs === undefined ? {} : { ttl: o.ttlMs }),
      };
      const reply = await this.tagged((tag) => this.routed(key, { ...body, ...tag }, true));
      return decodeOrThrow(putReply, reply).version;
    },
    sysDelete: async (key, o) => {
      const body = {
        t: 'del',
        key,
        sys: true,
        ...(o.ifVersion === undefined ? {} : { ifv: o.ifVersion }),
        ...(o.ifk === undefined || o.ifk.length === 0 ? {} : { ifk: o.ifk }),
      };
      const reply = await this.tagged((tag) => this.routed(key, { ...body, ...tag }, true));
      return decodeOrThrow(delReply, reply).existed;
    },
  };

  /**
   * Issue 14: up to `limit` keys (default SCAN_DEFAULT_LIMIT) that start with `prefix`, after
   * `startAfter`, in byte order across every partition (scan-merge.ts), each partition's pages
   * read from its serving primary once its applies are written. With `values`, each key's
   * value and version (pages then bounded by bytes too). `next` is the cursor to pass as
   * `startAfter` to go on; absent once the scan is complete. Not a snapshot: each page is read
   * at its own moment.
   */
  async scan(options: ScanOptions = {}): Promise<ScanResult> {
    const { prefix, startAfter, limit, values } = this.checkScanOptions(options);
    const map = await this.currentMap();
    const fetch: FetchPage = async (p, after, pageLimit) => {
      const body = {
        t: 'scan',
        limit: pageLimit,
        ...(after === undefined ? {} : { after }),
        ...(prefix === undefined ? {} : { prefix }),
        ...(values ? { values: true, maxBytes: SCAN_PAGE_BYTES } : {}),
      };
      const reply = decodeOrThrow(scanReply, await this.withRetry(p, body, false));
      if (values && reply.values?.length !== reply.keys.length)
        throw new InvalidArgumentError('malformed reply from the cluster: a scan page without its values');
      return {
        keys: reply.keys,
        ...(values ? { values: reply.values } : {}),
        ...(reply.next === undefined ? {} : { next: reply.next }),
      };
    };
    return mergeScan(map.partitions, fetch, {
      ...(startAfter === undefined ? {} : { startAfter }),
      limit,
      maxPageKeys: SCAN_PAGE_KEYS,
    });
  }

  /** Every key (that starts with `prefix`) in byte order, page by page through `scan`'s cursor. */
  async *keys(options: { prefix?: Uint8Array | string } = {}): AsyncIterable<Uint8Array> {
    let startAfter: Uint8Array | undefined;
    // Bounded: each page but the last returns keys, and keys only grow.
    for (;;) {
      const page = await this.scan({
        ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
        ...(startAfter === undefined ? {} : { startAfter }),
        limit: SCAN_PAGE_KEYS,
      });
      for (const e of page.entries) yield e.key;
      if (page.next === undefined) return;
      startAfter = page.next;
    }
  }

  private checkScanOptions(options: ScanOptions): {
    prefix?: Uint8Array;
    startAfter?: Uint8Array;
    limit: number;
    values: boolean;
  } {
    if (typeof options !== 'object' || options === null)
      throw new InvalidArgumentError(`scan: options must be an object, got ${describeValue(options)}`);
    const max = this.clusterLimits?.maxKeyBytes ?? this.maxKeyBytes;
    const bytes = (name: 'prefix' | 'startAfter'): Uint8Array | undefined => {
      const x = options[name];
      if (x === undefined) return undefined;
      const b = bytesArgument('scan', name, x);
      if (b.length > max) throw new KeyTooLargeError(b.length, max);
      return b;
    };
    const limit = options.limit ?? SCAN_DEFAULT_LIMIT;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > SCAN_MAX_LIMIT)
      throw new InvalidArgumentError(
        `scan: limit must be an integer from 1 to ${SCAN_MAX_LIMIT}, got ${describeValue(limit)}`,
      );
    if (options.values !== undefined && typeof options.values !== 'boolean')
      throw new InvalidArgumentError(`scan: values must be a boolean, got ${describeValue(options.values)}`);
    const prefix = bytes('prefix');
    const startAfter = bytes('startAfter');
    return {
      ...(prefix === undefined || prefix.length === 0 ? {} : { prefix }),
      ...(startAfter === undefined ? {} : { startAfter }),
      limit,
      values: options.values === true,
    };
  }

  /**
   * Issue 14: linearizable reads of `keys` (each as `get` would answer it, in the order given):
   * the keys are grouped by partition and each group sent to its primary in one call (groups
   * in parallel). Not atomic across partitions, nor a snapshot. At most maxBatchKeys keys
   * (BATCH_TOO_LARGE). When some keys fail, throws BatchFailedError naming them, its
   * `results` holding every key's outcome.
   */
  async getMany(keys: ReadonlyArray<Uint8Array | string>): Promise<Array<GetResult | undefined>> {
    const ks = this.checkBatch('getMany', keys, (k) => this.checkKey('getMany', k));
    const map = await this.currentMap();
    const outcomes: Array<BatchOutcome<GetResult | undefined> | undefined> = new Array(ks.length);
    await Promise.all(
      [...groupByPartition(ks, map.partitions)].map(async ([p, idxs]) => {
        const deadline = Date.now() + this.opts.timeoutMs;
        let pending = idxs;
        // Bounded: every reply answers at least one key (or the call throws), and a key that
        // failed retryably is asked again only until the deadline.
        for (let round = 0; pending.length > 0; round++) {
          let reply: GetManyResults;
          try {
            const raw = await this.withRetry(p, { t: 'getMany', keys: pending.map((i) => ks[i]!) }, false);
            reply = decodeOrThrow(getManyReply, raw);
            if (reply.results.length === 0 || reply.results.length > pending.length)
              throw new InvalidArgumentError('malformed reply from the cluster: getMany answered no key');
          } catch (err) {
            for (const i of pending) outcomes[i] = { ok: false, key: ks[i]!, error: asDstoreError(err) };
            return;
          }
          const again: number[] = [];
          const held: number[] = [];
          reply.results.forEach((r, j) => {
            const i = pending[j]!;
            if (!('error' in r) && r.intent !== undefined) {
              held.push(i); // §16: a transaction's intent: read the key alone, resolving it
              return;
            }
            if (!('error' in r)) {
              outcomes[i] = { ok: true, value: r.found ? getResultOf(r) : undefined };
              return;
            }
            // A key failed retryably (its primary is changing, a queue is full): asked again.
            const error = errorFromWire(r.error);
            if (error.retryable && Date.now() < deadline) again.push(i);
            else outcomes[i] = { ok: false, key: ks[i]!, error };
          });
          await Promise.all(
            held.map(async (i) => {
              try {
                outcomes[i] = { ok: true, value: await this.get(ks[i]!) };
              } catch (err) {
                outcomes[i] = { ok: false, key: ks[i]!, error: asDstoreError(err) };
              }
            }),
          );
          // Keys the reply left out (their values reached its byte bound) are asked at once.
          const unanswered = pending.slice(reply.results.length);
          if (again.length > 0) await this.beforeBatchRetry(round, deadline);
          pending = [...again, ...unanswered];
        }
      }),
    );
    return batchResult('getMany', outcomes);
  }

  /**
   * Issue 14: writes every entry (resolving to their versions, in the order given): grouped
   * by partition, each group sent to its primary in one call (groups in parallel, a group
   * in calls of about BATCH_CALL_BYTES). Not atomic: each entry is one write, a failed entry
   * leaves the others applied. Each entry carries a client slot of its own (S10), so a retried
   * call never applies an entry twice. A key may appear once (INVALID_ARGUMENT otherwise); at
   * most maxBatchKeys entries (BATCH_TOO_LARGE). When some entries fail, throws
   * BatchFailedError naming them (an entry whose outcome is unknown: OUTCOME_UNKNOWN).
   */
  async putMany(
    entries: ReadonlyArray<{ readonly key: Uint8Array | string; readonly value: Uint8Array | string }>,
  ): Promise<number[]> {
    const es = this.checkBatch('putMany', entries, (e) => {
      if (typeof e !== 'object' || e === null)
        throw new InvalidArgumentError(`putMany: each entry must be { key, value }, got ${describeValue(e)}`);
      return { key: this.checkKey('putMany', e.key), value: bytesArgument('putMany', 'value', e.value) };
    });
    const seen = new Set<string>();
    for (const e of es) {
      const h = Buffer.from(e.key).toString('hex');
      if (seen.has(h)) throw new InvalidArgumentError(`putMany: the key ${describeKey(e.key)} appears twice`);
      seen.add(h);
    }
    const map = await this.currentMap();
    const max = this.clusterLimits?.maxValueBytes;
    if (max !== undefined)
      for (const e of es) if (e.value.length > max) throw new ValueTooLargeError(e.value.length, max);
    const outcomes: Array<BatchOutcome<number> | undefined> = new Array(es.length);
    const groups = [
      ...groupByPartition(
        es.map((e) => e.key),
        map.partitions,
      ),
    ];
    await Promise.all(
      groups.map(async ([p, idxs]) => {
        for (const chunk of chunksByBytes(idxs, (i) => es[i]!.key.length + es[i]!.value.length, BATCH_CALL_BYTES))
          await this.putChunk(p, chunk, es, outcomes);
      }),
    );
    return batchResult('putMany', outcomes);
  }

  /**
   * One putMany call to partition `p`'s primary. Every entry takes a slot of its own (S10:
   * the server remembers one request per client id), kept across retries; an entry that
   * failed with a retryable error is sent again with the same slot until the deadline.
   */
  private async putChunk(
    p: number,
    idxs: readonly number[],
    es: ReadonlyArray<{ key: Uint8Array; value: Uint8Array }>,
    outcomes: Array<BatchOutcome<number> | undefined>,
  ): Promise<void> {
    const slots = new Map<number, { id: string; seq: number }>();
    for (const i of idxs) {
      const slot = this.freeSlots.pop() ?? { id: `${this.clientId}-${this.slotCount++}`, seq: 0 };
      slot.seq++;
      slots.set(i, slot);
    }
    const deadline = Date.now() + this.opts.timeoutMs;
    let pending = [...idxs];
    let sentBefore = false;
    // Bounded by the deadline: each round sends the entries that failed retryably in the last.
    for (let round = 0; pending.length > 0; round++) {
      const body = {
        t: 'putMany',
        entries: pending.map((i) => ({
          key: es[i]!.key,
          value: es[i]!.value,
          cid: slots.get(i)!.id,
          rs: slots.get(i)!.seq,
        })),
      };
      let reply: PutManyResults;
      try {
        reply = decodeOrThrow(putManyReply, await this.withRetry(p, body, true));
        if (reply.results.length !== pending.length)
          throw new InvalidArgumentError(
            'malformed reply from the cluster: putMany answered another number of entries',
          );
      } catch (err) {
        const e = asDstoreError(err);
        const error =
          sentBefore && !(e instanceof OutcomeUnknownError)
            ? new OutcomeUnknownError(
                `write to partition ${p} failed after an attempt that may have been applied: ${e.message}`,
                { cause: e },
              )
            : e;
        for (const i of pending) outcomes[i] = { ok: false, key: es[i]!.key, error };
        break; // slots of failed entries are retired (see `tagged`)
      }
      sentBefore = true;
      const again: number[] = [];
      const locked: number[] = [];
      reply.results.forEach((r, j) => {
        const i = pending[j]!;
        if (!('error' in r)) {
          outcomes[i] = { ok: true, value: r.version };
          this.freeSlots.push(slots.get(i)!);
          return;
        }
        const error = errorFromWire(r.error);
        // §16: refused (not logged) while a transaction holds the key: sent again once it ends.
        if (error instanceof KeyLockedError && Date.now() < deadline) locked.push(i);
        else if (error.retryable && Date.now() < deadline) again.push(i);
        else
          outcomes[i] = {
            ok: false,
            key: es[i]!.key,
            error: error.retryable
              ? new OutcomeUnknownError(`write to partition ${p} may or may not have been applied: ${error.message}`, {
                  cause: error,
                })
              : error,
          };
      });
      await Promise.all(
        locked.map((i) =>
          drive(readUnlocked(es[i]!.key, deadline), this.txnIO).then(
            () => again.push(i),
            () => again.push(i),
          ),
        ),
      );
      pending = again;
      if (pending.length > 0) await this.beforeBatchRetry(round, deadline);
    }
  }

  /**
   * Before a batch sends again the entries that failed retryably (NOT_PRIMARY while the
   * partition's primary changes, OVERLOADED): back off, and refresh the map so the next call
   * goes to the new primary (a failed refresh keeps the cached map: the call's own retries go on).
   */
  private async beforeBatchRetry(round: number, deadline: number): Promise<void> {
    await sleep(Math.min(50 * 2 ** Math.min(round, 5), Math.max(0, deadline - Date.now())));
    try {
      await this.mapForRetry(Math.max(1, Math.min(this.opts.attemptTimeoutMs, deadline - Date.now())));
    } catch {
      // no fresh map now: the next call's own retries refresh it again
    }
  }

  private checkBatch<T, U>(method: string, items: ReadonlyArray<T>, check: (item: T) => U): U[] {
    if (!Array.isArray(items))
      throw new InvalidArgumentError(`${method}: expects an array, got ${describeValue(items)}`);
    const max = defaultLimits().maxBatchKeys;
    if (items.length > max) throw new BatchTooLargeError(items.length, max);
    return items.map(check);
  }

  async overview(): Promise<ClusterOverview> {
    return decodeOrThrow(clusterOverview, await this.nameserverCall({ t: 'overview' }));
  }

  /**
   * Issue 12: a follower answers `nodes` from etcd's map, where every storage server is
   * `unknown` and no partition ready; the leader it names is asked then, and the follower's
   * answer is kept only when the leader does not answer.
   */
  async nodes(): Promise<ClusterInfo> {
    const info = decodeOrThrow(clusterInfo, await this.nameserverCall({ t: 'nodes' }));
    const { leader, nameserverId } = info;
    if (leader === undefined || nameserverId === undefined || leader.nodeId === nameserverId) return info;
    try {
      const body = { t: 'nodes', ...tokenField(this.opts.clusterToken) };
      const fromLeader = await this.pool.get(leader.address, 'nameserver').call(body, {
        timeoutMs: this.opts.timeoutMs,
      });
      return decodeOrThrow(clusterInfo, fromLeader);
    } catch {
      return info; // the leader is changing or unreachable: the follower's view, which names it
    }
  }

  /** Issue 15: the cluster's live settings (`dstore config get`). */
  async config(): Promise<ConfigReply> {
    return decodeOrThrow(configReply, await this.nameserverCall({ t: 'configGet' }));
  }

  /**
   * Issue 15: switches live setting `name` to `value` at the nameserver (`node`: for sync;
   * `force`: accept a switch that weakens durability). A typed error when refused.
   */
  async setConfig(
    name: string,
    value: string,
    options: { readonly node?: string; readonly force?: boolean } = {},
  ): Promise<ConfigReply> {
    const body = {
      t: 'configSet',
      name,
      value,
      ...(options.node === undefined ? {} : { node: options.node }),
      ...(options.force === true ? { force: true } : {}),
    };
    return decodeOrThrow(configReply, await this.nameserverCall(body));
  }

  /**
   * Issue 15, `dstore drain`: start moving every replica and primary off storage server `node`
   * (`cancel`: stop doing so); answers what it still holds and leads.
   */
  async drain(node: string, options: { cancel?: boolean } = {}): Promise<Static<typeof DrainReplySchema>> {
    return decodeOrThrow(drainReply, await this.nameserverCall({ t: 'drain', node, on: options.cancel !== true }));
  }

  /**
   * Pages through each storage server's keys (issue 9: one reply of a whole store was over
   * the frame limit): up to DUMP_PAGE_KEYS keys and DUMP_PAGE_BYTES per call, until `limit`
   * keys or the end. A server that fails on any page gets `error` (the keys so far dropped).
   */
  async dump(options: { limit?: number; timeoutMs?: number } = {}): Promise<StorageDump[]> {
    const limit = checkDumpOptions(options);
    const timeoutMs = options.timeoutMs ?? this.opts.timeoutMs;
    const info = await this.nodes();
    const storage = info.nodes.filter((n) => n.role === 'storage');
    return Promise.all(
      storage.map(async (n): Promise<StorageDump> => {
        try {
          const keys: Uint8Array[] = [];
          let keyCount = 0;
          let nodeId = n.id;
          let after: { p: number; key?: Uint8Array } | undefined;
          // Bounded: every page but the last holds at least one key, and at most `limit` are wanted.
          for (let page = 0; page <= limit; page++) {
            const want = Math.min(DUMP_PAGE_KEYS, limit - keys.length);
            const body = {
              t: 'dump',
              limit: want,
              maxBytes: DUMP_PAGE_BYTES,
              ...(after === undefined ? {} : { after }),
              ...tokenField(this.opts.clusterToken),
            };
            const d = decodeOrThrow(dumpReply, await this.pool.get(n.address, 'storage').call(body, { timeoutMs }));
            if (page === 0) keyCount = d.keyCount;
            nodeId = d.nodeId;
            keys.push(...d.keys);
            const more = d.next !== undefined && (d.keys.length > 0 || want === 0);
            if (!more || keys.length >= limit || want === 0)
              return { nodeId, address: n.address, keyCount, keys, truncated: d.truncated };
            after = d.next;
          }
          throw new Error(`dump of ${n.id} did not end within ${limit + 1} pages`);
        } catch (err) {
          return {
            nodeId: n.id,
            address: n.address,
            keyCount: 0,
            keys: [],
            truncated: false,
            error: (err as Error).message,
          };
        }
      }),
    );
  }

  // ---- administration: consistency checks and backups (issue 13, S16) ----

  /** A fresh cluster map from the nameserver (not the cached one). */
  async clusterMap(): Promise<MapReply> {
    return this.refreshMap(this.opts.timeoutMs);
  }

  /**
   * S16: has the primary of `p` log a digest entry (listing the entries of `buckets`) and
   * returns its seq once committed: every replica's digest at that seq is then comparable.
   */
  async proposeDigest(p: number, buckets: readonly number[] = []): Promise<number> {
    return decodeOrThrow(putReply, await this.withRetry(p, { t: 'digest', buckets: [...buckets] }, true)).version;
  }

  /** S16: the digest the storage server at `address` computed of `p` at the digest entry `seq`. */
  async digestAt(address: string, p: number, seq: number, waitMs = 15_000): Promise<DigestAtReply> {
    const body = { t: 'digestAt', p, seq, waitMs, ...tokenField(this.opts.clusterToken) };
    const raw = await this.pool.get(address, 'storage').call(body, { timeoutMs: waitMs + this.opts.timeoutMs });
    return decodeOrThrow(digestAtReply, raw);
  }

  /** S16: tells the storage server at `address` that its copy of `p` (digest `digest` at `seq`) is odd: it relearns it. */
  async relearn(address: string, p: number, seq: number, digest: string, reason: string): Promise<void> {
    const body = { t: 'relearn', p, seq, digest, reason, ...tokenField(this.opts.clusterToken) };
    await this.pool.get(address, 'storage').call(body, { timeoutMs: this.opts.timeoutMs });
  }

  /**
   * S11: one page of a snapshot of `p` from its primary at `epoch` (the map's); pass the first
   * page's `session` to get the next ones. The snapshot is at `applied` of the first page.
   */
  async snapshotPage(address: string, p: number, epoch: number, session?: string): Promise<SnapshotReadReply> {
    const body = {
      t: 'snapshotRead',
      p,
      epoch,
      ...(session ? { session } : {}),
      ...tokenField(this.opts.clusterToken),
    };
    const raw = await this.pool
      .get(address, 'storage')
      .call(body, { timeoutMs: Math.max(30_000, this.opts.timeoutMs) });
    return decodeOrThrow(snapshotReadReply, raw);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.pool.close();
  }

  /**
   * Runs a write with a (clientId, requestSeq) tag from a free slot. A slot whose write
   * failed is retired, not reused: an attempt of it may still be on its way to a primary
   * (its outcome is unknown), and arriving after the slot's next request it would take that
   * request's place in the dedup table (S10), so a retry of the next one would run twice.
   */
  private async tagged<T>(write: (tag: { cid: string; rs: number }) => Promise<T>): Promise<T> {
    const slot = this.freeSlots.pop() ?? { id: `${this.clientId}-${this.slotCount++}`, seq: 0 };
    const result = await write({ cid: slot.id, rs: ++slot.seq });
    this.freeSlots.push(slot);
    return result;
  }

  // ---- routing and retries ----

  private checkKey(method: string, key: unknown): Uint8Array {
    const k = bytesArgument(method, 'key', key);
    if (k.length === 0) throw new KeyEmptyError();
    if (isReserved(k))
      throw new InvalidArgumentError(`${method}: keys that start with \\x00dstore\\x00 are reserved for transactions`);
    const max = this.clusterLimits?.maxKeyBytes ?? this.maxKeyBytes;
    if (k.length > max) throw new KeyTooLargeError(k.length, max);
    return k;
  }

  private async routed(key: Uint8Array, body: Record<string, unknown>, isWrite: boolean): Promise<unknown> {
    const map = await this.currentMap();
    const p = partitionOf(key, map.partitions);
    return this.withRetry(p, { ...body, p }, isWrite);
  }

  /**
   * Sends to the partition's primary; on a retryable error (a timed-out attempt included)
   * refreshes the map, backs off and tries again until the call's deadline. Each attempt is
   * bounded by `attemptTimeoutMs`, so a primary that stopped answering (SIGSTOP, a network
   * partition) costs one attempt, not the whole deadline. `body` — for a write its
   * (cid, rs) tag — is the same in every attempt (S10).
   */
  private async withRetry(p: number, body: Record<string, unknown>, isWrite: boolean): Promise<unknown> {
    const call = new CallRetry(this.opts, p, isWrite, Date.now());
    let lastTarget: Target = { kind: 'nameserver' };
    for (;;) {
      if (this.closed) throw new ConnectionClosedError('client closed');
      const plan = call.begin(Date.now());
      if (plan.kind === 'end') throw this.endError(p, plan.end, lastTarget);
      const { attempt, attemptMs } = plan;
      // Which primary: the map (a failure here never reaches a primary, so it is definite).
      let target: Extract<Target, { kind: 'primary' }> | undefined;
      try {
        const map = plan.map === 'cached' ? await this.currentMap(attemptMs) : await this.mapForRetry(attemptMs);
        target = { kind: 'primary', ...primaryOf(map, p) };
      } catch (err) {
        lastTarget = { kind: 'nameserver' };
        const next = call.mapFailed(err, Date.now());
        if (next.kind === 'end') throw this.endError(p, next.end, lastTarget);
        const fields = { partition: p, attempt, nameserver: this.nameserver, err: (err as Error).message };
        this.opts.logger?.debug(fields, 'no primary from the cluster map; retrying');
        await sleep(next.delayMs);
        continue;
      }
      if (!call.maySend(Date.now())) throw this.endError(p, call.expired(), lastTarget); // the map fetch took the rest
      try {
        lastTarget = target;
        const timeoutMs = call.sendTimeoutMs(attemptMs, Date.now());
        const request = { ...body, p, ...tokenField(this.opts.clusterToken) };
        return await this.pool.get(target.address, 'storage').call(request, { timeoutMs });
      } catch (err) {
        const next = call.sendFailed(err, Date.now());
        if (next.kind === 'end') throw this.endError(p, next.end, lastTarget);
        const { node, address } = target;
        const why = { err: (err as Error).message, code: (err as DstoreError).code };
        this.opts.logger?.debug({ partition: p, attempt, primary: node, address, ...why }, 'attempt failed; retrying');
        await sleep(next.delayMs);
      }
    }
  }

  /** The error a call that got no answer ends with (see CallEnd). */
  private endError(p: number, end: CallEnd, target: Target): unknown {
    switch (end.kind) {
      case 'unknown':
      case 'failed':
        return end.error;
      case 'deadline':
        return this.finalError(p, end.lastError, target);
      default:
        return assertNever(end);
    }
  }

  /**
   * The error a call ends with once its deadline passed, every answer having been definite.
   * A primary (or nameserver) that could not be reached becomes UNAVAILABLE naming the
   * partition and what is down; the retry details stay in the debug log.
   */
  private finalError(p: number, lastError: unknown, target: Target): Error {
    if (lastError instanceof ConnectionClosedError) {
      if (target.kind === 'primary') {
        const why = this.pool.get(target.address, 'storage').lastFailureReason || lastError.message;
        const others = target.members.filter((m) => m !== target.node);
        const tookOver =
          others.length > 0
            ? ` and no other replica (${others.join(', ')}) took over`
            : ', and it has no other replica';
        return new UnavailableError(
          `partition ${p} is unavailable: its primary ${target.node} (${target.address}) cannot be reached (${why})` +
            `${tookOver} within ${this.opts.timeoutMs} ms`,
          { cause: lastError },
        );
      }
      const why = this.nameservers.seeds.length > 1 ? lastError.message : this.nameservers.lastFailureReason;
      return new UnavailableError(
        `partition ${p} is unavailable: the nameserver ${this.nameserver} cannot be reached ` +
          `(${why || lastError.message}) and no cached cluster map names its primary`,
        { cause: lastError },
      );
    }
    if (lastError instanceof DstoreError && lastError.code !== 'TIMEOUT') return lastError;
    return new TimeoutError(
      `partition ${p} did not answer within ${this.opts.timeoutMs} ` +
        `ms${lastError ? `: ${(lastError as Error).message}` : ''}`,
      { cause: lastError },
    );
  }

  private async currentMap(timeoutMs = this.opts.timeoutMs): Promise<MapReply> {
    return this.map?.formed ? this.map : this.refreshMap(timeoutMs);
  }

  /**
   * A fresh map for a retry; when the nameserver does not answer (it may be restarting),
   * the cached one: its primary may well still serve.
   */
  private async mapForRetry(timeoutMs: number): Promise<MapReply> {
    try {
      return await this.refreshMap(timeoutMs);
    } catch (err) {
      const cached = cachedMapForRetry(err, this.map);
      if (cached) return cached;
      throw err;
    }
  }

  /** One map fetch at a time; concurrent callers share it (each waits at most `timeoutMs`). */
  private refreshMap(timeoutMs = this.opts.timeoutMs): Promise<MapReply> {
    this.mapFetch ??= (async () => {
      try {
        const raw = await this.nameserverCall({ t: 'map' }, timeoutMs);
        const map = decodeOrThrow(mapReply, raw);
        this.map = map;
        // A map without limits (a nameserver that has not heard from any storage server since
        // it started) keeps the ones learned before.
        if (map.limits !== undefined) this.clusterLimits = map.limits;
        return map;
      } finally {
        this.mapFetch = undefined;
      }
    })();
    return withTimeout(
      this.mapFetch,
      timeoutMs,
      () => new TimeoutError(`the nameserver ${this.nameserver} sent no cluster map within ${timeoutMs} ms`),
    );
  }

  /** To the leader among the nameservers; DESIGN §12: every call carries the cluster token when one is configured. */
  private nameserverCall(body: Record<string, unknown>, timeoutMs = this.opts.timeoutMs): Promise<unknown> {
    return this.nameservers.call({ ...body, ...tokenField(this.opts.clusterToken) }, timeoutMs);
  }

  /**
   * `connect`'s check: one map from the nameserver within the call's deadline. A wrong
   * address, a closed port, another service or a wrong token fail here, with the address.
   */
  async check(): Promise<void> {
    try {
      await this.refreshMap(this.opts.timeoutMs);
    } catch (err) {
      if (err instanceof ConnectionClosedError) {
        const many = this.nameservers.seeds.length > 1;
        const why = (many ? '' : this.nameservers.lastFailureReason) || err.message;
        throw new ConnectionClosedError(`no dstore nameserver answers at ${this.nameserver} (${why})`, {
          cause: err,
          notSent: true,
        });
      }
      if (err instanceof TimeoutError) {
        // Connected but never greeted: most likely another service that waits for a line of
        // its own protocol (Redis does); a paused dstore server looks the same, so say both.
        const silent = this.nameservers.awaitingGreeting;
        const why = silent
          ? `: it accepted the connection but sent no dstore greeting (not a dstore server, or a paused one)`
          : '';
        throw new TimeoutError(
          `no dstore nameserver answered at ${this.nameserver} within ${this.opts.timeoutMs} ms${why}`,
          { cause: err },
        );
      }
      throw err;
    }
  }
}

function decodeOrThrow<T>(
  v: { decode(x: unknown): { ok: true; value: T } | { ok: false; reason: string } },
  raw: unknown,
): T {
  const d = v.decode(raw);
  if (!d.ok) throw new InvalidArgumentError(`malformed reply from the cluster: ${d.reason}`);
  return d.value;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Issue 14: bytes of keys and values per putMany call (a group is split into calls of about this). */
const BATCH_CALL_BYTES = 1024 * 1024;

/** Indices of `keys` by partition. */
function groupByPartition(keys: readonly Uint8Array[], partitions: number): Map<number, number[]> {
  const groups = new Map<number, number[]>();
  keys.forEach((k, i) => {
    const p = partitionOf(k, partitions);
    const g = groups.get(p);
    if (g) g.push(i);
    else groups.set(p, [i]);
  });
  return groups;
}

/** `idxs` in runs whose sizes add up to about `max` (soft: a run holds at least one). */
function chunksByBytes(idxs: readonly number[], size: (i: number) => number, max: number): number[][] {
  const out: number[][] = [];
  let run: number[] = [];
  let bytes = 0;
  for (const i of idxs) {
    if (run.length > 0 && bytes + size(i) > max) {
      out.push(run);
      run = [];
      bytes = 0;
    }
    run.push(i);
    bytes += size(i);
  }
  if (run.length > 0) out.push(run);
  return out;
}

/** A found GetReply as `get` returns it (with `ttlMs` when the value expires). */
function getResultOf(r: { value: Uint8Array; version: number; ttl?: number }): GetResult {
  return r.ttl === undefined
    ? { value: r.value, version: r.version }
    : { value: r.value, version: r.version, ttlMs: r.ttl };
}

function asDstoreError(err: unknown): DstoreError {
  return err instanceof DstoreError ? err : errorFromWire(errorToWire(err));
}

function describeKey(key: Uint8Array): string {
  const s = Buffer.from(key).toString('utf8');
  return /^[\x20-\x7e]*$/.test(s) && s.length <= 64
    ? JSON.stringify(s)
    : `0x${Buffer.from(key.subarray(0, 32)).toString('hex')}${key.length > 32 ? '…' : ''}`;
}

/** The values of a batch in order, or BatchFailedError naming the keys that failed. */
function batchResult<T>(method: string, outcomes: ReadonlyArray<BatchOutcome<T> | undefined>): T[] {
  const results = outcomes.map((o, i): BatchOutcome<T> => {
    if (o === undefined) throw new Error(`${method}: entry ${i} has no outcome`);
    return o;
  });
  const failed = results.filter((r): r is Extract<BatchOutcome<T>, { ok: false }> => !r.ok);
  if (failed.length === 0) return results.map((r) => (r as { value: T }).value);
  const named = failed
    .slice(0, 5)
    .map((f) => `${describeKey(f.key)} (${f.error.code}: ${f.error.message})`)
    .join('; ');
  const more = failed.length > 5 ? ` and ${failed.length - 5} more` : '';
  throw new BatchFailedError(
    `${method}: ${failed.length} of ${results.length} keys failed (the others took effect): ${named}${more}`,
    results,
  );
}

/** `promise`, or `onTimeout()` as a rejection after `ms` (a shared fetch others may still await). */
function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), Math.max(1, ms));
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Connects to a cluster through its nameservers: one `host:port`, a comma-separated list of
 * them or an array of them (seeds, issue 12: calls go to the elected leader among them, and
 * follow it when it changes). Unless `lazy`, resolves only once a dstore nameserver answered
 * with the cluster map (so the client also knows the cluster's limits); fails with the reason
 * otherwise (CONNECTION_CLOSED, TIMEOUT, PROTOCOL_MISMATCH, WRONG_ROLE, UNAUTHORIZED,
 * NOT_LEADER), naming every seed tried.
 */
export async function connect(nameserver: string | readonly string[], options: ConnectOptions = {}): Promise<Db> {
  checkConnectArguments(nameserver, options);
  const timeoutMs = options.timeoutMs ?? 10_000;
  const attemptTimeoutMs = options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;
  const client = new Client(parseSeeds(nameserver, 'connect: nameserver'), {
    ...options,
    timeoutMs,
    attemptTimeoutMs: Math.min(attemptTimeoutMs, timeoutMs),
  });
  if (options.lazy === true) return client;
  try {
    await client.check();
  } catch (err) {
    await client.close();
    throw err;
  }
  return client;
}

/** Administration (consistency checks, backups): `Db` and the calls to one storage server. */
export type Admin = Db & Pick<Client, 'clusterMap' | 'proposeDigest' | 'digestAt' | 'relearn' | 'snapshotPage'>;

/** `connect`, for administration tools (`dstore check`, `dstore backup`). */
export async function connectAdmin(
  nameserver: string | readonly string[],
  options: ConnectOptions = {},
): Promise<Admin> {
  return (await connect(nameserver, options)) as Client;
}
