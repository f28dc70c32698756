/**
 * Shared by the failure tests (failures-*.test.ts): a history of every write with its
 * outcome and the checker that judges what is read back afterwards; concurrent writer loops
 * and one probe loop per partition (to time how long a partition stays unwritable after a
 * failure); keys chosen per partition; a scenario clock.
 *
 * The check (S9): for each key, the value read back must be the acknowledged write with the
 * highest version, or a write whose outcome was unknown to its caller and whose version is
 * above every acknowledged one (it was applied after them). A write the client reported as
 * definitely failed must never show up; no two acknowledged writes of one partition may
 * share a version (a new primary reusing a sequence number would lose one of them).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { DstoreError, type Db, mayHaveApplied } from '../../src/client/index.js';
import { partitionOf } from '../../src/core/partitioning.js';
import type { LocalCluster } from './cluster.js';

export type Outcome =
  | { readonly kind: 'ok'; readonly version: number }
  /** The client said the write was not applied (an error that is not OUTCOME_UNKNOWN / TIMEOUT). */
  | { readonly kind: 'failed'; readonly code: string }
  | { readonly kind: 'unknown'; readonly why: string };

export interface WriteRecord {
  readonly key: string;
  readonly value: string;
  readonly partition: number;
  readonly writer: string;
  /** Date.now() when the put was issued and when it settled. */
  readonly startMs: number;
  readonly endMs: number;
  readonly outcome: Outcome;
}

/**
 * Heartbeat and dead-after of the failure tests: 250 ms and 2 s (the defaults are 1 s and 5 s)
 * so the scenarios run in seconds; `DSTORE_TEST_HEARTBEAT_MS` / `DSTORE_TEST_DEAD_AFTER_MS`
 * override them (e.g. 1000 / 5000 to measure at the defaults, as docs/failures.md does).
 */
export const TIMING = {
  heartbeatMs: Number(process.env.DSTORE_TEST_HEARTBEAT_MS ?? 250),
  deadAfterMs: Number(process.env.DSTORE_TEST_DEAD_AFTER_MS ?? 2000),
} as const;

export function classify(err: unknown): Outcome {
  // S9: OUTCOME_UNKNOWN is what the client reports when a retry may have been applied; a bare
  // TIMEOUT or a lost connection can also hide an applied write (the rule: mayHaveApplied).
  if (err instanceof DstoreError && !mayHaveApplied(err)) return { kind: 'failed', code: err.code };
  if (err instanceof DstoreError) return { kind: 'unknown', why: `${err.code}: ${err.message}` };
  return { kind: 'unknown', why: err instanceof Error ? err.message : String(err) };
}

export class History {
  readonly records: WriteRecord[] = [];
  private nextValue = 0;

  constructor(private readonly partitions: number) {}

  /** Issues one put of a value unique in this history and records its outcome. */
  async put(db: Db, key: string, writer: string): Promise<WriteRecord> {
    const value = `${writer}#${this.nextValue++}`;
    const partition = partitionOf(Buffer.from(key), this.partitions);
    const startMs = Date.now();
    let outcome: Outcome;
    try {
      outcome = { kind: 'ok', version: await db.put(key, value) };
    } catch (err) {
      outcome = classify(err);
    }
    const rec: WriteRecord = { key, value, partition, writer, startMs, endMs: Date.now(), outcome };
    this.records.push(rec);
    return rec;
  }

  /** Puts every key of `lists`: each list's keys one after another, the lists at the same time. */
  async putEach(db: Db, lists: readonly (readonly string[])[], writer: string): Promise<void> {
    await Promise.all(
      lists.map(async (list) => {
        for (const k of list) await this.put(db, k, writer);
      }),
    );
  }

  keys(): string[] {
    return [...new Set(this.records.map((r) => r.key))].sort();
  }

  counts(): { ok: number; failed: number; unknown: number; failedCodes: string[] } {
    const failed = this.records.filter((r) => r.outcome.kind === 'failed');
    return {
      ok: this.records.filter((r) => r.outcome.kind === 'ok').length,
      failed: failed.length,
      unknown: this.records.filter((r) => r.outcome.kind === 'unknown').length,
      failedCodes: [...new Set(failed.map((r) => (r.outcome as { code: string }).code))],
    };
  }

  /**
   * The end of the unavailability a failure at `sinceMs` caused on `partition`: the first
   * acknowledged write issued at or after `sinceMs` completed this long after `sinceMs`.
   * Undefined when none succeeded.
   */
  firstOkAfter(partition: number, sinceMs: number): number | undefined {
    let best: number | undefined;
    for (const r of this.records) {
      if (r.partition !== partition || r.outcome.kind !== 'ok' || r.startMs < sinceMs) continue;
      if (best === undefined || r.endMs < best) best = r.endMs;
    }
    return best === undefined ? undefined : best - sinceMs;
  }

  /** Writes to `partition` issued in [fromMs, toMs). */
  between(partition: number, fromMs: number, toMs: number): WriteRecord[] {
    return this.records.filter((r) => r.partition === partition && r.startMs >= fromMs && r.startMs < toMs);
  }

  /**
   * Reads every key written (through `db`, linearizable) and returns every violation of the
   * rules in this file's header; an empty list is a pass.
   */
  async check(db: Db): Promise<string[]> {
    const violations: string[] = [];
    const byValue = new Map(this.records.map((r) => [r.value, r]));
    // No two acknowledged writes of one partition share a version.
    const versionOwner = new Map<string, WriteRecord>();
    for (const r of this.records) {
      if (r.outcome.kind !== 'ok') continue;
      const id = `${r.partition}/${r.outcome.version}`;
      const other = versionOwner.get(id);
      if (other)
        violations.push(
          `partition ${r.partition}: version ${r.outcome.version} acknowledged for two writes ` +
            `(${other.key}=${other.value} and ${r.key}=${r.value})`,
        );
      else versionOwner.set(id, r);
    }
    const byKey = new Map<string, WriteRecord[]>();
    for (const r of this.records) {
      const list = byKey.get(r.key) ?? [];
      list.push(r);
      byKey.set(r.key, list);
    }
    const keys = [...byKey.keys()];
    // Read back with a little concurrency, every read bounded by the client's deadline.
    const reads = new Map<string, { value: string; version: number } | undefined | Error>();
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let i = next++; i < keys.length; i = next++) {
          const key = keys[i]!;
          try {
            const got = await db.get(key);
            reads.set(key, got ? { value: Buffer.from(got.value).toString('utf8'), version: got.version } : undefined);
          } catch (err) {
            reads.set(key, err as Error);
          }
        }
      }),
    );
    for (const key of keys) {
      const writes = byKey.get(key)!;
      let lastAcked: WriteRecord | undefined;
      for (const w of writes) {
        if (
          w.outcome.kind === 'ok' &&
          (!lastAcked || w.outcome.version > (lastAcked.outcome as { version: number }).version)
        )
          lastAcked = w;
      }
      const ackedVersion = lastAcked ? (lastAcked.outcome as { version: number }).version : 0;
      const got = reads.get(key);
      if (got instanceof Error) {
        violations.push(`${key}: read failed: ${got.message}`);
        continue;
      }
      if (got === undefined) {
        if (lastAcked)
          violations.push(`${key}: absent, but ${lastAcked.value} was acknowledged at version ${ackedVersion}`);
        continue;
      }
      const source = byValue.get(got.value);
      if (!source || source.key !== key) {
        violations.push(`${key}: holds ${JSON.stringify(got.value)}, which was never written to it`);
      } else if (source.outcome.kind === 'failed') {
        violations.push(
          `${key}: holds ${got.value}, from a write reported as definitely failed (${source.outcome.code})`,
        );
      } else if (source.outcome.kind === 'ok') {
        if (source.outcome.version !== got.version)
          violations.push(
            `${key}: ${got.value} was acknowledged at version ${source.outcome.version} ` +
              `but reads back at ${got.version}`,
          );
        if (source !== lastAcked)
          violations.push(
            `${key}: holds ${got.value} (version ${got.version}); the last acknowledged write is ${lastAcked?.value} ` +
              `(version ${ackedVersion}): an acknowledged write was lost`,
          );
      } else if (got.version <= ackedVersion) {
        violations.push(
          `${key}: holds ${got.value} from an unknown-outcome write at version ${got.version}, not above the last ` +
            `acknowledged version ${ackedVersion} (${lastAcked?.value})`,
        );
      }
    }
    return violations;
  }
}

/** For each partition, `count` keys `<prefix><p>-<i>` that hash to it. */
export function keysByPartition(partitions: number, count: number, prefix = 'k'): string[][] {
  const out: string[][] = Array.from({ length: partitions }, () => []);
  for (let n = 0; out.some((l) => l.length < count); n++) {
    const key = `${prefix}${n}`;
    const list = out[partitionOf(Buffer.from(key), partitions)]!;
    if (list.length < count) list.push(key);
    if (n > 10_000_000) throw new Error('keysByPartition: ran out of keys');
  }
  return out;
}

/**
 * Closed-loop writers over a shared key pool, plus one probe per partition (a sequential
 * writer of one key of that partition, paced by `probeEveryMs`), all recorded in `history`.
 * `stop()` ends the loops and waits for the puts in flight (each bounded by the client's
 * deadline).
 */
export class WriteLoad {
  private running = true;
  private readonly loops: Promise<void>[] = [];

  constructor(
    private readonly history: History,
    private readonly dbs: readonly Db[],
    opts: { writers: number; keys: readonly string[]; probeKeys?: readonly string[]; probeEveryMs?: number },
  ) {
    for (let w = 0; w < opts.writers; w++) {
      const db = this.dbs[w % this.dbs.length]!;
      this.loops.push(this.writer(db, `w${w}`, opts.keys, w));
    }
    (opts.probeKeys ?? []).forEach((key, p) => {
      const db = this.dbs[p % this.dbs.length]!;
      this.loops.push(this.probe(db, `probe${p}`, key, opts.probeEveryMs ?? 50));
    });
  }

  private async writer(db: Db, name: string, keys: readonly string[], seed: number): Promise<void> {
    // A deterministic pseudo-random walk over the pool (xorshift32): writers overlap on keys.
    let x = (seed + 1) * 0x9e3779b9;
    while (this.running) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const rec = await this.history.put(db, keys[(x >>> 0) % keys.length]!, name);
      // After an error, pause a little rather than spin on a partition that refuses.
      if (rec.outcome.kind !== 'ok') await sleep(20);
    }
  }

  private async probe(db: Db, name: string, key: string, everyMs: number): Promise<void> {
    while (this.running) {
      await this.history.put(db, key, name);
      await sleep(everyMs);
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}

/**
 * Starts polling (every 200 ms, in the background) for the moment every partition has R
 * serving replicas and no learners; `done` resolves with that time (Date.now()), or with
 * undefined when `timeoutMs` passed first.
 */
export function watchReplicated(cluster: LocalCluster, timeoutMs: number): { done: Promise<number | undefined> } {
  return {
    done: cluster.waitReplicated(timeoutMs).then(
      () => Date.now(),
      () => undefined,
    ),
  };
}

/** Latency of writes issued in [fromMs, toMs): the slowest acknowledged one and how many were not acknowledged. */
export function disturbance(
  history: History,
  fromMs: number,
  toMs: number,
): { writes: number; maxOkMs: number; notOk: number } {
  const ws = history.records.filter((r) => r.startMs >= fromMs && r.startMs < toMs);
  const ok = ws.filter((r) => r.outcome.kind === 'ok');
  return {
    writes: ws.length,
    maxOkMs: ok.length ? Math.max(...ok.map((r) => r.endMs - r.startMs)) : NaN,
    notOk: ws.length - ok.length,
  };
}

/** The scenario's clock: `at(5000)` resolves 5 s after `start` (the scenario's own timeline). */
export class Clock {
  readonly start = Date.now();
  at(ms: number): Promise<void> {
    return sleep(this.start + ms - Date.now());
  }
  get elapsed(): number {
    return Date.now() - this.start;
  }
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Per partition in `partitions`, ms from `sinceMs` to its first acknowledged write issued
 * after it; prints a line `# <label>: …` and returns the list (undefined: none).
 */
export function reportRecovery(
  history: History,
  label: string,
  partitions: readonly number[],
  sinceMs: number,
): (number | undefined)[] {
  const times = partitions.map((p) => history.firstOkAfter(p, sinceMs));
  const known = times.filter((t): t is number => t !== undefined);
  const never = partitions.filter((_, i) => times[i] === undefined);
  console.log(
    `# ${label}: ${partitions.length} partitions; first acknowledged write after ` +
      `${known.length ? `median ${Math.round(median(known))} ms, max ${Math.max(...known)} ms` : 'none'}` +
      (never.length ? `; no acknowledged write on ${never.join(',')}` : ''),
  );
  return times;
}

/** On a failed assertion the node logs are the evidence: print their tails. */
export async function withLogsOnFailure<T>(cluster: LocalCluster, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    for (const name of cluster.procs.keys()) {
      console.log(`# --- last lines of ${name}/node.log ---`);
      for (const line of cluster.logTail(name, 15).split('\n'))
        console.log(`# ${line.length > 400 ? `${line.slice(0, 400)}…` : line}`);
    }
    throw err;
  }
}
