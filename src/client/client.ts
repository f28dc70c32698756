/**
 * The client library (DESIGN §1, §3, S9): routes each request to its partition's primary
 * from a cached cluster map, refreshes the map on NOT_PRIMARY / UNAVAILABLE / lost
 * connections, and retries with backoff until the call's deadline. Every write carries
 * (clientId, requestSeq) and keeps them across retries, so the primary can recognise a
 * retry (S10). A write that may have reached a primary and then failed is reported as
 * OutcomeUnknownError, never as failed.
 */
import { randomBytes } from 'node:crypto';
import {
  ConnectionClosedError,
  DstoreError,
  InvalidArgumentError,
  KeyEmptyError,
  KeyTooLargeError,
  OutcomeUnknownError,
  TimeoutError,
  UnavailableError,
} from '../core/errors.js';
import { defaultLimits } from '../core/limits.js';
import { partitionOf } from '../core/partitioning.js';
import { DelReply, DumpReply, GetReply, MapReply, PutReply, ScanReply, codec } from '../rpc/messages.js';
import { tokenField } from '../rpc/token.js';
import { RpcPool } from '../rpc/transport.js';
import type { ClusterInfo, Db, GetResult, StorageDump } from './api.js';

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
}

/** Default bound on one attempt of a call, in ms (ConnectOptions.attemptTimeoutMs). */
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 2000;

const mapReply = codec(MapReply);
const putReply = codec(PutReply);
const delReply = codec(DelReply);
const getReply = codec(GetReply);
const scanReply = codec(ScanReply);
const dumpReply = codec(DumpReply);
/** Keys and bytes of keys asked for per `dump` page (the server caps both; 1 MiB fits any frame). */
const DUMP_PAGE_KEYS = 1000;
const DUMP_PAGE_BYTES = 1024 * 1024;

const encoder = new TextEncoder();
const toBytes = (x: Uint8Array | string): Uint8Array => (typeof x === 'string' ? encoder.encode(x) : x);

/** A write error is definite only when no primary could have received it (S9). */
function mayHaveApplied(err: unknown): boolean {
  if (!(err instanceof DstoreError)) return true;
  return err.code === 'TIMEOUT' || err.code === 'CONNECTION_CLOSED' || err.code === 'OUTCOME_UNKNOWN' || err.code === 'INTERNAL';
}

export class Client implements Db {
  private readonly pool: RpcPool;
  private map: MapReply | undefined;
  private mapFetch: Promise<MapReply> | undefined;
  private readonly clientId = randomBytes(8).toString('hex');
  /**
   * S10: the server remembers one request per client id, so each concurrent write uses a
   * slot of its own (`<id>-<n>`) with its own request sequence, kept across retries.
   */
  private readonly freeSlots: Array<{ id: string; seq: number }> = [];
  private slotCount = 0;
  private readonly limits = defaultLimits();
  private closed = false;

  constructor(
    private readonly nameserver: string,
    private readonly opts: Required<Pick<ConnectOptions, 'timeoutMs' | 'attemptTimeoutMs'>> & ConnectOptions,
  ) {
    this.pool = new RpcPool({ maxFrameBytes: this.limits.maxFrameBytes });
  }

  async put(key: Uint8Array | string, value: Uint8Array | string): Promise<number> {
    const k = this.checkKey(key);
    const reply = await this.tagged((tag) => this.routed(k, { t: 'put', key: k, value: toBytes(value), ...tag }, true));
    return decodeOrThrow(putReply, reply).version;
  }

  async get(key: Uint8Array | string): Promise<GetResult | undefined> {
    const k = this.checkKey(key);
    const reply = decodeOrThrow(getReply, await this.routed(k, { t: 'get', key: k }, false));
    return reply.found ? { value: reply.value, version: reply.version } : undefined;
  }

  async delete(key: Uint8Array | string): Promise<boolean> {
    const k = this.checkKey(key);
    const reply = await this.tagged((tag) => this.routed(k, { t: 'del', key: k, ...tag }, true));
    return decodeOrThrow(delReply, reply).existed;
  }

  async *scan(): AsyncIterable<Uint8Array> {
    const map = await this.currentMap();
    for (let p = 0; p < map.partitions; p++) {
      let after: Uint8Array | undefined;
      for (let page = 0; page < 10_000_000; page++) {
        const body = after ? { t: 'scan', p, after, limit: 1000 } : { t: 'scan', p, limit: 1000 };
        const reply = decodeOrThrow(scanReply, await this.withRetry(p, body, false));
        yield* reply.keys;
        if (!reply.next) break;
        after = reply.next;
      }
    }
  }

  async nodes(): Promise<ClusterInfo> {
    return (await this.nameserverCall({ t: 'nodes' })) as ClusterInfo;
  }

  /**
   * Pages through each storage server's keys (issue 9: one reply of a whole store was over
   * the frame limit): up to DUMP_PAGE_KEYS keys and DUMP_PAGE_BYTES per call, until `limit`
   * keys or the end. A server that fails on any page gets `error` (the keys so far dropped).
   */
  async dump(options: { limit?: number; timeoutMs?: number } = {}): Promise<StorageDump[]> {
    const limit = options.limit ?? 100;
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
            const body = { t: 'dump', limit: want, maxBytes: DUMP_PAGE_BYTES, ...(after === undefined ? {} : { after }), ...tokenField(this.opts.clusterToken) };
            const d = decodeOrThrow(dumpReply, await this.pool.get(n.address).call(body, { timeoutMs }));
            if (page === 0) keyCount = d.keyCount;
            nodeId = d.nodeId;
            keys.push(...d.keys);
            const more = d.next !== undefined && (d.keys.length > 0 || want === 0);
            if (!more || keys.length >= limit || want === 0) return { nodeId, address: n.address, keyCount, keys, truncated: d.truncated };
            after = d.next;
          }
          throw new Error(`dump of ${n.id} did not end within ${limit + 1} pages`);
        } catch (err) {
          return { nodeId: n.id, address: n.address, keyCount: 0, keys: [], truncated: false, error: (err as Error).message };
        }
      }),
    );
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

  private checkKey(key: Uint8Array | string): Uint8Array {
    const k = toBytes(key);
    if (k.length === 0) throw new KeyEmptyError();
    if (k.length > this.limits.maxKeyBytes) throw new KeyTooLargeError(k.length, this.limits.maxKeyBytes);
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
    const deadline = Date.now() + this.opts.timeoutMs;
    // A retry is not started with less time than this left: it would most likely time out,
    // and a timed-out write is unknown (S9), while the answers so far may all be definite.
    const minRetryMs = Math.min(100, this.opts.attemptTimeoutMs / 4);
    let delayMs = 10;
    let maybeApplied = false;
    let lastError: unknown;
    for (let attempt = 0; attempt < 10_000; attempt++) {
      if (this.closed) throw new ConnectionClosedError('client closed');
      const remaining = deadline - Date.now();
      if (remaining <= 0 || (attempt > 0 && remaining < minRetryMs)) break;
      const attemptMs = Math.min(remaining, this.opts.attemptTimeoutMs);
      // Which primary: the map (a failure here never reaches a primary, so it is definite).
      let address: string | undefined;
      try {
        address = primaryAddress(attempt === 0 ? await this.currentMap(attemptMs) : await this.mapForRetry(attemptMs), p);
      } catch (err) {
        lastError = err;
        if (!(err instanceof DstoreError) || !err.retryable) {
          if (maybeApplied) throw new OutcomeUnknownError(`write to partition ${p} failed after an attempt that may have been applied: ${(err as Error).message}`, { cause: err });
          throw err;
        }
      }
      if (address !== undefined && attempt > 0 && deadline - Date.now() < minRetryMs) break; // the map fetch took the rest
      if (address !== undefined) try {
        return await this.pool.get(address).call({ ...body, p, ...tokenField(this.opts.clusterToken) }, { timeoutMs: Math.max(1, Math.min(attemptMs, deadline - Date.now())) });
      } catch (err) {
        lastError = err;
        if (isWrite && mayHaveApplied(err)) maybeApplied = true;
        if (!(err instanceof DstoreError) || !err.retryable) {
          // S9: a definite answer now does not undo an earlier attempt that may have been applied.
          if (maybeApplied) throw new OutcomeUnknownError(`write to partition ${p} failed after an attempt that may have been applied: ${(err as Error).message}`, { cause: err });
          throw err;
        }
      }
      await sleep(Math.min(delayMs, Math.max(0, deadline - Date.now())));
      delayMs = Math.min(delayMs * 2, 500);
    }
    if (maybeApplied) {
      throw new OutcomeUnknownError(`write to partition ${p} did not complete within ${this.opts.timeoutMs} ms; it may or may not have been applied`, { cause: lastError });
    }
    if (lastError instanceof DstoreError && lastError.code !== 'TIMEOUT') throw lastError;
    throw new TimeoutError(`partition ${p} did not answer within ${this.opts.timeoutMs} ms${lastError ? `: ${(lastError as Error).message}` : ''}`, { cause: lastError });
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
      if (err instanceof DstoreError && err.retryable && this.map?.formed) return this.map;
      throw err;
    }
  }

  /** One map fetch at a time; concurrent callers share it (each waits at most `timeoutMs`). */
  private refreshMap(timeoutMs = this.opts.timeoutMs): Promise<MapReply> {
    this.mapFetch ??= (async () => {
      try {
        const raw = await this.nameserverCall({ t: 'map' }, timeoutMs);
        this.map = decodeOrThrow(mapReply, raw);
        return this.map;
      } finally {
        this.mapFetch = undefined;
      }
    })();
    return withTimeout(this.mapFetch, timeoutMs, () => new TimeoutError(`the nameserver ${this.nameserver} sent no cluster map within ${timeoutMs} ms`));
  }

  /** DESIGN §12: every call carries the cluster token when one is configured. */
  private nameserverCall(body: Record<string, unknown>, timeoutMs = this.opts.timeoutMs): Promise<unknown> {
    return this.pool.get(this.nameserver).call({ ...body, ...tokenField(this.opts.clusterToken) }, { timeoutMs });
  }
}

function primaryAddress(map: MapReply, p: number): string {
  if (!map.formed) throw new UnavailableError(`the cluster is not formed yet: waiting for storage servers to register`);
  const config = map.configs[p];
  if (!config) throw new UnavailableError(`partition ${p} has no configuration`);
  const address = map.addresses[config.primary];
  if (!address) throw new UnavailableError(`no address known for ${config.primary}, primary of partition ${p}`);
  return address;
}

function decodeOrThrow<T>(v: { decode(x: unknown): { ok: true; value: T } | { ok: false; reason: string } }, raw: unknown): T {
  const d = v.decode(raw);
  if (!d.ok) throw new InvalidArgumentError(`malformed reply from the cluster: ${d.reason}`);
  return d.value;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `promise`, or `onTimeout()` as a rejection after `ms` (a shared fetch others may still await). */
function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), Math.max(1, ms));
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Connects to a cluster through its nameserver (`host:port`). */
export async function connect(nameserver: string, options: ConnectOptions = {}): Promise<Db> {
  if (!/^[^\s:]+:\d{1,5}$/.test(nameserver)) throw new InvalidArgumentError(`nameserver address ${JSON.stringify(nameserver)} is not HOST:PORT`);
  const timeoutMs = options.timeoutMs ?? 10_000;
  const attemptTimeoutMs = options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;
  if (!(timeoutMs > 0)) throw new InvalidArgumentError(`timeoutMs must be > 0, got ${timeoutMs}`);
  if (!(attemptTimeoutMs > 0)) throw new InvalidArgumentError(`attemptTimeoutMs must be > 0, got ${attemptTimeoutMs}`);
  return new Client(nameserver, { ...options, timeoutMs, attemptTimeoutMs: Math.min(attemptTimeoutMs, timeoutMs) });
}
