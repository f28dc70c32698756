/**
 * Core vocabulary of dstore (DESIGN §2, §3, §5): ids, configurations, log entries.
 * Pure types; no I/O. Ids are branded so an epoch cannot be passed where a seq is meant.
 */

export type Seq = number & { readonly __brand: 'Seq' };
export type Epoch = number & { readonly __brand: 'Epoch' };
export type NodeId = string & { readonly __brand: 'NodeId' };
export type PartitionId = number & { readonly __brand: 'PartitionId' };

export const seq = (n: number): Seq => n as Seq;
export const epoch = (n: number): Epoch => n as Epoch;
export const nodeId = (s: string): NodeId => s as NodeId;
export const partitionId = (n: number): PartitionId => n as PartitionId;

/** A partition's configuration; one epoch identifies exactly one configuration (S3). */
export interface Config {
  readonly partition: PartitionId;
  readonly epoch: Epoch;
  readonly primary: NodeId;
  readonly secondaries: readonly NodeId[];
  readonly learners: readonly NodeId[];
}

/** What a log entry does when applied. Puts and deletes are blind (§5.5). */
export type Op =
  /**
   * `expiresAt` (§16, TTL): when the value expires, in ms since the Unix epoch by the clock of
   * the primary that logged it; from then on reads treat the key as absent, and the primary
   * logs a delete of it. Absent: never.
   */
  | { readonly kind: 'put'; readonly key: Uint8Array; readonly value: Uint8Array; readonly expiresAt?: number }
  | { readonly kind: 'delete'; readonly key: Uint8Array }
  /** S6: the first entry a new primary prepares; applying it changes no data. */
  | { readonly kind: 'epochStart' }
  /**
   * S16: every replica computes the digest of its applied state as it applies this entry, so
   * all of them at the same seq; it lists the entries of the `buckets` asked for (none: just
   * the digests). Applying it changes no data.
   */
  | { readonly kind: 'digest'; readonly buckets: readonly number[] };

/** An op that changes data (a put or a delete), as opposed to a marker entry. */
export type DataOp = Extract<Op, { readonly key: Uint8Array }>;

export function isDataOp(op: Op): op is DataOp {
  return op.kind === 'put' || op.kind === 'delete';
}

/**
 * DESIGN §16: a write that happens only if each of `keys` (of its partition) is at its
 * `ifVersion` when the primary gives it a seq (0: absent). The primary decides and logs a
 * blind op.
 */
export interface WriteCondition {
  /**
   * `observed`: the version (0: absent) the driver read of the key from the applied state
   * before asking. Entries of the log after `atSeq` that write the key come later and
   * override it.
   */
  readonly keys: ReadonlyArray<{ readonly key: Uint8Array; readonly ifVersion: number; readonly observed: number }>;
  /** The state the driver read was at applied seq `atSeq` or later, in `epoch`. */
  readonly atSeq: Seq;
  readonly epoch: Epoch;
  /** The primary's clock (ms since the Unix epoch): a logged put whose expiry is past makes the key absent. */
  readonly nowMs: number;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Identifies a client request for exactly-once (S10). */
export interface RequestTag {
  readonly clientId: string;
  readonly requestSeq: number;
}

/** S1: an entry keeps the epoch in which it was first proposed. */
export interface LogEntry {
  readonly epoch: Epoch;
  readonly seq: Seq;
  readonly op: Op;
  readonly tag?: RequestTag;
}

/** The applied value of a key, with the seq of the write that produced it. */
export interface VersionedValue {
  readonly value: Uint8Array;
  readonly version: Seq;
  /** §16: when the value expires (ms since the Unix epoch, the primary's clock); absent: never. */
  readonly expiresAt?: number;
}

/** §16: whether a value with this expiry is gone at `nowMs` (a key past its expiry reads as absent). */
export function expired(expiresAt: number | undefined, nowMs: number): boolean {
  return expiresAt !== undefined && expiresAt <= nowMs;
}

export type Role = 'inactive' | 'primary' | 'secondary' | 'learner';

export function roleIn(config: Config, node: NodeId): Role {
  if (config.primary === node) return 'primary';
  if (config.secondaries.includes(node)) return 'secondary';
  if (config.learners.includes(node)) return 'learner';
  return 'inactive';
}

export function assertNever(x: never): never {
  throw new Error(`unexpected value: ${JSON.stringify(x)}`);
}

/** Invariant checks stay on in production (STYLE §4). */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new InvariantViolation(message);
}

export class InvariantViolation extends Error {
  constructor(message: string) {
    super(`invariant violated: ${message}`);
    this.name = 'InvariantViolation';
  }
}
