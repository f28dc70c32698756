/**
 * The client's retry logic (DESIGN §3, S9, S10), pure: one call's deadline, its attempts
 * (each bounded by `attemptTimeoutMs`), where the map of each attempt comes from, the
 * backoff between attempts, and how the call ends. Time comes in as `nowMs`; no I/O, no
 * timers. The client (./client.ts) drives it with sockets and timers, the simulator's client
 * (test/sim/client.ts) with simulated calls and clock.
 *
 * One attempt: `begin` (or the call ends), the map (`cached`: the cached one if formed,
 * else fetched; `refresh`: fetched, the cached one if the nameserver does not answer),
 * `primaryOf` it, `maySend`, the call to the primary bounded by `sendTimeoutMs`. A failure
 * of the map step goes to `mapFailed`, of the call to `sendFailed`: either a retry after a
 * delay or the end of the call.
 */
import { DstoreError, OutcomeUnknownError, UnavailableError, mayHaveApplied } from '../core/errors.js';

export interface RetryOptions {
  /** Deadline of the call including retries, in ms. */
  readonly timeoutMs: number;
  /** Bound on one attempt, in ms (taken as `timeoutMs` when over it). */
  readonly attemptTimeoutMs: number;
}

/** The part of the cluster map routing needs (MapReply). */
export interface RoutingMap {
  readonly formed: boolean;
  readonly configs: ReadonlyArray<{ readonly primary: string; readonly secondaries: readonly string[] } | undefined>;
  readonly addresses: Readonly<Record<string, string>>;
}

/** The primary an attempt goes to. */
export interface Route {
  readonly node: string;
  readonly address: string;
  /** Primary and secondaries. */
  readonly members: readonly string[];
}

/** How a call ends without an answer. */
export type CallEnd =
  /** S9: a write an attempt of which may have been applied. */
  | { readonly kind: 'unknown'; readonly error: OutcomeUnknownError }
  /** A definite error that is not retryable: the call fails with it. */
  | { readonly kind: 'failed'; readonly error: unknown }
  /** The deadline passed and every answer was definite; `lastError` the last one (if any). */
  | { readonly kind: 'deadline'; readonly lastError: unknown };

export type AttemptPlan =
  | {
      readonly kind: 'attempt';
      readonly attempt: number;
      readonly attemptMs: number;
      readonly map: 'cached' | 'refresh';
    }
  | { readonly kind: 'end'; readonly end: CallEnd };

export type AfterFailure =
  | { readonly kind: 'retry'; readonly delayMs: number }
  | { readonly kind: 'end'; readonly end: CallEnd };

/** Attempts of one call at most (the deadline ends it long before). */
const MAX_ATTEMPTS = 10_000;
/** Backoff between attempts: from 10 ms, doubling, up to 500 ms. */
const FIRST_DELAY_MS = 10;
const MAX_DELAY_MS = 500;

/** The primary of partition `p` in `map`; UnavailableError (retryable) when there is none. */
export function primaryOf(map: RoutingMap, p: number): Route {
  if (!map.formed) throw new UnavailableError(`the cluster is not formed yet: waiting for storage servers to register`);
  const config = map.configs[p];
  if (!config) throw new UnavailableError(`partition ${p} has no configuration`);
  const address = map.addresses[config.primary];
  if (!address) throw new UnavailableError(`no address known for ${config.primary}, primary of partition ${p}`);
  return { node: config.primary, address, members: [config.primary, ...config.secondaries] };
}

/**
 * A retry's map when fetching a fresh one failed with `err`: the cached one when the
 * nameserver did not answer (it may be restarting) and the cached one is formed — its
 * primary may well still serve; undefined: the fetch's error stands.
 */
export function cachedMapForRetry<M extends { readonly formed: boolean }>(
  err: unknown,
  cached: M | undefined,
): M | undefined {
  return err instanceof DstoreError && err.retryable && cached?.formed === true ? cached : undefined;
}

/**
 * One call to partition `partition`: its deadline, attempts and outcome. For a write, the
 * body (its (cid, rs) tag) is the same in every attempt (S10); once an attempt may have been
 * applied, the call can only end as OUTCOME_UNKNOWN or with the answer (S9).
 */
export class CallRetry {
  readonly deadlineMs: number;
  /**
   * A retry is not started with less time than this left: it would most likely time out,
   * and a timed-out write is unknown (S9), while the answers so far may all be definite.
   */
  private readonly minRetryMs: number;
  private readonly attemptTimeoutMs: number;
  private delayMs = FIRST_DELAY_MS;
  private maybeApplied = false;
  private lastError: unknown;
  /** The attempt under way (0: the first). */
  attempt = -1;

  constructor(
    private readonly opts: RetryOptions,
    private readonly partition: number,
    private readonly isWrite: boolean,
    nowMs: number,
  ) {
    this.deadlineMs = nowMs + opts.timeoutMs;
    this.attemptTimeoutMs = Math.min(opts.attemptTimeoutMs, opts.timeoutMs);
    this.minRetryMs = Math.min(100, this.attemptTimeoutMs / 4);
  }

  /** The next attempt and its bound, or the end of the call (deadline, or too little left for a retry). */
  begin(nowMs: number): AttemptPlan {
    const attempt = this.attempt + 1;
    const remaining = this.deadlineMs - nowMs;
    const tooLate = remaining <= 0 || (attempt > 0 && remaining < this.minRetryMs);
    if (attempt >= MAX_ATTEMPTS || tooLate) return { kind: 'end', end: this.expired() };
    this.attempt = attempt;
    const attemptMs = Math.min(remaining, this.attemptTimeoutMs);
    return { kind: 'attempt', attempt, attemptMs, map: attempt === 0 ? 'cached' : 'refresh' };
  }

  /** After the map step: false when a retry's map fetch took the time left (then the call ends with `expired()`). */
  maySend(nowMs: number): boolean {
    return this.attempt === 0 || this.deadlineMs - nowMs >= this.minRetryMs;
  }

  /** The bound of the call to the primary. */
  sendTimeoutMs(attemptMs: number, nowMs: number): number {
    return Math.max(1, Math.min(attemptMs, this.deadlineMs - nowMs));
  }

  /** No primary from the map (the nameserver failed, or the map names none): never reached a primary. */
  mapFailed(err: unknown, nowMs: number): AfterFailure {
    this.lastError = err;
    return this.afterFailure(err, nowMs);
  }

  /** The call to the primary failed (a timed-out attempt included). */
  sendFailed(err: unknown, nowMs: number): AfterFailure {
    this.lastError = err;
    if (this.isWrite && mayHaveApplied(err)) this.maybeApplied = true;
    return this.afterFailure(err, nowMs);
  }

  /** How the call ends once its deadline passed. */
  expired(): CallEnd {
    if (this.maybeApplied) {
      const message =
        `write to partition ${this.partition} did not complete within ${this.opts.timeoutMs} ms; ` +
        'it may or may not have been applied';
      const error = new OutcomeUnknownError(message, { cause: this.lastError });
      return { kind: 'unknown', error };
    }
    return { kind: 'deadline', lastError: this.lastError };
  }

  private afterFailure(err: unknown, nowMs: number): AfterFailure {
    if (!(err instanceof DstoreError) || !err.retryable) {
      // S9: a definite answer now does not undo an earlier attempt that may have been applied.
      if (this.maybeApplied) {
        const message =
          `write to partition ${this.partition} failed after an attempt that may have been applied: ` +
          (err as Error).message;
        return { kind: 'end', end: { kind: 'unknown', error: new OutcomeUnknownError(message, { cause: err }) } };
      }
      return { kind: 'end', end: { kind: 'failed', error: err } };
    }
    const delayMs = Math.min(this.delayMs, Math.max(0, this.deadlineMs - nowMs));
    this.delayMs = Math.min(this.delayMs * 2, MAX_DELAY_MS);
    return { kind: 'retry', delayMs };
  }
}
