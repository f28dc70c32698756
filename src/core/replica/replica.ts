/**
 * The replica state machine of one partition on one storage server (DESIGN §5–§7, S1–S8).
 *
 * Role: as primary it orders client writes into log entries, prepares them on every
 * secondary, commits an entry once every secondary and its own disk hold it, applies it and
 * answers the client; it serves linearizable reads after a confirmation round. As secondary
 * it appends prepares in order, acks what it holds durably, and applies what is committed.
 *
 * Inputs: messages from peers, client requests, the nameserver's configurations, completed
 * storage writes (`persisted`), `flush` (end of an event-loop turn: send what accumulated)
 * and `tick` (time passes: resend what was not acked).
 * Outputs: `persist` (storage batch ops, executed in order), `send`, `reply`, `read`.
 *
 * Output ordering contract with the driver: outputs of one partition are executed in order;
 * a `persist` is asynchronous, and every later output not marked `immediate` waits until it
 * is durable. This is what makes "persist the epoch before sending under it" (S3), "reply
 * to a delete after applying it" and "read after applying" hold without more machinery.
 *
 * Invariants (asserted): commitSeq never moves back, never passes the log's end; applied
 * state only holds committed entries (S2); nothing at or below the commit point is ever
 * truncated (S1).
 *
 * Corruption (S13): when the driver finds a record of the partition corrupt (a stored value
 * failed its checksum on a read, a log record at open: input `corrupt`, or
 * `ReplicaRecovery.corrupt`), the replica steps out at once: it answers, acks and confirms
 * nothing (inactive), fails what waited on it as primary, and reports `corrupt` in its
 * progress, so the nameserver takes it out of its configuration (another member takes over
 * as primary, S5) and adds it back as a learner. Its data stays on disk, never served, until
 * then: only a configuration of a higher epoch that makes it a learner makes it drop the
 * partition (data, log, dedup table, in one batch with the new epoch) and relearn it from
 * zero (S11); never one of the epoch it found the corruption in, where its old acks and a
 * promotion request based on them may still count (S7). So a partition no healthy member
 * can supply stays unavailable rather than losing anything more. The reason is persisted in
 * the partition's metadata (and reported only once durable), so a restart before the drop
 * comes back corrupt; a snapshot install still running delays the drop until it ended.
 */
import {
  type WireError,
  InvalidArgumentError,
  NotPrimaryError,
  OutcomeUnknownError,
  OverloadedError,
  UnavailableError,
} from '../errors.js';
import type { Limits } from '../limits.js';
import {
  assert,
  type Config,
  type Epoch,
  type LogEntry,
  type NodeId,
  type Op,
  type PartitionId,
  type RequestTag,
  type Role,
  type Seq,
  epoch as toEpoch,
  roleIn,
  seq as toSeq,
} from '../types.js';
import type { BatchOp, DedupRecord } from './ops.js';
import { type LogPosition, LogTail, ZERO_POSITION } from './log.js';
import type {
  ClientResult,
  ConfirmAckMessage,
  ConfirmMessage,
  PeerMessage,
  PrepareAckMessage,
  PrepareMessage,
  PrepareNackMessage,
  SnapshotOfferMessage,
  StaleEpochMessage,
} from './messages.js';

export type RequestId = number;

export type ReplicaInput =
  | { readonly kind: 'configure'; readonly config: Config }
  | { readonly kind: 'peer'; readonly from: NodeId; readonly message: PeerMessage }
  | { readonly kind: 'clientWrite'; readonly requestId: RequestId; readonly op: Op; readonly tag?: RequestTag }
  | { readonly kind: 'clientRead'; readonly requestId: RequestId; readonly key: Uint8Array }
  /** The persist output with this id is durable. */
  | { readonly kind: 'persisted'; readonly writeId: number }
  /** The nameserver says `epoch` is still the partition's current epoch (§7, no secondaries). */
  | { readonly kind: 'nameserverConfirmed'; readonly round: number; readonly epoch: Epoch }
  /** S7: the nameserver's answer to our promotion request made at `epoch`: the partition's current configuration. */
  | { readonly kind: 'promotionAnswered'; readonly config: Config; readonly epoch: Epoch }
  /** S11: the snapshot we fetched is installed: data, dedup table and applied position. */
  | { readonly kind: 'snapshotInstalled'; readonly applied: LogPosition; readonly dedup: readonly DedupRecord[] }
  | { readonly kind: 'snapshotFailed'; readonly reason: string }
  /** S13: a read of this partition's records failed its checksum: step out and relearn. */
  | { readonly kind: 'corrupt'; readonly reason: string }
  | { readonly kind: 'flush' }
  | { readonly kind: 'tick'; readonly nowMs: number };

export type ReplicaOutput =
  /** Write these ops in one batch; when `writeId` is set, feed `persisted` back when durable. */
  | { readonly kind: 'persist'; readonly ops: readonly BatchOp[]; readonly writeId?: number }
  | { readonly kind: 'send'; readonly to: NodeId; readonly message: PeerMessage; readonly immediate: boolean }
  /** Answer a client; `deleteSeq` asks the driver to fill in whether the applied delete found the key. */
  | {
      readonly kind: 'reply';
      readonly requestId: RequestId;
      readonly result: ClientResult;
      readonly immediate: boolean;
      readonly op?: 'put' | 'delete';
      readonly duplicateOf?: string;
    }
  /** Serve a confirmed read from the applied state (after earlier persists). */
  | { readonly kind: 'read'; readonly requestId: RequestId; readonly key: Uint8Array }
  | { readonly kind: 'confirmWithNameserver'; readonly round: number; readonly epoch: Epoch }
  /** S7: ask the nameserver to make `learner` (this incarnation of it) a secondary; answer with `promotionAnswered`. */
  | {
      readonly kind: 'requestPromotion';
      readonly learner: NodeId;
      readonly learnerIncarnation: string;
      readonly epoch: Epoch;
    }
  /**
   * §4: ask the nameserver to remove `secondary` (we waited on it and heard nothing for
   * `removeSilentAfterMs`, the nameserver's --dead-after-ms) from the configuration at
   * `epoch`; the answer is the partition's configuration (`configure`).
   */
  | { readonly kind: 'requestRemoval'; readonly secondary: NodeId; readonly epoch: Epoch }
  /** S11: fetch a snapshot of the partition from `from` and install it; answer with `snapshotInstalled`. */
  | { readonly kind: 'fetchSnapshot'; readonly from: NodeId; readonly epoch: Epoch }
  /** Something an operator should know (a peer needs a snapshot, an invariant nearly broke). */
  | {
      readonly kind: 'log';
      readonly level: 'info' | 'warn' | 'error';
      readonly message: string;
      readonly fields?: Record<string, unknown>;
    };

export interface ReplicaOptions {
  readonly node: NodeId;
  readonly partition: PartitionId;
  readonly minWriteReplicas: number;
  readonly limits: Limits;
  /**
   * Re-send un-acked prepares / restart a confirmation round / re-send the commit point to
   * an idle peer after this long without progress.
   */
  readonly resendAfterMs: number;
  /** This process's incarnation id: acks count only for the incarnation that sent them (S7, S11). */
  readonly incarnation: string;
  /**
   * §4: a primary asks the nameserver to remove a secondary it needs an answer from and has
   * not heard from for this long (0: never; it is removed once it stops heartbeating).
   */
  readonly removeSilentAfterMs?: number;
}

/** What the backend held for this partition at start (S3, S4). */
export interface ReplicaRecovery {
  readonly epoch: Epoch;
  readonly config: Config | null;
  readonly applied: LogPosition;
  readonly logBase: LogPosition;
  readonly entries: readonly LogEntry[];
  /** S10: the dedup table of the applied state. */
  readonly dedup?: readonly DedupRecord[];
  /** S13: the partition failed a checksum at open; `entries` are not to be trusted and are ignored. */
  readonly corrupt?: string;
}

interface PeerState {
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

interface PendingWrite {
  readonly seq: Seq;
  readonly requestId: RequestId;
  readonly op: 'put' | 'delete';
  readonly tag?: RequestTag;
}

interface PendingRead {
  readonly requestId: RequestId;
  readonly key: Uint8Array;
  /** A confirmation round >= this one, sent after the read arrived, confirms it. */
  readonly round: number;
  readonly commitAtArrival: Seq;
}

interface PendingDurable {
  readonly writeId: number;
  upToSeq: Seq;
}

export class Replica {
  readonly node: NodeId;
  readonly partition: PartitionId;
  private readonly opts: ReplicaOptions;

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
  durableSeq: Seq;
  nowMs = 0;

  // Secondary state.
  /** Highest seq known to match the current primary's log in this epoch. */
  private matchedSeq: Seq;
  private ackedSeq: Seq;
  private primaryCommitSeq: Seq;

  // Primary state.
  private peers = new Map<NodeId, PeerState>();
  /** S6: seq of this primary's epoch-start entry; it serves once it is committed. */
  private epochStartSeq: Seq = toSeq(0);
  private persistedSeq: Seq;
  private pendingWrites: PendingWrite[] = [];
  private pendingReads: PendingRead[] = [];
  private nextRound = 1;
  private roundInFlight: { round: number; acks: Set<NodeId>; sentMs: number } | null = null;

  /** S10: per client, its last applied request. */
  private readonly dedup = new Map<string, { requestSeq: number; seq: Seq }>();
  /** S7: a learner being promoted; while `requested`, nothing commits and no read is confirmed. */
  private promotion: { learner: NodeId; requested: boolean; sinceMs: number } | null = null;
  /** S11: a snapshot is being fetched and installed; prepares wait. */
  private installing = false;
  /** S13: why this replica's partition is corrupt, until it drops it to relearn (file comment). */
  corrupt: string | undefined;
  /** S13: the write that persists the corrupt marker (0: none yet); reported once durable. */
  private corruptMarkWriteId = 0;
  private corruptReported = false;
  /** S13: made a learner while a snapshot install ran: the drop waits for the install to end. */
  private relearnPending = false;

  private nextWriteId = 1;
  private pendingDurable: PendingDurable[] = [];
  /** While false, sends wait for the epoch/config persist (S3). */
  private metaDurable = true;
  private metaWriteId = 0;

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
  }

  /** True once this primary may accept writes and serve reads (S6). */
  get serving(): boolean {
    return this.active && this.role === 'primary' && this.commitSeq >= this.epochStartSeq && this.epochStartSeq > 0;
  }

  get lastSeq(): Seq {
    return this.log.lastSeq;
  }

  step(input: ReplicaInput): ReplicaOutput[] {
    const out: ReplicaOutput[] = [];
    switch (input.kind) {
      case 'configure':
        this.onConfigure(input.config, out);
        break;
      case 'peer':
        this.onPeerMessage(input.from, input.message, out);
        break;
      case 'clientWrite':
        this.onClientWrite(input.requestId, input.op, input.tag, out);
        break;
      case 'clientRead':
        this.onClientRead(input.requestId, input.key, out);
        break;
      case 'persisted':
        this.onPersisted(input.writeId, out);
        break;
      case 'nameserverConfirmed':
        if (this.roundInFlight?.round === input.round && input.epoch === this.epoch) this.finishRound(out);
        break;
      case 'promotionAnswered':
        this.onPromotionAnswered(input.config, input.epoch, out);
        break;
      case 'snapshotInstalled':
        this.onSnapshotInstalled(input.applied, input.dedup, out);
        break;
      case 'corrupt':
        this.onCorrupt(input.reason, out);
        break;
      case 'snapshotFailed':
        this.installing = false;
        out.push({
          kind: 'log',
          level: 'warn',
          message: 'snapshot fetch failed; asking again',
          fields: { partition: this.partition, reason: input.reason },
        });
        if (this.relearnPending) this.relearnFromZero(this.config!, out);
        else if (this.config && this.active && this.role === 'learner')
          out.push(this.nack(this.config.primary, toSeq(this.appliedSeq + 1)));
        break;
      case 'flush':
        this.onFlush(out);
        break;
      case 'tick':
        this.onTick(input.nowMs, out);
        break;
    }
    return out;
  }

  // ---- configurations (S3, S4, S6) ----

  private onConfigure(config: Config, out: ReplicaOutput[]): void {
    assert(config.partition === this.partition, 'configuration for another partition');
    if (config.epoch < this.epoch) return; // stale: the nameserver will push the newer one
    // S13: a corrupt replica relearns from zero only under a configuration of a higher epoch
    // (adopt), never in the epoch it found the corruption in: there the primary may still
    // count what this replica acked before it dropped the partition, and a promotion request
    // naming it may be on its way to the nameserver (S7). A new epoch voids both.
    if (config.epoch === this.epoch && this.corrupt !== undefined) return;
    if (config.epoch === this.epoch && this.active) return; // already in effect
    if (config.epoch === this.epoch) {
      // S4: after a restart only a secondary or learner may resume in the same epoch; a
      // restarted primary stays inactive until the nameserver makes a new epoch.
      const role = roleIn(config, this.node);
      if (role === 'secondary' || role === 'learner') {
        this.config = config;
        this.becomeActive(role, out);
      }
      return;
    }
    this.adopt(config, out);
  }

  /** S3: adopt a higher-epoch configuration: persist it, then act under it. */
  private adopt(config: Config, out: ReplicaOutput[]): void {
    assert(config.epoch > this.epoch, 'adopting an older configuration');
    const role = roleIn(config, this.node);
    if (this.corrupt !== undefined) {
      this.relearnPending = false;
      // S13: a snapshot fetch still running would install after the drop: wait for it.
      if (role === 'learner' && !this.installing) return this.relearnFromZero(config, out);
      // S13: any other role waits (the nameserver takes us out); the epoch is still ours (S3).
      this.epoch = config.epoch;
      this.config = config;
      this.persistMeta(out);
      if (role === 'learner') {
        this.relearnPending = true;
        out.push({
          kind: 'log',
          level: 'info',
          message: 'corrupt partition: a snapshot install is still running; it is dropped once that ends (S13)',
          fields: { partition: this.partition, epoch: this.epoch },
        });
      }
      return;
    }
    const belowMinWrite = 1 + config.secondaries.length < this.minWriteReplicas;
    const stayPrimary = this.active && this.role === 'primary' && role === 'primary';
    // A primary that stays primary keeps its log and its waiting writes: they commit with
    // the new epoch-start entry. Anything else ends what waited on this replica, and so does
    // a configuration below --min-write-replicas. There the epoch-start entry and what
    // precedes it commit on this disk alone (see advanceCommit): DESIGN S8 lets only a *new*
    // primary's reconciliation suffix do so, and would have a staying primary's waiting
    // writes wait for a new secondary; but then the partition could neither serve reads nor
    // promote a learner (C1). Instead no client learns the outcome of those writes (unknown;
    // a retry is refused until the partition has enough members again, then answered from
    // the dedup table, S10), so nothing is acknowledged on fewer disks than S8 asks.
    if (stayPrimary && belowMinWrite) this.failPending(out, true);
    if (!stayPrimary) {
      this.failPending(out);
      // Entries appended as primary but never sent nor persisted are not committed: drop them.
      if (this.persistedSeq < this.log.lastSeq) this.log.truncateFrom(toSeq(this.persistedSeq + 1));
    }
    this.promotion = null;
    this.epoch = config.epoch;
    this.config = config;
    this.persistMeta(out);
    // Acks and matches are per epoch: only what is committed is known to match the new primary.
    this.matchedSeq = this.commitSeq;
    this.ackedSeq = this.commitSeq;
    this.primaryCommitSeq = this.commitSeq;
    this.becomeActive(role, out);
  }

  /**
   * S3: persist the epoch and configuration; sends wait for it. S13: a corrupt replica's
   * metadata carries the corrupt marker, so a restart before the drop comes back corrupt.
   */
  private persistMeta(out: ReplicaOutput[], extra: readonly BatchOp[] = []): void {
    const meta =
      this.corrupt === undefined
        ? { epoch: this.epoch, config: this.config }
        : { epoch: this.epoch, config: this.config, corrupt: this.corrupt };
    this.metaDurable = false;
    this.metaWriteId = this.nextWriteId++;
    if (this.corrupt !== undefined && this.corruptMarkWriteId === 0) this.corruptMarkWriteId = this.metaWriteId;
    out.push({
      kind: 'persist',
      ops: [...extra, { kind: 'setMeta', partition: this.partition, meta }],
      writeId: this.metaWriteId,
    });
  }

  private becomeActive(role: Role, out: ReplicaOutput[]): void {
    this.role = role;
    this.active = role !== 'inactive';
    if (this.active) this.activatedOnce = true;
    this.peers.clear();
    this.roundInFlight = null;
    this.epochStartSeq = toSeq(0);
    if (role === 'learner' && this.log.lastSeq > this.appliedSeq && !this.installing) {
      // S11: a learner keeps only what it applied; the primary re-sends the rest.
      this.log.truncateFrom(toSeq(this.appliedSeq + 1));
      this.onTruncated(toSeq(this.appliedSeq + 1));
      this.persistLog(
        [{ kind: 'truncateLogFrom', partition: this.partition, fromSeq: toSeq(this.appliedSeq + 1) }],
        out,
      );
      this.commitSeq = this.appliedSeq;
      this.matchedSeq = this.appliedSeq;
      this.ackedSeq = this.appliedSeq;
      this.primaryCommitSeq = this.appliedSeq;
    }
    if (role === 'learner' && !this.installing) {
      // S11: tell the primary who we are (incarnation) and where we are (applied seq); it
      // forgets whatever an earlier incarnation of us acked.
      out.push(this.nack(this.config!.primary, toSeq(this.log.lastSeq + 1)));
    }
    if (role !== 'primary') return;
    const config = this.config!;
    for (const peer of [...config.secondaries, ...config.learners]) {
      // Unknown progress: start from our commit point; a nack moves it back (S1).
      this.peers.set(peer, {
        ackedSeq: toSeq(0),
        sentSeq: this.commitSeq,
        sentCommitSeq: toSeq(0),
        lastProgressMs: this.nowMs,
        snapshotting: false,
        lastSentMs: this.nowMs,
        incarnation: '',
        lastHeardMs: this.nowMs,
        removalRequestedMs: 0,
        waitingSinceMs: 0,
      });
    }
    // S6: prepare an epoch-start entry after the last entry; it commits everything before it.
    const entry: LogEntry = { epoch: this.epoch, seq: toSeq(this.log.lastSeq + 1), op: { kind: 'epochStart' } };
    this.log.append(entry);
    this.epochStartSeq = entry.seq;
    out.push({
      kind: 'log',
      level: 'info',
      message: 'became primary',
      fields: { partition: this.partition, epoch: this.epoch, epochStartSeq: entry.seq, commitSeq: this.commitSeq },
    });
    this.onFlush(out);
  }

  // ---- corruption (S13) ----

  /** S13: a record of the partition failed its checksum: step out (file comment). */
  private onCorrupt(reason: string, out: ReplicaOutput[]): void {
    if (this.corrupt !== undefined) return;
    this.corrupt = reason;
    out.push({
      kind: 'log',
      level: 'error',
      message:
        'partition corrupt (S13): stepping out of its configuration; it relearns the partition from a healthy member',
      fields: { partition: this.partition, epoch: this.epoch, role: this.active ? this.role : 'inactive', reason },
    });
    // S13: the marker is persisted before the nameserver hears of it (progress reports
    // `corrupt` once it is durable): a restart must not bring the bad copy back as healthy.
    this.persistMeta(out);
    // S9: writes sent to replicas may still commit under the next primary: unknown. Reads
    // get a retryable NOT_PRIMARY, so the client refreshes its map and reads elsewhere.
    this.failPending(out);
    this.active = false;
    this.role = 'inactive';
    this.peers.clear();
    this.roundInFlight = null;
    this.promotion = null;
    this.epochStartSeq = toSeq(0);
  }

  /**
   * S13, S11: made a learner, a corrupt replica drops the partition (data, log, dedup table)
   * and persists the new configuration in the same batch, then learns it from zero. Only
   * now: until a healthy member serves the partition its own copy was all there was.
   */
  private relearnFromZero(config: Config, out: ReplicaOutput[]): void {
    assert(config.epoch >= this.epoch, 'relearning under an older configuration');
    assert(!this.installing, 'S13: dropping a partition while a snapshot is being installed');
    out.push({
      kind: 'log',
      level: 'warn',
      message: 'dropping the corrupt partition to relearn it as a learner (S13, S11)',
      fields: { partition: this.partition, epoch: config.epoch, primary: config.primary, reason: this.corrupt },
    });
    this.corrupt = undefined;
    this.corruptMarkWriteId = 0;
    this.corruptReported = false;
    this.relearnPending = false;
    this.failPending(out);
    this.log.reset(ZERO_POSITION);
    this.appliedSeq = toSeq(0);
    this.commitSeq = toSeq(0);
    this.durableSeq = toSeq(0);
    this.persistedSeq = toSeq(0);
    this.matchedSeq = toSeq(0);
    this.ackedSeq = toSeq(0);
    this.primaryCommitSeq = toSeq(0);
    this.pendingDurable = [];
    this.dedup.clear();
    this.installing = false;
    this.promotion = null;
    this.epoch = config.epoch;
    this.config = config;
    // One batch: the drop, the new epoch and (no marker) the end of the corruption.
    this.persistMeta(out, [{ kind: 'dropPartition', partition: this.partition }]);
    this.becomeActive('learner', out);
  }

  /** Everything waiting on this replica as primary ends when its epoch ends (or, `stillPrimary`, when it shrinks below --min-write-replicas). */
  private failPending(out: ReplicaOutput[], stillPrimary = false): void {
    for (const w of this.pendingWrites) {
      // S9: the entry was sent to replicas (or may have been): the outcome is unknown.
      const why = stillPrimary
        ? `partition ${this.partition} fell below --min-write-replicas before write ${w.seq} committed`
        : `primary of partition ${this.partition} lost its role before write ${w.seq} committed`;
      out.push(this.errorReply(w.requestId, new OutcomeUnknownError(why).toWire()));
    }
    for (const r of this.pendingReads) {
      const error = stillPrimary
        ? new UnavailableError(`partition ${this.partition} is reconfiguring; retry`)
        : new NotPrimaryError(`not primary of partition ${this.partition} any more`);
      out.push(this.errorReply(r.requestId, error.toWire()));
    }
    this.pendingWrites = [];
    this.pendingReads = [];
  }

  // ---- peer messages ----

  private onPeerMessage(from: NodeId, message: PeerMessage, out: ReplicaOutput[]): void {
    const peer = this.role === 'primary' ? this.peers.get(from) : undefined;
    if (peer) peer.lastHeardMs = this.nowMs;
    switch (message.kind) {
      case 'prepare':
        return this.onPrepare(from, message, out);
      case 'prepareAck':
        return this.onPrepareAck(from, message, out);
      case 'prepareNack':
        return this.onPrepareNack(from, message, out);
      case 'staleEpoch':
        return this.onStaleEpoch(message, out);
      case 'confirm':
        return this.onConfirm(from, message, out);
      case 'confirmAck':
        return this.onConfirmAck(from, message, out);
      case 'snapshotOffer':
        return this.onSnapshotOffer(from, message, out);
    }
  }

  // ---- learning (S11) and promotion (S7) ----

  private onSnapshotOffer(from: NodeId, m: SnapshotOfferMessage, out: ReplicaOutput[]): void {
    if (m.config.epoch < this.epoch) return this.rejectStale(from, out);
    if (m.config.epoch > this.epoch) this.adopt(m.config, out);
    if (!this.active || this.role !== 'learner' || m.config.primary !== from || this.installing) return;
    if (this.matchedSeq >= m.logBase) {
      // A stale offer (re-ordered behind our later acks): we can go on from our log.
      out.push(this.nack(from, toSeq(this.matchedSeq + 1)));
      return;
    }
    this.installing = true;
    out.push({ kind: 'fetchSnapshot', from, epoch: this.epoch });
  }

  private onSnapshotInstalled(applied: LogPosition, dedup: readonly DedupRecord[], out: ReplicaOutput[]): void {
    this.installing = false;
    // The disk now holds the snapshot whatever happened meanwhile: mirror it. Nothing was
    // acked or applied while it was being installed (ackAndApply waits), and everything we
    // acked before is at or below `applied` (we took the offer only below the primary's log
    // base), so no acked entry is lost.
    assert(applied.seq >= this.appliedSeq, 'a snapshot older than the applied state');
    // The backend replaced data, dedup table and log atomically (S11); mirror it.
    this.log.reset(applied);
    this.appliedSeq = applied.seq;
    this.commitSeq = applied.seq;
    this.durableSeq = applied.seq;
    this.persistedSeq = applied.seq;
    this.matchedSeq = applied.seq;
    this.ackedSeq = applied.seq;
    this.primaryCommitSeq = applied.seq;
    this.pendingDurable = [];
    this.dedup.clear();
    for (const d of dedup) this.dedup.set(d.clientId, { requestSeq: d.requestSeq, seq: d.seq });
    out.push({
      kind: 'log',
      level: 'info',
      message: 'snapshot installed',
      fields: { partition: this.partition, appliedSeq: applied.seq },
    });
    // S13: made a learner while corrupt during the install: only now, with the install on
    // disk, is the partition dropped (in a batch after it) and relearned.
    if (this.relearnPending) return this.relearnFromZero(this.config!, out);
    if (this.active && this.role === 'primary') {
      // Made primary while installing: the log we took over with is gone. Step down; the
      // nameserver sees us inactive in this epoch and picks another primary (S4, S5).
      out.push({
        kind: 'log',
        level: 'error',
        message: 'became primary while a snapshot was being installed; stepping down',
        fields: { partition: this.partition, epoch: this.epoch },
      });
      this.failPending(out);
      this.active = false;
      this.role = 'inactive';
      this.peers.clear();
      return;
    }
    // Ask for the entries after the snapshot.
    if (this.active && this.config) out.push(this.nack(this.config.primary, toSeq(applied.seq + 1)));
  }

  /** S7: a learner that acked everything up to our last prepared seq is caught up. */
  private maybePromote(out: ReplicaOutput[]): void {
    if (this.role !== 'primary' || !this.serving || this.promotion?.requested) return;
    for (const learner of this.config!.learners) {
      const peer = this.peers.get(learner);
      if (!peer || peer.snapshotting || peer.incarnation === '') continue;
      if (peer.ackedSeq >= this.commitSeq && !this.promotion) {
        // Close enough: hold new writes so the last prepared seq stops moving.
        this.promotion = { learner, requested: false, sinceMs: this.nowMs };
      }
      if (this.promotion?.learner === learner && peer.ackedSeq >= this.log.lastSeq) {
        this.promotion.requested = true;
        out.push({ kind: 'requestPromotion', learner, learnerIncarnation: peer.incarnation, epoch: this.epoch });
        return;
      }
    }
  }

  private onPromotionAnswered(config: Config, requestEpoch: Epoch, out: ReplicaOutput[]): void {
    if (config.epoch > this.epoch) return this.adopt(config, out);
    // The answer to a request of an earlier epoch says nothing of the one now pending (S7).
    if (requestEpoch !== this.epoch) return;
    // Not applied (the partition moved on, we asked twice, or the learner restarted since
    // its acks, S7): carry on in this epoch, and count only the learner's next acks.
    const peer = this.promotion ? this.peers.get(this.promotion.learner) : undefined;
    if (peer && this.promotion?.requested) {
      peer.ackedSeq = toSeq(0);
      peer.incarnation = '';
    }
    this.promotion = null;
    this.advanceCommit(out);
  }

  /** S3: a message from an older configuration is rejected with ours. */
  private rejectStale(to: NodeId, out: ReplicaOutput[]): void {
    if (this.config) out.push(this.send(to, { kind: 'staleEpoch', partition: this.partition, config: this.config }));
  }

  private onPrepare(from: NodeId, m: PrepareMessage, out: ReplicaOutput[]): void {
    if (m.config.epoch < this.epoch) return this.rejectStale(from, out);
    if (m.config.epoch > this.epoch) this.adopt(m.config, out);
    if (!this.active || (this.role !== 'secondary' && this.role !== 'learner') || m.config.primary !== from) return;
    if (this.installing) return; // S11: a snapshot is being installed; we ask for entries after it

    // S1: append only after the previous entry we hold (or at/below our commit point).
    const prevHeld = m.prev.seq <= this.commitSeq || this.log.positionAt(m.prev.seq)?.epoch === m.prev.epoch;
    if (!prevHeld) {
      // A gap: ask from our last entry on; the primary sends it as `prev`, which checks it
      // and, by S1, everything before it. A mismatch within our log: from our commit point.
      const needFromSeq =
        m.prev.seq > this.log.lastSeq
          ? toSeq(this.log.lastSeq + 1)
          : toSeq(Math.min(this.commitSeq + 1, this.matchedSeq + 1));
      out.push(this.nack(from, needFromSeq));
      return;
    }
    const appended: LogEntry[] = [];
    let truncatedFrom: Seq | undefined;
    let expected = m.prev.seq + 1;
    for (const entry of m.entries) {
      if (entry.seq !== expected) break; // malformed run: keep what is contiguous
      expected++;
      if (entry.seq <= this.log.base.seq) continue; // applied and dropped: held
      const held = this.log.at(entry.seq);
      if (held && held.epoch === entry.epoch) continue; // S1: a duplicate
      if (held) {
        // S1: a different entry at this seq: drop it and everything after it.
        if (entry.seq <= this.commitSeq) {
          out.push({
            kind: 'log',
            level: 'error',
            message: 'FATAL: conflicting entry at or below the commit point',
            fields: { partition: this.partition, seq: entry.seq, commitSeq: this.commitSeq },
          });
          assert(false, `S1: conflict at seq ${entry.seq} <= commitSeq ${this.commitSeq}`);
        }
        this.log.truncateFrom(entry.seq);
        truncatedFrom ??= entry.seq;
        this.onTruncated(entry.seq);
      }
      if (entry.seq !== this.log.lastSeq + 1) break;
      this.log.append(entry);
      appended.push(entry);
    }
    const coveredSeq = toSeq(expected - 1);
    if (coveredSeq > this.matchedSeq) this.matchedSeq = coveredSeq;
    if (m.commitSeq > this.primaryCommitSeq) this.primaryCommitSeq = m.commitSeq;

    if (truncatedFrom !== undefined || appended.length > 0) {
      const ops: BatchOp[] = [];
      if (truncatedFrom !== undefined)
        ops.push({ kind: 'truncateLogFrom', partition: this.partition, fromSeq: truncatedFrom });
      if (appended.length > 0) ops.push({ kind: 'appendLog', partition: this.partition, entries: appended });
      this.persistLog(ops, out);
    } else if ((m.entries.length > 0 || this.role === 'learner') && this.ackedSeq > 0) {
      // Entries we already hold: the primary is re-sending because our ack may be lost. A
      // learner also answers the idle commit-point prepare, so a primary that holds a
      // previous incarnation's acks (S7) learns ours.
      out.push(this.ack(from, this.ackedSeq));
    }
    this.ackAndApply(from, out);
  }

  /** A truncation makes un-synced notions of durability above it void. */
  private onTruncated(fromSeq: Seq): void {
    const below = toSeq(fromSeq - 1);
    if (this.durableSeq > below) this.durableSeq = below;
    if (this.persistedSeq > below) this.persistedSeq = below;
    if (this.matchedSeq > below) this.matchedSeq = below;
    for (const p of this.pendingDurable) if (p.upToSeq > below) p.upToSeq = below;
  }

  private persistLog(ops: BatchOp[], out: ReplicaOutput[]): void {
    const writeId = this.nextWriteId++;
    this.pendingDurable.push({ writeId, upToSeq: this.log.lastSeq });
    this.persistedSeq = this.log.lastSeq;
    out.push({ kind: 'persist', ops, writeId });
  }

  /** Secondary: ack what we hold durably and match (S1), apply what is committed (S2). */
  private ackAndApply(primary: NodeId, out: ReplicaOutput[]): void {
    if (this.installing) return; // S11: the snapshot replaces the log; nothing is acked or applied meanwhile
    const ackable = toSeq(Math.min(this.matchedSeq, this.durableSeq));
    if (ackable > this.ackedSeq) {
      this.ackedSeq = ackable;
      out.push(this.ack(primary, ackable));
    }
    // S2: apply only entries that are committed and that we acked to this primary.
    const target = toSeq(Math.min(this.primaryCommitSeq, this.ackedSeq));
    if (target > this.commitSeq) this.commitSeq = target;
    this.applyUpTo(target, out);
  }

  private applyUpTo(target: Seq, out: ReplicaOutput[]): void {
    if (target <= this.appliedSeq) return;
    assert(target <= this.commitSeq, 'S2: applying past the commit point');
    const entries = this.log.slice(toSeq(this.appliedSeq + 1), target, Number.MAX_SAFE_INTEGER);
    assert(entries.length === target - this.appliedSeq, 'applying entries missing from the log');
    this.appliedSeq = target;
    for (const e of entries) if (e.tag) this.dedup.set(e.tag.clientId, { requestSeq: e.tag.requestSeq, seq: e.seq });
    out.push({ kind: 'persist', ops: [{ kind: 'apply', partition: this.partition, entries }] });
    this.maybeTruncate(out);
  }

  private onPersisted(writeId: number, out: ReplicaOutput[]): void {
    if (writeId === this.metaWriteId) this.metaDurable = true;
    if (this.corruptMarkWriteId !== 0 && writeId >= this.corruptMarkWriteId) this.corruptReported = true;
    while (this.pendingDurable.length > 0 && this.pendingDurable[0]!.writeId <= writeId) {
      const p = this.pendingDurable.shift()!;
      if (p.upToSeq > this.durableSeq) this.durableSeq = p.upToSeq;
    }
    if (!this.active) return;
    if (this.role === 'primary') this.advanceCommit(out);
    else if (this.config) this.ackAndApply(this.config.primary, out);
  }

  private onPrepareAck(from: NodeId, m: PrepareAckMessage, out: ReplicaOutput[]): void {
    if (m.epoch !== this.epoch || this.role !== 'primary') return; // another configuration's ack
    const peer = this.peers.get(from);
    if (!peer) return;
    this.noteIncarnation(from, peer, m.incarnation);
    if (m.seq > peer.ackedSeq) {
      peer.ackedSeq = m.seq;
      peer.lastProgressMs = this.nowMs;
    }
    if (peer.sentSeq < peer.ackedSeq) peer.sentSeq = peer.ackedSeq;
    this.advanceCommit(out);
    this.maybePromote(out);
  }

  /**
   * S7, S11: acks count only for the incarnation that sent them. A peer that restarted lost
   * what it acked as a learner (it discards its log above its applied seq), so a new
   * incarnation starts from nothing, and a promotion it has not earned again is dropped.
   */
  private noteIncarnation(from: NodeId, peer: PeerState, incarnation: string): void {
    if (peer.incarnation === incarnation) return;
    if (peer.incarnation !== '') {
      peer.ackedSeq = toSeq(0);
      if (this.promotion?.learner === from && !this.promotion.requested) this.promotion = null;
    }
    peer.incarnation = incarnation;
  }

  private onPrepareNack(from: NodeId, m: PrepareNackMessage, out: ReplicaOutput[]): void {
    if (m.epoch !== this.epoch || this.role !== 'primary') return;
    const peer = this.peers.get(from);
    if (!peer) return;
    this.noteIncarnation(from, peer, m.incarnation);
    peer.lastProgressMs = this.nowMs;
    if (m.needFromSeq <= peer.ackedSeq) {
      // S1, S7: acks are cumulative; a peer asking again for what it acked no longer holds
      // it (it dropped the partition, S13). Count only what it acks from now on, and do not
      // promote it on the strength of the old acks. (A request already sent is fenced by
      // the epoch: a replica relearns from zero only under a new one.)
      out.push({
        kind: 'log',
        level: 'warn',
        message: 'a peer asks again for entries it acked; its acks count from there',
        fields: { partition: this.partition, peer: from, ackedSeq: peer.ackedSeq, needFromSeq: m.needFromSeq },
      });
      peer.ackedSeq = toSeq(m.needFromSeq - 1);
      if (this.promotion?.learner === from && !this.promotion.requested) this.promotion = null;
    }
    if (m.needFromSeq <= this.log.base.seq) {
      // S11, S12: the entries are gone from our log: the peer relearns from a snapshot.
      if (this.config!.learners.includes(from)) {
        this.offerSnapshot(from, peer, out);
      } else {
        out.push({
          kind: 'log',
          level: 'warn',
          message: 'a secondary needs truncated entries; it must be removed and relearn',
          fields: { partition: this.partition, peer: from, needFromSeq: m.needFromSeq, logBase: this.log.base.seq },
        });
      }
      return;
    }
    peer.snapshotting = false;
    peer.sentSeq = toSeq(Math.min(peer.sentSeq, m.needFromSeq - 1));
  }

  /** S11: the learner's entries are gone from our log; it fetches a snapshot (re-offered on tick until it asks again). */
  private offerSnapshot(to: NodeId, peer: PeerState, out: ReplicaOutput[]): void {
    peer.snapshotting = true;
    peer.lastSentMs = this.nowMs;
    out.push(
      this.send(to, {
        kind: 'snapshotOffer',
        partition: this.partition,
        config: this.config!,
        logBase: this.log.base.seq,
      }),
    );
  }

  private onStaleEpoch(m: StaleEpochMessage, out: ReplicaOutput[]): void {
    if (m.config.epoch > this.epoch && m.config.partition === this.partition) this.adopt(m.config, out);
  }

  /** Primary: commit what every secondary and our own disk hold (§5.4, S8). */
  private advanceCommit(out: ReplicaOutput[]): void {
    if (this.role !== 'primary' || !this.active) return;
    if (this.promotion?.requested) return; // S7: nothing commits until the outcome is known
    const config = this.config!;
    let candidate = Math.min(this.durableSeq, this.log.lastSeq);
    for (const s of config.secondaries) candidate = Math.min(candidate, this.peers.get(s)?.ackedSeq ?? 0);
    if (1 + config.secondaries.length < this.minWriteReplicas) {
      // S8: no client entry of this epoch commits on fewer disks. The epoch-start entry and
      // the reconciliation suffix before it may (S8's exception): those entries were
      // prepared by earlier primaries, whatever of them was acknowledged is committed
      // already, and committing them lets this primary serve reads and promote a learner
      // (the partition would otherwise stay stuck). No client waits on them (see adopt).
      candidate = Math.min(candidate, this.epochStartSeq);
    }
    if (candidate <= this.commitSeq) return;
    const before = this.commitSeq;
    this.commitSeq = toSeq(candidate);
    assert(this.commitSeq >= before, 'commit point moved back');
    assert(this.commitSeq <= this.log.lastSeq, 'committed past the log');
    this.applyUpTo(this.commitSeq, out);
    let kept = 0;
    for (const w of this.pendingWrites) {
      if (w.seq > this.commitSeq) {
        this.pendingWrites[kept++] = w;
        continue;
      }
      // A put's answer needs nothing from the apply; a delete's needs whether the key existed.
      out.push({
        kind: 'reply',
        requestId: w.requestId,
        result: { kind: 'written', seq: w.seq },
        immediate: w.op === 'put',
        op: w.op,
      });
    }
    this.pendingWrites.length = kept;
    this.serveConfirmedReads(out);
  }

  private get minWriteReplicas(): number {
    return this.opts.minWriteReplicas;
  }

  // ---- client requests ----

  private onClientWrite(requestId: RequestId, op: Op, tag: RequestTag | undefined, out: ReplicaOutput[]): void {
    const refusal = this.refuseClient('write');
    if (refusal) return void out.push(this.errorReply(requestId, refusal));
    if (op.kind === 'epochStart')
      return void out.push(this.errorReply(requestId, new UnavailableError('not a client operation').toWire()));
    if (tag) {
      // S10: a retry of a request we applied gets the original result, never a re-execution.
      const done = this.dedup.get(tag.clientId);
      if (done && done.requestSeq === tag.requestSeq) {
        return void out.push({
          kind: 'reply',
          requestId,
          result: { kind: 'written', seq: done.seq },
          immediate: op.kind === 'put',
          op: op.kind,
          duplicateOf: tag.clientId,
        });
      }
      if (done && done.requestSeq > tag.requestSeq) {
        return void out.push(
          this.errorReply(
            requestId,
            new InvalidArgumentError(
              `request ${tag.requestSeq} of client ${tag.clientId} is older than its last applied request ${done.requestSeq}`,
            ).toWire(),
          ),
        );
      }
      // A retry of a request still in the log waits for that entry.
      const inFlight = this.pendingWrites.find(
        (w) => w.tag?.clientId === tag.clientId && w.tag.requestSeq === tag.requestSeq,
      );
      if (inFlight) return void this.pendingWrites.push({ seq: inFlight.seq, requestId, op: inFlight.op, tag });
    }
    if (this.promotion) {
      return void out.push(
        this.errorReply(
          requestId,
          new UnavailableError(`partition ${this.partition} is promoting a learner (S7); retry`).toWire(),
        ),
      );
    }
    if (this.pendingWrites.length >= this.opts.limits.maxPendingWrites) {
      return void out.push(
        this.errorReply(
          requestId,
          new OverloadedError(`partition ${this.partition} has ${this.pendingWrites.length} writes waiting`).toWire(),
        ),
      );
    }
    const entry: LogEntry = tag
      ? { epoch: this.epoch, seq: toSeq(this.log.lastSeq + 1), op, tag }
      : { epoch: this.epoch, seq: toSeq(this.log.lastSeq + 1), op };
    this.log.append(entry);
    this.pendingWrites.push(
      tag ? { seq: entry.seq, requestId, op: op.kind, tag } : { seq: entry.seq, requestId, op: op.kind },
    );
    // Sent and persisted at the next flush, together with the rest of this turn's writes.
  }

  private onClientRead(requestId: RequestId, key: Uint8Array, out: ReplicaOutput[]): void {
    const refusal = this.refuseClient('read');
    if (refusal) return void out.push(this.errorReply(requestId, refusal));
    if (this.pendingReads.length >= this.opts.limits.maxPendingReads) {
      return void out.push(
        this.errorReply(
          requestId,
          new OverloadedError(`partition ${this.partition} has ${this.pendingReads.length} reads waiting`).toWire(),
        ),
      );
    }
    // §7: confirmed by a round sent after this read arrived.
    this.pendingReads.push({ requestId, key, round: this.nextRound, commitAtArrival: this.commitSeq });
  }

  private refuseClient(what: 'read' | 'write'): WireError | undefined {
    if (this.corrupt !== undefined) {
      // S13: never served from here; retryable, so the client refreshes its map.
      return new NotPrimaryError(
        `${this.node} found partition ${this.partition} corrupt and is relearning it (S13); another replica serves it`,
      ).toWire();
    }
    if (!this.active || this.role !== 'primary') {
      return new NotPrimaryError(
        `${this.node} is not primary of partition ${this.partition} (epoch ${this.epoch})`,
      ).toWire();
    }
    if (!this.serving)
      return new UnavailableError(
        `partition ${this.partition} has a new primary that is still taking over (S6)`,
      ).toWire();
    if (what === 'write' && 1 + this.config!.secondaries.length < this.minWriteReplicas) {
      // S8 / §5.7: never acknowledge on fewer disks than --min-write-replicas.
      return new UnavailableError(
        `partition ${this.partition} has ${1 + this.config!.secondaries.length} replica(s), fewer than --min-write-replicas=${this.minWriteReplicas}`,
      ).toWire();
    }
    return undefined;
  }

  private errorReply(requestId: RequestId, error: WireError): ReplicaOutput {
    return { kind: 'reply', requestId, result: { kind: 'error', error }, immediate: true };
  }

  // ---- reads (§7) ----

  private onConfirm(from: NodeId, m: ConfirmMessage, out: ReplicaOutput[]): void {
    if (m.config.epoch < this.epoch) return this.rejectStale(from, out);
    if (m.config.epoch > this.epoch) this.adopt(m.config, out);
    // A secondary confirms only while active at the same epoch with the sender as primary.
    if (!this.active || this.role !== 'secondary' || this.config?.primary !== from) return;
    out.push(this.send(from, { kind: 'confirmAck', partition: this.partition, epoch: this.epoch, round: m.round }));
  }

  private onConfirmAck(from: NodeId, m: ConfirmAckMessage, out: ReplicaOutput[]): void {
    if (m.epoch !== this.epoch || this.role !== 'primary' || this.roundInFlight?.round !== m.round) return;
    this.roundInFlight.acks.add(from);
    if (this.config!.secondaries.every((s) => this.roundInFlight!.acks.has(s))) this.finishRound(out);
  }

  private finishRound(out: ReplicaOutput[]): void {
    if (this.promotion?.requested) return; // S7: confirm no reads until the outcome is known
    const round = this.roundInFlight!.round;
    this.roundInFlight = null;
    this.confirmedRound = Math.max(this.confirmedRound, round);
    this.serveConfirmedReads(out);
  }

  private confirmedRound = 0;

  private serveConfirmedReads(out: ReplicaOutput[]): void {
    if (!this.serving) return;
    let kept = 0;
    for (const r of this.pendingReads) {
      if (r.round <= this.confirmedRound && this.appliedSeq >= r.commitAtArrival) {
        out.push({ kind: 'read', requestId: r.requestId, key: r.key });
      } else {
        this.pendingReads[kept++] = r;
      }
    }
    this.pendingReads.length = kept;
  }

  private startRoundIfNeeded(out: ReplicaOutput[]): void {
    if (this.roundInFlight || !this.serving) return;
    if (!this.pendingReads.some((r) => r.round > this.confirmedRound)) return;
    const round = this.nextRound++;
    this.roundInFlight = { round, acks: new Set(), sentMs: this.nowMs };
    const config = this.config!;
    if (config.secondaries.length === 0) {
      out.push({ kind: 'confirmWithNameserver', round, epoch: this.epoch });
      return;
    }
    for (const s of config.secondaries)
      out.push(this.send(s, { kind: 'confirm', partition: this.partition, config, round }));
  }

  // ---- flush and tick ----

  private onFlush(out: ReplicaOutput[]): void {
    if (!this.active || this.role !== 'primary') return;
    const config = this.config!;
    // Prepares go out before our own append is durable: the two proceed in parallel (§5.4).
    for (const [peerId, peer] of this.peers) this.sendPrepares(peerId, peer, config, out);
    if (this.persistedSeq < this.log.lastSeq) {
      const entries = this.log.slice(toSeq(this.persistedSeq + 1), this.log.lastSeq, Number.MAX_SAFE_INTEGER);
      this.persistLog([{ kind: 'appendLog', partition: this.partition, entries }], out);
    }
    this.startRoundIfNeeded(out);
    // A primary alone (R=1) commits on its own disk.
    this.advanceCommit(out);
  }

  private sendPrepares(peerId: NodeId, peer: PeerState, config: Config, out: ReplicaOutput[]): void {
    if (peer.snapshotting) return;
    const limits = this.opts.limits;
    let rounds = 0;
    // Bounded per turn, so catching up a learner never starves live traffic (§6).
    while (peer.sentSeq < this.log.lastSeq && rounds++ < 4) {
      const prev = this.log.positionAt(peer.sentSeq);
      if (!prev) return; // below our log base: needs a snapshot (issue 3)
      const entries = this.boundedSlice(toSeq(peer.sentSeq + 1), limits.maxEntriesPerPrepare, limits.maxPrepareBytes);
      out.push(
        this.send(peerId, {
          kind: 'prepare',
          partition: this.partition,
          config,
          prev,
          entries,
          commitSeq: this.commitSeq,
        }),
      );
      peer.sentSeq = entries[entries.length - 1]!.seq;
      peer.sentCommitSeq = this.commitSeq;
      peer.lastSentMs = this.nowMs;
    }
    const idle = this.nowMs - peer.lastSentMs >= this.opts.resendAfterMs;
    if (peer.sentSeq >= this.log.lastSeq && (peer.sentCommitSeq < this.commitSeq || idle)) {
      // S2: with nothing to prepare, still tell the replica the commit point; and say it
      // again while idle, since it may have been lost (it also shows a peer that restarted
      // and lost entries where to ask from: it answers with a nack).
      out.push(
        this.send(peerId, {
          kind: 'prepare',
          partition: this.partition,
          config,
          prev: this.log.last,
          entries: [],
          commitSeq: this.commitSeq,
        }),
      );
      peer.sentCommitSeq = this.commitSeq;
      peer.lastSentMs = this.nowMs;
    }
  }

  private boundedSlice(fromSeq: Seq, maxEntries: number, maxBytes: number): LogEntry[] {
    const candidates = this.log.slice(fromSeq, this.log.lastSeq, maxEntries);
    let bytes = 0;
    let n = 0;
    for (const e of candidates) {
      bytes += entryBytes(e);
      if (n > 0 && bytes > maxBytes) break;
      n++;
    }
    return candidates.slice(0, n);
  }

  private onTick(nowMs: number, out: ReplicaOutput[]): void {
    const sinceLastTickMs = nowMs - this.nowMs;
    this.nowMs = nowMs;
    if (!this.active || this.role !== 'primary') return;
    if (sinceLastTickMs > 3 * this.opts.resendAfterMs) {
      // We were paused (or starved): our peers' silence meanwhile says nothing about them.
      for (const peer of this.peers.values()) peer.lastHeardMs = nowMs;
    }
    this.maybeRequestRemoval(out);
    for (const [peerId, peer] of this.peers) {
      if (peer.snapshotting) {
        // S11: the offer, the fetch or the learner's next nack may have been lost: offer
        // again (a learner already installing ignores it).
        if (nowMs - peer.lastSentMs > 4 * this.opts.resendAfterMs) this.offerSnapshot(peerId, peer, out);
        continue;
      }
      const behind = peer.ackedSeq < this.log.lastSeq;
      if (behind && nowMs - peer.lastProgressMs > this.opts.resendAfterMs) {
        // A prepare or its ack may have been lost with a connection: send again from the ack.
        peer.sentSeq = toSeq(Math.max(peer.ackedSeq, this.log.base.seq));
        peer.sentCommitSeq = toSeq(0);
        peer.lastProgressMs = nowMs;
      }
    }
    if (this.promotion && !this.promotion.requested && nowMs - this.promotion.sinceMs > 10 * this.opts.resendAfterMs) {
      this.promotion = null; // the learner did not catch up while writes were held: let writes in, try later
    }
    this.maybePromote(out);
    if (this.roundInFlight && nowMs - this.roundInFlight.sentMs > this.opts.resendAfterMs) {
      this.roundInFlight = null; // its reads wait for the next round
    }
    this.onFlush(out);
  }

  /**
   * §4: a secondary we need an answer from (an ack, or a read confirmation) and have not
   * heard from for `removeSilentAfterMs` blocks every commit and read of this partition, yet
   * it may still heartbeat to the nameserver (a link cut between us): ask for its removal.
   * Asked again after another period if the nameserver did not act (it refuses below
   * --min-write-replicas, S8).
   */
  private maybeRequestRemoval(out: ReplicaOutput[]): void {
    const after = this.opts.removeSilentAfterMs ?? 0;
    if (after <= 0) return;
    for (const s of this.config!.secondaries) {
      const peer = this.peers.get(s);
      if (!peer) continue;
      const waitedOn =
        peer.ackedSeq < this.log.lastSeq || (this.roundInFlight !== null && !this.roundInFlight.acks.has(s));
      if (!waitedOn) {
        peer.waitingSinceMs = 0;
        continue;
      }
      if (peer.waitingSinceMs === 0) peer.waitingSinceMs = this.nowMs;
      // Silent while we waited: a caught-up secondary says nothing while the partition is idle.
      const silentMs = this.nowMs - Math.max(peer.lastHeardMs, peer.waitingSinceMs);
      if (silentMs < after || this.nowMs - peer.removalRequestedMs < after) continue;
      peer.removalRequestedMs = this.nowMs;
      out.push({
        kind: 'log',
        level: 'warn',
        message: 'asking the nameserver to remove a silent secondary',
        fields: { partition: this.partition, epoch: this.epoch, secondary: s, silentMs },
      });
      out.push({ kind: 'requestRemoval', secondary: s, epoch: this.epoch });
    }
  }

  /** S12: drop log entries every replica has applied, keeping a tail for laggards. */
  private maybeTruncate(out: ReplicaOutput[]): void {
    const retain = this.opts.limits.logRetainEntries;
    let point: number = this.appliedSeq;
    if (this.role === 'primary') for (const p of this.peers.values()) point = Math.min(point, p.ackedSeq);
    const target = toSeq(point - retain);
    if (target - this.log.base.seq < retain) return; // truncate in chunks, not per entry
    const base = this.log.positionAt(target);
    if (!base) return;
    this.log.truncateTo(target);
    out.push({ kind: 'persist', ops: [{ kind: 'truncateLogTo', partition: this.partition, base }] });
  }

  private send(to: NodeId, message: PeerMessage): ReplicaOutput {
    return { kind: 'send', to, message, immediate: this.metaDurable };
  }

  private ack(to: NodeId, seq: Seq): ReplicaOutput {
    return this.send(to, {
      kind: 'prepareAck',
      partition: this.partition,
      epoch: this.epoch,
      seq,
      incarnation: this.opts.incarnation,
    });
  }

  private nack(to: NodeId, needFromSeq: Seq): ReplicaOutput {
    return this.send(to, {
      kind: 'prepareNack',
      partition: this.partition,
      epoch: this.epoch,
      needFromSeq,
      incarnation: this.opts.incarnation,
    });
  }

  /** A summary for heartbeats and `nodes`. */
  progress(): ReplicaProgress {
    return {
      partition: this.partition,
      epoch: this.epoch,
      role: this.active ? this.role : 'inactive',
      lastSeq: this.log.lastSeq,
      lastEpoch: this.log.last.epoch,
      commitSeq: this.commitSeq,
      appliedSeq: this.appliedSeq,
      serving: this.serving,
      // S13: said once the marker is durable (see onCorrupt).
      ...(this.corrupt !== undefined && this.corruptReported ? { corrupt: true } : {}),
    };
  }
}

export interface ReplicaProgress {
  readonly partition: PartitionId;
  readonly epoch: Epoch;
  readonly role: Role;
  readonly lastSeq: Seq;
  readonly lastEpoch: Epoch;
  readonly commitSeq: Seq;
  readonly appliedSeq: Seq;
  /** A primary whose epoch-start entry committed (S6): it accepts reads and writes. */
  readonly serving: boolean;
  /** S13: the replica found the partition corrupt; it must be taken out and made a learner. */
  readonly corrupt?: boolean;
}

export function entryBytes(e: LogEntry): number {
  const op = e.op;
  const payload = op.kind === 'put' ? op.key.length + op.value.length : op.kind === 'delete' ? op.key.length : 0;
  return payload + 32;
}
