/**
 * Typed errors with stable codes (STYLE §3). On the wire an error travels as
 * `{ code, message, ...fields }`; `errorFromWire` rebuilds the class from `code`.
 * Codes are listed in docs/errors.md.
 */

export type ErrorCode =
  | 'KEY_TOO_LARGE'
  | 'KEY_EMPTY'
  | 'VALUE_TOO_LARGE'
  | 'UNAVAILABLE'
  | 'TIMEOUT'
  | 'NOT_PRIMARY'
  | 'STALE_EPOCH'
  | 'OVERLOADED'
  | 'OUTCOME_UNKNOWN'
  | 'MALFORMED_MESSAGE'
  | 'CONNECTION_CLOSED'
  | 'UNAUTHORIZED'
  | 'STORAGE_FAILURE'
  | 'INVALID_ARGUMENT'
  | 'BATCH_TOO_LARGE'
  | 'BATCH_FAILED'
  | 'PROTOCOL_MISMATCH'
  | 'WRONG_ROLE'
  | 'NODE_ID_IN_USE'
  | 'NOT_LEADER'
  | 'CONDITION_FAILED'
  | 'KEY_LOCKED'
  | 'TRANSACTION_ABORTED'
  | 'INTERNAL';

export interface WireError {
  readonly code: string;
  readonly message: string;
  readonly retryable?: boolean;
  readonly [field: string]: unknown;
}

export abstract class DstoreError extends Error {
  abstract readonly code: ErrorCode;
  /** True when trying again (after refreshing the cluster map) may succeed. */
  readonly retryable: boolean = false;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
  toWire(): WireError {
    return { code: this.code, message: this.message, retryable: this.retryable };
  }
}

export class KeyEmptyError extends DstoreError {
  readonly code = 'KEY_EMPTY';
  constructor() {
    super('key is empty; keys are 1..1024 bytes');
  }
}

export class KeyTooLargeError extends DstoreError {
  readonly code = 'KEY_TOO_LARGE';
  constructor(
    readonly keyBytes: number,
    readonly maxKeyBytes: number,
  ) {
    super(`key is ${keyBytes} bytes, over the limit of ${maxKeyBytes}`);
  }
  override toWire(): WireError {
    return { ...super.toWire(), keyBytes: this.keyBytes, maxKeyBytes: this.maxKeyBytes };
  }
}

export class ValueTooLargeError extends DstoreError {
  readonly code = 'VALUE_TOO_LARGE';
  constructor(
    readonly valueBytes: number,
    readonly maxValueBytes: number,
  ) {
    super(`value is ${valueBytes} bytes, over --max-value-bytes=${maxValueBytes}`);
  }
  override toWire(): WireError {
    return { ...super.toWire(), valueBytes: this.valueBytes, maxValueBytes: this.maxValueBytes };
  }
}

/** The partition cannot serve right now (no primary, too few replicas, cluster forming). */
export class UnavailableError extends DstoreError {
  readonly code = 'UNAVAILABLE';
  override readonly retryable = true;
}

export class TimeoutError extends DstoreError {
  readonly code = 'TIMEOUT';
  override readonly retryable = true;
}

/** The receiver is not the primary of the partition; refresh the cluster map. */
export class NotPrimaryError extends DstoreError {
  readonly code = 'NOT_PRIMARY';
  override readonly retryable = true;
}

export class StaleEpochError extends DstoreError {
  readonly code = 'STALE_EPOCH';
  override readonly retryable = true;
}

export class OverloadedError extends DstoreError {
  readonly code = 'OVERLOADED';
  override readonly retryable = true;
}

/** S9: the write may or may not have been applied. Never reported as "failed". */
export class OutcomeUnknownError extends DstoreError {
  readonly code = 'OUTCOME_UNKNOWN';
  override readonly retryable = true;
}

export class MalformedMessageError extends DstoreError {
  readonly code = 'MALFORMED_MESSAGE';
}

export class ConnectionClosedError extends DstoreError {
  readonly code = 'CONNECTION_CLOSED';
  override readonly retryable = true;
  /**
   * True when the call was never handed to a connection (the connect failed, or the
   * connection was backing off): the server cannot have run it, so a write that failed so
   * is definitely not applied (S9). False when it may have been sent.
   */
  readonly notSent: boolean;
  constructor(message: string, options?: ErrorOptions & { readonly notSent?: boolean }) {
    super(message, options);
    this.notSent = options?.notSent ?? false;
  }
}

export class UnauthorizedError extends DstoreError {
  readonly code = 'UNAUTHORIZED';
}

export class StorageFailureError extends DstoreError {
  readonly code = 'STORAGE_FAILURE';
  override readonly retryable = true;
}

export class InvalidArgumentError extends DstoreError {
  readonly code = 'INVALID_ARGUMENT';
}

/** Issue 14: a `getMany` / `putMany` of more keys than maxBatchKeys (nothing was sent or done). */
export class BatchTooLargeError extends DstoreError {
  readonly code = 'BATCH_TOO_LARGE';
  constructor(
    readonly keys: number,
    readonly max: number,
  ) {
    super(`a batch of ${keys} keys is over the limit of ${max} keys per call; split it`);
  }
  override toWire(): WireError {
    return { ...super.toWire(), keys: this.keys, max: this.max };
  }
}

/** One entry's outcome in a batch (issue 14): its result, or the typed error it failed with. */
export type BatchOutcome<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly key: Uint8Array; readonly error: DstoreError };

/**
 * Issue 14: some entries of a `getMany` / `putMany` failed (batches are not atomic across
 * partitions: the other entries took effect). `results` has every entry's outcome in the order
 * given; the message names the failed keys. Client-side only: it never travels on the wire.
 * A put entry whose outcome is unknown fails with OUTCOME_UNKNOWN (S9).
 */
export class BatchFailedError<T = unknown> extends DstoreError {
  readonly code = 'BATCH_FAILED';
  constructor(
    message: string,
    readonly results: ReadonlyArray<BatchOutcome<T>>,
  ) {
    super(message);
  }
  /** The entries that failed, with their errors. */
  get failures(): Array<{ readonly index: number; readonly key: Uint8Array; readonly error: DstoreError }> {
    const out: Array<{ index: number; key: Uint8Array; error: DstoreError }> = [];
    this.results.forEach((r, index) => {
      if (!r.ok) out.push({ index, key: r.key, error: r.error });
    });
    return out;
  }
}

/**
 * The address does not speak the dstore protocol (another service answered), or speaks a
 * version this build does not (docs/protocol.md). Not retryable: the address is wrong.
 */
export class ProtocolMismatchError extends DstoreError {
  readonly code = 'PROTOCOL_MISMATCH';
}

/** The address is a dstore service of another role (a storage server given as the nameserver, …). */
export class WrongRoleError extends DstoreError {
  readonly code = 'WRONG_ROLE';
  constructor(
    message: string,
    /** The role the caller wanted ('nameserver' or 'storage'). */
    readonly expected: string,
    /** The role the address has. */
    readonly actual: string,
  ) {
    super(message);
  }
  override toWire(): WireError {
    return { ...super.toWire(), expected: this.expected, actual: this.actual };
  }
}

/**
 * A storage server registered under a node id that a live server at another address holds
 * (issue 9). Retryable: the holder may be this server's own previous life, not yet declared
 * dead; the refused server retries until it is, and gives up once the holder has kept
 * heartbeating for two --dead-after-ms (then it is a second live server with the same id).
 */
export class NodeIdInUseError extends DstoreError {
  readonly code = 'NODE_ID_IN_USE';
  override readonly retryable = true;
  constructor(
    readonly nodeId: string,
    /** Where the live holder of the id is. */
    readonly address: string,
    /** The refused server's address. */
    readonly refusedAddress: string,
    /** Since the holder's last heartbeat, at the nameserver, in ms. */
    readonly heartbeatAgeMs: number,
    /** The nameserver's --dead-after-ms. */
    readonly deadAfterMs: number,
    message?: string,
  ) {
    super(
      message ??
        `node id ${nodeId} is alive at ${address} (last heartbeat ${heartbeatAgeMs} ms ago); ` +
          `the server at ${refusedAddress} is refused until that one is dead (no heartbeat for ${deadAfterMs} ms)`,
    );
  }
  override toWire(): WireError {
    return {
      ...super.toWire(),
      nodeId: this.nodeId,
      address: this.address,
      refusedAddress: this.refusedAddress,
      heartbeatAgeMs: this.heartbeatAgeMs,
      deadAfterMs: this.deadAfterMs,
    };
  }
}

/**
 * Issue 12: the node asked is a nameserver candidate that does not lead the cluster (or no
 * longer does: its leadership lapsed or a map write was refused by the election service).
 * Retryable: ask `leader` (its address, when this node knows one) or another seed.
 */
export class NotLeaderError extends DstoreError {
  readonly code = 'NOT_LEADER';
  override readonly retryable = true;
  constructor(
    message: string,
    /** Where the current leader listens (`host:port`), when known. */
    readonly leader?: string,
  ) {
    super(message);
  }
  override toWire(): WireError {
    return this.leader === undefined ? super.toWire() : { ...super.toWire(), leader: this.leader };
  }
}

/**
 * §16: a conditional write (`ifVersion`) found the key at another version; nothing was
 * written. Definite, never retried: `current` is the key's version when the primary decided
 * (0: absent, or expired).
 */
export class ConditionFailedError extends DstoreError {
  readonly code = 'CONDITION_FAILED';
  constructor(
    readonly expected: number,
    readonly current: number,
    message?: string,
  ) {
    super(
      message ??
        `condition failed: expected version ${expected === 0 ? '0 (absent)' : expected}, ` +
          `the key is at ${current === 0 ? '0 (absent)' : `version ${current}`}`,
    );
  }
  override toWire(): WireError {
    return { ...super.toWire(), expected: this.expected, current: this.current };
  }
}

/**
 * §16: a write to a key that a transaction holds (its intent is on the key: the transaction
 * is between its phase 1 and the resolution of that key). Nothing was written. The client
 * library resolves the intent (docs/transactions.md) and writes again, itself: not `retryable`,
 * so a retry does not spin on it.
 */
export class KeyLockedError extends DstoreError {
  readonly code = 'KEY_LOCKED';
  constructor(
    message: string,
    /** The key, as hex. */
    readonly keyHex: string,
  ) {
    super(message);
  }
  override toWire(): WireError {
    return { ...super.toWire(), key: this.keyHex };
  }
}

/**
 * §16: a transaction gave up: a conflict with another transaction or writer on every attempt,
 * or its timeout passed before it committed. Nothing of it was written (definite).
 */
export class TransactionAbortedError extends DstoreError {
  readonly code = 'TRANSACTION_ABORTED';
}

export class InternalError extends DstoreError {
  readonly code = 'INTERNAL';
}

/**
 * S9: whether a write that failed with `err` may have been applied, so that its outcome is
 * unknown (never reported as failed). Definite only when no primary could have received it:
 * a typed answer that says so, or a call never handed to a connection. Anything that is not
 * a dstore error may hide an applied write. The one copy of the rule: the client, the
 * simulator and every checker of outcomes (chaos, failure tests) use it.
 */
export function mayHaveApplied(err: unknown): boolean {
  if (!(err instanceof DstoreError)) return true;
  if (err instanceof ConnectionClosedError) return !err.notSent; // never sent: not applied
  return (
    err.code === 'TIMEOUT' ||
    err.code === 'CONNECTION_CLOSED' ||
    err.code === 'OUTCOME_UNKNOWN' ||
    err.code === 'INTERNAL'
  );
}

type Rebuild = (w: WireError) => DstoreError;
const num = (v: unknown): number => (typeof v === 'number' ? v : 0);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');

const rebuilders: Record<ErrorCode, Rebuild> = {
  KEY_EMPTY: () => new KeyEmptyError(),
  KEY_TOO_LARGE: (w) => new KeyTooLargeError(num(w.keyBytes), num(w.maxKeyBytes)),
  VALUE_TOO_LARGE: (w) => new ValueTooLargeError(num(w.valueBytes), num(w.maxValueBytes)),
  UNAVAILABLE: (w) => new UnavailableError(w.message),
  TIMEOUT: (w) => new TimeoutError(w.message),
  NOT_PRIMARY: (w) => new NotPrimaryError(w.message),
  STALE_EPOCH: (w) => new StaleEpochError(w.message),
  OVERLOADED: (w) => new OverloadedError(w.message),
  OUTCOME_UNKNOWN: (w) => new OutcomeUnknownError(w.message),
  MALFORMED_MESSAGE: (w) => new MalformedMessageError(w.message),
  CONNECTION_CLOSED: (w) => new ConnectionClosedError(w.message),
  UNAUTHORIZED: (w) => new UnauthorizedError(w.message),
  STORAGE_FAILURE: (w) => new StorageFailureError(w.message),
  INVALID_ARGUMENT: (w) => new InvalidArgumentError(w.message),
  PROTOCOL_MISMATCH: (w) => new ProtocolMismatchError(w.message),
  WRONG_ROLE: (w) =>
    new WrongRoleError(
      w.message,
      typeof w.expected === 'string' ? w.expected : '',
      typeof w.actual === 'string' ? w.actual : '',
    ),
  NODE_ID_IN_USE: (w) =>
    new NodeIdInUseError(
      str(w.nodeId),
      str(w.address),
      str(w.refusedAddress),
      num(w.heartbeatAgeMs),
      num(w.deadAfterMs),
      w.message,
    ),
  NOT_LEADER: (w) => new NotLeaderError(w.message, typeof w.leader === 'string' ? w.leader : undefined),
  CONDITION_FAILED: (w) => new ConditionFailedError(num(w.expected), num(w.current), w.message),
  KEY_LOCKED: (w) => new KeyLockedError(w.message, str(w.key)),
  TRANSACTION_ABORTED: (w) => new TransactionAbortedError(w.message),
  INTERNAL: (w) => new InternalError(w.message),
  BATCH_TOO_LARGE: (w) => new BatchTooLargeError(num(w.keys), num(w.max)),
  BATCH_FAILED: (w) => new BatchFailedError(w.message, []),
};

/** Rebuilds a typed error from its wire form; an unknown code becomes `InternalError`. */
export function errorFromWire(w: WireError): DstoreError {
  const rebuild = Object.hasOwn(rebuilders, w.code) ? rebuilders[w.code as ErrorCode] : undefined;
  return rebuild ? rebuild(w) : new InternalError(`${w.code}: ${w.message}`);
}

/** The wire form of any thrown value; non-dstore errors become INTERNAL. */
export function errorToWire(err: unknown): WireError {
  if (err instanceof DstoreError) return err.toWire();
  const message = err instanceof Error ? err.message : String(err);
  return { code: 'INTERNAL', message, retryable: false };
}
