/** What the transport's server and client share: logging, defaults, error replies. */
import type { WireError } from '../../core/errors.js';
import { MiB } from '../../core/limits.js';
import { packBody } from '../frame.js';

// ---- logging ----

/** The part of a pino logger the transport uses. */
export interface RpcLogger {
  debug?(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export const noop = (): void => undefined;
export const silentLogger: RpcLogger = { debug: noop, warn: noop, error: noop };

// ---- defaults ----

export const RPC_DEFAULTS = {
  /** Calls one client connection keeps in flight before refusing with OVERLOADED. */
  maxInFlightCalls: 10_000,
  /** Calls one server connection runs at once before answering OVERLOADED. */
  maxInFlightPerConnection: 10_000,
  /** Connections a server accepts at once. */
  maxConnections: 10_000,
  /** Connections an RpcPool keeps; the least recently used one is closed beyond it. */
  maxPoolConnections: 1024,
  /** How long a TCP connect may take, in ms. */
  connectTimeoutMs: 5_000,
  /** First reconnection delay, in ms (doubled per failed attempt, with jitter). */
  backoffMinMs: 50,
  /** Largest reconnection delay, in ms. */
  backoffMaxMs: 2_000,
} as const;

/** Default bound of a connection's outgoing queue: room for two maximal frames, at least 8 MiB. */
export function defaultMaxQueuedBytes(maxFrameBytes: number): number {
  return Math.max(8 * MiB, 2 * (maxFrameBytes + 4));
}

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function isPromiseLike(x: unknown): x is PromiseLike<unknown> {
  return typeof x === 'object' && x !== null && typeof (x as { then?: unknown }).then === 'function';
}

/**
 * Largest oversized call a server with `oversizedCall` skips and answers (the frame of the
 * largest value any dstore build accepts, twice over); beyond it the connection is closed.
 */
export const OVERSIZED_SKIP_MAX_BYTES = 256 * MiB;

/** How long a refused connection may stay half-closed before it is destroyed, in ms. */
export const REFUSED_LINGER_MS = 2000;

/** Room above `maxQueuedBytes` for small error replies that stand in for replies that did not fit. */
export function errorReserveBytes(maxQueuedBytes: number): number {
  return Math.max(64 * 1024, Math.floor(maxQueuedBytes / 8));
}

export function errorReplyBody(id: number, e: WireError): Buffer {
  return packBody({ t: 'reply', id, e });
}
