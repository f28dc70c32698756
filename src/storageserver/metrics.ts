/**
 * The storage server's Prometheus metrics (docs/metrics.md), counted at the server from the
 * calls it answers and the effects it executes (the core stays pure).
 *
 * Per call the cost is one counter increment and one histogram observation on children
 * cached per (op, outcome): no label object is built on the hot path.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { DstoreError } from '../core/errors.js';

/** Seconds: 100 µs to 10 s. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];
const BATCH_OPS_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/** The op label of a storage request type (snake_case, `del` → `delete`). */
export function opLabel(t: string): string {
  switch (t) {
    case 'del':
      return 'delete';
    case 'getMany':
      return 'get_many';
    case 'putMany':
      return 'put_many';
    case 'snapshotRead':
      return 'snapshot_read';
    case 'digestAt':
      return 'digest_at';
    default:
      return t;
  }
}

/** The outcome label of a failed call: its error code, or INTERNAL. */
export function errorCode(err: unknown): string {
  return err instanceof DstoreError ? err.code : 'INTERNAL';
}

interface OpChildren {
  readonly count: Counter.Internal;
  readonly seconds: Histogram.Internal<'op' | 'outcome'>;
}

/** What the lag gauges read at scrape: each serving primary's replicas. */
export interface LagSource {
  /** Per serving primary partition: its last seq, and each other replica's acked seq. */
  primaries(): Iterable<{
    readonly partition: number;
    readonly lastSeq: number;
    readonly peers: Iterable<readonly [replica: string, ackedSeq: number]>;
  }>;
  /** Inbound connections of the RPC server, and outbound ones of its pool. */
  connections(): { inbound: number; outbound: number };
}

export class StorageMetrics {
  readonly registry = new Registry();
  source: LagSource | undefined;
  private readonly ops: Counter<'op' | 'outcome'>;
  private readonly opSeconds: Histogram<'op' | 'outcome'>;
  private readonly errors: Counter<'code'>;
  private readonly children = new Map<string, Map<string, OpChildren>>();
  private readonly errorChildren = new Map<string, Counter.Internal>();
  private readonly batchOps: Histogram;
  private readonly batchSeconds: Histogram;
  private readonly batchFailures: Counter;
  private readonly snapshotTransfers: Counter<'direction' | 'outcome'>;
  private readonly snapshotBytes: Counter<'direction'>;
  private readonly catchupBytes: Counter;
  /** Per partition: when each new last seq was first seen (tick samples), for the lag in ms. */
  private readonly appended = new Map<number, { seqs: number[]; times: number[] }>();

  constructor() {
    const registers = [this.registry];
    this.ops = new Counter({
      name: 'dstore_storage_operations_total',
      help: 'Client calls this storage server answered, by op and outcome (ok, or the error code)',
      labelNames: ['op', 'outcome'],
      registers,
    });
    this.opSeconds = new Histogram({
      name: 'dstore_storage_operation_duration_seconds',
      help: 'Time from a call decoded to its reply, by op and outcome',
      labelNames: ['op', 'outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.errors = new Counter({
      name: 'dstore_errors_total',
      help: 'Calls answered with an error, by error code (docs/errors.md)',
      labelNames: ['code'],
      registers,
    });
    this.batchOps = new Histogram({
      name: 'dstore_group_commit_batch_ops',
      help: 'Storage ops per group-commit batch (one atomic, durable backend write)',
      buckets: BATCH_OPS_BUCKETS,
      registers,
    });
    this.batchSeconds = new Histogram({
      name: 'dstore_group_commit_write_duration_seconds',
      help: 'Time to write one group-commit batch durably (the backend write and its fsync/sync)',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.batchFailures = new Counter({
      name: 'dstore_group_commit_failures_total',
      help: 'Group-commit batches the backend failed to write (the storage turns unhealthy)',
      registers,
    });
    this.snapshotTransfers = new Counter({
      name: 'dstore_snapshot_transfers_total',
      help: 'Snapshot transfers (S11): sent to a learner or received as one, by outcome',
      labelNames: ['direction', 'outcome'],
      registers,
    });
    this.snapshotBytes = new Counter({
      name: 'dstore_snapshot_bytes_total',
      help: 'Key and value bytes of snapshot pages sent or received',
      labelNames: ['direction'],
      registers,
    });
    this.catchupBytes = new Counter({
      name: 'dstore_learner_catchup_bytes_total',
      help: 'Key and value bytes a learner received to catch up: snapshot pages and log entries',
      registers,
    });
    const self = this;
    new Gauge({
      name: 'dstore_replication_lag_entries',
      help: "Log entries a replica has not acked, on the partition's primary (last seq - acked seq)",
      labelNames: ['partition', 'replica'],
      registers,
      collect() {
        this.reset();
        for (const p of self.source?.primaries() ?? [])
          for (const [replica, acked] of p.peers)
            this.set({ partition: String(p.partition), replica }, Math.max(0, p.lastSeq - acked));
      },
    });
    new Gauge({
      name: 'dstore_replication_lag_seconds',
      help: "Age of the oldest entry a replica has not acked, on the partition's primary (0 when caught up)",
      labelNames: ['partition', 'replica'],
      registers,
      collect() {
        this.reset();
        const now = Date.now();
        for (const p of self.source?.primaries() ?? [])
          for (const [replica, acked] of p.peers) {
            const since = acked >= p.lastSeq ? undefined : self.appendedAt(p.partition, acked + 1);
            this.set({ partition: String(p.partition), replica }, since === undefined ? 0 : (now - since) / 1000);
          }
      },
    });
    new Gauge({
      name: 'dstore_connections',
      help: 'Open RPC connections: inbound (clients, peers, the nameserver) and outbound (this server to others)',
      labelNames: ['direction'],
      registers,
      collect() {
        const c = self.source?.connections() ?? { inbound: 0, outbound: 0 };
        this.set({ direction: 'inbound' }, c.inbound);
        this.set({ direction: 'outbound' }, c.outbound);
      },
    });
    // The usual outcomes exist from the start (a rate over a series that appears late misses its first step).
    for (const op of ['get', 'put', 'delete', 'scan', 'get_many', 'put_many']) this.child(op, 'ok');
  }

  private child(op: string, outcome: string): OpChildren {
    let byOutcome = this.children.get(op);
    if (!byOutcome) {
      byOutcome = new Map();
      this.children.set(op, byOutcome);
    }
    let c = byOutcome.get(outcome);
    if (!c) {
      c = { count: this.ops.labels(op, outcome), seconds: this.opSeconds.labels(op, outcome) };
      byOutcome.set(outcome, c);
    }
    return c;
  }

  /** A call answered: `t` the request type, `startedMs` from performance.now(), `err` when it failed. */
  call(t: string, seconds: number, err?: unknown): void {
    const outcome = err === undefined ? 'ok' : errorCode(err);
    const c = this.child(opLabel(t), outcome);
    c.count.inc();
    c.seconds.observe(seconds);
    if (err !== undefined) {
      let e = this.errorChildren.get(outcome);
      if (!e) {
        e = this.errors.labels(outcome);
        this.errorChildren.set(outcome, e);
      }
      e.inc();
    }
  }

  batchWritten(ops: number, seconds: number): void {
    this.batchOps.observe(ops);
    this.batchSeconds.observe(seconds);
  }

  batchFailed(): void {
    this.batchFailures.inc();
  }

  snapshot(direction: 'sent' | 'received', outcome: 'ok' | 'error'): void {
    this.snapshotTransfers.inc({ direction, outcome });
  }

  snapshotPage(direction: 'sent' | 'received', bytes: number): void {
    this.snapshotBytes.inc({ direction }, bytes);
    if (direction === 'received') this.catchupBytes.inc(bytes);
  }

  learnerEntries(bytes: number): void {
    if (bytes > 0) this.catchupBytes.inc(bytes);
  }

  /**
   * A primary's last seq at a tick: the first time a seq is seen is when it was appended (to
   * within a tick), which the lag in seconds reads. Bounded per partition.
   */
  sampleLastSeq(partition: number, lastSeq: number, nowMs: number): void {
    let s = this.appended.get(partition);
    if (!s) {
      s = { seqs: [], times: [] };
      this.appended.set(partition, s);
    }
    const n = s.seqs.length;
    if (n > 0 && s.seqs[n - 1]! >= lastSeq) {
      if (s.seqs[n - 1]! > lastSeq) {
        // A new epoch's log (truncated): start over.
        s.seqs.length = 0;
        s.times.length = 0;
      } else return;
    }
    s.seqs.push(lastSeq);
    s.times.push(nowMs);
    if (s.seqs.length > MAX_SAMPLES) {
      s.seqs.splice(0, s.seqs.length - MAX_SAMPLES / 2);
      s.times.splice(0, s.times.length - MAX_SAMPLES / 2);
    }
  }

  /** No longer primary here: its samples go. */
  forgetPartition(partition: number): void {
    this.appended.delete(partition);
  }

  /** When `seq` was first seen (the oldest sample at or past it; the oldest kept, if older). */
  private appendedAt(partition: number, seq: number): number | undefined {
    const s = this.appended.get(partition);
    if (!s || s.seqs.length === 0) return undefined;
    let lo = 0;
    let hi = s.seqs.length - 1;
    if (s.seqs[hi]! < seq) return undefined;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (s.seqs[mid]! >= seq) hi = mid;
      else lo = mid + 1;
    }
    return s.times[lo];
  }
}

const MAX_SAMPLES = 512;
