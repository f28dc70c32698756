/**
 * The state of one partition's replica, shared by the modules of this folder, each of which
 * acts on one concern of the protocol (configure.ts, prepare.ts, commit.ts, ...); `Replica`
 * (replica.ts) is the facade the drivers use. Fields other than those a driver reads
 * (epoch, config, role, active, the log and its seqs, `nowMs`) are internal to this folder.
 */
import {
  assert,
  type Config,
  type Epoch,
  type NodeId,
  type Op,
  type PartitionId,
  type RequestTag,
  type Role,
  type Seq,
  epoch as toEpoch,
  seq as toSeq,
} from '../types.js';
import type { WireError } from '../errors.js';
import type { ReplicaOptions, ReplicaRecovery, RequestId } from './io.js';
import { LogTail, ZERO_POSITION } from './log.js';
import { keyName } from '../txn-keys.js';

export interface PeerState {
  /** Highest seq this peer acked in this epoch. */
  ackedSeq: Seq;
  /** Highest seq sent (optimistically) to this peer. */
  sentSeq: Seq;
  sentCommitSeq: Seq;
  lastProgressMs: number;
  /** S11: offered a snapshot; no prepares until it asks for entries again. */
  snapshotting: boolean;
  /** When a prepare (or the snapshot offer) last went to this peer. */
  lastSentMs: number;
  /** The incarnation whose acks `ackedSeq` counts (S7, S11); '' until it first answers. */
  incarnation: string;
  /** When anything last came from this peer (or, after a pause of ours, when we resumed). */
  lastHeardMs: number;
  /** When we last asked the nameserver to remove it (0: not in this epoch). */
  removalRequestedMs: number;
  /** Since when we wait on it for an ack or a confirmation (0: we do not). */
  waitingSinceMs: number;
}

export interface PendingWrite {
  readonly seq: Seq;
  readonly requestId: RequestId;
  readonly op: Exclude<Op['kind'], 'epochStart'>;
  readonly tag?: RequestTag;
}

export interface PendingRead {
  readonly requestId: RequestId;
  readonly key: Uint8Array;
  /** A confirmation round >= this one, sent after the read arrived, confirms it. */
  readonly round: number;
  readonly commitAtArrival: Seq;
  /** §16: not a read: a failed condition, answered with this error when the read would be served. */
  readonly failure?: WireError;
}

export interface PendingDurable {
  readonly writeId: number;
  upToSeq: Seq;
}

export class ReplicaState {
  readonly node: NodeId;
  readonly partition: PartitionId;
  readonly opts: ReplicaOptions;

  epoch: Epoch;
  config: Config | null;
  /** S4: false after a restart until a configuration gives this replica a role. */
  active = false;
  /** This replica has had a role since the process started (it holds state of its own, S4). */
  activatedOnce = false;
  role: Role = 'inactive';
  readonly log: LogTail;
  commitSeq: Seq;
  appliedSeq: Seq;
  /**
   * S16: the seq of the digest entry the driver is capturing the applied state at (output
   * `captureDigest`); nothing past it is applied until it answers `digestCaptured`.
   */
  digestCapture: Seq | null = null;
  durableSeq: Seq;
  nowMs = 0;

  // Secondary state.
  /** Highest seq known to match the current primary's log in this epoch. */
  matchedSeq: Seq;
  ackedSeq: Seq;
  primaryCommitSeq: Seq;

  // Primary state.
  peers = new Map<NodeId, PeerState>();
  /** S6: seq of this primary's epoch-start entry; it serves once it is committed. */
  epochStartSeq: Seq = toSeq(0);
  persistedSeq: Seq;
  pendingWrites: PendingWrite[] = [];
  pendingReads: PendingRead[] = [];
  nextRound = 1;
  roundInFlight: { round: number; acks: Set<NodeId>; sentMs: number } | null = null;
  /** §7: the highest confirmation round that completed; reads of rounds up to it are confirmed. */
  confirmedRound = 0;

  /** §16: the user keys with an intent in the applied state (names: txn-keys.ts keyName). */
  readonly appliedIntents = new Set<string>();
  /** S10: per client, its last applied request. */
  readonly dedup = new Map<string, { requestSeq: number; seq: Seq }>();
  /** S7: a learner being promoted; while `requested`, nothing commits and no read is confirmed. */
  promotion: { learner: NodeId; requested: boolean; sinceMs: number } | null = null;
  /** S11: a snapshot is being fetched and installed; prepares wait. */
  installing = false;
  /** S13: why this replica's partition is corrupt, until it drops it to relearn (file comment). */
  corrupt: string | undefined;
  /** S13: the write that persists the corrupt marker (0: none yet); reported once durable. */
  corruptMarkWriteId = 0;
  corruptReported = false;
  /** S13: made a learner while a snapshot install ran: the drop waits for the install to end. */
  relearnPending = false;

  nextWriteId = 1;
  pendingDurable: PendingDurable[] = [];
  /** While false, sends wait for the epoch/config persist (S3). */
  metaDurable = true;
  metaWriteId = 0;

  constructor(opts: ReplicaOptions, recovery?: ReplicaRecovery) {
    this.opts = opts;
    this.node = opts.node;
    this.partition = opts.partition;
    const r = recovery ?? {
      epoch: toEpoch(0),
      config: null,
      applied: ZERO_POSITION,
      logBase: ZERO_POSITION,
      entries: [],
    };
    this.corrupt = r.corrupt;
    // Recovered corrupt: the marker (or the bad log record) is on disk already.
    this.corruptReported = r.corrupt !== undefined;
    // S13: a corrupt log is not used: the replica holds its applied position only, until it
    // drops the partition to relearn it.
    this.log = r.corrupt === undefined ? new LogTail(r.logBase, r.entries) : new LogTail(r.applied, []);
    // S3: on restart the epoch is max(persisted, highest epoch in the log).
    this.epoch = toEpoch(Math.max(r.epoch, this.log.last.epoch));
    this.config = r.config;
    assert(r.applied.seq >= r.logBase.seq, 'applied below the log base');
    assert(r.applied.seq <= this.log.lastSeq, 'applied past the log');
    this.appliedSeq = r.applied.seq;
    this.commitSeq = r.applied.seq;
    this.durableSeq = this.log.lastSeq;
    this.persistedSeq = this.log.lastSeq;
    this.matchedSeq = this.commitSeq;
    this.ackedSeq = this.commitSeq;
    this.primaryCommitSeq = this.commitSeq;
    for (const d of r.dedup ?? []) this.dedup.set(d.clientId, { requestSeq: d.requestSeq, seq: d.seq });
    if (r.corrupt === undefined) for (const k of r.intents ?? []) this.appliedIntents.add(keyName(k));
  }

  /** True once this primary may accept writes and serve reads (S6). */
  get serving(): boolean {
    return this.active && this.role === 'primary' && this.commitSeq >= this.epochStartSeq && this.epochStartSeq > 0;
  }

  get lastSeq(): Seq {
    return this.log.lastSeq;
  }

  get minWriteReplicas(): number {
    return this.liveMinWriteReplicas ?? this.opts.minWriteReplicas;
  }

  /**
   * Issue 15: the live --min-write-replicas, from an epoch-ordered map record. It is checked
   * where it always was: when a write is admitted and when the commit point advances (S8);
   * raising it holds back what is not committed yet, lowering it lets later writes commit on
   * fewer disks (docs/consistency.md, "Live settings").
   */
  setMinWriteReplicas(n: number): void {
    this.liveMinWriteReplicas = n;
  }

  private liveMinWriteReplicas: number | undefined;
}
