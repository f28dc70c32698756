/**
 * The workload every system of `bench:compare` runs, behind one small interface: a peer
 * (Redis, etcd, dstore) hands out callers, each a connection or a share of one client; a
 * cell runs C callers in a closed loop (each waits for its answer before the next request)
 * on uniformly random keys for a fixed time, recording latencies in a bounded histogram.
 */
import { performance } from 'node:perf_hooks';
import { Histogram } from '../cli/histogram.js';

export type OpKind = 'write' | 'read';

/** One caller's view of a system: a write of `value` under `key`, a read (true when found). */
export interface Caller {
  write(key: string, value: Buffer): Promise<void>;
  read(key: string): Promise<boolean>;
}

/** A running system under test. */
export interface Peer {
  /** Row label, e.g. 'redis+wait', 'etcd', 'dstore'. */
  readonly name: string;
  /** One line on what runs (for the legend). */
  readonly description: string;
  /** The processes whose CPU counts as the system's (servers only). */
  serverPids(): number[];
  /** Caller `index` (0 ≤ index < the most callers asked for); the same object each time. */
  caller(index: number): Caller;
}

/** The peer's start options shared by every system. */
export interface PeerStartOptions {
  /** Callers the benchmark will use at most (connections to open). */
  readonly maxConcurrency: number;
}

export function keyName(i: number): string {
  return `k${i.toString().padStart(8, '0')}`;
}

export interface CellResult {
  readonly ops: number;
  readonly elapsedS: number;
  readonly latency: Histogram;
  readonly errors: number;
  readonly errorSample?: string;
}

/** How long after a cell's end its callers may still be waiting for an answer before the system counts as stuck. */
export const CELL_GRACE_MS = 15_000;

const describe = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Writes keys 0..keys-1 once, with `concurrency` callers (not measured). */
export function preload(
  peer: Peer,
  keys: number,
  concurrency: number,
  value: Buffer,
  shouldStop: () => boolean,
): Promise<void> {
  return writeKeys(peer, { from: 0, to: keys, concurrency, value }, shouldStop, () => undefined);
}

/**
 * Writes keys from..to-1 once with `concurrency` callers; `onWritten` after each write. Fails
 * on the first failed write, or when no write is answered for CELL_GRACE_MS.
 */
export async function writeKeys(
  peer: Peer,
  range: { from: number; to: number; concurrency: number; value: Buffer },
  shouldStop: () => boolean,
  onWritten: () => void,
): Promise<void> {
  let next = range.from;
  let done = 0;
  const loop = async (index: number): Promise<void> => {
    const caller = peer.caller(index);
    while (next < range.to && !shouldStop()) {
      await caller.write(keyName(next++), range.value);
      done++;
      onWritten();
    }
  };
  const n = Math.max(1, Math.min(range.concurrency, range.to - range.from));
  const callers = Array.from({ length: n }, (_, i) => loop(i));
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, reject) => {
    let seen = -1;
    timer = setInterval(() => {
      if (done === seen) reject(new Error(`the load made no progress for ${CELL_GRACE_MS} ms (at key ${next})`));
      seen = done;
    }, CELL_GRACE_MS);
  });
  try {
    await Promise.race([Promise.all(callers), stuck]);
  } finally {
    clearInterval(timer);
  }
}

/** Runs one cell: `concurrency` callers doing `op` on random keys of `keys` for `durationS`. */
export async function runCell(
  peer: Peer,
  o: { op: OpKind; concurrency: number; durationS: number; keys: number; value: Buffer },
  shouldStop: () => boolean,
): Promise<CellResult> {
  const latency = new Histogram();
  let errors = 0;
  let errorSample: string | undefined;
  const start = performance.now();
  const end = start + o.durationS * 1000;
  const loop = async (caller: Caller): Promise<void> => {
    while (!shouldStop()) {
      const t0 = performance.now();
      if (t0 >= end) return;
      const key = keyName(Math.floor(Math.random() * o.keys));
      try {
        if (o.op === 'write') await caller.write(key, o.value);
        else if (!(await caller.read(key))) throw new Error(`${key} not found (the preload wrote it)`);
        latency.recordMs(performance.now() - t0);
      } catch (err) {
        errors++;
        errorSample ??= describe(err);
      }
    }
  };
  let waiting = o.concurrency;
  const callers = Array.from({ length: o.concurrency }, (_, i) => loop(peer.caller(i)).finally(() => waiting--));
  // A request that never answers (a Redis WAIT whose replica died) must not hang the benchmark.
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${waiting} of ${o.concurrency} callers got no answer within ${CELL_GRACE_MS} ms`)),
      o.durationS * 1000 + CELL_GRACE_MS,
    );
  });
  try {
    await Promise.race([Promise.all(callers), stuck]);
  } finally {
    clearTimeout(timer);
  }
  const elapsedS = (performance.now() - start) / 1000;
  return { ops: latency.count, elapsedS, latency, errors, ...(errorSample === undefined ? {} : { errorSample }) };
}
