/**
 * Issue 15: the client calls a storage server served since its last heartbeat — reads,
 * writes, failures — and their latency's p50 and p99, sent with the next heartbeat (the
 * nameserver sums them into the dashboard's series). Latencies go into buckets growing by
 * 10 % from 10 µs, so a quantile is within 10 % of the truth whatever the load, in constant
 * memory.
 */
import type { OpsReport } from '../rpc/messages.js';

/** Smallest latency told apart, in ms. */
const FIRST_BUCKET_MS = 0.01;
const GROWTH = 1.1;
/** Buckets up to ~10^6 × FIRST_BUCKET_MS (10 s); slower calls count in the last. */
const BUCKETS = Math.ceil(Math.log(1e6) / Math.log(GROWTH)) + 1;

export type OpKind = 'read' | 'write';

/** The kind of a storage request by its `t`, or undefined for a call that is not a client's read or write. */
export function opKindOf(t: unknown): OpKind | undefined {
  switch (t) {
    case 'get':
    case 'getMany':
    case 'scan':
      return 'read';
    case 'put':
    case 'del':
    case 'putMany':
      return 'write';
    default:
      return undefined;
  }
}

export class OpStats {
  private reads = 0;
  private writes = 0;
  private errors = 0;
  /** Calls timed (a batch is one call of several reads or writes). */
  private calls = 0;
  private readonly buckets = new Uint32Array(BUCKETS);
  private sinceMs: number;

  constructor(nowMs: number) {
    this.sinceMs = nowMs;
  }

  /** One call of `count` reads or writes (a batch: its keys) that took `ms`. */
  record(kind: OpKind, ms: number, failed: boolean, count = 1): void {
    if (kind === 'read') this.reads += count;
    else this.writes += count;
    if (failed) this.errors += count;
    this.calls++;
    const i =
      ms <= FIRST_BUCKET_MS ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log(ms / FIRST_BUCKET_MS) / Math.log(GROWTH)));
    this.buckets[i]! += 1;
  }

  /** The report since the last call (or the start), and a new interval begins. */
  take(nowMs: number): OpsReport {
    const n = this.calls;
    const report: OpsReport = {
      intervalMs: Math.max(0, Math.round(nowMs - this.sinceMs)),
      reads: this.reads,
      writes: this.writes,
      errors: this.errors,
      p50Ms: n === 0 ? 0 : this.quantile(n, 0.5),
      p99Ms: n === 0 ? 0 : this.quantile(n, 0.99),
    };
    this.reads = 0;
    this.writes = 0;
    this.errors = 0;
    this.calls = 0;
    this.buckets.fill(0);
    this.sinceMs = nowMs;
    return report;
  }

  /** The upper bound of the bucket holding the q-quantile, in ms (rounded to µs). */
  private quantile(n: number, q: number): number {
    const rank = Math.ceil(q * n);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.buckets[i]!;
      if (seen >= rank) return Math.round(FIRST_BUCKET_MS * GROWTH ** i * 1000) / 1000;
    }
    return 0;
  }
}
