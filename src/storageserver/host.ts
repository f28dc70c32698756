/**
 * The storage server's host (issue 10): everything the storage server decides outside the
 * replica core (src/core/replica), as a pure state machine in the style of etcd-io/raft's
 * RawNode + Ready. It is shared by the process (server.ts: sockets, backend, timers) and by
 * the simulator (test/sim/storage-node.ts: simulated network, disk and clock): the logic
 * either could get wrong lives here, once.
 *
 * Inputs are method calls (registered, configurations, client calls, peer messages, batch
 * done / failed, nameserver answers, end of turn, tick); each returns the effects to run, in
 * order. No I/O, no timers, no randomness: the clock and the incarnation ids are injected.
 *
 * What it owns:
 * - the replicas of this node, built from the recovered state (S4: inactive until configured);
 * - the waiters of client calls, by an opaque handle of the driver (`H`);
 * - group commit (DESIGN §8): `persist` ops accumulate while one batch is being written; a
 *   later output not marked immediate runs once every op its partition enqueued before it is
 *   durable (the ordering contract of the core), in the order it was produced;
 * - the dirty set: every partition that saw input gets a `flush` at the end of the turn;
 * - delete results (`existed`), joined with the replies of the entries that wrote them;
 * - health: a failed batch may or may not be durable and the cores already act on it, so the
 *   host drops every core and answers every waiter at once (S9: a write's outcome is unknown),
 *   and is healthy again only once the driver reopened storage, reloaded and registered.
 *   Work started in an older `life` is ignored when it completes.
 */
import {
  DstoreError,
  errorFromWire,
  type WireError,
  InvalidArgumentError,
  KeyEmptyError,
  KeyTooLargeError,
  NotPrimaryError,
  OutcomeUnknownError,
  UnavailableError,
  ValueTooLargeError,
} from '../core/errors.js';
import type { Limits } from '../core/limits.js';
import { partitionOf } from '../core/partitioning.js';
import { isReserved, RESERVED_OVERHEAD_BYTES } from '../core/txn-keys.js';
import type { PeerMessage } from '../core/replica/messages.js';
import type { BatchOp, DedupRecord, LogPosition, PartitionMeta } from '../core/replica/ops.js';
import { refuseClient } from '../core/replica/client.js';
import { Replica, type ReplicaInput, type ReplicaOutput, type ReplicaRecovery } from '../core/replica/replica.js';
import {
  assertNever,
  type Config,
  type DataOp,
  type Epoch,
  InvariantViolation,
  type LogEntry,
  type NodeId,
  type PartitionId,
  type RequestTag,
  type Seq,
  type WriteCondition,
  expired,
  partitionId,
} from '../core/types.js';
import { ExpiryIndex } from './expiry.js';
import { MAX_REASON_CHARS, RegisterLoop } from './registration.js';

/** Recent deletes' `existed` answers kept for their waiters (a retry may wait on the same entry). */
export const MAX_DELETE_RESULTS = 100_000;
/**
 * Lazy ops (applies, truncation) queued alone are written after this long if no other batch
 * takes them first: long enough that the next write's append usually carries them.
 */
export const LAZY_BATCH_MS = 10;
/** §16: deletes of expired keys a storage server starts per tick, at most. */
export const EXPIRE_PER_TICK = 64;
/** Reopening a failed backend: first retry after this, doubling up to RECOVER_MAX_MS. */
export const RECOVER_FIRST_MS = 100;
export const RECOVER_MAX_MS = 5000;
/** After this many failed reopen attempts in a row (hours at RECOVER_MAX_MS) the server gives up. */
export const RECOVER_MAX_ATTEMPTS = 10_000;
/**
 * A failure within this long of recovering from the last one continues its backoff instead
 * of starting over, so a disk that fails again at the first writes after a reopen (still
 * full) is not reopened ten times a second (issue 9).
 */
export const RECOVER_STABLE_MS = 30_000;

export type StorageHealth =
  | { readonly state: 'healthy' }
  | { readonly state: 'unhealthy'; readonly reason: string; readonly sinceMs: number; readonly attempts: number };

/** A client call the host decides on (decoded and authorized by the driver). */
export type ClientCall =
  | {
      readonly t: 'put';
      readonly p: number;
      readonly key: Uint8Array;
      readonly value: Uint8Array;
      readonly cid?: string;
      readonly rs?: number;
      /** §16: only if the key is at this version (0: absent). */
      readonly ifv?: number;
      /** §16: expires this many ms after this primary logs it. */
      readonly ttl?: number;
      /** §16: more keys of the partition that must be at these versions (0: absent). */
      readonly ifk?: ReadonlyArray<{ readonly key: Uint8Array; readonly v: number }>;
      /** §16: a transaction's own write (docs/transactions.md): may name reserved keys; not refused for an intent. */
      readonly sys?: boolean;
    }
  | {
      readonly t: 'del';
      readonly p: number;
      readonly key: Uint8Array;
      readonly cid?: string;
      readonly rs?: number;
      readonly ifv?: number;
      readonly ifk?: ReadonlyArray<{ readonly key: Uint8Array; readonly v: number }>;
      readonly sys?: boolean;
    }
  | { readonly t: 'get'; readonly p: number; readonly key: Uint8Array; readonly fast?: boolean };

export type CallResult =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly error: DstoreError };

/** A question for the nameserver; its answer comes back through `answered`. */
export type NameserverAsk =
  | { readonly t: 'confirmEpoch'; readonly p: PartitionId; readonly epoch: Epoch; readonly round: number }
  | {
      readonly t: 'promote';
      readonly p: PartitionId;
      readonly epoch: Epoch;
      readonly learner: NodeId;
      readonly learnerIncarnation: string;
      readonly attempt: number;
      readonly delayMs: number;
    }
  | { readonly t: 'removeSecondary'; readonly p: PartitionId; readonly epoch: Epoch; readonly secondary: NodeId };

export type NameserverAnswer =
  | { readonly t: 'confirmEpoch'; readonly current: boolean }
  | { readonly t: 'promote' | 'removeSecondary'; readonly config: Config };

/** The request that asks the nameserver `ask` (the driver adds the token). */
export function askRequest(ask: NameserverAsk): Record<string, unknown> {
  switch (ask.t) {
    case 'confirmEpoch':
      return { t: ask.t, p: ask.p, epoch: ask.epoch };
    case 'promote':
      return { t: ask.t, p: ask.p, epoch: ask.epoch, learner: ask.learner, learnerIncarnation: ask.learnerIncarnation };
    case 'removeSecondary':
      return { t: ask.t, p: ask.p, epoch: ask.epoch, secondary: ask.secondary };
    default:
      return assertNever(ask);
  }
}

/** The host's part of a register request. */
export interface RegisterRequest {
  readonly t: 'register';
  readonly nodeId: NodeId;
  readonly incarnation: string;
  /** S4: false for a node that promises nothing durable, or whose store holds no partition. */
  readonly durable: boolean;
  readonly activePartitions: PartitionId[];
}

/** The host's part of a heartbeat: progress when healthy; the failure (and no progress) when not. */
export interface HeartbeatRequest {
  readonly t: 'heartbeat';
  readonly nodeId: NodeId;
  readonly incarnation: string;
  readonly uptimeMs: number;
  readonly progress: ReturnType<Replica['progress']>[];
  readonly unhealthy?: string;
}

export type RegisterAnswer = {
  readonly clusterId?: string;
  readonly live?: { readonly minWriteReplicas: number; readonly deadAfterMs: number };
  readonly partitions: number;
  readonly minWriteReplicas: number;
  readonly deadAfterMs?: number;
};
export type HeartbeatAnswer = { readonly kind: 'register' } | { readonly kind: 'ok'; readonly configs: Config[] };

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'fatal';

export type HostEffect<H> =
  /**
   * Call `startBatch()` once the current turn's synchronous work is done (a microtask); with
   * `lazyMs`, call `startBatch(true)` after that long (only lazy ops are queued).
   */
  | { readonly kind: 'scheduleBatch'; readonly lazyMs?: number }
  /** Write one atomic, durable batch; then `batchDone(life, batch, deletes)` or `batchFailed(life, err)`. */
  | { readonly kind: 'writeBatch'; readonly life: number; readonly batch: number; readonly ops: readonly BatchOp[] }
  /** Call `endOfTurn()` after the other events of this turn. */
  | { readonly kind: 'scheduleFlush' }
  | { readonly kind: 'send'; readonly to: NodeId; readonly message: PeerMessage }
  | { readonly kind: 'answer'; readonly handle: H; readonly result: CallResult }
  /** Read `key` of `p`; then `readDone` or `readFailed`. */
  | { readonly kind: 'read'; readonly handle: H; readonly p: PartitionId; readonly key: Uint8Array }
  /**
   * §16: read `key` of `p` for the conditional write `token` (after the partition's earlier
   * writes); then `conditionRead(token, value)` or `conditionReadFailed(token, err, corrupt)`.
   */
  | {
      readonly kind: 'readForCondition';
      readonly token: number;
      readonly p: PartitionId;
      readonly keys: readonly Uint8Array[];
    }
  /**
   * §16: read `p`'s stored values that have an expiry (from a snapshot, in pages), passing
   * them to `expiryFound(life, p, items)`; every replica does after a load or snapshot install.
   */
  | { readonly kind: 'scanExpiry'; readonly life: number; readonly p: PartitionId }
  /** Find the dedup record of `clientId` in `p`; then `dedupRead` or `readFailed`. */
  | {
      readonly kind: 'readDedup';
      readonly handle: H;
      readonly p: PartitionId;
      readonly clientId: string;
      readonly seq: Seq;
    }
  | { readonly kind: 'ask'; readonly life: number; readonly ask: NameserverAsk }
  /** Call `retryAsk(life, ask)` after `afterMs`. */
  | { readonly kind: 'askLater'; readonly life: number; readonly afterMs: number; readonly ask: NameserverAsk }
  /**
   * S11: fetch a snapshot of `p` from `from`; ask `mayInstallSnapshot` before installing it;
   * then `snapshotInstalled` or `snapshotFailed`.
   */
  | {
      readonly kind: 'fetchSnapshot';
      readonly life: number;
      readonly p: PartitionId;
      readonly from: NodeId;
      readonly epoch: Epoch;
    }
  /**
   * S16: the applied state of `p` is at the digest entry `seq`: open a snapshot of it now
   * (before anything else of `p` is written), then call `digestCaptured(life, p, seq)` and
   * compute its digest from the snapshot, listing the entries of `buckets`.
   */
  | {
      readonly kind: 'captureDigest';
      readonly life: number;
      readonly p: PartitionId;
      readonly seq: Seq;
      readonly buckets: readonly number[];
    }
  /**
   * Storage failed: close snapshot sessions and drop what depends on the backend. (A
   * `reopen` follows, and an unhealthy `heartbeat` tells the nameserver at once.)
   */
  | { readonly kind: 'unhealthy'; readonly life: number; readonly reason: string }
  /**
   * After `afterMs`, unless `life` ended: open storage again; on success `loaded`, `reloaded`
   * and `register`, else `reopenFailed(life, attempt, err)`.
   */
  | { readonly kind: 'reopen'; readonly life: number; readonly attempt: number; readonly afterMs: number }
  /** Storage did not come back (RECOVER_MAX_ATTEMPTS failed reopens): the process exits. */
  | { readonly kind: 'gaveUp'; readonly reason: string }
  /**
   * Register: send `request` (the driver adds what only it knows: address, backend, limits,
   * token); then `registerAnswered(gen, reply)` or `registerFailed(gen, err)`.
   */
  | { readonly kind: 'register'; readonly gen: number; readonly request: RegisterRequest }
  /** Call `retryRegister(gen)` after `afterMs`. */
  | { readonly kind: 'registerLater'; readonly gen: number; readonly afterMs: number }
  /** Registered (healthy, configurations follow in heartbeat replies); the first one ends the start. */
  | { readonly kind: 'registered' }
  /** Registering cannot succeed (a refused token, a live holder of the node id): the start fails. */
  | { readonly kind: 'registerGaveUp'; readonly error: Error }
  /**
   * Heartbeat: send `request` (the driver adds the key count and token); then
   * `heartbeatAnswered(life, reply)` or `heartbeatFailed(err)`.
   */
  | { readonly kind: 'heartbeat'; readonly life: number; readonly request: HeartbeatRequest }
  /** A batch broke a backend precondition: a bug, not a storage failure (the process exits 70). */
  | { readonly kind: 'fatal'; readonly error: InvariantViolation }
  /** Call `deferred(life, p, input)` after the other events of this turn (mutation hooks only). */
  | { readonly kind: 'defer'; readonly life: number; readonly p: PartitionId; readonly input: ReplicaInput }
  | {
      readonly kind: 'log';
      readonly level: LogLevel;
      readonly fields: Record<string, unknown>;
      readonly message: string;
    };

/**
 * Deliberate bugs, to prove the simulator catches that kind of bug (mutation testing); all
 * off in the process.
 * - `ackBeforeDurable`: a storage write is reported durable as soon as it is queued;
 * - `unconfirmedReads`: a serving primary answers reads at once, without the confirmation round (§7);
 * - `serverDeleteReplies`: delete replies as server.ts once wrote them: the first reply for an
 *   entry consumes its `existed`, and a retried delete reads the dedup table before its apply
 *   is durable;
 * - `ackFailedBatch`: a batch that failed is treated as durable (its writes acknowledged)
 *   before the host goes unhealthy.
 */
export interface HostMutations {
  readonly ackBeforeDurable?: boolean;
  readonly ackFailedBatch?: boolean;
  readonly unconfirmedReads?: boolean;
  readonly serverDeleteReplies?: boolean;
}

/** Observation points for the simulator's checker and trace. */
export interface HostHooks {
  replicaCreated?(r: Replica): void;
  stepped?(r: Replica, input: ReplicaInput, out: readonly ReplicaOutput[]): void;
  stepThrew?(r: Replica, input: ReplicaInput, err: unknown): void;
}

export interface HostOptions {
  readonly nodeId: NodeId;
  readonly limits: Limits;
  /** The clock (ms): Date.now in the process, the simulated clock in the simulator. */
  readonly now: () => number;
  /** A fresh incarnation id: random in the process, deterministic in the simulator (S4, S7). */
  readonly newIncarnation: () => string;
  readonly resendAfterMs?: number;
  /** S4: whether this node's storage survives a crash (false: it registers as not durable). */
  readonly durable: boolean;
  readonly heartbeatMs: number;
  /** How logs and errors name the nameserver. */
  readonly nameserver: string;
  readonly mutations?: HostMutations;
  readonly hooks?: HostHooks;
}

/** A conditional write while its key's version is read: what the replica will be given. */
interface ConditionRead<H> {
  readonly handle: H;
  readonly partition: PartitionId;
  readonly op: DataOp;
  readonly tag: RequestTag | undefined;
  /** The keys and the versions they must be at; the op's key first. */
  readonly checks: ReadonlyArray<{ readonly key: Uint8Array; readonly ifVersion: number }>;
  /** §16: a transaction's own write (docs/transactions.md): not refused for its key's intent. */
  readonly sys: boolean;
  /** The replica's epoch and applied seq when the read was queued: the read sees at least that. */
  readonly epoch: Epoch;
  readonly atSeq: Seq;
  /** §16: the primary's own delete of an expired key: only if the value read is past its expiry. */
  readonly expiry?: boolean;
}

interface Waiter<H> {
  readonly handle: H;
  readonly partition: PartitionId;
  /** A write's outcome is unknown once storage failed (S9); a read simply failed. */
  readonly write: boolean;
}

/**
 * Group commit (DESIGN §8), without the backend: storage ops from every partition accumulate
 * while the previous batch is being written, then go as ONE batch. Each batch has a number;
 * `after(partition, fn)` runs `fn` once every op that partition enqueued so far is durable,
 * in the order `after` was called — the ordering contract of the replica core. Used by the
 * host and by writer.ts.
 *
 * Lazy ops (applies, log truncation: nothing waits for them) do not ask for a batch of their
 * own: they ride with the next one, which an eager op or an `after` waiting on them starts,
 * or else a timer (`lazyMs`). So a write costs each replica one synced transaction (its
 * append, with the previous write's apply), not two.
 */
/** The key under which `afterAll`'s waiters queue (no partition has it: ids are >= 0). */
const ALL_PARTITIONS = -1 as PartitionId;

export class GroupCommit {
  private ops: BatchOp[] = [];
  private writeIds: Array<{ partition: PartitionId; writeId: number }> = [];
  private inFlight: { batch: number; writeIds: Array<{ partition: PartitionId; writeId: number }> } | undefined;
  private openBatch = 1;
  private committedBatch = 0;
  /** Whether something waits for the open batch: an eager op or an `after`. */
  private eager = false;
  private readonly lastBatchOf = new Map<PartitionId, number>();
  private readonly waiting = new Map<PartitionId, Array<{ batch: number; fn: () => void }>>();
  /** Whether the host asked its driver to start a batch (scheduleBatch) that has not run yet. */
  scheduled = false;
  /** Whether the host asked for the lazy timer (scheduleBatch with `lazyMs`) that has not fired yet. */
  lazyScheduled = false;

  /** Whether something is queued or being written. */
  get busy(): boolean {
    return this.inFlight !== undefined || this.ops.length > 0;
  }

  /** The batch being written, if any. */
  get writing(): number | undefined {
    return this.inFlight?.batch;
  }

  /** A batch should start now: something waits on what is queued, and none is being written. */
  get wantsStart(): boolean {
    return this.inFlight === undefined && this.ops.length > 0 && this.eager;
  }

  /** Only lazy ops are queued and none is being written: they wait for the next batch or the timer. */
  get lazyOnly(): boolean {
    return this.inFlight === undefined && this.ops.length > 0 && !this.eager;
  }

  /** Queues ops; `lazy`: nothing waits for them (see the class comment). */
  enqueue(partition: PartitionId, ops: readonly BatchOp[], writeId?: number, lazy = false): void {
    for (const op of ops) this.ops.push(op);
    if (writeId !== undefined) this.writeIds.push({ partition, writeId });
    this.lastBatchOf.set(partition, this.openBatch);
    if (!lazy) this.eager = true;
  }

  /** Runs `fn` after everything `partition` enqueued so far is durable. */
  after(partition: PartitionId, fn: () => void): void {
    const batch = this.lastBatchOf.get(partition) ?? 0;
    const queue = this.waiting.get(partition);
    if (!queue && batch <= this.committedBatch) return fn();
    if (batch === this.openBatch) this.eager = true;
    if (queue) queue.push({ batch, fn });
    else this.waiting.set(partition, [{ batch, fn }]);
  }

  /** Runs `fn` after everything enqueued so far, by every partition, is durable. */
  afterAll(fn: () => void): void {
    const batch = this.ops.length > 0 ? this.openBatch : (this.inFlight?.batch ?? this.committedBatch);
    const queue = this.waiting.get(ALL_PARTITIONS);
    if (!queue && batch <= this.committedBatch) return fn();
    if (batch === this.openBatch) this.eager = true;
    if (queue) queue.push({ batch, fn });
    else this.waiting.set(ALL_PARTITIONS, [{ batch, fn }]);
  }

  /** The next batch to write (what accumulated), unless one is being written or nothing did. */
  start(): { batch: number; ops: BatchOp[] } | undefined {
    if (this.inFlight || this.ops.length === 0) return undefined;
    const batch = this.openBatch++;
    const ops = this.ops;
    this.inFlight = { batch, writeIds: this.writeIds };
    this.ops = [];
    this.writeIds = [];
    this.eager = false;
    return { batch, ops };
  }

  /** The batch being written is durable: the write ids enqueued with its ops. Then `release`. */
  committed(): Array<{ partition: PartitionId; writeId: number }> {
    const f = this.inFlight!;
    this.committedBatch = f.batch;
    this.inFlight = undefined;
    return f.writeIds;
  }

  /** Runs what waited for the batches now durable. */
  release(): void {
    for (const [partition, queue] of this.waiting) {
      // The queue stays registered while its callbacks run, so an `after` they call queues behind.
      while (queue.length > 0 && queue[0]!.batch <= this.committedBatch) queue.shift()!.fn();
      if (queue.length === 0) this.waiting.delete(partition);
    }
  }
}

/** S3: the epoch is the persisted one, else the log's; S13: a corrupt partition relearns. */
export function recoveryOf(
  state: {
    readonly meta: PartitionMeta | null;
    readonly applied: LogPosition;
    readonly logBase: LogPosition;
    readonly logLast: LogPosition;
    readonly corrupt?: string;
  },
  entries: readonly LogEntry[],
  dedup: readonly DedupRecord[],
  intents: readonly Uint8Array[] = [],
): ReplicaRecovery {
  const recovery = {
    epoch: state.meta?.epoch ?? state.logLast.epoch,
    config: state.meta?.config ?? null,
    applied: state.applied,
    logBase: state.logBase,
    entries,
    dedup,
    intents,
  };
  const corrupt = state.corrupt ?? state.meta?.corrupt;
  return corrupt === undefined ? recovery : { ...recovery, entries: [], dedup: [], corrupt };
}

export class StorageHost<H> {
  readonly nodeId: NodeId;
  /** New at every start and every reload after a storage failure (S4, S7). */
  incarnation: string;
  /** Bumped by every storage failure: async work of an older life must not step a replica. */
  life = 0;
  health: StorageHealth = { state: 'healthy' };
  /**
   * The incarnation whose storage failed: unhealthy heartbeats name it, never the one a
   * reload is registering, so one sent while the reload registers cannot mark the new
   * incarnation failed at the nameserver.
   */
  failedIncarnation = '';
  partitions = 0;
  minWriteReplicas = 1;
  /** §4: the nameserver's --dead-after-ms; a primary asks to remove a secondary silent that long. */
  removeSilentAfterMs = 0;
  private readonly replicaMap = new Map<PartitionId, Replica>();
  private readonly recoveries = new Map<PartitionId, ReplicaRecovery>();
  private readonly waiters = new Map<number, Waiter<H>>();
  private readonly deleteResults = new Map<string, boolean>();
  private readonly dirty = new Set<PartitionId>();
  private flushScheduled = false;
  private barrier = new GroupCommit();
  private nextRequestId = 1;
  /** §16: which keys expire when (a hint; see expiry.ts). */
  private readonly expiry = new ExpiryIndex();
  /** §16: conditional writes waiting for the read of their key's version (`readForCondition`). */
  private readonly conditionReads = new Map<number, ConditionRead<H>>();
  /** When storage last became healthy again after a failure, and the backoff it ended at. */
  private recoveredMs = 0;
  private recoveredDelayMs = RECOVER_FIRST_MS;
  /** The pause before the next reopen attempt while unhealthy (doubling up to RECOVER_MAX_MS). */
  private reopenDelayMs = RECOVER_FIRST_MS;
  /** Storage failed and was not reloaded yet: a registration now would bring back no replica. */
  private awaitingReload = false;
  private out: Array<HostEffect<H>> = [];
  private readonly mutations: HostMutations;
  private readonly startedMs: number;
  /** Whether the store held any partition when it was (re)opened (S4, see `loaded`). */
  private storeHoldsData = false;
  /** The register attempt loop running, if any; `registerGen` numbers the loops. */
  private registering: RegisterLoop | undefined;
  private registerGen = 0;
  /** The heartbeat in flight, if any, and what it said. */
  private heartbeatSent: 'healthy' | 'unhealthy' | undefined;
  /** The last healthy heartbeat failed (logged once until one gets through). */
  private nameserverDown = false;

  /**
   * `internalHandle`: the handle the host's own requests are answered on (§16: the primary's
   * deletes of expired keys); the driver ignores its answers. None: keys are not expired.
   */
  constructor(
    private readonly opts: HostOptions,
    private readonly internalHandle?: H,
  ) {
    this.nodeId = opts.nodeId;
    this.incarnation = opts.newIncarnation();
    this.mutations = opts.mutations ?? {};
    this.startedMs = opts.now();
  }

  get replicas(): ReadonlyMap<PartitionId, Replica> {
    return this.replicaMap;
  }

  /** Whether a registration now would make this node healthy (false between a storage failure and its reload). */
  get mayRegister(): boolean {
    return !this.awaitingReload;
  }

  get recoveredPartitions(): number {
    return this.recoveries.size;
  }

  /** Partitions this node was ever active for (S4: the nameserver must not count the others). */
  activePartitions(): PartitionId[] {
    return [...this.replicaMap.values()].filter((r) => r.activatedOnce).map((r) => r.partition);
  }

  progress(): ReturnType<Replica['progress']>[] {
    return [...this.replicaMap.values()].map((r) => r.progress());
  }

  // ---- lifecycle ----

  /** The state read from storage at start or at a reload (replaces any earlier one). */
  /** `lostLog`: why the store lost its replica log at open (then it holds nothing it may vouch for, S4). */
  loaded(recoveries: ReadonlyMap<PartitionId, ReplicaRecovery>, lostLog?: string): void {
    // S4: a store that holds no partition at all (a brand-new server, or one whose Redis was
    // flushed or whose lmdb files were deleted while its data dir kept its node id) holds
    // nothing it could have acknowledged: this incarnation registers as not durable, so the
    // nameserver makes it relearn every partition it was a member of instead of trusting it
    // as a secondary (which S5 could elect primary with an empty log).
    this.storeHoldsData = recoveries.size > 0 && lostLog === undefined;
    if (lostLog !== undefined)
      this.logAt('warn', { reason: lostLog }, 'registering as not durable: every partition is relearned (S4, S13)');
    this.recoveries.clear();
    for (const [p, r] of recoveries) this.recoveries.set(p, r);
    // §16: which stored values expire: read once in the background; applies keep it current.
    this.expiry.clear();
    for (const [p, r] of recoveries)
      if (r.corrupt === undefined) this.out.push({ kind: 'scanExpiry', life: this.life, p });
  }

  /** §16: values of `p` with an expiry, found by a `scanExpiry` effect. */
  expiryFound(
    life: number,
    p: PartitionId,
    items: ReadonlyArray<{ key: Uint8Array; version: number; expiresAt: number }>,
  ): void {
    if (life === this.life) this.expiry.found(p, items);
  }

  /**
   * §16: a serving primary logs the deletes of its keys past their expiry, at most
   * EXPIRE_PER_TICK a tick (mass expiry is spread over ticks). Each goes as a conditional
   * delete: the key is read again and deleted only if still at the version that expired.
   */
  private expireDue(nowMs: number): void {
    if (this.internalHandle === undefined || this.health.state !== 'healthy') return;
    let budget = EXPIRE_PER_TICK;
    for (const [p, r] of this.replicaMap) {
      if (budget <= 0) return;
      if (!r.serving || r.corrupt !== undefined) continue;
      for (const d of this.expiry.due(p, nowMs, budget)) {
        budget--;
        const checks = [{ key: d.key, ifVersion: d.version }];
        this.readForCondition(p, { kind: 'delete', key: d.key }, undefined, checks, this.internalHandle, {
          expiry: true,
        });
      }
    }
  }

  /** A reload opened storage again: a new writer, and (S4, S7) a new incarnation. */
  reloaded(): void {
    const delayMs = this.reopenDelayMs;
    this.awaitingReload = false;
    this.registering = undefined; // a loop begun before the reload would register the old incarnation
    this.barrier = new GroupCommit();
    this.incarnation = this.opts.newIncarnation();
    this.recoveredDelayMs = Math.min(delayMs * 2, RECOVER_MAX_MS);
  }

  // ---- registering and heartbeats ----

  /** Registers (S4: again after a reload, or when a heartbeat reply asks), unless a loop already runs. */
  register(): Array<HostEffect<H>> {
    this.startRegistering();
    return this.drain();
  }

  private startRegistering(): void {
    if (this.registering) return;
    this.registering = new RegisterLoop(++this.registerGen, this.opts.now());
    this.sendRegister();
  }

  private sendRegister(): void {
    const loop = this.registering!;
    this.out.push({
      kind: 'register',
      gen: loop.gen,
      request: {
        t: 'register',
        nodeId: this.nodeId,
        incarnation: this.incarnation,
        durable: this.opts.durable && this.storeHoldsData,
        activePartitions: this.activePartitions(),
      },
    });
  }

  /** The delay of a `registerLater` ran out. */
  retryRegister(gen: number): Array<HostEffect<H>> {
    if (this.registering?.gen === gen) this.sendRegister();
    return this.drain();
  }

  registerFailed(gen: number, err: Error): Array<HostEffect<H>> {
    const loop = this.registering;
    if (loop?.gen !== gen) return [];
    const verdict = loop.failed(err, this.opts.now(), {
      nodeId: this.nodeId,
      nameserver: this.opts.nameserver,
      heartbeatMs: this.opts.heartbeatMs,
    });
    if (verdict.log) this.logAt(verdict.log.level, verdict.log.fields, verdict.log.message);
    if ('giveUp' in verdict) {
      this.registering = undefined;
      this.out.push({ kind: 'registerGaveUp', error: verdict.giveUp });
    } else this.out.push({ kind: 'registerLater', gen, afterMs: verdict.retryAfterMs });
    return this.drain();
  }

  /** Registered: the cluster's settings; healthy again after a reload; a heartbeat at once. */
  registerAnswered(gen: number, reply: RegisterAnswer): Array<HostEffect<H>> {
    const loop = this.registering;
    if (loop?.gen !== gen) return [];
    this.registering = undefined;
    // A registration that storage failed under (say, one a heartbeat asked for) is not a
    // reload: healthy now would build empty replicas over a backend that holds their logs.
    if (this.awaitingReload) return [];
    const nowMs = this.opts.now();
    this.logAt(
      'info',
      {
        clusterId: reply.clusterId,
        partitions: reply.partitions,
        incarnation: this.incarnation,
        attempts: loop.attempt,
        waitedMs: nowMs - loop.startedMs,
      },
      'registered with the nameserver',
    );
    this.partitions = reply.partitions;
    this.minWriteReplicas = reply.minWriteReplicas;
    this.removeSilentAfterMs = reply.deadAfterMs ?? 0;
    for (const r of this.replicaMap.values()) r.setMinWriteReplicas(reply.minWriteReplicas);
    if (this.health.state !== 'healthy') {
      this.logAt(
        'info',
        { unhealthyMs: nowMs - this.health.sinceMs },
        'storage healthy again; replicas reloaded from the backend and registered as a restarted node',
      );
      this.health = { state: 'healthy' };
      this.recoveredMs = nowMs;
    }
    // S4: recovered replicas exist from now on, inactive until a configuration arrives.
    for (const p of this.recoveries.keys()) this.replica(p);
    this.out.push({ kind: 'registered' });
    this.heartbeatNow();
    return this.drain();
  }

  /**
   * Issue 15: the live --min-write-replicas and --dead-after-ms from an epoch-ordered map
   * record (the driver drops an older epoch): every replica checks the new minimum from its
   * next write and commit on (S8); replicas made from now on ask to remove a silent secondary
   * after the new dead-after.
   */
  setLive(live: { readonly minWriteReplicas: number; readonly deadAfterMs: number }): void {
    if (live.minWriteReplicas !== this.minWriteReplicas)
      this.logAt(
        'info',
        { from: this.minWriteReplicas, to: live.minWriteReplicas },
        'min-write-replicas switched live (S8)',
      );
    this.minWriteReplicas = live.minWriteReplicas;
    this.removeSilentAfterMs = live.deadAfterMs;
    for (const r of this.replicaMap.values()) r.setMinWriteReplicas(live.minWriteReplicas);
  }

  /** The heartbeat timer: progress to the nameserver (§4), or the failure while unhealthy. */
  heartbeatDue(): Array<HostEffect<H>> {
    this.heartbeatNow();
    return this.drain();
  }

  private heartbeatNow(): void {
    if (this.heartbeatSent || this.partitions === 0) return;
    const base = { t: 'heartbeat', nodeId: this.nodeId, uptimeMs: this.opts.now() - this.startedMs } as const;
    if (this.health.state !== 'healthy') {
      // §4: the nameserver shows it and does not count it as a heartbeat: the node's partitions
      // fail over at once. It names the incarnation that failed, never one a reload registers.
      this.heartbeatSent = 'unhealthy';
      const unhealthy = this.health.reason.slice(0, MAX_REASON_CHARS);
      this.out.push({
        kind: 'heartbeat',
        life: this.life,
        request: { ...base, incarnation: this.failedIncarnation, progress: [], unhealthy },
      });
      return;
    }
    if (this.registering) return; // the registration ends with a heartbeat
    this.heartbeatSent = 'healthy';
    this.out.push({
      kind: 'heartbeat',
      life: this.life,
      request: { ...base, incarnation: this.incarnation, progress: this.progress() },
    });
  }

  /** The reply to a heartbeat sent in `life`: configurations, or "register again". */
  heartbeatAnswered(life: number, reply: HeartbeatAnswer): Array<HostEffect<H>> {
    const sent = this.heartbeatSent;
    this.heartbeatSent = undefined;
    if (sent !== 'healthy') return [];
    if (this.nameserverDown) this.logAt('info', {}, 'nameserver reachable again');
    this.nameserverDown = false;
    if (life !== this.life) return []; // storage failed meanwhile: the reload registers
    if (reply.kind === 'register') return this.register();
    return this.configure(life, reply.configs);
  }

  heartbeatFailed(err: Error): Array<HostEffect<H>> {
    const sent = this.heartbeatSent;
    this.heartbeatSent = undefined;
    if (sent === 'unhealthy') this.logAt('debug', { err: err.message }, 'unhealthy heartbeat not delivered');
    else if (!this.nameserverDown) {
      this.nameserverDown = true;
      this.logAt('warn', { err: err.message }, 'heartbeat failed; serving on with the configurations we have');
    }
    return this.drain();
  }

  /**
   * Issue 15, a graceful stop (SIGTERM): the `leave` request to send the nameserver (the driver
   * adds the token), or undefined when the storage is unhealthy (the stop is then a plain one,
   * failure detection takes over). Its answer goes to `leaveAnswered`.
   */
  leaveRequest(): { readonly t: 'leave'; readonly nodeId: NodeId; readonly incarnation: string } | undefined {
    if (this.health.state !== 'healthy') return undefined;
    return { t: 'leave', nodeId: this.opts.nodeId, incarnation: this.incarnation };
  }

  /**
   * Issue 15: the nameserver's answer to `leave` (sent in `life`): this server adopts the
   * configurations at once (its replicas become learners). `handOff` lists the partitions it
   * led that were handed over, with their last seq now: `handedOff(handOff)` tells when each of
   * them got an entry from the new primary (S6: its epoch-start entry), so the driver can wait,
   * bounded, before it exits and no client is left with no primary to turn to.
   */
  leaveAnswered(
    life: number,
    configs: readonly Config[],
  ): { readonly effects: Array<HostEffect<H>>; readonly handOff: ReadonlyMap<PartitionId, number> } {
    const led = new Set(
      this.progress()
        .filter((p) => p.role === 'primary')
        .map((p) => p.partition as number),
    );
    const effects = this.configure(life, configs);
    const handed = new Set(configs.filter((c) => led.has(c.partition)).map((c) => c.partition as number));
    const handOff = new Map(
      this.progress()
        .filter((p) => handed.has(p.partition))
        .map((p) => [p.partition, p.lastSeq as number] as const),
    );
    return { effects, handOff };
  }

  /** Issue 15: whether every partition of `handOff` (from `leaveAnswered`) got an entry past the seq noted there. */
  handedOff(handOff: ReadonlyMap<PartitionId, number>): boolean {
    const now = new Map(this.progress().map((p) => [p.partition as number, p.lastSeq as number]));
    return [...handOff].every(([p, s]) => (now.get(p) ?? 0) > s);
  }

  /** Configurations from a heartbeat reply sent in `life`. */
  configure(life: number, configs: readonly Config[]): Array<HostEffect<H>> {
    if (life !== this.life) return []; // storage failed meanwhile: these are for replicas gone
    for (const config of configs) this.step(config.partition, { kind: 'configure', config });
    return this.drain();
  }

  /**
   * Storage failed in `life` (a batch, or the backend reports itself unusable): unhealthy at
   * once; a second report of the same failure does nothing.
   */
  storageFailed(life: number, err: Error): Array<HostEffect<H>> {
    if (life !== this.life || this.health.state !== 'healthy') return [];
    this.life += 1;
    this.awaitingReload = true;
    const nowMs = this.opts.now();
    this.health = { state: 'unhealthy', reason: err.message, sinceMs: nowMs, attempts: 0 };
    this.failedIncarnation = this.incarnation;
    // Every replica core, and everything it was waiting for, is dropped: their state may
    // run ahead of what the backend holds. They are rebuilt from the backend on reload.
    this.replicaMap.clear();
    this.recoveries.clear();
    this.dirty.clear();
    this.deleteResults.clear();
    this.barrier = new GroupCommit();
    const waiters = [...this.waiters.values()];
    this.waiters.clear();
    for (const w of waiters) {
      // S9: a write may already be on other replicas (or in the failed batch): unknown.
      const error = w.write
        ? new OutcomeUnknownError(`storage of ${this.nodeId} failed before the write was acknowledged: ${err.message}`)
        : new UnavailableError(`storage unavailable on ${this.nodeId}: ${err.message}`);
      this.out.push({ kind: 'answer', handle: w.handle, result: { ok: false, error } });
    }
    // Failed again soon after recovering: go on with the backoff where it ended.
    const firstDelayMs = nowMs - this.recoveredMs < RECOVER_STABLE_MS ? this.recoveredDelayMs : RECOVER_FIRST_MS;
    this.out.push({ kind: 'unhealthy', life: this.life, reason: err.message });
    this.reopenDelayMs = firstDelayMs;
    // The first attempt waits only when this failure continues an earlier one's backoff.
    const afterMs = firstDelayMs > RECOVER_FIRST_MS ? firstDelayMs : 0;
    this.out.push({ kind: 'reopen', life: this.life, attempt: 1, afterMs });
    // §4, issue 9: tell the nameserver now, so it fails our partitions over at once (a
    // heartbeat in flight at this moment leaves it to the next tick, heartbeatMs later).
    this.heartbeatNow();
    return this.drain();
  }

  /** Reopen attempt `attempt` (1, 2, …) of `life` is starting; false: that life is over, do not. */
  reopenAttempt(life: number, attempt: number): boolean {
    if (life !== this.life || this.health.state !== 'unhealthy' || !this.awaitingReload) return false;
    this.health = { ...this.health, attempts: attempt };
    return true;
  }

  /** Reopen attempt `attempt` of `life` failed: the next one after a longer pause, or give up. */
  reopenFailed(life: number, attempt: number, err: Error): Array<HostEffect<H>> {
    if (life !== this.life || !this.awaitingReload) return [];
    this.logAt('warn', { attempt, retryInMs: this.reopenDelayMs, err: err.message }, 'storage still unavailable');
    // What a failed reload loaded belongs to a backend that is closed again.
    this.recoveries.clear();
    if (attempt >= RECOVER_MAX_ATTEMPTS) {
      this.logAt('fatal', { attempts: attempt }, 'storage did not come back; exiting');
      this.out.push({ kind: 'gaveUp', reason: err.message });
      return this.drain();
    }
    this.out.push({ kind: 'reopen', life, attempt: attempt + 1, afterMs: this.reopenDelayMs });
    this.reopenDelayMs = Math.min(this.reopenDelayMs * 2, RECOVER_MAX_MS);
    return this.drain();
  }

  // ---- calls and messages ----

  /** A client's put, delete or get; answered through an `answer` effect with `handle`. */
  clientCall(call: ClientCall, handle: H): Array<HostEffect<H>> {
    try {
      if (this.health.state !== 'healthy')
        throw new UnavailableError(`storage unavailable on ${this.nodeId}: ${this.health.reason}`);
      const sys = call.t !== 'get' && call.sys === true;
      this.checkKey(call.key, call.p, sys || call.t === 'get');
      if (call.t !== 'get') for (const k of call.ifk ?? []) this.checkKey(k.key, call.p, true);
      if (call.t === 'put' && call.value.length > this.opts.limits.maxValueBytes)
        throw new ValueTooLargeError(call.value.length, this.opts.limits.maxValueBytes);
      const partition = partitionId(call.p);
      if (!this.replicaMap.has(partition))
        throw new NotPrimaryError(`${this.nodeId} holds no replica of partition ${call.p}`);
      const requestId = this.nextRequestId++;
      this.waiters.set(requestId, { handle, partition, write: call.t !== 'get' });
      if (call.t === 'get') {
        if (call.fast === true) this.fastRead(partition, requestId, call.key);
        else if (this.mutations.unconfirmedReads && this.replicaMap.get(partition)!.serving)
          this.serveRead(partition, requestId, call.key);
        else this.step(partition, { kind: 'clientRead', requestId, key: call.key });
      } else {
        const op: DataOp =
          call.t === 'del'
            ? { kind: 'delete', key: call.key }
            : call.ttl === undefined
              ? { kind: 'put', key: call.key, value: call.value }
              : // §16: the expiry by this primary's clock, logged with the value.
                { kind: 'put', key: call.key, value: call.value, expiresAt: this.opts.now() + call.ttl };
        const tag: RequestTag | undefined =
          call.cid !== undefined && call.rs !== undefined ? { clientId: call.cid, requestSeq: call.rs } : undefined;
        if (call.ifv !== undefined || (call.ifk?.length ?? 0) > 0) {
          this.waiters.delete(requestId);
          const checks = [
            ...(call.ifv === undefined ? [] : [{ key: call.key, ifVersion: call.ifv }]),
            ...(call.ifk ?? []).map((k) => ({ key: k.key, ifVersion: k.v })),
          ];
          this.readForCondition(partition, op, tag, checks, handle, { sys });
          return this.drain();
        }
        const flags = sys ? { sys: true } : {};
        this.step(
          partition,
          tag
            ? { kind: 'clientWrite', requestId, op, tag, ...flags }
            : { kind: 'clientWrite', requestId, op, ...flags },
        );
      }
    } catch (err) {
      if (!(err instanceof DstoreError)) throw err;
      this.out.push({ kind: 'answer', handle, result: { ok: false, error: err } });
    }
    return this.drain();
  }

  /**
   * Issue 14: the calls of a getMany / putMany, each stepped into its partition's replica
   * exactly as `clientCall` steps a single one (each with its own handle, answered on its own),
   * all in this turn: they ride in the same flush and the same read-confirmation round.
   */
  clientMany(calls: ReadonlyArray<{ readonly call: ClientCall; readonly handle: H }>): Array<HostEffect<H>> {
    const effects: Array<HostEffect<H>> = [];
    for (const { call, handle } of calls) effects.push(...this.clientCall(call, handle));
    return effects;
  }

  /**
   * §16: a conditional write reads its key's version from the applied state first (after the
   * partition's queued writes); the replica then decides against that and its log.
   */
  private readForCondition(
    partition: PartitionId,
    op: DataOp,
    tag: RequestTag | undefined,
    checks: ConditionRead<H>['checks'],
    handle: H,
    options: { expiry?: boolean; sys?: boolean } = {},
  ): void {
    const r = this.replicaMap.get(partition)!;
    const refusal = refuseClient(r, 'write');
    if (refusal)
      return void this.out.push({ kind: 'answer', handle, result: { ok: false, error: errorFromWire(refusal) } });
    const token = this.nextRequestId++;
    const read: ConditionRead<H> = {
      handle,
      partition,
      op,
      tag,
      checks,
      sys: options.sys === true,
      epoch: r.epoch,
      atSeq: r.appliedSeq,
    };
    this.conditionReads.set(token, options.expiry ? { ...read, expiry: true } : read);
    const keys = checks.map((c) => c.key);
    this.after(partition, () => this.out.push({ kind: 'readForCondition', token, p: partition, keys }));
  }

  /** The applied versions of the keys of conditional write `token`, in order (undefined: absent). */
  conditionRead(
    token: number,
    values: ReadonlyArray<{ readonly version: number; readonly expiresAt?: number } | undefined>,
  ): Array<HostEffect<H>> {
    const c = this.conditionReads.get(token);
    if (!c) return this.drain();
    this.conditionReads.delete(token);
    if (this.health.state !== 'healthy' || !this.replicaMap.has(c.partition)) {
      const error = new UnavailableError(`partition ${c.partition} is not served here any more; retry`);
      return this.answer(c.handle, { ok: false, error });
    }
    const nowMs = this.opts.now();
    const v = values[0];
    const ifVersion = c.checks[0]!.ifVersion;
    if (c.expiry && (v?.version !== ifVersion || !expired(v.expiresAt, nowMs))) {
      // The key moved on (or its expiry is not past by this clock yet): nothing to delete.
      if (v?.version !== ifVersion || v.expiresAt === undefined) this.expiry.forget(c.partition, c.op.key, ifVersion);
      return this.drain();
    }
    const requestId = this.nextRequestId++;
    this.waiters.set(requestId, { handle: c.handle, partition: c.partition, write: true });
    const condition: WriteCondition = {
      keys: c.checks.map((k, i) => {
        const read = values[i];
        // §16: a value past its expiry is absent, except to the delete that removes it for that.
        const observed = read && (c.expiry === true || !expired(read.expiresAt, nowMs)) ? read.version : 0;
        return { key: k.key, ifVersion: k.ifVersion, observed };
      }),
      atSeq: c.atSeq,
      epoch: c.epoch,
      nowMs,
    };
    const sys = c.sys ? { sys: true } : {};
    const input: ReplicaInput = c.tag
      ? { kind: 'clientWrite', requestId, op: c.op, tag: c.tag, condition, ...sys }
      : { kind: 'clientWrite', requestId, op: c.op, condition, ...sys };
    this.step(c.partition, input);
    return this.drain();
  }

  /** The read of a `readForCondition` effect failed; `corrupt`: a record failed its checksum (S13). */
  conditionReadFailed(token: number, err: Error, corrupt: boolean): Array<HostEffect<H>> {
    const c = this.conditionReads.get(token);
    if (!c) return this.drain();
    this.conditionReads.delete(token);
    // Nothing was proposed: the write definitely did not happen.
    return this.answer(c.handle, {
      ok: false,
      error: corrupt ? this.corruptRead(c.partition, err) : (err as DstoreError),
    });
  }

  /**
   * S16: propose a digest entry in `p` (its primary only, like a write); the answer is the
   * entry's seq as `{ version }` once committed. `buckets`: whose entries to list.
   */
  clientDigest(p: number, buckets: readonly number[], handle: H): Array<HostEffect<H>> {
    try {
      if (this.health.state !== 'healthy')
        throw new UnavailableError(`storage unavailable on ${this.nodeId}: ${this.health.reason}`);
      this.checkPartition(p);
      const partition = partitionId(p);
      if (!this.replicaMap.has(partition))
        throw new NotPrimaryError(`${this.nodeId} holds no replica of partition ${p}`);
      const requestId = this.nextRequestId++;
      this.waiters.set(requestId, { handle, partition, write: true });
      this.step(partition, { kind: 'clientWrite', requestId, op: { kind: 'digest', buckets: [...buckets] } });
    } catch (err) {
      if (!(err instanceof DstoreError)) throw err;
      this.out.push({ kind: 'answer', handle, result: { ok: false, error: err } });
    }
    return this.drain();
  }

  checkPartition(p: number): void {
    if (this.partitions === 0) throw new NotPrimaryError(`${this.nodeId} has not joined the cluster yet`);
    if (p >= this.partitions)
      throw new InvalidArgumentError(`partition ${p} does not exist (the cluster has ${this.partitions})`);
  }

  /** `sys`: a transaction's own request, which may name a reserved key (§16, a little longer). */
  private checkKey(key: Uint8Array, p: number, sys = false): void {
    if (key.length === 0) throw new KeyEmptyError();
    const reserved = isReserved(key);
    if (reserved && !sys)
      throw new InvalidArgumentError('keys that start with \\x00dstore\\x00 are reserved for transactions');
    const max = this.opts.limits.maxKeyBytes + (reserved ? RESERVED_OVERHEAD_BYTES : 0);
    if (key.length > max) throw new KeyTooLargeError(key.length, max);
    this.checkPartition(p);
    if (partitionOf(key, this.partitions) !== p)
      throw new InvalidArgumentError(`key belongs to partition ${partitionOf(key, this.partitions)}, not ${p}`);
  }

  /** A message from a peer replica. */
  peer(from: NodeId, message: PeerMessage): Array<HostEffect<H>> {
    // Before registering we do not know the cluster's settings (S8): the primary will re-send.
    if (this.partitions === 0 || message.partition >= this.partitions) return [];
    if (this.health.state !== 'healthy') return []; // no replica until the reload; the sender re-sends
    this.step(message.partition, { kind: 'peer', from, message });
    return this.drain();
  }

  /** The value read for a `read` effect. */
  readDone(
    handle: H,
    p: PartitionId,
    v: { readonly value: unknown; readonly version: number; readonly expiresAt?: number } | undefined,
    intent?: { readonly value: unknown; readonly version: number },
  ): Array<HostEffect<H>> {
    // S13: a read that raced with the replica finding the partition corrupt is not served from it.
    if (this.replicaMap.get(p)?.corrupt !== undefined)
      return this.answer(handle, { ok: false, error: this.corruptError(p) });
    // §16: a transaction's intent on the key goes with the value (the client resolves it).
    const held = intent === undefined ? {} : { intent: { value: intent.value, version: intent.version } };
    // §16: a key past the expiry its primary recorded reads as absent, deleted or not yet.
    const nowMs = this.opts.now();
    if (!v || expired(v.expiresAt, nowMs)) return this.answer(handle, { ok: true, value: { found: false, ...held } });
    const ttl = v.expiresAt === undefined ? {} : { ttl: v.expiresAt - nowMs };
    return this.answer(handle, {
      ok: true,
      value: { found: true, value: v.value, version: v.version, ...ttl, ...held },
    });
  }

  /** A `read` or `readDedup` effect failed; `corrupt`: a record failed its checksum (S13). */
  readFailed(handle: H, p: PartitionId, err: Error, corrupt: boolean): Array<HostEffect<H>> {
    return this.answer(handle, { ok: false, error: corrupt ? this.corruptRead(p, err) : (err as DstoreError) });
  }

  /** The dedup record of a `readDedup` effect (undefined: none for that client). */
  dedupRead(handle: H, p: PartitionId, seq: Seq, record: DedupRecord | undefined): Array<HostEffect<H>> {
    // Gone (a later request of that client replaced it): the write happened, but whether
    // it found the key is no longer known. Never guess.
    if (record?.seq !== seq || record.existed === undefined)
      return this.answer(handle, {
        ok: false,
        error: new OutcomeUnknownError(
          `delete ${seq} of partition ${p} was applied; whether it found its key is no longer known`,
        ),
      });
    return this.answer(handle, { ok: true, value: { existed: record.existed, version: seq } });
  }

  /**
   * S13: a read of partition `p` met a record that failed its checksum. The replica steps
   * out (and, as primary, hands over); the caller answers with the returned retryable error
   * so the client refreshes its map and reads elsewhere. Never the bad record. Effects of
   * the step are left for the next drain.
   */
  corruptRead(p: PartitionId, err: Error): DstoreError {
    if (this.health.state === 'healthy' && this.replicaMap.has(p))
      this.step(p, { kind: 'corrupt', reason: err.message });
    return new NotPrimaryError(
      `${this.nodeId} found partition ${p} corrupt (S13) and no longer serves it; another replica does: ${err.message}`,
    );
  }

  /** Effects left by `corruptRead` (the driver drains after answering). */
  pending(): Array<HostEffect<H>> {
    return this.drain();
  }

  /** S11: a snapshot of `p` is served by its primary at `epoch` only (the learner asks again otherwise). */
  checkSnapshotSource(p: PartitionId, epoch: number): void {
    const r = this.replicaMap.get(p);
    if (r?.role !== 'primary' || r.epoch !== epoch)
      throw new NotPrimaryError(`${this.nodeId} is not primary of partition ${p} at epoch ${epoch}`);
  }

  private corruptError(p: PartitionId): DstoreError {
    return new NotPrimaryError(`${this.nodeId} found partition ${p} corrupt (S13) and no longer serves it`);
  }

  // ---- the nameserver ----

  answered(life: number, ask: NameserverAsk, answer: NameserverAnswer): Array<HostEffect<H>> {
    if (life !== this.life) return [];
    if (ask.t === 'confirmEpoch' && answer.t === 'confirmEpoch') {
      if (answer.current) this.step(ask.p, { kind: 'nameserverConfirmed', round: ask.round, epoch: ask.epoch });
    } else if (ask.t === 'promote' && answer.t !== 'confirmEpoch') {
      this.step(ask.p, { kind: 'promotionAnswered', config: answer.config, epoch: ask.epoch });
    } else if (ask.t === 'removeSecondary' && answer.t !== 'confirmEpoch') {
      this.step(ask.p, { kind: 'configure', config: answer.config });
    }
    return this.drain();
  }

  /** An `ask` got no usable answer: S7: a promotion is asked again with backoff; the rest the core re-asks. */
  askFailed(life: number, ask: NameserverAsk, err: Error): Array<HostEffect<H>> {
    if (ask.t === 'confirmEpoch')
      this.logAt(
        'warn',
        { partition: ask.p, err: err.message },
        'cannot confirm the epoch with the nameserver; reads wait',
      );
    else if (ask.t === 'removeSecondary')
      this.logAt(
        'warn',
        { partition: ask.p, secondary: ask.secondary, err: err.message },
        'cannot ask the nameserver to remove a silent secondary',
      );
    else {
      this.logAt(
        'warn',
        { partition: ask.p, learner: ask.learner, err: err.message },
        'promotion request failed; retrying (commits wait, S7)',
      );
      const next = { ...ask, attempt: ask.attempt + 1, delayMs: Math.min(ask.delayMs * 2, 1000) };
      this.out.push({ kind: 'askLater', life, afterMs: ask.delayMs, ask: next });
    }
    return this.drain();
  }

  /** The delay of an `askLater` ran out. */
  retryAsk(life: number, ask: NameserverAsk): Array<HostEffect<H>> {
    this.askAgain(life, ask);
    return this.drain();
  }

  private askAgain(life: number, ask: NameserverAsk): void {
    if (life !== this.life) return; // storage failed: that replica is gone
    // S7: a promotion is asked until answered (bounded), unless the replica moved on.
    if (ask.t === 'promote' && (ask.attempt >= 1000 || this.replica(ask.p).epoch !== ask.epoch)) return;
    this.out.push({ kind: 'ask', life, ask });
  }

  /** A `defer` effect's turn came. */
  deferred(life: number, p: PartitionId, input: ReplicaInput): Array<HostEffect<H>> {
    if (life !== this.life) return [];
    this.step(p, input);
    return this.drain();
  }

  // ---- snapshots (S11) ----

  /** S11: only a learner installs a snapshot (it may have been promoted meanwhile). */
  mayInstallSnapshot(life: number, p: PartitionId): boolean {
    return life === this.life && this.replica(p).role === 'learner';
  }

  snapshotInstalled(
    life: number,
    p: PartitionId,
    applied: { seq: Seq; epoch: Epoch },
    dedup: DedupRecord[],
    intents: readonly Uint8Array[] = [],
  ): Array<HostEffect<H>> {
    if (life !== this.life) return [];
    this.step(p, { kind: 'snapshotInstalled', applied, dedup, intents });
    // §16: the data was replaced: read its expiries again.
    this.expiry.drop(p);
    this.out.push({ kind: 'scanExpiry', life: this.life, p });
    return this.drain();
  }

  /** S16: the snapshot of `p` at the digest entry `seq` is open (or could not be): apply on. */
  digestCaptured(life: number, p: PartitionId, seq: Seq): Array<HostEffect<H>> {
    if (life !== this.life || !this.replicaMap.has(p)) return [];
    this.step(p, { kind: 'digestCaptured', seq });
    return this.drain();
  }

  snapshotFailed(life: number, p: PartitionId, reason: string): Array<HostEffect<H>> {
    if (life !== this.life) return [];
    this.step(p, { kind: 'snapshotFailed', reason });
    return this.drain();
  }

  // ---- time ----

  tick(nowMs: number): Array<HostEffect<H>> {
    for (const [p, r] of this.replicaMap) this.execute(p, this.stepReplica(r, { kind: 'tick', nowMs }));
    this.expireDue(nowMs);
    return this.drain();
  }

  /** End of turn: one `flush` for every partition that saw input (one prepare per peer for all the turn's writes). */
  endOfTurn(): Array<HostEffect<H>> {
    this.flushScheduled = false;
    const dirty = [...this.dirty];
    this.dirty.clear();
    if (this.health.state !== 'healthy') return [];
    for (const q of dirty) this.execute(q, this.stepReplica(this.replica(q), { kind: 'flush' }));
    return this.drain();
  }

  // ---- group commit ----

  /** Starts a batch of what accumulated, unless one is being written; `lazy`: the lazy timer fired. */
  startBatch(lazy = false): Array<HostEffect<H>> {
    if (lazy) this.barrier.lazyScheduled = false;
    else this.barrier.scheduled = false;
    const next = this.barrier.start();
    if (next) this.out.push({ kind: 'writeBatch', life: this.life, batch: next.batch, ops: next.ops });
    return this.drain();
  }

  /**
   * Runs `fn` once what partition `p` (every partition, when undefined) enqueued so far is
   * durable: its applies included, which are lazy. For the driver's direct reads of the
   * backend (scan, dump, key counts), so they see every write already answered.
   */
  whenApplied(p: PartitionId | undefined, fn: () => void): Array<HostEffect<H>> {
    if (p === undefined) this.barrier.afterAll(fn);
    else this.barrier.after(p, fn);
    this.scheduleBatch();
    return this.drain();
  }

  /** Asks the driver to start a batch when one should start, or arms the lazy timer. */
  private scheduleBatch(): void {
    const b = this.barrier;
    if (b.wantsStart) {
      if (b.scheduled) return;
      b.scheduled = true;
      this.out.push({ kind: 'scheduleBatch' });
    } else if (b.lazyOnly && !b.lazyScheduled) {
      b.lazyScheduled = true;
      this.out.push({ kind: 'scheduleBatch', lazyMs: LAZY_BATCH_MS });
    }
  }

  /** Batch `batch` of `life` is durable; `deletes`: whether each applied delete found its key. */
  batchDone(
    life: number,
    batch: number,
    deletes: ReadonlyArray<{ partition: PartitionId; seq: Seq; existed: boolean }>,
  ): Array<HostEffect<H>> {
    const b = this.barrier;
    if (life !== this.life || b.writing !== batch) return [];
    const writeIds = b.committed();
    for (const d of deletes) {
      this.deleteResults.set(`${d.partition}:${d.seq}`, d.existed);
      // Oldest first: every waiter of a delete is answered right after its apply is durable.
      if (this.deleteResults.size > MAX_DELETE_RESULTS)
        this.deleteResults.delete(this.deleteResults.keys().next().value!);
    }
    for (const { partition, writeId } of writeIds) this.step(partition, { kind: 'persisted', writeId });
    b.release();
    this.scheduleBatch();
    return this.drain();
  }

  /**
   * Batch of `life` failed: it may or may not be durable, and later ones were planned on top
   * of it. A broken backend precondition is a bug (fatal); anything else is a storage failure.
   */
  batchFailed(life: number, err: Error): Array<HostEffect<H>> {
    if (err instanceof InvariantViolation) return [{ kind: 'fatal', error: err }];
    const writing = this.barrier.writing;
    // MUTATION: what waited for the failed batch runs as if it were durable.
    const acked =
      this.mutations.ackFailedBatch && writing !== undefined && life === this.life
        ? this.batchDone(life, writing, [])
        : [];
    return [...acked, ...this.storageFailed(life, err)];
  }

  private enqueue(p: PartitionId, ops: readonly BatchOp[], writeId?: number, lazy = false): void {
    this.barrier.enqueue(p, ops, writeId, lazy);
    this.scheduleBatch();
  }

  /** Runs `fn` after everything `p` enqueued so far is durable, in the order `after` was called. */
  private after(p: PartitionId, fn: () => void): void {
    this.barrier.after(p, fn);
    this.scheduleBatch();
  }

  // ---- driving the replica cores ----

  private replica(p: PartitionId): Replica {
    let r = this.replicaMap.get(p);
    if (r) return r;
    r = new Replica(
      {
        node: this.nodeId,
        partition: p,
        minWriteReplicas: this.minWriteReplicas,
        limits: this.opts.limits,
        resendAfterMs: this.opts.resendAfterMs ?? 300,
        incarnation: this.incarnation,
        removeSilentAfterMs: this.removeSilentAfterMs,
      },
      this.recoveries.get(p),
    );
    r.nowMs = this.opts.now();
    this.replicaMap.set(p, r);
    this.opts.hooks?.replicaCreated?.(r);
    return r;
  }

  private stepReplica(r: Replica, input: ReplicaInput): ReplicaOutput[] {
    let out: ReplicaOutput[];
    try {
      out = r.step(input);
    } catch (err) {
      this.opts.hooks?.stepThrew?.(r, input, err);
      throw err;
    }
    this.opts.hooks?.stepped?.(r, input, out);
    return out;
  }

  private step(p: PartitionId, input: ReplicaInput): void {
    if (this.health.state !== 'healthy') return; // no replica exists until the reload
    this.execute(p, this.stepReplica(this.replica(p), input));
    this.dirty.add(p);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    this.out.push({ kind: 'scheduleFlush' });
  }

  private execute(p: PartitionId, outputs: ReplicaOutput[]): void {
    for (const o of outputs) {
      switch (o.kind) {
        case 'persist':
          if (this.mutations.ackBeforeDurable && o.writeId !== undefined) {
            // MUTATION: the disk is said to hold the batch as soon as it is queued.
            this.enqueue(p, o.ops);
            this.out.push({ kind: 'defer', life: this.life, p, input: { kind: 'persisted', writeId: o.writeId } });
          } else {
            this.enqueue(p, o.ops, o.writeId, o.lazy === true);
          }
          for (const op of o.ops) {
            if (op.kind === 'apply') this.expiry.applied(p, op.entries);
            else if (op.kind === 'dropPartition') this.expiry.drop(p);
          }
          break;
        case 'send': {
          const effect: HostEffect<H> = { kind: 'send', to: o.to, message: o.message };
          if (o.immediate) this.out.push(effect);
          else this.after(p, () => this.out.push(effect));
          break;
        }
        case 'reply': {
          if (o.duplicateOf !== undefined && o.op === 'delete' && o.result.kind === 'written') {
            // S10: a retried delete gets the original answer, kept in the dedup table, once
            // the apply that wrote it is durable (D1: not before, as `immediate: false` says).
            const { duplicateOf, requestId } = o;
            const seq = o.result.seq;
            const fn = () => {
              const w = this.takeWaiter(requestId);
              if (w) this.out.push({ kind: 'readDedup', handle: w.handle, p, clientId: duplicateOf, seq });
            };
            if (o.immediate || this.mutations.serverDeleteReplies) fn();
            else this.after(p, fn);
            break;
          }
          const result = o.result;
          const fn = () =>
            this.settle(
              o.requestId,
              result.kind === 'error' ? result.error : undefined,
              result.kind === 'written' ? { seq: result.seq, op: o.op } : undefined,
            );
          if (o.immediate) fn();
          else this.after(p, fn);
          break;
        }
        case 'read':
          this.after(p, () => this.serveRead(p, o.requestId, o.key));
          break;
        case 'confirmWithNameserver':
          this.out.push({
            kind: 'ask',
            life: this.life,
            ask: { t: 'confirmEpoch', p, round: o.round, epoch: o.epoch },
          });
          break;
        case 'requestPromotion':
          this.askAgain(this.life, {
            t: 'promote',
            p,
            epoch: o.epoch,
            learner: o.learner,
            learnerIncarnation: o.learnerIncarnation,
            attempt: 0,
            delayMs: 50,
          });
          break;
        case 'requestRemoval':
          this.out.push({
            kind: 'ask',
            life: this.life,
            ask: { t: 'removeSecondary', p, epoch: o.epoch, secondary: o.secondary },
          });
          break;
        case 'captureDigest': {
          // After the apply that ends at the digest entry is written (S16).
          const effect: HostEffect<H> = { kind: 'captureDigest', life: this.life, p, seq: o.seq, buckets: o.buckets };
          this.after(p, () => this.out.push(effect));
          break;
        }
        case 'fetchSnapshot': {
          // Earlier storage ops of this partition first: the install replaces its state.
          const effect: HostEffect<H> = { kind: 'fetchSnapshot', life: this.life, p, from: o.from, epoch: o.epoch };
          this.after(p, () => this.out.push(effect));
          break;
        }
        case 'log':
          this.logAt(o.level, { ...o.fields }, o.message);
          break;
        default:
          assertNever(o);
      }
    }
  }

  private takeWaiter(requestId: number): Waiter<H> | undefined {
    const w = this.waiters.get(requestId);
    if (w) this.waiters.delete(requestId);
    return w;
  }

  /**
   * DESIGN §7, issue 15: a fast read, served by an active primary or secondary from its applied
   * state (S2: committed entries only) without a confirmation round: it may be stale, and the
   * driver labels the reply so. A replica that is inactive (S4), a learner, a primary still
   * taking over (S6) or corrupt (S13) serves none: a retryable UNAVAILABLE sends the client to
   * another replica.
   */
  private fastRead(p: PartitionId, requestId: number, key: Uint8Array): void {
    const r = this.replicaMap.get(p)!;
    const mayServe =
      r.corrupt === undefined && r.active && (r.role === 'secondary' || (r.role === 'primary' && r.serving));
    if (mayServe) return this.serveRead(p, requestId, key);
    const w = this.takeWaiter(requestId);
    if (!w) return;
    const state = r.corrupt !== undefined ? 'corrupt' : r.active ? r.role : 'inactive';
    const error = new UnavailableError(
      `${this.nodeId} serves no fast read of partition ${p}: its replica is ${state} (epoch ${r.epoch}); ` +
        'another replica may',
    );
    this.out.push({ kind: 'answer', handle: w.handle, result: { ok: false, error } });
  }

  private serveRead(p: PartitionId, requestId: number, key: Uint8Array): void {
    const w = this.takeWaiter(requestId);
    if (!w) return;
    // S13: a read queued before the replica found the partition corrupt is not served from it.
    if (this.replicaMap.get(p)?.corrupt !== undefined)
      this.out.push({ kind: 'answer', handle: w.handle, result: { ok: false, error: this.corruptError(p) } });
    else this.out.push({ kind: 'read', handle: w.handle, p, key });
  }

  private settle(
    requestId: number,
    error: WireError | undefined,
    written: { seq: number; op?: 'put' | 'delete' | 'digest' } | undefined,
  ): void {
    const w = this.takeWaiter(requestId);
    if (!w) return;
    let result: CallResult;
    if (error) result = { ok: false, error: errorFromWire(error) };
    else if (!written) result = { ok: true, value: undefined };
    else if (written.op === 'delete') {
      // Kept for every waiter of this entry (D1: a retry queued behind the first attempt
      // waits on the same entry); the map is bounded in batchDone.
      const key = `${w.partition}:${written.seq}`;
      const existed = this.deleteResults.get(key) ?? false;
      if (this.mutations.serverDeleteReplies) this.deleteResults.delete(key);
      result = { ok: true, value: { existed, version: written.seq } };
    } else result = { ok: true, value: { version: written.seq } };
    this.out.push({ kind: 'answer', handle: w.handle, result });
  }

  private answer(handle: H, result: CallResult): Array<HostEffect<H>> {
    this.out.push({ kind: 'answer', handle, result });
    return this.drain();
  }

  private logAt(level: LogLevel, fields: Record<string, unknown>, message: string): void {
    this.out.push({ kind: 'log', level, fields, message });
  }

  private drain(): Array<HostEffect<H>> {
    const out = this.out;
    this.out = [];
    return out;
  }
}
