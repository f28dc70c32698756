/**
 * Registering with the nameserver (issue 9, issue 10): the retry policy of one attempt loop,
 * pure, shared by the process and the simulator through the host (host.ts).
 *
 * The loop retries with backoff for as long as the server runs (a nameserver that is down or
 * not started yet is waited for, not given up on), says so in the log at once and then every
 * REGISTER_LOG_EVERY_MS, and gives up at once on what retrying cannot fix: a refused token
 * (DESIGN §12), any other non-retryable DstoreError (an address that does not speak the
 * dstore protocol, a malformed reply), and NODE_ID_IN_USE once the other server has kept
 * heartbeating for two --dead-after-ms (it is not this server's previous life).
 */
import { DstoreError, NodeIdInUseError, UnauthorizedError } from '../core/errors.js';

/** Pauses between attempts to register: doubling from the first to the largest, in ms. */
export const REGISTER_BACKOFF_FIRST_MS = 100;
export const REGISTER_BACKOFF_MAX_MS = 2000;
/** While the nameserver cannot be reached, the log says so this often, in ms. */
export const REGISTER_LOG_EVERY_MS = 15_000;
/** Longest failure reason sent in an unhealthy heartbeat. */
export const MAX_REASON_CHARS = 500;

export interface RegisterContext {
  readonly nodeId: string;
  /** How the log names the nameserver (its address in the process). */
  readonly nameserver: string;
  readonly heartbeatMs: number;
}

type Level = 'warn' | 'fatal';
export type RegisterVerdict = {
  readonly log?: { readonly level: Level; readonly fields: Record<string, unknown>; readonly message: string };
} & ({ readonly retryAfterMs: number } | { readonly giveUp: Error });

/** One attempt loop: `gen` tells its answers from those of a loop a reload abandoned. */
export class RegisterLoop {
  attempt = 1;
  private delayMs = REGISTER_BACKOFF_FIRST_MS;
  private lastLoggedMs: number | undefined;
  private inUseSinceMs: number | undefined;

  constructor(
    readonly gen: number,
    readonly startedMs: number,
  ) {}

  /** Attempt `attempt` failed with `err` at `nowMs`: wait and try again, or give up. */
  failed(err: Error, nowMs: number, ctx: RegisterContext): RegisterVerdict {
    const attempt = this.attempt;
    if (err instanceof UnauthorizedError)
      return {
        giveUp: new UnauthorizedError(
          `nameserver ${ctx.nameserver} refused to register ${ctx.nodeId}: ${err.message}`,
          { cause: err },
        ),
      };
    let log: RegisterVerdict['log'];
    if (err instanceof NodeIdInUseError) {
      this.inUseSinceMs ??= nowMs;
      const bound = 2 * err.deadAfterMs + ctx.heartbeatMs;
      const heldMs = nowMs - this.inUseSinceMs;
      if (heldMs > bound)
        return {
          giveUp: new NodeIdInUseError(
            err.nodeId,
            err.address,
            err.refusedAddress,
            err.heartbeatAgeMs,
            err.deadAfterMs,
            `node id ${err.nodeId} is in use by a live storage server at ${err.address} ` +
              `(it kept heartbeating for ${heldMs} ms); stop it, or give this one another --node-id and --data-dir`,
          ),
        };
      log = {
        level: 'warn',
        fields: { nodeId: err.nodeId, holder: err.address, attempt },
        message: `${err.message}; retrying for up to ${bound - heldMs} ms more`,
      };
    } else if (err instanceof DstoreError && !err.retryable) {
      return {
        giveUp: err,
        log: {
          level: 'fatal',
          fields: { nameserver: ctx.nameserver, code: err.code, err: err.message },
          message: 'cannot register with the nameserver, and retrying cannot help; giving up',
        },
      };
    } else {
      this.inUseSinceMs = undefined;
      if (this.lastLoggedMs === undefined || nowMs - this.lastLoggedMs >= REGISTER_LOG_EVERY_MS) {
        this.lastLoggedMs = nowMs;
        log = {
          level: 'warn',
          fields: { err: err.message, nameserver: ctx.nameserver, attempt, waitingMs: nowMs - this.startedMs },
          message: 'cannot register with the nameserver yet; retrying with backoff until it answers',
        };
      }
    }
    const retryAfterMs = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, REGISTER_BACKOFF_MAX_MS);
    this.attempt += 1;
    return log ? { retryAfterMs, log } : { retryAfterMs };
  }
}
