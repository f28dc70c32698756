/**
 * A simulated storage server: the host the process runs (src/storageserver/host.ts, which
 * drives the real replica cores) with its effects executed over the simulated network, disk
 * and clock, as src/storageserver/server.ts executes them with sockets, a backend and timers.
 *
 * - `writeBatch` effects are fsynced after a random delay (fsyncMinMs..fsyncMaxMs); one
 *   batch is in flight at a time (the host's group commit decides what goes in it);
 * - `scheduleFlush` runs after the other events of this instant (setImmediate), `scheduleBatch`
 *   as a microtask; a tick timer runs every tickMs once registered; heartbeats every
 *   heartbeatMs carry progress and bring back configurations;
 * - a crash loses everything but the SimDisk (the batch being fsynced reaches the disk or
 *   not, by coin flip); a restart rebuilds each replica from the disk with the host's
 *   `recoveryOf`, as the real server does from its backend.
 */
import { intentKey, isIntentKey, isReserved, userKeyOfIntent } from '../../src/core/txn-keys.js';
import {
  DstoreError,
  InvalidArgumentError,
  UnavailableError,
  errorFromWire,
  type WireError,
} from '../../src/core/errors.js';
import { defaultLimits, type Limits } from '../../src/core/limits.js';
import type { PeerMessage } from '../../src/core/replica/messages.js';
import type { BatchOp, DedupRecord } from '../../src/core/replica/ops.js';
import type { Replica, ReplicaInput, ReplicaRecovery } from '../../src/core/replica/replica.js';
import {
  assertNever,
  type Config,
  type Epoch,
  InvariantViolation,
  type NodeId,
  type PartitionId,
  type Seq,
  partitionId,
} from '../../src/core/types.js';
import {
  askRequest,
  type HeartbeatAnswer,
  type HostEffect,
  type HostMutations,
  type NameserverAnswer,
  type NameserverAsk,
  type RegisterAnswer,
  StorageHost,
  recoveryOf,
} from '../../src/storageserver/host.js';
import { DigestBuilder, type PartitionDigest } from '../../src/storage/digest.js';
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
   * The disk can fail (issue 10): each batch fails with this probability (it may or may not
   * have reached the disk, a coin flip decides); the host goes unhealthy, reopens the disk
   * after its backoff, reloads as a restart would (new incarnation) and registers again.
   */
  readonly batchFailP?: number;
  /** Each attempt to reopen a failed disk fails with this probability (the host backs off and retries). */
  readonly reopenFailP?: number;
  /** A batch is this much slower with probability slowBatchP. */
  readonly slowBatchP?: number;
  readonly slowBatchMs?: number;
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
   *   is durable. Both can tell a client `existed: false` for a delete that removed a key;
   * - `ack-failed-batch`: the writes of a batch that failed are acknowledged as if durable
   *   (needs batchFailP > 0);
   * - `forget-unapplied`: a restart drops the log entries above the applied point, as if the
   *   apply (not the synced log) made a write durable. Applies are lazy (they ride with a later
   *   batch), so a crash of every replica at once (`crashAll`) loses acknowledged writes.
   * - `unfenced-save` (election mode): the simulated etcd stores a map saved by a deposed leader
   *   (the fence is not checked), which the election checks must catch.
   * - `repair-disabled` (with anti-entropy, anti-entropy.ts): the check finds the odd replicas
   *   but never tells them to relearn, which `replicas-disagree` must catch.
   * - `txn-reads-ignore-intents` (with --bank, txn-driver.ts): the transaction driver drops the
   *   intent a read returns, so reads see half of a committed transaction (`bank-audit`).
   */
  readonly mutation?: Mutation;
}

export type Mutation =
  | 'ack-before-durable'
  | 'lying-fsync'
  | 'unconfirmed-reads'
  | 'server-delete-replies'
  | 'ack-failed-batch'
  | 'forget-unapplied'
  | 'unfenced-save'
  | 'repair-disabled'
  | 'txn-reads-ignore-intents';
export const MUTATIONS: readonly Mutation[] = [
  'ack-before-durable',
  'lying-fsync',
  'unconfirmed-reads',
  'server-delete-replies',
  'ack-failed-batch',
  'forget-unapplied',
  'unfenced-save',
  'repair-disabled',
  'txn-reads-ignore-intents',
];

const encoder = new TextEncoder();
export const bytes = (s: string): Uint8Array => encoder.encode(s);

const err = (e: { toWire(): WireError }): CallResult => ({ ok: false, error: e.toWire() });

/** The host's hooks for a planted bug (lying-fsync is the disk's, not the host's). */
function hostMutations(m: Mutation | undefined): HostMutations {
  switch (m) {
    case 'ack-before-durable':
      return { ackBeforeDurable: true };
    case 'unconfirmed-reads':
      return { unconfirmedReads: true };
    case 'server-delete-replies':
      return { serverDeleteReplies: true };
    case 'ack-failed-batch':
      return { ackFailedBatch: true };
    case 'lying-fsync':
    case 'forget-unapplied':
    case 'unfenced-save':
    case 'repair-disabled':
    case 'txn-reads-ignore-intents':
    case undefined:
      return {}; // the disk's (or the election service's), not the host's
    default:
      return assertNever(m);
  }
}

type Respond = (r: CallResult) => void;

/** What a process holds in memory: gone at a crash. */
class Volatile {
  /** The batch being fsynced. */
  inFlight: { batch: number; ops: readonly BatchOp[] } | null = null;
  timersStarted = false;
  /** S16: the digests computed at digest entries, by `p/seq` (server.ts keeps them in memory too). */
  readonly digests = new Map<string, PartitionDigest>();
  /** The replica's epoch when each digest was captured (a relearn is refused once it moved). */
  readonly digestEpochs = new Map<string, number>();
  constructor(readonly host: StorageHost<Respond>) {}
}

export class SimStorageNode implements Endpoint {
  up = false;
  paused = false;
  inc = 0;
  held: SimEvent[] = [];
  disk = new SimDisk();
  private v: Volatile | undefined;
  private readonly limits: Limits;
  readonly stats = { crashes: 0, restarts: 0, lostBatches: 0, failedBatches: 0, reloads: 0 };
  /** Reloads after a storage failure in this process's life (each one a new incarnation). */
  private reloads = 0;

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

  /** After the heal: batches and reopens no longer fail (slow batches stay). */
  disksHealed = false;

  /** Whether the running process's storage works (false when down). */
  get healthy(): boolean {
    return this.v?.host.health.state === 'healthy';
  }

  /** The replicas of the running process (empty when down). */
  get replicas(): ReadonlyMap<PartitionId, Replica> {
    return this.v?.host.replicas ?? new Map();
  }

  // ---- process lifecycle ----

  /** §16: the user keys of `p` with an intent in the stored state, as the server's `intentsOf` reads them. */
  private intentsOnDisk(p: PartitionId): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const k of this.disk.parts.get(p)?.data.keys() ?? []) {
      const key = bytes(k);
      if (isIntentKey(key)) out.push(userKeyOfIntent(key));
    }
    return out;
  }

  start(): void {
    this.world.started(this.id);
    this.reloads = 0;
    const host = new StorageHost<Respond>(
      {
        nodeId: this.id,
        limits: this.limits,
        now: () => this.world.now,
        newIncarnation: () => (this.reloads === 0 ? this.incarnation : `${this.incarnation}.r${this.reloads}`),
        resendAfterMs: this.knobs.resendAfterMs,
        durable: this.knobs.durable,
        heartbeatMs: this.knobs.heartbeatMs,
        nameserver: 'ns',
        mutations: hostMutations(this.knobs.mutation),
        hooks: {
          replicaCreated: (r) => this.observer.onRestarted(this.id, r.partition, r.commitSeq, r.epoch),
          stepped: (r, input, out) => {
            this.observer.onStepped(this.id, r);
            if (this.world.tracing && (out.length > 0 || (input.kind !== 'tick' && input.kind !== 'flush'))) {
              const what =
                input.kind === 'peer'
                  ? `${input.kind} from ${input.from}: ${describeMessage(input.message)}`
                  : describeInput(input);
              this.world.trace(
                `${this.id} p${r.partition} e${r.epoch} ${r.active ? r.role : 'inactive'} ← ${what}` +
                  `${out.length ? '' : ' (no output)'}`,
              );
              for (const o of out) this.world.trace(`${' '.repeat(this.id.length)}     → ${describeOutput(o)}`);
            }
          },
          stepThrew: (r, input, e) => {
            if (e instanceof InvariantViolation)
              this.observer.fail('core-assert', `${this.id} p${r.partition} on ${input.kind}: ${e.message}`);
          },
        },
      },
      // §16: the answers to the host's own deletes of expired keys (nobody waits for them).
      () => undefined,
    );
    const v = new Volatile(host);
    this.v = v;
    const partitions = this.loadDisk(host);
    this.world.trace(`${this.id} starts (incarnation ${this.inc}, ${partitions} partitions on disk)`);
    this.run(v, host.register());
  }

  /** loadLogs: every partition on disk, as the real server reads its backend at start and reload. */
  private loadDisk(host: StorageHost<Respond>): number {
    const recoveries = new Map<PartitionId, ReplicaRecovery>();
    for (const [p, d] of this.disk.parts) {
      if (this.knobs.mutation === 'forget-unapplied') {
        // MUTATION: the log above the applied point is thrown away at start.
        const keep = Math.max(0, d.applied.seq - d.logBase.seq);
        if (keep < d.log.length) {
          this.world.trace(`${this.id} MUTATION forget-unapplied: drops ${d.log.length - keep} entries of p${p}`);
          d.log.length = keep;
        }
      }
      const state = { meta: d.meta, applied: d.applied, logBase: d.logBase, logLast: this.disk.lastPosition(p) };
      recoveries.set(p, recoveryOf(state, [...d.log], [...d.dedup.values()], this.intentsOnDisk(p)));
    }
    host.loaded(recoveries);
    return recoveries.size;
  }

  /** One reopen attempt after a storage failure (it fails with reopenFailP); reload as a restart would, register. */
  private reopen(v: Volatile, life: number, attempt: number): void {
    if (this.v !== v || !v.host.reopenAttempt(life, attempt)) return;
    const p = this.knobs.reopenFailP ?? 0;
    if (!this.disksHealed && p > 0 && this.world.rng.chance(p)) {
      this.world.trace(`${this.id} storage reopen attempt ${attempt} FAILS`);
      return this.run(v, v.host.reopenFailed(life, attempt, new Error(`simulated reopen failure ${attempt}`)));
    }
    this.loadDisk(v.host);
    this.reloads++;
    this.stats.reloads++;
    v.host.reloaded();
    this.world.trace(`${this.id} storage reopened (attempt ${attempt}); reloaded as incarnation ${v.host.incarnation}`);
    this.run(v, v.host.register());
  }

  /** Kills the process; `inFlightReached` decides whether the batch being fsynced made it (default: a coin flip). */
  crash(inFlightReached?: boolean): void {
    if (!this.up) return;
    this.stats.crashes++;
    const f = this.v?.inFlight;
    if (f && (inFlightReached ?? this.world.rng.chance(0.5)))
      this.writeDurably(f.ops, `batch ${f.batch} (durable just before the crash)`);
    this.v = undefined;
    if (!this.knobs.durable) {
      this.disk = new SimDisk();
      this.observer.onDiskLost(this.id);
    }
    if (this.knobs.mutation === 'lying-fsync' && this.beforeRecentBatches.length > 0) {
      // The disk acknowledged these batches but never wrote them.
      this.disk = this.beforeRecentBatches[0]!;
      this.world.trace(
        `${this.id} MUTATION lying-fsync: loses its last ${this.beforeRecentBatches.length} acknowledged batches`,
      );
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
    if (this.world.tracing)
      this.world.trace(
        `${this.id} durable ${what}: ${ops.map((o) => describeOutput({ kind: 'persist', ops: [o] })).join('; ')}`,
      );
    try {
      return this.disk.write(ops, { onApplied: (p, e, digest) => this.observer.onApplied(this.id, p, e, digest) });
    } catch (e) {
      if (e instanceof InvariantViolation) this.observer.fail('storage-precondition', `${this.id}: ${e.message}`);
      throw e;
    }
  }

  // ---- executing the host's effects ----

  private run(v: Volatile, effects: ReadonlyArray<HostEffect<Respond>>): void {
    for (const e of effects) {
      if (this.v !== v) return; // crashed meanwhile
      switch (e.kind) {
        case 'scheduleBatch':
          if (e.lazyMs === undefined)
            this.world.microtask(() => {
              if (this.v === v) this.run(v, v.host.startBatch());
            });
          else
            this.world.schedule(e.lazyMs, this.id, () => {
              if (this.v === v) this.run(v, v.host.startBatch(true));
            });
          break;
        case 'writeBatch': {
          v.inFlight = { batch: e.batch, ops: e.ops };
          // No draw unless the knob is on: seeds without disk failures keep their schedules.
          const rng = this.world.rng;
          const fails = !this.disksHealed && (this.knobs.batchFailP ?? 0) > 0 && rng.chance(this.knobs.batchFailP!);
          const slow =
            (this.knobs.slowBatchP ?? 0) > 0 && rng.chance(this.knobs.slowBatchP!) ? (this.knobs.slowBatchMs ?? 0) : 0;
          const delay = rng.int(this.knobs.fsyncMinMs, this.knobs.fsyncMaxMs) + slow;
          this.world.schedule(delay, this.id, () => {
            if (this.v !== v) return;
            v.inFlight = null;
            if (fails) {
              // A failed write may or may not be durable.
              this.stats.failedBatches++;
              if (rng.chance(0.5)) this.writeDurably(e.ops, `batch ${e.batch} (failed, but reached the disk)`);
              else this.world.trace(`${this.id} batch ${e.batch} FAILS and does not reach the disk`);
              return this.run(v, v.host.batchFailed(e.life, new Error(`simulated I/O error in batch ${e.batch}`)));
            }
            const deletes = this.writeDurably(e.ops, `batch ${e.batch}`);
            this.run(v, v.host.batchDone(e.life, e.batch, deletes));
          });
          break;
        }
        case 'scheduleFlush':
          // setImmediate: after the other events of this instant.
          this.world.schedule(0, this.id, () => {
            if (this.v === v) this.run(v, v.host.endOfTurn());
          });
          break;
        case 'send':
          this.world.send(this.id, e.to, { t: 'peer', m: e.message }, () => describeMessage(e.message));
          break;
        case 'answer':
          e.handle(e.result.ok ? { ok: true, value: e.result.value } : { ok: false, error: e.result.error.toWire() });
          break;
        case 'read': {
          const stored = this.disk.get(e.p, text(e.key));
          const intent = isReserved(e.key) ? undefined : this.disk.get(e.p, text(intentKey(e.key)));
          this.run(v, v.host.readDone(e.handle, e.p, stored, intent));
          break;
        }
        case 'scanExpiry':
          // §16: the partition's values with an expiry (transaction records' TTLs, the bank workload's).
          v.host.expiryFound(e.life, e.p, this.disk.expiring(e.p));
          break;
        case 'readForCondition':
          this.run(
            v,
            v.host.conditionRead(
              e.token,
              e.keys.map((k) => this.disk.get(e.p, text(k))),
            ),
          );
          break;
        case 'readDedup':
          this.run(v, v.host.dedupRead(e.handle, e.p, e.seq, this.disk.dedupRecord(e.p, e.clientId)));
          break;
        case 'ask':
          this.ask(v, e.life, e.ask);
          break;
        case 'askLater':
          this.world.schedule(e.afterMs, this.id, () => {
            if (this.v === v) this.run(v, v.host.retryAsk(e.life, e.ask));
          });
          break;
        case 'fetchSnapshot':
          this.fetchSnapshot(v, e.life, e.p, e.from, e.epoch);
          break;
        case 'captureDigest':
          // S16: the state is in memory, so capturing it is computing its digest now: the host
          // emits this after the earlier writes of p are durable, and the core applies nothing
          // past the digest entry until digestCaptured.
          v.digests.set(`${e.p}/${e.seq}`, this.digestOf(e.p, e.buckets));
          v.digestEpochs.set(`${e.p}/${e.seq}`, v.host.replicas.get(e.p)?.epoch ?? -1);
          this.world.schedule(0, this.id, () => {
            if (this.v === v) this.run(v, v.host.digestCaptured(e.life, e.p, e.seq));
          });
          break;
        case 'defer':
          this.world.schedule(0, this.id, () => {
            if (this.v === v) this.run(v, v.host.deferred(e.life, e.p, e.input));
          });
          break;
        case 'unhealthy':
          this.world.trace(`${this.id} storage UNHEALTHY (${e.reason})`);
          break;
        case 'reopen':
          this.world.schedule(e.afterMs, this.id, () => this.reopen(v, e.life, e.attempt));
          break;
        case 'gaveUp':
          throw new SimulationFailure(`${this.id}: storage never came back: ${e.reason}`);
        case 'register':
          this.world.nsCall(
            this.id,
            e.request,
            this.knobs.callTimeoutMs,
            () => `register ${e.request.incarnation}`,
            (r) => {
              if (this.v !== v) return;
              if (!r.ok) return this.run(v, v.host.registerFailed(e.gen, errorFromWire(r.error)));
              this.run(v, v.host.registerAnswered(e.gen, r.value as RegisterAnswer));
            },
          );
          break;
        case 'registerLater':
          this.world.schedule(e.afterMs, this.id, () => {
            if (this.v === v) this.run(v, v.host.retryRegister(e.gen));
          });
          break;
        case 'registered':
          if (!v.timersStarted) {
            v.timersStarted = true;
            this.world.schedule(this.knobs.heartbeatMs, this.id, () => this.heartbeatTimer());
            this.world.schedule(this.knobs.tickMs, this.id, () => this.tickTimer());
          }
          break;
        case 'registerGaveUp':
          throw new SimulationFailure(`${this.id} gave up registering: ${e.error.message}`);
        case 'heartbeat':
          this.world.nsCall(
            this.id,
            { ...e.request, keys: 0 },
            this.knobs.callTimeoutMs,
            () => `heartbeat ${e.request.incarnation}${e.request.unhealthy === undefined ? '' : ' (unhealthy)'}`,
            (r) => {
              if (this.v !== v) return;
              if (!r.ok) return this.run(v, v.host.heartbeatFailed(errorFromWire(r.error)));
              this.run(v, v.host.heartbeatAnswered(e.life, r.value as HeartbeatAnswer));
            },
          );
          break;
        case 'fatal':
          // A broken precondition is reported in writeDurably.
          throw new SimulationFailure(`${this.id}: unexpected ${e.kind} effect`);
        case 'log':
          break;
        default:
          assertNever(e);
      }
    }
  }

  /** S16: the digest of `p`'s applied state on this disk, listing the entries of `buckets`. */
  private digestOf(p: PartitionId, buckets: readonly number[]): PartitionDigest {
    const b = new DigestBuilder(new Set(buckets));
    const d = this.disk.parts.get(p);
    for (const [k, sv] of d?.data ?? []) b.addEntry(bytes(k), bytes(sv.value), sv.version, sv.expiresAt);
    for (const r of d?.dedup.values() ?? []) b.addDedup(r);
    return b.finish();
  }

  /**
   * The silent corruption fault (issue 13): `p`'s applied state on this disk changes without a
   * log entry, as a flipped bit the checksums miss or a write behind dstore's back would. It
   * only touches keys no client uses (`~c…`: a stray key appears, changes or disappears), so no
   * client can read the damage before anti-entropy repairs it; the digests see it all the same.
   * Returns what it did, or undefined when this disk holds no such partition.
   */
  corrupt(p: PartitionId): string | undefined {
    const d = this.disk.parts.get(p);
    if (!d) return undefined;
    const rng = this.world.rng;
    const stray = [...d.data.keys()].filter((k) => k.startsWith('~c')).sort();
    const what = stray.length === 0 ? 'add' : rng.pick(['add', 'change', 'drop'] as const);
    if (what === 'add') {
      const key = `~c${rng.int(0, 9)}`;
      d.data.set(key, { value: `junk${rng.int(0, 999)}`, version: d.applied.seq });
      this.observer.onCorrupted(this.id, p);
      return `a stray key ${key} appears`;
    }
    const key = rng.pick(stray);
    if (what === 'change') d.data.set(key, { value: `junk${rng.int(0, 999)}`, version: d.data.get(key)!.version });
    else d.data.delete(key);
    this.observer.onCorrupted(this.id, p);
    return what === 'change' ? `the value of ${key} changes` : `${key} disappears`;
  }

  // ---- a graceful stop (issue 15) ----

  /**
   * A SIGTERM, as src/storageserver/server.ts `close()` handles it: `leave` sent to the
   * nameserver (the host's `leaveRequest`), the configurations in the answer adopted
   * (`leaveAnswered`), then a bounded wait (HAND_OFF_WAIT_MS there) until each partition it
   * led got an entry from its new primary, and the process stops (what is fsynced stays, the
   * batch in flight completes). A storage failure skips the hand-off; an unanswered `leave`
   * leaves the failover to failure detection. `stopped` runs once it is down (not at a crash
   * meanwhile). Returns what happened, for the stats: `answered`, `handedOff`, `waitTimedOut`.
   */
  leave(waitMs: number, stopped: (outcome: 'noRequest' | 'unanswered' | 'handedOff' | 'waitTimedOut') => void): void {
    const v = this.v;
    if (!v) return;
    const request = v.host.leaveRequest();
    const stop = (outcome: 'noRequest' | 'unanswered' | 'handedOff' | 'waitTimedOut'): void => {
      if (this.v !== v) return;
      this.world.trace(`${this.id} STOPS (graceful, ${outcome})`);
      this.crash(true);
      stopped(outcome);
    };
    if (request === undefined) return stop('noRequest');
    const life = v.host.life;
    this.world.nsCall(
      this.id,
      request,
      this.knobs.callTimeoutMs,
      () => `leave ${request.incarnation}`,
      (r) => {
        if (this.v !== v) return;
        if (!r.ok) {
          this.world.trace(`${this.id} leave not answered: ${r.error.code} ${r.error.message}`);
          return stop('unanswered');
        }
        const configs = (r.value as { configs: Config[] }).configs;
        const { effects, handOff } = v.host.leaveAnswered(life, configs);
        this.run(v, effects);
        const deadline = this.world.now + waitMs;
        const poll = (): void => {
          if (this.v !== v) return;
          if (v.host.handedOff(handOff)) return stop('handedOff');
          if (this.world.now >= deadline) return stop('waitTimedOut');
          this.world.schedule(20, this.id, poll);
        };
        poll();
      },
    );
  }

  // ---- the nameserver ----

  private heartbeatTimer(): void {
    const v = this.v!;
    this.run(v, v.host.heartbeatDue());
    this.world.schedule(this.knobs.heartbeatMs, this.id, () => this.heartbeatTimer());
  }

  private tickTimer(): void {
    const v = this.v!;
    this.run(v, v.host.tick(this.world.now));
    this.world.schedule(this.knobs.tickMs, this.id, () => this.tickTimer());
  }

  private ask(v: Volatile, life: number, ask: NameserverAsk): void {
    const describe = (): string =>
      ask.t === 'confirmEpoch'
        ? `confirmEpoch p${ask.p} e${ask.epoch}`
        : ask.t === 'promote'
          ? `promote p${ask.p} e${ask.epoch} ${ask.learner}`
          : `removeSecondary p${ask.p} e${ask.epoch} ${ask.secondary}`;
    this.world.nsCall(this.id, askRequest(ask), this.knobs.callTimeoutMs, describe, (r) => {
      if (this.v !== v) return;
      if (!r.ok) return this.run(v, v.host.askFailed(life, ask, new Error(r.error.message)));
      const answer: NameserverAnswer =
        ask.t === 'confirmEpoch'
          ? { t: ask.t, current: (r.value as { current: boolean }).current }
          : { t: ask.t, config: (r.value as { config: Config }).config };
      this.run(v, v.host.answered(life, ask, answer));
    });
  }

  /** S11: fetches a snapshot from the primary and installs it atomically. */
  private fetchSnapshot(v: Volatile, life: number, p: PartitionId, from: NodeId, epoch: Epoch): void {
    this.world.call(
      this.id,
      from,
      { t: 'snapshotRead', p, epoch },
      this.knobs.snapshotTimeoutMs,
      () => `snapshotRead p${p} e${epoch}`,
      (r) => {
        if (this.v !== v) return;
        if (!r.ok) return this.run(v, v.host.snapshotFailed(life, p, r.error.message));
        const image = r.value as SnapshotImage & { corrupt?: boolean };
        if (!v.host.mayInstallSnapshot(life, p))
          return this.run(v, v.host.snapshotFailed(life, p, 'no longer a learner'));
        try {
          this.disk.installSnapshot(p, image);
        } catch (e) {
          if (e instanceof InvariantViolation) this.observer.fail('storage-precondition', `${this.id}: ${e.message}`);
          throw e;
        }
        this.observer.onSnapshotInstalled(this.id, p, image.applied.seq, this.disk.digest(p), image.corrupt === true);
        this.world.trace(
          `${this.id} p${p} installed a snapshot at ${image.applied.seq}@${image.applied.epoch} from ${from}`,
        );
        const dedup: DedupRecord[] = [...image.dedup];
        this.run(v, v.host.snapshotInstalled(life, p, image.applied, dedup, this.intentsOnDisk(p)));
      },
    );
  }

  onMessage(from: string, body: unknown): void {
    const v = this.v;
    if (!v) return;
    const { m } = body as { t: 'peer'; m: PeerMessage };
    this.run(v, v.host.peer(from as NodeId, m));
  }

  // ---- calls from clients and peers ----

  onCall(_from: string, body: unknown, respond: (r: CallResult) => void): void {
    const v = this.v;
    if (!v) return;
    const req = body as {
      t: string;
      p: number;
      seq?: number;
      digest?: string;
      buckets?: number[];
      key?: string;
      value?: string;
      cid?: string;
      rs?: number;
      ifv?: number;
      /** §16: conditions on more keys of the partition, a TTL, a transaction's own write. */
      ifk?: Array<{ key: string; v: number }>;
      ttl?: number;
      sys?: boolean;
      epoch?: number;
    };
    try {
      v.host.checkPartition(req.p);
      if (req.t === 'snapshotRead') v.host.checkSnapshotSource(partitionId(req.p), req.epoch!);
    } catch (e) {
      if (e instanceof DstoreError) return respond(err(e));
      throw e;
    }
    const p = partitionId(req.p);
    const tag = req.cid !== undefined && req.rs !== undefined ? { cid: req.cid, rs: req.rs } : {};
    const cond = {
      ...(req.ifv === undefined ? {} : { ifv: req.ifv }),
      ...(req.ifk === undefined ? {} : { ifk: req.ifk.map((k) => ({ key: bytes(k.key), v: k.v })) }),
      ...(req.sys === undefined ? {} : { sys: req.sys }),
    };
    const ttl = req.ttl === undefined ? {} : { ttl: req.ttl };
    switch (req.t) {
      case 'put':
        return this.run(
          v,
          v.host.clientCall(
            { t: 'put', p, key: bytes(req.key!), value: bytes(req.value!), ...tag, ...cond, ...ttl },
            respond,
          ),
        );
      case 'del':
        return this.run(v, v.host.clientCall({ t: 'del', p, key: bytes(req.key!), ...tag, ...cond }, respond));
      case 'get':
        return this.run(v, v.host.clientCall({ t: 'get', p, key: bytes(req.key!) }, respond));
      case 'snapshotRead':
        // (`corrupt`: for the observer only, which knows what the silent corruption fault did.)
        return respond({
          ok: true,
          value: this.observer.isCorrupted(this.id, p)
            ? { ...this.disk.snapshot(p), corrupt: true }
            : this.disk.snapshot(p),
        });
      case 'digest':
        return this.run(v, v.host.clientDigest(p, req.buckets ?? [], respond));
      case 'digestAt': {
        const mine = v.digests.get(`${p}/${req.seq}`);
        if (!mine)
          return respond(err(new UnavailableError(`${this.id} has no digest of partition ${p} at seq ${req.seq}`)));
        return respond({ ok: true, value: mine });
      }
      case 'relearn': {
        // As server.ts relearn: only if the digest the check saw is this server's there.
        const mine = v.digests.get(`${p}/${req.seq}`);
        if (!mine)
          return respond(err(new UnavailableError(`${this.id} has no digest of partition ${p} at seq ${req.seq}`)));
        if (mine.digest !== req.digest)
          return respond(err(new InvalidArgumentError(`${this.id}'s digest of partition ${p} differs: refusing`)));
        if (v.digestEpochs.get(`${p}/${req.seq}`) !== v.host.replicas.get(p)?.epoch)
          return respond(
            err(new UnavailableError(`${this.id}: partition ${p}'s configuration changed since: refusing`)),
          );
        this.world.trace(`${this.id} p${p} RELEARNS: its digest at seq ${req.seq} is odd (S16)`);
        v.host.corruptRead(p, new Error(`digest mismatch at seq ${req.seq} (S16)`));
        for (const k of [...v.digests.keys()]) if (k.startsWith(`${p}/`)) v.digests.delete(k);
        respond({ ok: true, value: { relearning: true } });
        return this.run(v, v.host.pending());
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
    case 'clientWrite': {
      const op = input.op;
      const what =
        op.kind === 'put'
          ? `put ${text(op.key)}=${text(op.value)}`
          : op.kind === 'delete'
            ? `delete ${text(op.key)}`
            : op.kind;
      const tag = input.tag ? ` (${input.tag.clientId}#${input.tag.requestSeq})` : '';
      return `clientWrite #${input.requestId} ${what}${tag}`;
    }
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
    case 'digestCaptured':
      return `digestCaptured at ${input.seq}`;
    case 'tick':
      return 'tick';
    case 'flush':
      return 'flush';
    case 'peer':
      return 'peer';
    default:
      return assertNever(input);
  }
}

export function describeConfig(c: Config): string {
  return `[P ${c.primary}; S ${c.secondaries.join(',') || '-'}; L ${c.learners.join(',') || '-'}]`;
}
