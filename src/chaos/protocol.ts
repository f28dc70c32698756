/**
 * Messages between the chaos runner and its client worker (worker.ts), over the worker's
 * IPC channel. The worker runs the clients on the "client host" — its own network namespace
 * when partitions are on, which only it and the cluster's nodes can reach — so everything
 * that talks to the cluster (forming, load, settling, final reads) happens there.
 *
 * Times in the history are ms since the run's origin on CLOCK_MONOTONIC
 * (`process.hrtime.bigint()`), which every process on the machine shares, so the runner's
 * fault times and the worker's operation times are on one clock.
 */
import type { HistoryOp } from '../check/linearizability.js';

export const CHAOS_WORKLOADS = ['kv', 'cas', 'bank'] as const;
/** The bank workload: every account starts with this much. */
export const BANK_INITIAL = 100;
export type ChaosWorkload = (typeof CHAOS_WORKLOADS)[number];

export interface WorkerConfig {
  readonly nameserver: string;
  readonly clusterToken?: string;
  readonly clients: number;
  readonly keys: readonly string[];
  readonly seed: number;
  /** Operations per second over all clients (each client is paced to its share). */
  readonly ratePerSec: number;
  readonly timeoutMs: number;
  readonly attemptTimeoutMs: number;
  readonly storageServers: number;
  readonly partitions: number;
  readonly replicas: number;
  /**
   * `kv`: puts, gets and deletes of unique values. `cas` (issue 14): every key is a counter
   * that clients increment by compare-and-set (a get, then a put with the version it read).
   * `bank` (issue 14): every key an account of BANK_INITIAL; transfers between two accounts
   * and audits of every account, each a transaction.
   */
  readonly workload: ChaosWorkload;
  /** Record whether each delete found the key (`existed`), so the checker uses it. */
  readonly deleteExisted: boolean;
  /** Bound on the cluster forming before the load, in ms. */
  readonly formTimeoutMs: number;
  /** CLOCK_MONOTONIC in ns (as a decimal string) at the run's origin. */
  readonly originNs: string;
}

/**
 * A history operation with the error code of a failed or unknown one and, for an unknown
 * one, when the client gave up (`end`; its `complete` stays null for the checker).
 */
export type ChaosOp = HistoryOp & { readonly error?: string; readonly end?: number };

export type ToWorker =
  | { readonly t: 'start' }
  /** Stop the load, wait for operations in flight, settle, read every key, then exit. */
  | { readonly t: 'stop'; readonly settleTimeoutMs: number };

export type FromWorker =
  | { readonly t: 'ready'; readonly formedMs: number }
  | { readonly t: 'ops'; readonly ops: readonly ChaosOp[] }
  | { readonly t: 'loadStopped'; readonly atMs: number }
  | { readonly t: 'settled'; readonly ok: boolean; readonly atMs: number; readonly problem?: string }
  /**
   * The end. `antiEntropy`: the storage servers' background anti-entropy counts summed, as
   * `nodes` reports them after the run (issue 13); `unread` names servers `nodes` had none of.
   */
  /** Bank workload: what each ok audit summed to (the runner checks them against the total). */
  | { readonly t: 'audits'; readonly totals: readonly number[] }
  | {
      readonly t: 'done';
      readonly antiEntropy?: {
        readonly checks: number;
        readonly divergences: number;
        readonly incomplete: number;
        readonly unread: readonly string[];
      };
    }
  | { readonly t: 'error'; readonly message: string };

/** ms since `originNs` on CLOCK_MONOTONIC, with µs resolution. */
export function monotonicMs(originNs: bigint): number {
  return Number((process.hrtime.bigint() - originNs) / 1000n) / 1000;
}
