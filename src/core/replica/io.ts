/**
 * The replica's interface with its driver: inputs, outputs, options, what it recovers from
 * at start and the progress it reports. The contract between them is in replica.ts's file
 * comment.
 */
import type { Limits } from '../limits.js';
import type {
  Config,
  Epoch,
  LogEntry,
  NodeId,
  Op,
  PartitionId,
  RequestTag,
  Role,
  Seq,
  WriteCondition,
} from '../types.js';
import type { LogPosition } from './log.js';
import type { ClientResult, PeerMessage } from './messages.js';
import type { BatchOp, DedupRecord } from './ops.js';

export type RequestId = number;

export type ReplicaInput =
  | { readonly kind: 'configure'; readonly config: Config }
  | { readonly kind: 'peer'; readonly from: NodeId; readonly message: PeerMessage }
  | {
      readonly kind: 'clientWrite';
      readonly requestId: RequestId;
      readonly op: Op;
      readonly tag?: RequestTag;
      /** §16: compare-and-set; decided here, when the write gets its seq. */
      readonly condition?: WriteCondition;
      /**
       * §16: a transaction's own write (docs/transactions.md): not refused for the intent on its
       * key (it is conditional on that intent instead).
       */
      readonly sys?: boolean;
    }
  | { readonly kind: 'clientRead'; readonly requestId: RequestId; readonly key: Uint8Array }
  /** The persist output with this id is durable. */
  | { readonly kind: 'persisted'; readonly writeId: number }
  /** The nameserver says `epoch` is still the partition's current epoch (§7, no secondaries). */
  | { readonly kind: 'nameserverConfirmed'; readonly round: number; readonly epoch: Epoch }
  /** S7: the nameserver's answer to our promotion request made at `epoch`: the partition's current configuration. */
  | { readonly kind: 'promotionAnswered'; readonly config: Config; readonly epoch: Epoch }
  /** S11: the snapshot we fetched is installed: data, dedup table and applied position. */
  | {
      readonly kind: 'snapshotInstalled';
      readonly applied: LogPosition;
      readonly dedup: readonly DedupRecord[];
      /** §16: the user keys with an intent in the installed state. */
      readonly intents?: readonly Uint8Array[];
    }
  | { readonly kind: 'snapshotFailed'; readonly reason: string }
  /** S16: the driver holds the applied state at the digest entry `seq` (output `captureDigest`). */
  | { readonly kind: 'digestCaptured'; readonly seq: Seq }
  /** S13: a read of this partition's records failed its checksum: step out and relearn. */
  | { readonly kind: 'corrupt'; readonly reason: string }
  | { readonly kind: 'flush' }
  | { readonly kind: 'tick'; readonly nowMs: number };

export type ReplicaOutput =
  /**
   * Write these ops in one batch; when `writeId` is set, feed `persisted` back when durable.
   * `lazy`: nothing waits for these ops to be durable (applies and log truncation: the synced
   * log is the durable copy, and a restart re-applies from it), so they may ride with the next
   * batch instead of starting one; an output that waits for them (a read) still starts it.
   */
  | { readonly kind: 'persist'; readonly ops: readonly BatchOp[]; readonly writeId?: number; readonly lazy?: boolean }
  | { readonly kind: 'send'; readonly to: NodeId; readonly message: PeerMessage; readonly immediate: boolean }
  /** Answer a client; `deleteSeq` asks the driver to fill in whether the applied delete found the key. */
  | {
      readonly kind: 'reply';
      readonly requestId: RequestId;
      readonly result: ClientResult;
      readonly immediate: boolean;
      readonly op?: 'put' | 'delete' | 'digest';
      readonly duplicateOf?: string;
    }
  /**
   * S16: the applied state is at the digest entry `seq` (after earlier persists): take a
   * snapshot of it now, compute its digest from it, and answer `digestCaptured` once the
   * snapshot is open (whether or not that worked); nothing later is applied until then.
   * `buckets`: the buckets whose entries the digest lists.
   */
  | { readonly kind: 'captureDigest'; readonly seq: Seq; readonly buckets: readonly number[] }
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
  /** §16: the user keys with an intent in the applied state. */
  readonly intents?: readonly Uint8Array[];
  /** S13: the partition failed a checksum at open; `entries` are not to be trusted and are ignored. */
  readonly corrupt?: string;
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
