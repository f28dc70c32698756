/**
 * The storage server process (DESIGN §1, §4, §5, §7): hosts replicas, each driven by the
 * pure replica core (src/core/replica), with the network (src/rpc) and the backend
 * (src/storage) at the edges.
 *
 * Driver loop: decode → step → execute outputs. Outputs of one partition run in order;
 * `persist` ops go to the group-commit writer, and every later output not marked immediate
 * runs after they are durable (see BatchWriter.after). At the end of each event-loop turn
 * every partition that saw input gets a `flush` (one prepare message per peer for all the
 * writes of the turn); a timer ticks every `tickMs`.
 *
 * Storage failure (issue 4): a batch the backend did not confirm may or may not be durable,
 * and the replica cores already act on it. So the server goes **unhealthy** at once: it
 * drops every replica core (nothing after the failed batch is replied, acked, confirmed or
 * sent: the writer runs no later callback), answers pending writes with OUTCOME_UNKNOWN and
 * every call with a retryable UNAVAILABLE, closes its snapshot sessions, and heartbeats with
 * `unhealthy` instead of progress, the first such heartbeat sent at once, so the nameserver
 * shows it and fails its partitions over at once, without waiting --dead-after-ms (§4).
 * Then it reopens the backend with bounded exponential backoff (RECOVER_FIRST_MS →
 * RECOVER_MAX_MS; the redis backend checks S14 again; an lmdb data dir with less than
 * MIN_FREE_BYTES_TO_REOPEN free counts as still full, issue 9) and reloads in place exactly
 * as a restart would: a new incarnation, every replica rebuilt from the backend, inactive (S4), registered again. Work started before the
 * failure (promotion requests, snapshot fetches, epoch confirmations) belongs to an older
 * `life` and is ignored when it completes. A batch that breaks a backend precondition
 * (InvariantViolation) is a bug, not a storage failure: the process still exits 70.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { type WireError, DstoreError, errorFromWire, InvalidArgumentError, NodeIdInUseError, MalformedMessageError, KeyEmptyError, KeyTooLargeError, NotPrimaryError, OutcomeUnknownError, OverloadedError, UnauthorizedError, UnavailableError, ValueTooLargeError } from '../core/errors.js';
import { defaultLimits, MiB, type Limits } from '../core/limits.js';
import { type DumpCursor, dumpPage } from './dump.js';
import { partitionOf } from '../core/partitioning.js';
import type { PeerMessage } from '../core/replica/messages.js';
import { Replica, type ReplicaInput, type ReplicaOutput } from '../core/replica/replica.js';
import { InvariantViolation, type Epoch, type NodeId, type Op, type PartitionId, type RequestTag, type Seq, nodeId as toNodeId, partitionId } from '../core/types.js';
import { advertisedAddress, formatHostPort } from '../process/address.js';
import { DataDirError } from '../process/data-dir.js';
import { readFileIfExists, writeFileDurably } from '../process/files.js';
import type { Logger } from '../process/log.js';
import {
  HeartbeatReplySchema,
  PeerEnvelope,
  RegisterReply,
  StorageRequest,
  toConfig,
  toPeerMessage,
  codec,
  ConfirmEpochReply,
  PromoteReply,
  SnapshotReadReply,
} from '../rpc/messages.js';
import { tokenField, tokenMatches, unauthorizedMessage } from '../rpc/token.js';
import { RpcPool, RpcServer, type CallContext } from '../rpc/transport.js';
import { valueTooLargeForPut } from '../rpc/oversized.js';
import { type Backend, type DedupRecord, type PartitionState, type Snapshot, type SnapshotItem, isCorruptRecord } from '../storage/backend.js';
import { checkDataDirNotFull, freeSpaceOf } from './disk-space.js';
import { BatchWriter, type BatchDone } from './writer.js';

export interface StorageServerConfig {
  readonly nameserver: string;
  readonly host: string;
  readonly port: number;
  readonly advertise?: string;
  readonly nodeId?: string;
  readonly dataDir: string;
  readonly heartbeatMs: number;
  readonly tickMs: number;
  readonly maxValueBytes: number;
  readonly logRetainEntries: number;
  readonly durable: boolean;
  readonly clusterToken?: string;
  readonly callTimeoutMs: number;
}

const storageRequest = codec(StorageRequest);
const peerEnvelope = codec(PeerEnvelope);
const registerReply = codec(RegisterReply);
const heartbeatReply = codec(HeartbeatReplySchema);
const confirmEpochReply = codec(ConfirmEpochReply);
const promoteReply = codec(PromoteReply);
/** Recent deletes' `existed` answers kept for their waiters (a retry may wait on the same entry). */
const MAX_DELETE_RESULTS = 100_000;
const snapshotReadReply = codec(SnapshotReadReply);

interface Waiter {
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: Error) => void;
  readonly partition: PartitionId;
  /** A write's outcome is unknown once storage failed (S9); a read simply failed. */
  readonly write: boolean;
}

/** Reopening a failed backend: first retry after this, doubling up to RECOVER_MAX_MS. */
const RECOVER_FIRST_MS = 100;
const RECOVER_MAX_MS = 5000;
/**
 * A failure within this long of recovering from the last one continues its backoff instead
 * of starting over, so a disk that fails again at the first writes after a reopen (still
 * full) is not reopened ten times a second (issue 9).
 */
const RECOVER_STABLE_MS = 30_000;
/** An lmdb data dir whose filesystem has less free space than this is still full (issue 9). */
const MIN_FREE_BYTES_TO_REOPEN = 1024 * 1024;
/** After this many failed reopen attempts in a row (hours at RECOVER_MAX_MS) the process exits. */
const RECOVER_MAX_ATTEMPTS = 10_000;
/** A snapshot session no read used for this long is closed (it pins backend state). */
const SNAPSHOT_SESSION_IDLE_MS = 60_000;
/** Pauses between attempts to register: doubling from the first to the largest, in ms (issue 9). */
const REGISTER_BACKOFF_FIRST_MS = 100;
const REGISTER_BACKOFF_MAX_MS = 2000;
/** While the nameserver cannot be reached, the log says so this often, in ms. */
const REGISTER_LOG_EVERY_MS = 15_000;
/** At most this many snapshot sessions open at once; a new one beyond it is OVERLOADED. */
const MAX_SNAPSHOT_SESSIONS = 64;
/** Longest failure reason sent in a heartbeat. */
const MAX_REASON_CHARS = 500;

export type StorageHealth =
  | { readonly state: 'healthy' }
  | { readonly state: 'unhealthy'; readonly reason: string; readonly sinceMs: number; readonly attempts: number };

/** Reads the node id kept in the data dir, or creates it (from the flag or at random). */
export function loadNodeId(dataDir: string, requested?: string): NodeId {
  const path = join(dataDir, 'node-id');
  const stored = readFileIfExists(path)?.trim();
  if (stored && requested && stored !== requested) {
    throw new DataDirError(`data dir ${dataDir} belongs to node ${stored}, not ${requested}; use another --data-dir`, dataDir);
  }
  const id = stored || requested || `n-${randomBytes(3).toString('hex')}`;
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(id)) throw new InvalidArgumentError(`node id ${JSON.stringify(id)}: use 1-64 of A-Z a-z 0-9 . _ -`);
  if (!stored) writeFileDurably(path, `${id}\n`);
  return toNodeId(id);
}

export class StorageServer {
  readonly nodeId: NodeId;
  /** New at every start and every reload after a storage failure (S4, S7). */
  incarnation = randomBytes(8).toString('hex');
  private readonly limits: Limits;
  private readonly replicas = new Map<PartitionId, Replica>();
  private readonly recoveries = new Map<PartitionId, PartitionState>();
  /** Whether the backend held any partition when it was (re)opened (see loadLogs). */
  private storeHoldsData = false;
  private readonly addresses = new Map<NodeId, string>();
  private readonly waiters = new Map<number, Waiter>();
  private readonly deleteResults = new Map<string, boolean>();
  private readonly dirty = new Set<PartitionId>();
  private writer: BatchWriter;
  /** Bumped by every storage failure: async work of an older life must not step a replica. */
  private life = 0;
  private health: StorageHealth = { state: 'healthy' };
  /** When storage last became healthy again after a failure, and the backoff it ended at. */
  private recoveredMs = 0;
  private recoveredDelayMs = RECOVER_FIRST_MS;
  /**
   * The incarnation whose storage failed: unhealthy heartbeats name it, never the one a
   * reload is registering, so one sent while the reload registers cannot mark the new
   * incarnation failed at the nameserver (it would never count as alive again).
   */
  private failedIncarnation = '';
  private readonly pool: RpcPool;
  private server: RpcServer | undefined;
  private nextRequestId = 1;
  private partitions = 0;
  private minWriteReplicas = 1;
  /** §4: the nameserver's --dead-after-ms; a primary asks to remove a secondary silent that long. */
  private removeSilentAfterMs = 0;
  private flushScheduled = false;
  private timers: NodeJS.Timeout[] = [];
  private readonly startedMs = Date.now();
  private advertised = '';
  private keyCount = 0;
  private nameserverDown = false;
  private closed = false;

  /**
   * `reopen` opens the backend again after a storage failure (a new connection and S14 check
   * for redis); it is how the server recovers in place instead of exiting.
   */
  constructor(
    private readonly cfg: StorageServerConfig,
    private backend: Backend,
    private readonly log: Logger,
    private readonly reopen: () => Promise<Backend>,
  ) {
    this.nodeId = loadNodeId(cfg.dataDir, cfg.nodeId);
    this.limits = defaultLimits({ maxValueBytes: cfg.maxValueBytes, logRetainEntries: cfg.logRetainEntries });
    this.writer = this.newWriter();
    this.pool = new RpcPool({ maxFrameBytes: this.limits.maxFrameBytes, logger: log });
  }

  async start(): Promise<number> {
    await this.loadLogs();
    this.server = new RpcServer({
      host: this.cfg.host,
      port: this.cfg.port,
      maxFrameBytes: this.limits.maxFrameBytes,
      role: 'storage',
      oversizedCall: valueTooLargeForPut(this.limits.maxValueBytes),
      logger: this.log,
      handler: (body, ctx) => this.onCall(body, ctx),
      onMessage: (body) => this.onPeerFrame(body),
    });
    const port = await this.server.listen();
    this.advertised = advertisedAddress({ listen: this.cfg.host, port, advertise: this.cfg.advertise });
    this.log.info({ nodeId: this.nodeId, listen: formatHostPort(this.cfg.host, port), advertise: this.advertised, backend: this.backend.kind, incarnation: this.incarnation }, 'storage server listening');
    await this.register();
    this.timers.push(setInterval(() => void this.heartbeat(), this.cfg.heartbeatMs));
    this.timers.push(setInterval(() => this.tick(), this.cfg.tickMs));
    this.timers.push(setInterval(() => void this.closeIdleSnapshotSessions(SNAPSHOT_SESSION_IDLE_MS), Math.min(SNAPSHOT_SESSION_IDLE_MS / 4, 15_000)));
    return port;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    await this.server?.close();
    this.pool.close();
    await this.writer.idle();
    await this.closeIdleSnapshotSessions(0);
    await this.backend.close();
  }

  /**
   * The storage engine failed outside any batch (crash-guard.ts: a rejection inside the
   * engine's own code): unhealthy, exactly as for a failed batch; ignored while unhealthy.
   */
  reportStorageFailure(err: Error): void {
    this.onStorageFailure(err, this.life);
  }

  /** Whether the backend is usable; `stats` and heartbeats report it. */
  get storageHealth(): StorageHealth {
    return this.health;
  }

  // ---- nameserver ----

  private registering: Promise<void> | undefined;

  /**
   * Registers with the nameserver, then heartbeats at once. Concurrent callers (start,
   * heartbeats, a reload) share one attempt loop; the heartbeat runs after the loop has
   * ended, so one that is told to register again starts a new loop instead of awaiting itself.
   */
  private async register(): Promise<void> {
    this.registering ??= this.registerUntilDone().finally(() => {
      this.registering = undefined;
    });
    await this.registering;
    await this.heartbeat();
  }

  /**
   * Retries with backoff for as long as the server runs (issue 9: a nameserver that is down
   * or not started yet is waited for, not given up on), saying so in the log at once and
   * then every REGISTER_LOG_EVERY_MS. Gives up at once on what retrying cannot fix: any
   * non-retryable DstoreError (a refused token, an address that does not speak the dstore
   * protocol, a malformed reply); and on NODE_ID_IN_USE once the other server has kept
   * heartbeating for two --dead-after-ms (it is not this server's previous life).
   */
  private async registerUntilDone(): Promise<void> {
    const startedMs = Date.now();
    let lastLoggedMs: number | undefined;
    let inUseSinceMs: number | undefined;
    let delayMs = REGISTER_BACKOFF_FIRST_MS;
    // Unbounded on purpose: the server has nothing to do until it registers. Each attempt is
    // bounded by callTimeoutMs, the pause between attempts by REGISTER_BACKOFF_MAX_MS.
    for (let attempt = 1; ; attempt++) {
      try {
        const raw = await this.nameserverCall({ t: 'register', nodeId: this.nodeId, address: this.advertised, backend: this.backend.kind, incarnation: this.incarnation, durable: this.cfg.durable && this.storeHoldsData, maxValueBytes: this.limits.maxValueBytes, activePartitions: [...this.replicas.values()].filter((r) => r.activatedOnce).map((r) => r.partition) });
        const r = registerReply.decode(raw);
        if (!r.ok) throw new InvalidArgumentError(`nameserver ${this.cfg.nameserver} sent a malformed register reply: ${r.reason}`);
        this.partitions = r.value.partitions;
        this.minWriteReplicas = r.value.minWriteReplicas;
        this.removeSilentAfterMs = r.value.deadAfterMs ?? 0;
        this.log.info({ clusterId: r.value.clusterId, partitions: this.partitions, incarnation: this.incarnation, attempts: attempt, waitedMs: Date.now() - startedMs }, 'registered with the nameserver');
        if (this.health.state !== 'healthy') {
          this.log.info({ unhealthyMs: Date.now() - this.health.sinceMs }, 'storage healthy again; replicas reloaded from the backend and registered as a restarted node');
          this.health = { state: 'healthy' };
          this.recoveredMs = Date.now();
        }
        // S4: recovered replicas exist from now on, inactive until a configuration arrives.
        for (const p of this.recoveries.keys()) this.replica(p);
        return;
      } catch (err) {
        if (this.closed) throw err;
        const now = Date.now();
        // DESIGN §12: a refused token does not get better by retrying; say so and stop.
        if (err instanceof UnauthorizedError) throw new UnauthorizedError(`nameserver ${this.cfg.nameserver} refused to register ${this.nodeId}: ${err.message}`, { cause: err });
        if (err instanceof NodeIdInUseError) {
          inUseSinceMs ??= now;
          const bound = 2 * err.deadAfterMs + this.cfg.heartbeatMs;
          if (now - inUseSinceMs > bound) {
            throw new NodeIdInUseError(err.nodeId, err.address, err.refusedAddress, err.heartbeatAgeMs, err.deadAfterMs,
              `node id ${err.nodeId} is in use by a live storage server at ${err.address} (it kept heartbeating for ${now - inUseSinceMs} ms); stop it, or give this one another --node-id and --data-dir`);
          }
          this.log.warn({ nodeId: err.nodeId, holder: err.address, attempt }, `${err.message}; retrying for up to ${bound - (now - inUseSinceMs)} ms more`);
        } else if (err instanceof DstoreError && !err.retryable) {
          this.log.fatal({ nameserver: this.cfg.nameserver, code: err.code, err: err.message }, 'cannot register with the nameserver, and retrying cannot help; giving up');
          throw err;
        } else {
          inUseSinceMs = undefined;
          if (lastLoggedMs === undefined || now - lastLoggedMs >= REGISTER_LOG_EVERY_MS) {
            lastLoggedMs = now;
            this.log.warn({ err: (err as Error).message, nameserver: this.cfg.nameserver, attempt, waitingMs: now - startedMs }, 'cannot register with the nameserver yet; retrying with backoff until it answers');
          }
        }
        await new Promise((r) => setTimeout(r, delayMs));
        delayMs = Math.min(delayMs * 2, REGISTER_BACKOFF_MAX_MS);
      }
    }
  }

  private nameserverCall(body: Record<string, unknown>): Promise<unknown> {
    return this.pool.get(this.cfg.nameserver, 'nameserver').call({ ...body, ...tokenField(this.cfg.clusterToken) }, { timeoutMs: this.cfg.callTimeoutMs });
  }

  private heartbeating = false;

  private async heartbeat(): Promise<void> {
    if (this.heartbeating || this.closed || this.partitions === 0) return;
    if (this.health.state !== 'healthy') return this.heartbeatUnhealthy(this.health);
    this.heartbeating = true;
    const life = this.life;
    try {
      const health = this.backend.health?.();
      if (health && (health.broken !== undefined || !health.connected)) {
        // Noticed between writes (say, an idle cluster): no write may be acked on it now.
        this.onStorageFailure(new Error(health.broken ?? `backend not connected${health.lastError ? `: ${health.lastError}` : ''}`), life);
        return;
      }
      const progress = [...this.replicas.values()].map((r) => r.progress());
      const raw = await this.nameserverCall({ t: 'heartbeat', nodeId: this.nodeId, incarnation: this.incarnation, uptimeMs: Date.now() - this.startedMs, keys: this.keyCount, progress });
      if (this.nameserverDown) this.log.info({}, 'nameserver reachable again');
      this.nameserverDown = false;
      const r = heartbeatReply.decode(raw);
      if (!r.ok) throw new InvalidArgumentError(`nameserver sent a malformed heartbeat reply: ${r.reason}`);
      if (r.value.kind === 'register') {
        this.heartbeating = false;
        return await this.register();
      }
      for (const [id, address] of Object.entries(r.value.addresses)) this.addresses.set(toNodeId(id), address);
      if (life !== this.life) return; // storage failed meanwhile: these configurations are for replicas gone
      for (const c of r.value.configs) {
        const config = toConfig(c);
        this.step(config.partition, { kind: 'configure', config });
      }
      void this.refreshKeyCount();
    } catch (err) {
      if (!this.nameserverDown) this.log.warn({ err: (err as Error).message }, 'heartbeat failed; serving on with the configurations we have');
      this.nameserverDown = true;
    } finally {
      this.heartbeating = false;
    }
  }

  /**
   * Unhealthy: tell the nameserver (so `nodes` shows it) without progress; the nameserver
   * does not count this as a heartbeat, so the node goes dead after --dead-after-ms (§4).
   */
  private async heartbeatUnhealthy(health: Extract<StorageHealth, { state: 'unhealthy' }>): Promise<void> {
    this.heartbeating = true;
    try {
      await this.nameserverCall({ t: 'heartbeat', nodeId: this.nodeId, incarnation: this.failedIncarnation, uptimeMs: Date.now() - this.startedMs, keys: this.keyCount, progress: [], unhealthy: health.reason.slice(0, MAX_REASON_CHARS) });
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'unhealthy heartbeat not delivered');
    } finally {
      this.heartbeating = false;
    }
  }

  private async refreshKeyCount(): Promise<void> {
    let total = 0;
    try {
      for (const r of this.replicas.values()) if (r.progress().role !== 'inactive') total += await this.backend.count(r.partition);
      this.keyCount = total;
    } catch (err) {
      // Reads may fail while the backend is away; the next heartbeat tries again.
      this.log.debug({ err: (err as Error).message }, 'cannot count keys');
    }
  }

  // ---- driving the replica cores ----

  private replica(p: PartitionId): Replica {
    let r = this.replicas.get(p);
    if (r) return r;
    const state = this.recoveries.get(p);
    r = new Replica(
      { node: this.nodeId, partition: p, minWriteReplicas: this.minWriteReplicas, limits: this.limits, resendAfterMs: 300, incarnation: this.incarnation, removeSilentAfterMs: this.removeSilentAfterMs },
      state ? this.recover(state) : undefined,
    );
    r.nowMs = Date.now();
    this.replicas.set(p, r);
    return r;
  }

  private recover(state: PartitionState) {
    const entries = this.recoveredLogs.get(state.partition) ?? [];
    const dedup = this.recoveredDedup.get(state.partition) ?? [];
    const recovery = { epoch: state.meta?.epoch ?? state.logLast.epoch, config: state.meta?.config ?? null, applied: state.applied, logBase: state.logBase, entries, dedup };
    // S13: a partition found corrupt at open (a bad log record) or marked corrupt before a
    // restart starts out of its configuration and relearns.
    const corrupt = state.corrupt ?? state.meta?.corrupt;
    return corrupt === undefined ? recovery : { ...recovery, entries: [], dedup: [], corrupt };
  }

  /** Log tails read at start, by partition (S3: the epoch also comes from the log). */
  private readonly recoveredLogs = new Map<PartitionId, import('../core/types.js').LogEntry[]>();
  private readonly recoveredDedup = new Map<PartitionId, DedupRecord[]>();

  private async loadLogs(): Promise<void> {
    const states = await this.backend.partitions();
    // S4: a store that holds no partition at all (a brand-new server, or one whose Redis was
    // flushed or whose lmdb files were deleted while its data dir kept its node id) holds
    // nothing it could have acknowledged: this incarnation registers as not durable, so the
    // nameserver makes it relearn every partition it was a member of instead of trusting it
    // as a secondary (which S5 could elect primary with an empty log).
    this.storeHoldsData = states.length > 0;
    for (const state of states) {
      if (state.corrupt !== undefined || state.meta?.corrupt !== undefined) {
        this.log.error({ partition: state.partition, reason: state.corrupt ?? state.meta?.corrupt }, 'partition corrupt at open (S13): nothing of its log is applied; it relearns the partition from a healthy member');
        this.recoveries.set(state.partition, state);
        continue;
      }
      try {
        const entries = [];
        let from = state.logBase.seq + 1;
        while (from <= state.logLast.seq) {
          const page = await this.backend.readLog(state.partition, { fromSeq: from as never, toSeq: state.logLast.seq, limit: 4096 });
          if (page.length === 0) break;
          entries.push(...page);
          from = page[page.length - 1]!.seq + 1;
        }
        this.recoveredLogs.set(state.partition, entries);
        this.recoveredDedup.set(state.partition, await this.backend.dedupTable(state.partition));
        this.recoveries.set(state.partition, state);
      } catch (err) {
        if (!isCorruptRecord(err)) throw err;
        // S13: a log or dedup record failed its checksum: the replica starts corrupt.
        this.log.error({ partition: state.partition, reason: err.message }, 'partition corrupt at open (S13): nothing of its log is applied; it relearns the partition from a healthy member');
        this.recoveries.set(state.partition, { ...state, corrupt: err.message });
      }
    }
  }

  /**
   * S13: a read of partition `p` met a record that failed its checksum. The replica steps
   * out (and, as primary, hands over); the caller answers with a retryable error so the
   * client refreshes its map and reads elsewhere. Never the bad record.
   */
  private onCorruptRead(p: PartitionId, err: Error): Error {
    if (this.health.state === 'healthy' && this.replicas.has(p)) this.step(p, { kind: 'corrupt', reason: err.message });
    return new NotPrimaryError(`${this.nodeId} found partition ${p} corrupt (S13) and no longer serves it; another replica does: ${err.message}`);
  }

  private step(p: PartitionId, input: ReplicaInput): void {
    if (this.health.state !== 'healthy') return; // no replica exists until the reload
    const r = this.replica(p);
    this.execute(p, r.step(input));
    this.markDirty(p);
  }

  private markDirty(p: PartitionId): void {
    this.dirty.add(p);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      const dirty = [...this.dirty];
      this.dirty.clear();
      if (this.health.state !== 'healthy') return;
      for (const q of dirty) this.execute(q, this.replica(q).step({ kind: 'flush' }));
    });
  }

  private tick(): void {
    const nowMs = Date.now();
    for (const [p, r] of this.replicas) this.execute(p, r.step({ kind: 'tick', nowMs }));
  }

  private execute(p: PartitionId, outputs: ReplicaOutput[]): void {
    for (const o of outputs) {
      switch (o.kind) {
        case 'persist':
          this.writer.enqueue(p, o.ops, o.writeId);
          break;
        case 'send':
          if (o.immediate) this.sendPeer(o.to, o.message);
          else this.writer.after(p, () => this.sendPeer(o.to, o.message));
          break;
        case 'reply': {
          if (o.duplicateOf !== undefined && o.op === 'delete' && o.result.kind === 'written') {
            // S10: a retried delete gets the original answer, kept in the dedup table, once
            // the apply that wrote it is durable (D1: not before, as `immediate: false` says).
            const { duplicateOf, requestId } = o;
            const seq = o.result.seq;
            const fn = () => void this.settleDuplicateDelete(p, requestId, duplicateOf, seq);
            if (o.immediate) fn();
            else this.writer.after(p, fn);
            break;
          }
          const fn = () => this.settle(o.requestId, o.result.kind === 'error' ? o.result.error : undefined, o.result.kind === 'written' ? { seq: o.result.seq, op: o.op } : undefined);
          if (o.immediate) fn();
          else this.writer.after(p, fn);
          break;
        }
        case 'read':
          this.writer.after(p, () => void this.serveRead(p, o.requestId, o.key));
          break;
        case 'confirmWithNameserver':
          void this.confirmWithNameserver(p, o.round, o.epoch);
          break;
        case 'requestPromotion':
          void this.requestPromotion(p, o.learner, o.learnerIncarnation, o.epoch);
          break;
        case 'requestRemoval':
          void this.requestRemoval(p, o.secondary, o.epoch);
          break;
        case 'fetchSnapshot':
          // Earlier storage ops of this partition first: the install replaces its state.
          this.writer.after(p, () => void this.fetchSnapshot(p, o.from, o.epoch));
          break;
        case 'log':
          this.log[o.level]({ ...o.fields }, o.message);
          break;
      }
    }
  }

  private settle(requestId: number, error: WireError | undefined, written: { seq: number; op?: 'put' | 'delete' } | undefined): void {
    const w = this.waiters.get(requestId);
    if (!w) return;
    this.waiters.delete(requestId);
    if (error) return w.reject(errorFromWire(error));
    if (!written) return w.resolve(undefined);
    if (written.op === 'delete') {
      // Kept for every waiter of this entry (D1: a retry queued behind the first attempt
      // waits on the same entry); the map is bounded in onBatchDone.
      const existed = this.deleteResults.get(`${w.partition}:${written.seq}`) ?? false;
      return w.resolve({ existed, version: written.seq });
    }
    w.resolve({ version: written.seq });
  }

  private async settleDuplicateDelete(p: PartitionId, requestId: number, clientId: string, seq: number): Promise<void> {
    const w = this.waiters.get(requestId);
    if (!w) return;
    this.waiters.delete(requestId);
    try {
      const record = (await this.backend.dedupTable(p)).find((d) => d.clientId === clientId && d.seq === seq);
      // Gone (a later request of that client replaced it): the write happened, but whether
      // it found the key is no longer known. Never guess.
      if (record?.existed === undefined) w.reject(new OutcomeUnknownError(`delete ${seq} of partition ${p} was applied; whether it found its key is no longer known`));
      else w.resolve({ existed: record.existed, version: seq });
    } catch (err) {
      w.reject(isCorruptRecord(err) ? this.onCorruptRead(p, err) : (err as Error));
    }
  }

  /** §4: asks once; the answer is the partition's configuration (the core asks again later if needed). */
  private async requestRemoval(p: PartitionId, secondary: NodeId, epoch: number): Promise<void> {
    const life = this.life;
    try {
      const r = promoteReply.decode(await this.nameserverCall({ t: 'removeSecondary', p, epoch, secondary }));
      if (!r.ok) throw new MalformedMessageError(`nameserver sent a malformed removeSecondary reply: ${r.reason}`);
      if (life === this.life) this.step(p, { kind: 'configure', config: toConfig(r.value.config) });
    } catch (err) {
      this.log.warn({ partition: p, secondary, err: (err as Error).message }, 'cannot ask the nameserver to remove a silent secondary');
    }
  }

  /** S7: asks the nameserver until it answers; the answer is the partition's configuration. */
  private async requestPromotion(p: PartitionId, learner: NodeId, learnerIncarnation: string, epoch: number): Promise<void> {
    let delayMs = 50;
    const life = this.life;
    for (let attempt = 0; attempt < 1000 && !this.closed; attempt++) {
      if (life !== this.life) return; // storage failed: that replica is gone
      if (this.replica(p).epoch !== epoch) return; // moved on; the new configuration decides
      try {
        const r = promoteReply.decode(await this.nameserverCall({ t: 'promote', p, epoch, learner, learnerIncarnation }));
        if (!r.ok) throw new MalformedMessageError(`nameserver sent a malformed promote reply: ${r.reason}`);
        if (life === this.life) this.step(p, { kind: 'promotionAnswered', config: toConfig(r.value.config), epoch: epoch as Epoch });
        return;
      } catch (err) {
        this.log.warn({ partition: p, learner, err: (err as Error).message }, 'promotion request failed; retrying (commits wait, S7)');
        await new Promise((r) => setTimeout(r, delayMs));
        delayMs = Math.min(delayMs * 2, 1000);
      }
    }
  }

  /** S11: fetches a snapshot of partition `p` from its primary and installs it atomically. */
  private async fetchSnapshot(p: PartitionId, from: NodeId, epoch: number): Promise<void> {
    const address = this.addresses.get(from);
    let installed: { applied: { seq: Seq; epoch: Epoch }; dedup: DedupRecord[] };
    // A storage failure meanwhile replaces both: never install into, or step, the next life.
    const life = this.life;
    const backend = this.backend;
    try {
      if (!address) throw new InvalidArgumentError(`no address for ${from}`);
      const conn = this.pool.get(address, 'storage');
      const read = async (session?: string) => {
        const token = tokenField(this.cfg.clusterToken);
        const r = snapshotReadReply.decode(await conn.call(session ? { t: 'snapshotRead', p, epoch, session, ...token } : { t: 'snapshotRead', p, epoch, ...token }, { timeoutMs: 30_000 }));
        if (!r.ok) throw new MalformedMessageError(`malformed snapshot page: ${r.reason}`);
        return r.value;
      };
      const first = await read();
      let items = 0;
      async function* pages(): AsyncIterable<SnapshotItem[]> {
        let page = first;
        for (let n = 0; n < 10_000_000; n++) {
          items += page.items.length;
          yield page.items.map((i) => ({ key: i.key, value: i.value, version: i.version as Seq }));
          if (page.done) return;
          page = await read(first.session);
        }
      }
      const applied = { seq: first.applied.seq as Seq, epoch: first.applied.epoch as Epoch };
      const dedup = first.dedup.map((d) => ({ ...d, seq: d.seq as Seq }));
      // S11: only a learner installs a snapshot (it may have been promoted meanwhile).
      if (life !== this.life || this.replica(p).role !== 'learner') throw new InvalidArgumentError(`partition ${p} is no longer a learner here; snapshot not installed`);
      await backend.installSnapshot(p, applied, pages(), dedup);
      this.log.info({ partition: p, from, appliedSeq: applied.seq, items }, 'snapshot fetched and installed');
      installed = { applied, dedup };
    } catch (err) {
      if (life === this.life) this.step(p, { kind: 'snapshotFailed', reason: (err as Error).message });
      return;
    }
    // Outside the try: an invariant the core asserts must stop the server, not look like a failed fetch.
    if (life === this.life) this.step(p, { kind: 'snapshotInstalled', ...installed });
  }

  /**
   * Open snapshot reads, by session id; closed when done, when a read fails, when idle for
   * SNAPSHOT_SESSION_IDLE_MS (a timer: a learner that gave up sends no further read, and an
   * open snapshot pins an LMDB read transaction or Redis pre-images), on a storage failure
   * and on close.
   */
  private readonly snapshotSessions = new Map<string, { snapshot: Snapshot; iterator: AsyncIterator<readonly SnapshotItem[]>; buffer: SnapshotItem[]; lastUsedMs: number; partition: PartitionId; busy: boolean }>();

  /** Closes every session idle for at least `idleMs` (0: every session not being read). */
  private async closeIdleSnapshotSessions(idleMs: number): Promise<void> {
    const now = Date.now();
    for (const [id, s] of [...this.snapshotSessions]) {
      if (s.busy || now - s.lastUsedMs < idleMs) continue;
      this.snapshotSessions.delete(id);
      try {
        await s.snapshot.close();
      } catch (err) {
        this.log.warn({ partition: s.partition, err: (err as Error).message }, 'closing an idle snapshot session failed');
      }
    }
  }

  private async snapshotRead(p: PartitionId, epoch: number, sessionId: string | undefined): Promise<unknown> {
    const r = this.replicas.get(p);
    if (!r || r.role !== 'primary' || r.epoch !== epoch) throw new NotPrimaryError(`${this.nodeId} is not primary of partition ${p} at epoch ${epoch}`);
    let session = sessionId ? this.snapshotSessions.get(sessionId) : undefined;
    let dedup: DedupRecord[] = [];
    if (sessionId && !session) throw new InvalidArgumentError(`snapshot session ${sessionId} expired`);
    if (session?.busy) throw new InvalidArgumentError(`snapshot session ${sessionId} is being read`);
    const id = sessionId ?? randomBytes(8).toString('hex');
    if (!session) {
      if (this.snapshotSessions.size >= MAX_SNAPSHOT_SESSIONS) await this.closeIdleSnapshotSessions(SNAPSHOT_SESSION_IDLE_MS / 4);
      if (this.snapshotSessions.size >= MAX_SNAPSHOT_SESSIONS) throw new OverloadedError(`${this.snapshotSessions.size} snapshot sessions open on ${this.nodeId}`);
      const snapshot = await this.backend.snapshot(p);
      session = { snapshot, iterator: snapshot.items(256)[Symbol.asyncIterator](), buffer: [], lastUsedMs: Date.now(), partition: p, busy: false };
      this.snapshotSessions.set(id, session);
      dedup = [...snapshot.dedup];
    }
    session.lastUsedMs = Date.now();
    session.busy = true;
    const items: SnapshotItem[] = [];
    let bytes = 0;
    let done = false;
    try {
      // Bounded pages: at most 1 MiB of values (or one larger value) and 4096 items.
      while (items.length < 4096 && (bytes < MiB || items.length === 0)) {
        if (session.buffer.length === 0) {
          const next = await session.iterator.next();
          if (next.done) {
            done = true;
            break;
          }
          session.buffer.push(...next.value);
          continue;
        }
        const item = session.buffer.shift()!;
        items.push(item);
        bytes += item.key.length + item.value.length;
      }
    } catch (err) {
      done = true; // a failed read ends the session: the learner starts over
      // S13: a corrupt record is never shipped; the learner learns from the next primary.
      throw isCorruptRecord(err) ? this.onCorruptRead(p, err) : err;
    } finally {
      session.busy = false;
      session.lastUsedMs = Date.now();
      if (done) {
        this.snapshotSessions.delete(id);
        await session.snapshot.close();
      }
    }
    return { session: id, applied: session.snapshot.applied, dedup, items, done };
  }

  private async serveRead(p: PartitionId, requestId: number, key: Uint8Array): Promise<void> {
    const w = this.waiters.get(requestId);
    if (!w) return;
    this.waiters.delete(requestId);
    // S13: a read queued before the replica found the partition corrupt is not served from it.
    if (this.replicas.get(p)?.corrupt !== undefined) return w.reject(new NotPrimaryError(`${this.nodeId} found partition ${p} corrupt (S13) and no longer serves it`));
    try {
      const v = await this.backend.get(p, key);
      if (this.replicas.get(p)?.corrupt !== undefined) throw new NotPrimaryError(`${this.nodeId} found partition ${p} corrupt (S13) and no longer serves it`);
      w.resolve(v ? { found: true, value: v.value, version: v.version } : { found: false });
    } catch (err) {
      w.reject(isCorruptRecord(err) ? this.onCorruptRead(p, err) : (err as Error));
    }
  }

  private async confirmWithNameserver(p: PartitionId, round: number, epoch: number): Promise<void> {
    const life = this.life;
    try {
      const r = confirmEpochReply.decode(await this.nameserverCall({ t: 'confirmEpoch', p, epoch }));
      if (r.ok && r.value.current && life === this.life) this.step(p, { kind: 'nameserverConfirmed', round, epoch: epoch as never });
    } catch (err) {
      this.log.warn({ partition: p, err: (err as Error).message }, 'cannot confirm the epoch with the nameserver; reads wait');
    }
  }

  private onBatchDone(done: BatchDone): void {
    for (const d of done.result.deletes) {
      this.deleteResults.set(`${d.partition}:${d.seq}`, d.existed);
      // Oldest first: every waiter of a delete is answered right after its apply is durable.
      if (this.deleteResults.size > MAX_DELETE_RESULTS) this.deleteResults.delete(this.deleteResults.keys().next().value!);
    }
    for (const { partition, writeId } of done.writeIds) this.step(partition, { kind: 'persisted', writeId });
  }

  private newWriter(): BatchWriter {
    const life = this.life;
    return new BatchWriter(
      this.backend,
      (d) => {
        if (life === this.life) this.onBatchDone(d);
      },
      (err) => {
        if (err instanceof InvariantViolation) return this.onInvariantViolation(err);
        this.onStorageFailure(err, life);
      },
    );
  }

  /**
   * A batch broke a backend precondition: a bug in the core or this driver, not a storage
   * failure. STYLE §3: broken invariants crash, loudly (a restart reloads from the backend).
   */
  private onInvariantViolation(err: InvariantViolation): void {
    this.log.fatal({ err: err.message }, 'storage precondition violated; stopping so no replica acts on state the backend does not hold');
    process.exitCode = 70;
    setImmediate(() => process.exit(70));
  }

  /**
   * A storage write failed (or the backend reports itself unusable): go unhealthy at once,
   * then reload in place (file header). `life` is the life the failure belongs to; a second
   * report of the same failure does nothing.
   */
  private onStorageFailure(err: Error, life: number): void {
    if (life !== this.life || this.closed || this.health.state !== 'healthy') return;
    this.life += 1;
    this.health = { state: 'unhealthy', reason: err.message, sinceMs: Date.now(), attempts: 0 };
    this.failedIncarnation = this.incarnation;
    this.log.error({ err: err.message, backend: this.backend.kind }, 'storage failed: unhealthy; no replica acts on state the backend may not hold; reopening it with backoff');
    // Every replica core, and everything it was waiting for, is dropped: their state may
    // run ahead of what the backend holds. They are rebuilt from the backend on reload.
    this.replicas.clear();
    this.recoveries.clear();
    this.recoveredLogs.clear();
    this.recoveredDedup.clear();
    this.dirty.clear();
    this.deleteResults.clear();
    const waiters = [...this.waiters.values()];
    this.waiters.clear();
    for (const w of waiters) {
      // S9: a write may already be on other replicas (or in the failed batch): unknown.
      w.reject(w.write ? new OutcomeUnknownError(`storage of ${this.nodeId} failed before the write was acknowledged: ${err.message}`) : new UnavailableError(`storage unavailable on ${this.nodeId}: ${err.message}`));
    }
    void this.closeIdleSnapshotSessions(0);
    // §4, issue 9: tell the nameserver now, so it fails our partitions over at once (a
    // heartbeat in flight at this moment leaves it to the next tick, heartbeatMs later).
    void this.heartbeat();
    // Failed again soon after recovering: go on with the backoff where it ended.
    const firstDelayMs = Date.now() - this.recoveredMs < RECOVER_STABLE_MS ? this.recoveredDelayMs : RECOVER_FIRST_MS;
    void this.reloadStorage(this.life, firstDelayMs);
  }

  /** Reopens the backend with bounded exponential backoff, then reloads as a restart would. */
  private async reloadStorage(life: number, firstDelayMs: number): Promise<void> {
    let delayMs = firstDelayMs;
    // The first attempt waits too when this failure continues an earlier one's backoff.
    if (firstDelayMs > RECOVER_FIRST_MS) await new Promise((r) => setTimeout(r, firstDelayMs).unref());
    let old: Backend | undefined = this.backend;
    const closingKind = this.backend.kind;
    for (let attempt = 1; attempt <= RECOVER_MAX_ATTEMPTS; attempt++) {
      if (this.closed || life !== this.life) return;
      if (this.health.state === 'unhealthy') this.health = { ...this.health, attempts: attempt };
      let opened: Backend | undefined;
      try {
        if (old) {
          const closing = old;
          old = undefined;
          await closing.close().catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'closing the failed backend failed'));
        }
        checkDataDirNotFull(closingKind, this.cfg.dataDir, MIN_FREE_BYTES_TO_REOPEN);
        opened = await this.reopen();
        if (this.closed) {
          await opened.close();
          return;
        }
        this.backend = opened;
        this.writer = this.newWriter();
        await this.loadLogs();
        // S4, S7: a reload is a restart; peers and the nameserver must see a new incarnation.
        this.incarnation = randomBytes(8).toString('hex');
        this.log.info({ attempt, incarnation: this.incarnation, partitions: this.recoveries.size, ...freeSpaceOf(this.backend.kind, this.cfg.dataDir) }, 'backend reopened; registering again');
        this.recoveredDelayMs = Math.min(delayMs * 2, RECOVER_MAX_MS);
        await this.register();
        return;
      } catch (err) {
        this.log.warn({ attempt, retryInMs: delayMs, err: (err as Error).message }, 'storage still unavailable');
        if (opened && this.health.state !== 'healthy') {
          old = opened; // closed before the next attempt
          this.recoveries.clear();
          this.recoveredLogs.clear();
          this.recoveredDedup.clear();
        }
        if (this.health.state === 'healthy') return; // registered, then failed again: a new recovery runs
      }
      // Unref: the backoff alone must not keep a closed server's process alive.
      await new Promise((r) => setTimeout(r, delayMs).unref());
      delayMs = Math.min(delayMs * 2, RECOVER_MAX_MS);
    }
    this.log.fatal({ attempts: RECOVER_MAX_ATTEMPTS }, 'storage did not come back; exiting');
    process.exitCode = 70;
    setImmediate(() => process.exit(70));
  }

  private sendPeer(to: NodeId, message: PeerMessage): void {
    const address = this.addresses.get(to);
    if (!address) {
      this.log.warn({ to }, 'no address for peer yet; message dropped (it will be re-sent)');
      return;
    }
    this.pool.get(address, 'storage').send({ t: 'peer', from: this.nodeId, addr: this.advertised, m: message, ...tokenField(this.cfg.clusterToken) });
  }

  private unauthorizedPeerLoggedMs = 0;

  private onPeerFrame(body: unknown): void {
    const d = peerEnvelope.decode(body);
    if (!d.ok) {
      this.log.warn({ reason: d.reason }, 'malformed peer message dropped');
      return;
    }
    if (!tokenMatches(this.cfg.clusterToken, d.value.token)) {
      // DESIGN §12: one-way, so nobody to answer; logged at most every 10 s.
      const now = Date.now();
      if (now - this.unauthorizedPeerLoggedMs >= 10_000) {
        this.unauthorizedPeerLoggedMs = now;
        this.log.warn({ from: d.value.from, addr: d.value.addr }, 'peer message with a wrong or missing cluster token dropped');
      }
      return;
    }
    const message = toPeerMessage(d.value.m);
    if (!this.addresses.has(toNodeId(d.value.from))) this.addresses.set(toNodeId(d.value.from), d.value.addr);
    // Before registering we do not know the cluster's settings (S8): the primary will re-send.
    if (this.partitions === 0 || message.partition >= this.partitions) return;
    if (this.health.state !== 'healthy') return; // no replica until the reload; the sender re-sends
    this.step(message.partition, { kind: 'peer', from: toNodeId(d.value.from), message });
  }

  // ---- client calls ----

  private async onCall(body: unknown, _ctx: CallContext): Promise<unknown> {
    const d = storageRequest.decode(body);
    if (!d.ok) throw new MalformedMessageError(`malformed request: ${d.reason}`);
    const req = d.value;
    if (!tokenMatches(this.cfg.clusterToken, req.token)) throw new UnauthorizedError(unauthorizedMessage(`storage server ${this.nodeId}`));
    if (this.health.state !== 'healthy' && req.t !== 'stats') throw new UnavailableError(`storage unavailable on ${this.nodeId}: ${this.health.reason}`);
    switch (req.t) {
      case 'put':
        this.checkKey(req.key, req.p);
        if (req.value.length > this.limits.maxValueBytes) throw new ValueTooLargeError(req.value.length, this.limits.maxValueBytes);
        return this.write(req.p, { kind: 'put', key: req.key, value: req.value }, tagOf(req));
      case 'del':
        this.checkKey(req.key, req.p);
        return this.write(req.p, { kind: 'delete', key: req.key }, tagOf(req));
      case 'get':
        this.checkKey(req.key, req.p);
        return this.request(req.p, false, (requestId) => ({ kind: 'clientRead', requestId, key: req.key }));
      case 'scan': {
        this.checkPartition(req.p);
        const r = this.replicas.get(partitionId(req.p));
        if (!r?.serving) throw new NotPrimaryError(`${this.nodeId} is not the serving primary of partition ${req.p}`);
        let page;
        try {
          page = await this.backend.scan(partitionId(req.p), { afterKey: req.after, limit: Math.min(req.limit, this.limits.maxScanPageKeys) });
        } catch (err) {
          throw isCorruptRecord(err) ? this.onCorruptRead(partitionId(req.p), err) : err;
        }
        return page.nextAfterKey ? { keys: page.keys, next: page.nextAfterKey } : { keys: page.keys };
      }
      case 'dump':
        return this.dump(req.limit, req.after, req.maxBytes);
      case 'snapshotRead':
        this.checkPartition(req.p);
        return this.snapshotRead(partitionId(req.p), req.epoch, req.session);
      case 'stats':
        return { nodeId: this.nodeId, keys: this.keyCount, health: this.health, incarnation: this.incarnation, partitions: [...this.replicas.values()].map((r) => r.progress()) };
    }
  }

  private checkPartition(p: number): void {
    if (this.partitions === 0) throw new NotPrimaryError(`${this.nodeId} has not joined the cluster yet`);
    if (p >= this.partitions) throw new InvalidArgumentError(`partition ${p} does not exist (the cluster has ${this.partitions})`);
  }

  private checkKey(key: Uint8Array, p: number): void {
    if (key.length === 0) throw new KeyEmptyError();
    if (key.length > this.limits.maxKeyBytes) throw new KeyTooLargeError(key.length, this.limits.maxKeyBytes);
    this.checkPartition(p);
    if (partitionOf(key, this.partitions) !== p) throw new InvalidArgumentError(`key belongs to partition ${partitionOf(key, this.partitions)}, not ${p}`);
  }

  private write(p: number, op: Op, tag: RequestTag | undefined): Promise<unknown> {
    return this.request(p, true, (requestId) => (tag ? { kind: 'clientWrite', requestId, op, tag } : { kind: 'clientWrite', requestId, op }));
  }

  private request(p: number, write: boolean, input: (requestId: number) => ReplicaInput): Promise<unknown> {
    const partition = partitionId(p);
    if (!this.replicas.has(partition)) return Promise.reject(new NotPrimaryError(`${this.nodeId} holds no replica of partition ${p}`));
    const requestId = this.nextRequestId++;
    return new Promise((resolve, reject) => {
      this.waiters.set(requestId, { resolve, reject, partition, write });
      this.step(partition, input(requestId));
    });
  }

  /** One page of this server's keys (dump.ts): at most `limit` keys and maxDumpPageBytes. */
  private async dump(limit: number, after: DumpCursor | undefined, maxBytes: number | undefined): Promise<unknown> {
    // Only replicas this server holds as a member: a removed replica's leftovers do not count.
    const held = [...this.replicas.values()].filter((r) => r.progress().role !== 'inactive').map((r) => r.partition).sort((a, b) => a - b);
    let keyCount = 0;
    for (const p of held) keyCount += await this.backend.count(p);
    if (limit === 0) return { nodeId: this.nodeId, keyCount, keys: [], truncated: keyCount > 0 };
    // A corrupt value met while listing is reported like any corrupt read (S13).
    const scan: Pick<Backend, 'scan'>['scan'] = (p, options) =>
      this.backend.scan(p, options).catch((err: unknown) => {
        throw isCorruptRecord(err) ? this.onCorruptRead(p, err) : err;
      });
    const page = await dumpPage({ scan }, held, {
      ...(after === undefined ? {} : { after }),
      maxKeys: Math.min(limit, this.limits.maxScanPageKeys),
      maxBytes: Math.min(maxBytes ?? this.limits.maxDumpPageBytes, this.limits.maxDumpPageBytes),
      scanPageKeys: this.limits.maxScanPageKeys,
    });
    return { nodeId: this.nodeId, keyCount, keys: page.keys, truncated: page.next !== undefined, ...(page.next === undefined ? {} : { next: page.next }) };
  }
}

function tagOf(req: { cid?: string; rs?: number }): RequestTag | undefined {
  return req.cid !== undefined && req.rs !== undefined ? { clientId: req.cid, requestSeq: req.rs } : undefined;
}
