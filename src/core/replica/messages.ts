/**
 * Messages between replicas of one partition (DESIGN §5, §7). Every message carries the
 * sender's configuration or epoch (S3) so a receiver can fence a deposed primary or adopt
 * a newer configuration. These are plain data; src/rpc/messages.ts holds their schemas.
 */
import type { WireError } from '../errors.js';
import type { Config, Epoch, LogEntry, PartitionId, Seq } from '../types.js';
import type { LogPosition } from './log.js';

/** Primary → secondary/learner: entries after `prev`, and the primary's commit point. */
export interface PrepareMessage {
  readonly kind: 'prepare';
  readonly partition: PartitionId;
  readonly config: Config;
  /** S1: the entry just before `entries[0]` (or the primary's last entry when `entries` is empty). */
  readonly prev: LogPosition;
  readonly entries: readonly LogEntry[];
  readonly commitSeq: Seq;
}

/**
 * Secondary → primary: it holds every entry ≤ seq of this primary's log, durably (S1).
 * `incarnation` names the process that holds them (S7, S11): a replica that restarts loses
 * what it acked as a learner, so an ack counts only for the incarnation that sent it.
 */
export interface PrepareAckMessage {
  readonly kind: 'prepareAck';
  readonly partition: PartitionId;
  readonly epoch: Epoch;
  readonly seq: Seq;
  readonly incarnation: string;
}

/**
 * Secondary/learner → primary: a gap or a conflict; send entries from `needFromSeq`. A
 * learner also sends one when it becomes active (S11: its incarnation and applied seq).
 */
export interface PrepareNackMessage {
  readonly kind: 'prepareNack';
  readonly partition: PartitionId;
  readonly epoch: Epoch;
  readonly needFromSeq: Seq;
  readonly incarnation: string;
}

/** S3: the receiver has a newer configuration than the sender's; here it is. */
export interface StaleEpochMessage {
  readonly kind: 'staleEpoch';
  readonly partition: PartitionId;
  readonly config: Config;
}

/** §7: primary → secondaries, "am I still your primary?", for the reads before `round`. */
export interface ConfirmMessage {
  readonly kind: 'confirm';
  readonly partition: PartitionId;
  readonly config: Config;
  readonly round: number;
}

export interface ConfirmAckMessage {
  readonly kind: 'confirmAck';
  readonly partition: PartitionId;
  readonly epoch: Epoch;
  readonly round: number;
}

/**
 * S11: primary → learner: the entries you need are gone from my log (it starts after
 * `logBase`); fetch a snapshot. A learner that acked past `logBase` in this epoch ignores
 * it (a re-ordered, stale offer) and says where it really is.
 */
export interface SnapshotOfferMessage {
  readonly kind: 'snapshotOffer';
  readonly partition: PartitionId;
  readonly config: Config;
  readonly logBase: Seq;
}

export type PeerMessage =
  | SnapshotOfferMessage
  | PrepareMessage
  | PrepareAckMessage
  | PrepareNackMessage
  | StaleEpochMessage
  | ConfirmMessage
  | ConfirmAckMessage;

/** The result of a client request as the core decides it. */
export type ClientResult =
  | { readonly kind: 'written'; readonly seq: Seq }
  | { readonly kind: 'error'; readonly error: WireError };
