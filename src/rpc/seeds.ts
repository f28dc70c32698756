/**
 * Calls to the nameserver through a list of seeds (issue 12): any of several identical
 * nameservers may be the leader (elected through etcd); a follower refuses what only the
 * leader may do with NOT_LEADER, naming the leader when it knows it.
 *
 * `NameserverSeeds.call` sends to the current target — the last nameserver that answered,
 * else a seed — and on
 * - NOT_LEADER with `leader`: goes there at once;
 * - NOT_LEADER without `leader`, or a target that cannot be reached (connection refused or
 *   lost before sending, or — for a request that is safe to repeat — lost after sending or
 *   unanswered within the hop's bound): the next seed. After every seed failed in a row: when
 *   all were unreachable the call ends (their connections back off by themselves, and callers
 *   retry on their own schedule); when some refused as followers (an election under way) or
 *   did not answer within the hop's bound, a short backoff, then another round (no busy loop);
 * - any other answer (a reply, or an error such as UNAUTHORIZED): that is the call's result.
 * Bounded by the call's deadline and MAX_HOPS_PER_SEED hops per seed. The target that answered
 * is kept for the next call, so heartbeats and promotion requests follow a new leader by
 * themselves.
 *
 * S9: a request that is not safe to repeat (register, heartbeat, promote, …) and may have
 * been run — it timed out or its connection dropped after it was sent — is not sent again
 * elsewhere: the call fails with that error as before (the caller decides), and the next call
 * starts at the next seed.
 */
import {
  ConnectionClosedError,
  DstoreError,
  InvalidArgumentError,
  NotLeaderError,
  TimeoutError,
} from '../core/errors.js';
import { parseAddress, type RpcPool } from './transport.js';

/** Most seeds one list may hold. */
export const MAX_NAMESERVER_SEEDS = 16;
/** Hops of one call per seed (redirects included); the deadline usually ends a call first. */
const MAX_HOPS_PER_SEED = 3;
/** Backoff after a round in which every seed failed: from this, doubling per round. */
const ROUND_BACKOFF_FIRST_MS = 50;
const ROUND_BACKOFF_MAX_MS = 500;
/** Requests a nameserver answers without changing anything: repeated elsewhere after a timeout. */
const SAFE_TO_REPEAT: ReadonlySet<unknown> = new Set(['map', 'nodes', 'leader']);

/**
 * The seeds of `value`: one `host:port`, a comma-separated list of them, or an array of them.
 * Throws InvalidArgumentError naming `what` on an empty list, a malformed address or more than
 * MAX_NAMESERVER_SEEDS. Duplicates are dropped.
 */
export function parseSeeds(value: unknown, what = 'nameserver'): string[] {
  let parts: unknown[];
  if (typeof value === 'string') parts = value.split(',').map((s) => s.trim());
  else if (Array.isArray(value)) parts = value;
  else
    throw new InvalidArgumentError(
      `${what} must be a "HOST:PORT" string, a comma-separated list of them or an array of them, ` +
        `got ${describe(value)}`,
    );
  if (parts.length === 0 || (parts.length === 1 && parts[0] === ''))
    throw new InvalidArgumentError(`${what}: the list of nameserver addresses is empty`);
  if (parts.length > MAX_NAMESERVER_SEEDS)
    throw new InvalidArgumentError(
      `${what}: ${parts.length} nameserver addresses, more than the ${MAX_NAMESERVER_SEEDS} allowed`,
    );
  const seeds: string[] = [];
  for (const [i, part] of parts.entries()) {
    if (typeof part !== 'string')
      throw new InvalidArgumentError(`${what}[${i}] must be a "HOST:PORT" string, got ${describe(part)}`);
    try {
      parseAddress(part);
      if (/\s/.test(part)) throw new InvalidArgumentError('whitespace');
    } catch (err) {
      throw new InvalidArgumentError(
        `${what}: nameserver address ${JSON.stringify(part.slice(0, 300))} is not HOST:PORT`,
        { cause: err },
      );
    }
    if (!seeds.includes(part)) seeds.push(part);
  }
  return seeds;
}

export interface NameserverSeedsOptions {
  /** Bound on one hop, in ms (default: the call's whole deadline). */
  readonly hopTimeoutMs?: number;
  /** Receives each failed hop (debug level). */
  readonly logger?: { debug(obj: object, msg: string): void };
}

/** One hop that did not answer, for the final error. */
interface Miss {
  readonly address: string;
  readonly why: string;
  readonly error: unknown;
}

export class NameserverSeeds {
  readonly seeds: readonly string[];
  private targetAddress: string;
  /** The seed tried after the target fails. */
  private cursor: number;

  constructor(
    seeds: readonly string[],
    private readonly pool: RpcPool,
    private readonly opts: NameserverSeedsOptions = {},
  ) {
    if (seeds.length === 0) throw new InvalidArgumentError('no nameserver address given');
    this.seeds = [...seeds];
    this.targetAddress = this.seeds[0] as string;
    this.cursor = 1 % this.seeds.length;
  }

  /** Where the next call goes first: the nameserver that answered last, else a seed. */
  get target(): string {
    return this.targetAddress;
  }

  /** How messages name the nameserver: its address, or the list of seeds. */
  describe(): string {
    return this.seeds.length === 1 ? (this.seeds[0] as string) : `one of ${this.seeds.join(', ')}`;
  }

  /** Why the last connection to the target failed ('' when it did not). */
  get lastFailureReason(): string {
    return this.pool.get(this.targetAddress, 'nameserver').lastFailureReason;
  }

  /** Connected to the target, which sent no greeting yet (not a dstore server, or a paused one). */
  get awaitingGreeting(): boolean {
    return this.pool.get(this.targetAddress, 'nameserver').awaitingGreeting;
  }

  /** Sends `body` to the leader (see the module comment); resolves with the reply body. */
  async call(body: Record<string, unknown>, timeoutMs: number): Promise<unknown> {
    const deadline = performance.now() + timeoutMs;
    const repeatable = SAFE_TO_REPEAT.has(body['t']);
    const misses: Miss[] = [];
    let failedInRow = 0;
    /** Whether every failure of this round was a nameserver that cannot be reached (not NOT_LEADER). */
    let roundUnreachable = true;
    let backoffMs = ROUND_BACKOFF_FIRST_MS;
    const maxHops = MAX_HOPS_PER_SEED * this.seeds.length + 1;
    for (let hop = 0; hop < maxHops; hop++) {
      const leftMs = deadline - performance.now();
      if (leftMs <= 0) break;
      const address = this.targetAddress;
      const hopMs = Math.min(leftMs, this.opts.hopTimeoutMs ?? leftMs);
      try {
        return await this.pool.get(address, 'nameserver').call(body, { timeoutMs: hopMs });
      } catch (err) {
        if (err instanceof NotLeaderError && isAddress(err.leader) && err.leader !== address) {
          misses.push({ address, why: `not the leader; the leader is ${err.leader}`, error: err });
          this.log(address, err, hop);
          this.targetAddress = err.leader;
          failedInRow = 0;
          roundUnreachable = true;
          continue;
        }
        const why = this.unreachable(address, err, repeatable);
        if (why === undefined) {
          // S9: a request that may have run is not repeated; the next call tries another seed.
          if (err instanceof TimeoutError || err instanceof ConnectionClosedError) this.nextSeed();
          throw err;
        }
        misses.push({ address, why, error: err });
        this.log(address, err, hop);
        this.nextSeed();
        failedInRow += 1;
        // A follower (an election under way) or a slow one may answer the next round.
        if (err instanceof NotLeaderError || err instanceof TimeoutError) roundUnreachable = false;
        if (failedInRow >= this.seeds.length) {
          // Every seed down: the connections back off on their own and callers retry on their
          // own schedule, so the call ends now (as with one nameserver). Some refused as
          // followers or did not answer in time: wait a little and ask again.
          if (roundUnreachable || hop + 1 >= maxHops) break;
          failedInRow = 0;
          roundUnreachable = true;
          const waitMs = Math.min(backoffMs, deadline - performance.now());
          backoffMs = Math.min(backoffMs * 2, ROUND_BACKOFF_MAX_MS);
          if (waitMs > 0) await sleep(waitMs);
        }
      }
    }
    throw this.noLeader(misses, performance.now() - deadline + timeoutMs);
  }

  /** Why `address` counts as not answering, or undefined when `err` is the call's result. */
  private unreachable(address: string, err: unknown, repeatable: boolean): string | undefined {
    if (err instanceof NotLeaderError) return 'not the leader, and it knows no leader';
    if (err instanceof ConnectionClosedError && (err.notSent || repeatable))
      return this.pool.get(address, 'nameserver').lastFailureReason || err.message;
    if (err instanceof TimeoutError && repeatable) return err.message;
    return undefined;
  }

  private nextSeed(): void {
    this.targetAddress = this.seeds[this.cursor] as string;
    this.cursor = (this.cursor + 1) % this.seeds.length;
  }

  private log(address: string, err: unknown, hop: number): void {
    const code = err instanceof DstoreError ? err.code : undefined;
    this.opts.logger?.debug({ nameserver: address, hop, code, err: (err as Error).message }, 'nameserver hop failed');
  }

  /**
   * The error of a call no leader answered: of the last miss's kind (CONNECTION_CLOSED when
   * every seed was unreachable, so callers tell "down" from "no leader"), naming each address
   * tried and why.
   */
  private noLeader(misses: readonly Miss[], elapsedMs: number): Error {
    const last = misses.at(-1);
    const seen = new Map<string, string>();
    for (const m of misses) seen.set(m.address, m.why);
    const tried = [...seen].map(([a, why]) => `${a}: ${why}`).join('; ');
    const message =
      `no nameserver leader among ${this.seeds.join(', ')} after ${Math.round(elapsedMs)} ms` +
      (tried === '' ? '' : ` (${tried})`);
    if (last === undefined) return new TimeoutError(message);
    if (last.error instanceof ConnectionClosedError)
      return new ConnectionClosedError(message, {
        cause: last.error,
        notSent: misses.every((m) => m.error instanceof ConnectionClosedError && m.error.notSent),
      });
    if (last.error instanceof TimeoutError) return new TimeoutError(message, { cause: last.error });
    return new NotLeaderError(message);
  }
}

/** A short description of a value's type, for messages. */
function describe(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  return typeof x === 'object' || typeof x === 'undefined' ? String(typeof x) : `a ${typeof x}`;
}

function isAddress(x: string | undefined): x is string {
  if (x === undefined) return false;
  try {
    parseAddress(x);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
