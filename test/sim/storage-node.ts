/**
 * A simulated storage server: the real replica cores (src/core/replica) driven the way
 * src/storageserver/server.ts drives them, over the simulated network and disk.
 *
 * - decode → step → execute outputs in order; `persist` goes to a group-commit writer
 *   (SimWriter mirrors src/storageserver/writer.ts: ops accumulate while one batch is being
 *   fsynced; `after(p, fn)` runs fn once everything p enqueued so far is durable); sends
 *   and replies not marked immediate, and reads, wait for it.
 * - at the end of each turn every partition that saw input gets a `flush`; a tick timer
 *   runs every tickMs once registered; heartbeats every heartbeatMs carry progress and
 *   bring back configurations.
 * - a crash loses everything but the SimDisk (the batch being fsynced reaches the disk or
 *   not, by coin flip); a restart rebuilds each replica from the disk as the real server
 *   does (ReplicaRecovery: epoch = max(meta, last log entry), config, applied, log, dedup).
 */
import { InvalidArgumentError, NotPrimaryError, type WireError } from '../../src/core/errors.js';
import { defaultLimits, type Limits } from '../../src/core/limits.js';
import type { PeerMessage } from '../../src/core/replica/messages.js';
import type { BatchOp, DedupRecord } from '../../src/core/replica/ops.js';
import { Replica, type ReplicaInput, type ReplicaOutput, type ReplicaRecovery } from '../../src/core/replica/replica.js';
import { type Config, type Epoch, InvariantViolation, type NodeId, type Op, type PartitionId, type RequestTag, type Seq, partitionId } from '../../src/core/types.js';
import { partitionOf } from '../../src/core/partitioning.js';
import { SimDisk, type SnapshotImage, text } from './disk.js';
import type { Observer } from './observer.js';
import { describeMessage, describeOutput } from './trace.js';
import { type CallResult, type Endpoint, type SimEvent, SimulationFailure, type World } from './world.js';

export interface NodeKnobs {
  readonly tickMs: number;
  readonly heartbeatMs: number;
  readonly callTimeoutMs: number;
  readonly resendAfterMs: number;
  readonly logRetainEntries: number;
  readonly fsyncMinMs: number;
  readonly fsyncMaxMs: number;
  /** False: memory backend / --sync none: a crash loses the whole disk (S4). */
  readonly durable: boolean;
  readonly snapshotTimeoutMs: number;
  /**
   * A deliberate bug, to prove the simulator catches that kind of bug (mutation testing):
   * - `ack-before-durable`: a storage write is reported durable as soon as it is queued,
   *   so replicas ack (and primaries commit) entries their disk does not hold yet;
   * - `lying-fsync`: a crash also loses the last batches the disk said were durable;
   * - `unconfirmed-reads`: a replica that believes it is the serving primary answers reads
   *   from its disk at once, without the confirmation round (§7);
   * - `server-delete-replies`: answers deletes exactly as src/storageserver/server.ts did
   *   when this simulator was written: the first reply for an entry consumes its `existed`
   *   result, and a retried delete answered from the dedup table reads it before the apply
   *   is durable. Both can tell a client `existed: false` for a delete that removed a key.
   */
  readonly mutation?: Mutation;
}

export type Mutation = 'ack-before-durable' | 'lying-fsync' | 'unconfirmed-reads' | 'server-delete-replies';
export const MUTATIONS: readonly Mutation[] = ['ack-before-durable', 'lying-fsync', 'unconfirmed-reads', 'server-delete-replies'];

const encoder = new TextEncoder();
export const bytes = (s: string): Uint8Array => encoder.encode(s);

const err = (e: { toWire(): WireError }): CallResult => ({ ok: false, error: e.toWire() });

/** Mirrors BatchWriter: group commit with the `after` barrier. */
class SimWriter {
  private ops: BatchOp[] = [];
  private writeIds: Array<{ partition: PartitionId; writeId: number }> = [];
  private inFlight: { batch: number; ops: BatchOp[]; writeIds: Array<{ partition: PartitionId; writeId: number }> } | null = null;
  private openBatch = 1;
  private committedBatch = 0;
  private readonly lastBatchOf = new Map<PartitionId, number>();
  private readonly waiting = new Map<PartitionId, Array<{ batch: number; fn: () => void }>>();
  private startQueued = false;

  constructor(private readonly node: SimStorageNode) {}

  enqueue(partition: PartitionId, ops: readonly BatchOp[], writeId?: number): void {
    for (const op of ops) this.ops.push(op);
    if (writeId !== undefined) this.writeIds.push({ partition, writeId });
    this.lastBatchOf.set(partition, this.openBatch);
    if (!this.inFlight && !this.startQueued) {
      this.startQueued = true;
      this.node.world.microtask(() => {
        this.startQueued = false;
        this.startBatch();
      });
    }
  }

  after(partition: PartitionId, fn: () => void): void {
    const batch = this.lastBatchOf.get(partition) ?? 0;
    const queue = this.waiting.get(partition);
    if (!queue && batch <= this.committedBatch) return fn();
    if (queue) queue.push({ batch, fn });
    else this.waiting.set(partition, [{ batch, fn }]);
  }

  private startBatch(): void {
    if (this.inFlight || this.ops.length === 0) return;
    const batch = this.openBatch++;
    this.inFlight = { batch, ops: this.ops, writeIds: this.writeIds };
    this.ops = [];
    this.writeIds = [];
    const w = this.node.world;
    const delay = w.rng.int(this.node.knobs.fsyncMinMs, this.node.knobs.fsyncMaxMs);
    w.schedule(delay, this.node.id, () => this.complete());
  }

  private complete(): void {
    const f = this.inFlight!;
    const deletes = this.node.writeDurably(f.ops, `batch ${f.batch}`);
    this.committedBatch = f.batch;
    this.inFlight = null;
    this.node.onBatchDone(deletes, f.writeIds);
    this.runWaiting();
    this.startBatch();
  }

  private runWaiting(): void {
    for (const [partition, queue] of this.waiting) {
      while (queue.length > 0 && queue[0]!.batch <= this.committedBatch) queue.shift()!.fn();
      if (queue.length === 0) this.waiting.delete(partition);
    }
  }

  /** At a crash: the batch being written may or may not have reached the disk (`reached`: decide it). */
  crash(reached?: boolean): void {
    if (this.inFlight && (reached ?? this.node.world.rng.chance(0.5))) this.node.writeDurably(this.inFlight.ops, `batch ${this.inFlight.batch} (durable just before the crash)`);
    this.inFlight = null;
  }
}

interface Waiter {
  readonly respond: (r: CallResult) => void;
  readonly partition: PartitionId;
}

/** What a process holds in memory: gone at a crash. */
class Volatile {
  readonly replicas = new Map<PartitionId, Replica>();
  readonly recoveries = new Map<PartitionId, ReplicaRecovery>();
  readonly waiters = new Map<number, Waiter>();
  readonly deleteResults = new Map<string, boolean>();
  readonly dirty = new Set<PartitionId>();
  flushScheduled = false;
  partitions = 0;
  minWriteReplicas = 1;
  removeSilentAfterMs = 0;
  nextRequestId = 1;
  heartbeating = false;
  registering = false;
  timersStarted = false;
  readonly startedMs: number;
  constructor(
    readonly writer: SimWriter,
    nowMs: number,
  ) {
    this.startedMs = nowMs;
  }
}

export class SimStorageNode implements Endpoint {
  up = false;
  paused = false;
  inc = 0;
  held: SimEvent[] = [];
  disk = new SimDisk();
  private v: Volatile | undefined;
  private readonly limits: Limits;
  readonly stats = { crashes: 0, restarts: 0, lostBatches: 0 };

  constructor(
    readonly id: NodeId,
    readonly world: World,
    readonly knobs: NodeKnobs,
    private readonly observer: Observer,
  ) {
    this.limits = defaultLimits({ logRetainEntries: knobs.logRetainEntries });
  }

  get incarnation(): string {
    return `${this.id}#${this.inc}`;
  }

  /** The replicas of the running process (empty when down). */
  get replicas(): ReadonlyMap<PartitionId, Replica> {
    return this.v?.replicas ?? new Map();
  }

  // ---- process lifecycle ----

  start(): void {
    this.world.started(this.id);
    const v = new Volatile(new SimWriter(this), this.world.now);
    this.v = v;
    // loadLogs: every partition on disk, as the real server reads its backend at start.
    for (const [p, d] of this.disk.parts) {
      // As StorageServer.recover: the epoch is the persisted one, else the log's (S3); a
      // corrupt marker in the metadata (S13) starts the replica corrupt.
      const recovery: ReplicaRecovery = { epoch: d.meta?.epoch ?? this.disk.lastPosition(p).epoch, config: d.meta?.config ?? null, applied: d.applied, logBase: d.logBase, entries: [...d.log], dedup: [...d.dedup.values()] };
      v.recoveries.set(p, d.meta?.corrupt === undefined ? recovery : { ...recovery, entries: [], dedup: [], corrupt: d.meta.corrupt });
    }
    this.world.trace(`${this.id} starts (incarnation ${this.inc}, ${v.recoveries.size} partitions on disk)`);
    this.register(100);
  }

  /** Kills the process; `inFlightReached` decides whether the batch being fsynced made it (default: a coin flip). */
  crash(inFlightReached?: boolean): void {
    if (!this.up) return;
    this.stats.crashes++;
    this.v?.writer.crash(inFlightReached);
    this.v = undefined;
    if (!this.knobs.durable) {
      this.disk = new SimDisk();
      this.observer.onDiskLost(this.id);
    }
    if (this.knobs.mutation === 'lying-fsync' && this.beforeRecentBatches.length > 0) {
      // The disk acknowledged these batches but never wrote them.
      this.disk = this.beforeRecentBatches[0]!;
      this.world.trace(`${this.id} MUTATION lying-fsync: loses its last ${this.beforeRecentBatches.length} acknowledged batches`);
    }
    this.beforeRecentBatches = [];
    this.world.crashed(this.id);
    this.world.trace(`${this.id} CRASHES${this.knobs.durable ? '' : ' and loses its disk'}`);
  }

  /** With the lying-fsync mutation: copies of the disk before each of the last few batches. */
  private beforeRecentBatches: SimDisk[] = [];

  /** Applies a batch to the disk; a precondition failure is a violation (the real server exits 70). */
  writeDurably(ops: readonly BatchOp[], what: string): Array<{ partition: PartitionId; seq: Seq; existed: boolean }> {
    if (this.knobs.mutation === 'lying-fsync') {
      this.beforeRecentBatches.push(this.disk.clone());
      if (this.beforeRecentBatches.length > 3) this.beforeRecentBatches.shift();
    }
    if (this.world.tracing) this.world.trace(`${this.id} durable ${what}: ${ops.map((o) => describeOutput({ kind: 'persist', ops: [o] })).join('; ')}`);
    try {
      return this.disk.write(ops, { onApplied: (p, e, digest) => this.observer.onApplied(this.id, p, e, digest) });
    } catch (e) {
      if (e instanceof InvariantViolation) this.observer.fail('storage-precondition', `${this.id}: ${e.message}`);
      throw e;
    }
  }

  // ---- the nameserver ----

  private register(delayMs: number): void {
    const v = this.v!;
    if (v.registering) return;
    v.registering = true;
    const attempt = (delay: number) => {
      this.world.call(this.id, 'ns', { t: 'register', nodeId: this.id, incarnation: this.incarnation, durable: this.knobs.durable, activePartitions: [...v.replicas.values()].filter((r) => r.activatedOnce).map((r) => r.partition) }, this.knobs.callTimeoutMs, () => `register ${this.incarnation}`, (r) => {
        if (!r.ok) {
          this.world.schedule(delay, this.id, () => attempt(Math.min(delay * 2, 2000)));
          return;
        }
        const reply = r.value as { partitions: number; minWriteReplicas: number; deadAfterMs: number };
        v.registering = false;
        v.partitions = reply.partitions;
        v.minWriteReplicas = reply.minWriteReplicas;
        v.removeSilentAfterMs = reply.deadAfterMs;
        // S4: recovered replicas exist from now on, inactive until a configuration arrives.
        for (const p of v.recoveries.keys()) this.replica(p);
        if (!v.timersStarted) {
          v.timersStarted = true;
          this.world.schedule(this.knobs.heartbeatMs, this.id, () => this.heartbeatTimer());
          this.world.schedule(this.knobs.tickMs, this.id, () => this.tickTimer());
        }
        this.heartbeat();
      });
    };
    attempt(delayMs);
  }

  private heartbeatTimer(): void {
    this.heartbeat();
    this.world.schedule(this.knobs.heartbeatMs, this.id, () => this.heartbeatTimer());
  }

  private tickTimer(): void {
    const v = this.v!;
    for (const [p, r] of v.replicas) this.execute(p, this.stepReplica(r, { kind: 'tick', nowMs: this.world.now }));
    this.world.schedule(this.knobs.tickMs, this.id, () => this.tickTimer());
  }

  private heartbeat(): void {
    const v = this.v!;
    if (v.heartbeating || v.partitions === 0 || v.registering) return;
    v.heartbeating = true;
    const progress = [...v.replicas.values()].map((r) => r.progress());
    const body = { t: 'heartbeat', nodeId: this.id, incarnation: this.incarnation, uptimeMs: this.world.now - v.startedMs, keys: 0, progress };
    this.world.call(this.id, 'ns', body, this.knobs.callTimeoutMs, () => `heartbeat ${this.incarnation}`, (r) => {
      v.heartbeating = false;
      if (!r.ok) return;
      const reply = r.value as { kind: 'register' } | { kind: 'ok'; configs: Config[] };
      if (reply.kind === 'register') return this.register(100);
      for (const config of reply.configs) this.step(config.partition, { kind: 'configure', config });
    });
  }

  // ---- driving the replica cores ----

  private replica(p: PartitionId): Replica {
    const v = this.v!;
    let r = v.replicas.get(p);
    if (r) return r;
    const recovery = v.recoveries.get(p);
    r = new Replica({ node: this.id, partition: p, minWriteReplicas: v.minWriteReplicas, limits: this.limits, resendAfterMs: this.knobs.resendAfterMs, incarnation: this.incarnation, removeSilentAfterMs: v.removeSilentAfterMs }, recovery);
    r.nowMs = this.world.now;
    v.replicas.set(p, r);
    this.observer.onRestarted(this.id, p, r.commitSeq);
    return r;
  }

  private stepReplica(r: Replica, input: ReplicaInput): ReplicaOutput[] {
    let out: ReplicaOutput[];
    try {
      out = r.step(input);
    } catch (e) {
      if (e instanceof InvariantViolation) this.observer.fail('core-assert', `${this.id} p${r.partition} on ${input.kind}: ${e.message}`);
      throw e;
    }
    this.observer.onStepped(this.id, r);
    if (this.world.tracing && (out.length > 0 || (input.kind !== 'tick' && input.kind !== 'flush'))) {
      const what = input.kind === 'peer' ? `${input.kind} from ${input.from}: ${describeMessage(input.message)}` : describeInput(input);
      this.world.trace(`${this.id} p${r.partition} e${r.epoch} ${r.active ? r.role : 'inactive'} ← ${what}${out.length ? '' : ' (no output)'}`);
      for (const o of out) this.world.trace(`${' '.repeat(this.id.length)}     → ${describeOutput(o)}`);
    }
    return out;
  }

  private step(p: PartitionId, input: ReplicaInput): void {
    const r = this.replica(p);
    this.execute(p, this.stepReplica(r, input));
    this.markDirty(p);
  }

  private markDirty(p: PartitionId): void {
    const v = this.v!;
    v.dirty.add(p);
    if (v.flushScheduled) return;
    v.flushScheduled = true;
    // setImmediate: after the other events of this instant.
    this.world.schedule(0, this.id, () => {
      v.flushScheduled = false;
      const dirty = [...v.dirty];
      v.dirty.clear();
      for (const q of dirty) this.execute(q, this.stepReplica(this.replica(q), { kind: 'flush' }));
    });
  }

  private execute(p: PartitionId, outputs: ReplicaOutput[]): void {
    const v = this.v!;
    for (const o of outputs) {
      switch (o.kind) {
        case 'persist':
          if (this.knobs.mutation === 'ack-before-durable' && o.writeId !== undefined) {
            // The disk is said to hold the batch as soon as it is queued: the core acks it,
            // commits on it, sends what waited for it.
            const writeId = o.writeId;
            v.writer.enqueue(p, o.ops);
            this.world.schedule(0, this.id, () => this.step(p, { kind: 'persisted', writeId }));
          } else {
            v.writer.enqueue(p, o.ops, o.writeId);
          }
          break;
        case 'send':
          if (o.immediate) this.sendPeer(o.to, o.message);
          else v.writer.after(p, () => this.sendPeer(o.to, o.message));
          break;
        case 'reply': {
          if (o.duplicateOf !== undefined && o.op === 'delete' && o.result.kind === 'written') {
            // S10: a retried delete gets the original answer, kept in the dedup table.
            const seq = o.result.seq;
            const clientId = o.duplicateOf;
            const fn = () => {
              const rec = this.disk.dedupRecord(p, clientId);
              // Replaced by a later request of that client: whether it found its key is unknown.
              if (rec?.seq !== seq || rec.existed === undefined) return this.settle(o.requestId, { code: 'OUTCOME_UNKNOWN', message: `delete ${seq}: whether it found its key is no longer known`, retryable: true }, undefined);
              this.settle(o.requestId, undefined, { seq, op: 'delete', existed: rec.existed });
            };
            // The reply waits for the disk, as marked (D1: src/storageserver/server.ts once
            // read the dedup table at once and answered existed=false; seed 30 found it).
            if (o.immediate || this.knobs.mutation === 'server-delete-replies') fn();
            else v.writer.after(p, fn);
            break;
          }
          const result = o.result;
          const fn = () => this.settle(o.requestId, result.kind === 'error' ? result.error : undefined, result.kind === 'written' ? { seq: result.seq, op: o.op } : undefined);
          if (o.immediate) fn();
          else v.writer.after(p, fn);
          break;
        }
        case 'read':
          v.writer.after(p, () => this.serveRead(p, o.requestId, text(o.key)));
          break;
        case 'confirmWithNameserver':
          this.confirmWithNameserver(p, o.round, o.epoch);
          break;
        case 'requestPromotion':
          this.requestPromotion(p, o.learner, o.learnerIncarnation, o.epoch, 0, 50);
          break;
        case 'requestRemoval':
          this.world.call(this.id, 'ns', { t: 'removeSecondary', p, epoch: o.epoch, secondary: o.secondary }, this.knobs.callTimeoutMs, () => `removeSecondary p${p} e${o.epoch} ${o.secondary}`, (r) => {
            if (r.ok && this.v) this.step(p, { kind: 'configure', config: (r.value as { config: Config }).config });
          });
          break;
        case 'fetchSnapshot':
          v.writer.after(p, () => this.fetchSnapshot(p, o.from, o.epoch));
          break;
        case 'log':
          break;
      }
    }
  }

  private settle(requestId: number, error: WireError | undefined, written: { seq: Seq; op?: 'put' | 'delete'; existed?: boolean } | undefined): void {
    const v = this.v!;
    const w = v.waiters.get(requestId);
    if (!w) return;
    v.waiters.delete(requestId);
    if (error) return w.respond({ ok: false, error });
    if (!written) return w.respond({ ok: true, value: undefined });
    if (written.op === 'delete') {
      // The result stays for every waiter (D1: src/storageserver/server.ts once deleted it on
      // the first read, so a retry queued behind the first attempt was told existed=false;
      // seed 2 found it).
      const key = `${w.partition}:${written.seq}`;
      const existed = written.existed ?? v.deleteResults.get(key) ?? false;
      if (this.knobs.mutation === 'server-delete-replies' && written.existed === undefined) v.deleteResults.delete(key);
      return w.respond({ ok: true, value: { existed, version: written.seq } });
    }
    w.respond({ ok: true, value: { version: written.seq } });
  }

  onBatchDone(deletes: ReadonlyArray<{ partition: PartitionId; seq: Seq; existed: boolean }>, writeIds: ReadonlyArray<{ partition: PartitionId; writeId: number }>): void {
    const v = this.v!;
    for (const d of deletes) {
      v.deleteResults.set(`${d.partition}:${d.seq}`, d.existed);
      // Bounded: the oldest results go first (a waiter is answered within one batch).
      if (v.deleteResults.size > 10_000) v.deleteResults.delete(v.deleteResults.keys().next().value!);
    }
    for (const { partition, writeId } of writeIds) this.step(partition, { kind: 'persisted', writeId });
  }

  private serveRead(p: PartitionId, requestId: number, key: string): void {
    const v = this.v!;
    const w = v.waiters.get(requestId);
    if (!w) return;
    v.waiters.delete(requestId);
    const stored = this.disk.get(p, key);
    w.respond({ ok: true, value: stored ? { found: true, value: stored.value, version: stored.version } : { found: false } });
  }

  private confirmWithNameserver(p: PartitionId, round: number, epoch: Epoch): void {
    this.world.call(this.id, 'ns', { t: 'confirmEpoch', p, epoch }, this.knobs.callTimeoutMs, () => `confirmEpoch p${p} e${epoch}`, (r) => {
      if (r.ok && (r.value as { current: boolean }).current) this.step(p, { kind: 'nameserverConfirmed', round, epoch });
    });
  }

  /** S7: asks until the nameserver answers (bounded), unless the replica moved on. */
  private requestPromotion(p: PartitionId, learner: NodeId, learnerIncarnation: string, epoch: Epoch, attempt: number, delayMs: number): void {
    if (attempt >= 1000 || this.replica(p).epoch !== epoch) return;
    this.world.call(this.id, 'ns', { t: 'promote', p, epoch, learner, learnerIncarnation }, this.knobs.callTimeoutMs, () => `promote p${p} e${epoch} ${learner}`, (r) => {
      if (r.ok) {
        const { config } = r.value as { config: Config };
        this.step(p, { kind: 'promotionAnswered', config, epoch });
        return;
      }
      this.world.schedule(delayMs, this.id, () => this.requestPromotion(p, learner, learnerIncarnation, epoch, attempt + 1, Math.min(delayMs * 2, 1000)));
    });
  }

  /** S11: fetches a snapshot from the primary and installs it atomically. */
  private fetchSnapshot(p: PartitionId, from: NodeId, epoch: Epoch): void {
    this.world.call(this.id, from, { t: 'snapshotRead', p, epoch }, this.knobs.snapshotTimeoutMs, () => `snapshotRead p${p} e${epoch}`, (r) => {
      if (!r.ok) return this.step(p, { kind: 'snapshotFailed', reason: r.error.message });
      const image = r.value as SnapshotImage;
      // S11: only a learner installs a snapshot (it may have been promoted meanwhile).
      if (this.replica(p).role !== 'learner') return this.step(p, { kind: 'snapshotFailed', reason: 'no longer a learner' });
      try {
        this.disk.installSnapshot(p, image);
      } catch (e) {
        if (e instanceof InvariantViolation) this.observer.fail('storage-precondition', `${this.id}: ${e.message}`);
        throw e;
      }
      this.observer.onSnapshotInstalled(this.id, p, image.applied.seq, this.disk.digest(p));
      this.world.trace(`${this.id} p${p} installed a snapshot at ${image.applied.seq}@${image.applied.epoch} from ${from}`);
      const dedup: DedupRecord[] = [...image.dedup];
      this.step(p, { kind: 'snapshotInstalled', applied: image.applied, dedup });
    });
  }

  private sendPeer(to: NodeId, message: PeerMessage): void {
    this.world.send(this.id, to, { t: 'peer', m: message }, () => describeMessage(message));
  }

  onMessage(from: string, body: unknown): void {
    const v = this.v;
    if (!v) return;
    const { m } = body as { t: 'peer'; m: PeerMessage };
    // Before registering we do not know the cluster's settings (S8): the primary will re-send.
    if (v.partitions === 0 || m.partition >= v.partitions) return;
    this.step(m.partition, { kind: 'peer', from: from as NodeId, message: m });
  }

  // ---- calls from clients and peers ----

  onCall(_from: string, body: unknown, respond: (r: CallResult) => void): void {
    const v = this.v;
    if (!v) return;
    const req = body as { t: string; p: number; key?: string; value?: string; cid?: string; rs?: number; epoch?: number };
    if (v.partitions === 0) return respond(err(new NotPrimaryError(`${this.id} has not joined the cluster yet`)));
    if (req.p >= v.partitions) return respond(err(new InvalidArgumentError(`partition ${req.p} does not exist`)));
    const p = partitionId(req.p);
    switch (req.t) {
      case 'put':
      case 'del':
      case 'get': {
        const key = bytes(req.key!);
        if (partitionOf(key, v.partitions) !== p) return respond(err(new InvalidArgumentError(`key belongs to another partition`)));
        if (!v.replicas.has(p)) return respond(err(new NotPrimaryError(`${this.id} holds no replica of partition ${p}`)));
        const requestId = v.nextRequestId++;
        v.waiters.set(requestId, { respond, partition: p });
        const tag: RequestTag | undefined = req.cid !== undefined && req.rs !== undefined ? { clientId: req.cid, requestSeq: req.rs } : undefined;
        if (req.t === 'get') {
          const r = v.replicas.get(p)!;
          if (this.knobs.mutation === 'unconfirmed-reads' && r.serving) return this.serveRead(p, requestId, req.key!);
          return this.step(p, { kind: 'clientRead', requestId, key });
        }
        const op: Op = req.t === 'put' ? { kind: 'put', key, value: bytes(req.value!) } : { kind: 'delete', key };
        return this.step(p, tag ? { kind: 'clientWrite', requestId, op, tag } : { kind: 'clientWrite', requestId, op });
      }
      case 'snapshotRead': {
        const r = v.replicas.get(p);
        if (!r || r.role !== 'primary' || r.epoch !== req.epoch) return respond(err(new NotPrimaryError(`${this.id} is not primary of partition ${p} at epoch ${req.epoch}`)));
        return respond({ ok: true, value: this.disk.snapshot(p) });
      }
      default:
        throw new SimulationFailure(`unknown call ${req.t}`);
    }
  }
}

function describeInput(input: ReplicaInput): string {
  switch (input.kind) {
    case 'configure':
      return `configure e${input.config.epoch} ${describeConfig(input.config)}`;
    case 'clientWrite':
      return `clientWrite #${input.requestId} ${input.op.kind === 'put' ? `put ${text(input.op.key)}=${text(input.op.value)}` : input.op.kind === 'delete' ? `delete ${text(input.op.key)}` : input.op.kind}${input.tag ? ` (${input.tag.clientId}#${input.tag.requestSeq})` : ''}`;
    case 'clientRead':
      return `clientRead #${input.requestId} ${text(input.key)}`;
    case 'persisted':
      return `persisted w${input.writeId}`;
    case 'nameserverConfirmed':
      return `nameserverConfirmed round ${input.round} e${input.epoch}`;
    case 'promotionAnswered':
      return `promotionAnswered e${input.config.epoch} ${describeConfig(input.config)}`;
    case 'snapshotInstalled':
      return `snapshotInstalled at ${input.applied.seq}@${input.applied.epoch}`;
    case 'snapshotFailed':
      return `snapshotFailed: ${input.reason}`;
    case 'corrupt':
      return `corrupt: ${input.reason}`;
    case 'tick':
      return 'tick';
    case 'flush':
      return 'flush';
    case 'peer':
      return 'peer';
  }
}

export function describeConfig(c: Config): string {
  return `[P ${c.primary}; S ${c.secondaries.join(',') || '-'}; L ${c.learners.join(',') || '-'}]`;
}
