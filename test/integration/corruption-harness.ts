/**
 * Helpers of the corruption tests (S13, failures-corrupt.test.ts): a history of puts and
 * gets as the linearizability checker (src/check/linearizability.ts) reads it, a load of
 * readers and writers that records into it, and a byte flipper for files on disk.
 */
import type { Db } from '../../src/client/api.js';
import { type CheckResult, type HistoryOp, checkHistory, formatResult } from '../../src/check/linearizability.js';
import { classify } from './failures-harness.js';

export { flipInFile } from '../storage/flip-bytes.js';

/** Every put and get of a test, with invoke and completion times (Date.now()). */
export class OpHistory {
  readonly ops: HistoryOp[] = [];
  /** Every value ever written, by key: a read of anything else is garbage. */
  private readonly written = new Map<string, Set<string>>();
  private n = 0;

  /** A put of a fresh value (or `value`); its outcome is recorded, never thrown. */
  async put(db: Db, client: string, key: string, value = `${client}-${++this.n}`): Promise<boolean> {
    let values = this.written.get(key);
    if (!values) this.written.set(key, (values = new Set()));
    values.add(value);
    const invoke = Date.now();
    try {
      await db.put(key, value);
      this.ops.push({ client, op: 'put', key, value, invoke, complete: Date.now(), status: 'ok' });
      return true;
    } catch (err) {
      const outcome = classify(err);
      this.ops.push({
        client,
        op: 'put',
        key,
        value,
        invoke,
        complete: outcome.kind === 'unknown' ? null : Date.now(),
        status: outcome.kind === 'unknown' ? 'unknown' : 'fail',
      });
      return false;
    }
  }

  /** A get; a failed one is recorded as failed (the checker leaves it out). */
  async get(db: Db, client: string, key: string): Promise<void> {
    const invoke = Date.now();
    try {
      const got = await db.get(key);
      this.ops.push({
        client,
        op: 'get',
        key,
        value: got ? Buffer.from(got.value).toString('utf8') : null,
        invoke,
        complete: Date.now(),
        status: 'ok',
      });
    } catch {
      this.ops.push({ client, op: 'get', key, value: null, invoke, complete: Date.now(), status: 'fail' });
    }
  }

  /** Successful reads that returned a value nobody wrote to that key (a flipped byte served). */
  garbageReads(): HistoryOp[] {
    return this.ops.filter(
      (o) =>
        o.op === 'get' &&
        o.status === 'ok' &&
        o.value !== null &&
        o.value !== undefined &&
        !this.written.get(o.key)?.has(o.value),
    );
  }

  counts(): { puts: number; gets: number; failedGets: number } {
    return {
      puts: this.ops.filter((o) => o.op === 'put').length,
      gets: this.ops.filter((o) => o.op === 'get' && o.status === 'ok').length,
      failedGets: this.ops.filter((o) => o.op === 'get' && o.status !== 'ok').length,
    };
  }

  check(): { result: CheckResult; text: string } {
    const result = checkHistory(this.ops, { timeBudgetMs: 20_000 });
    return { result, text: formatResult(result) };
  }
}

/**
 * Readers that get `readKeys` and writers that put `writeKeys`, in closed loops, until
 * stopped; each on its own client of `dbs` (round robin).
 */
export class ReadWriteLoad {
  private running = true;
  private readonly loops: Promise<void>[] = [];

  constructor(
    history: OpHistory,
    dbs: readonly Db[],
    opts: { readers: number; writers: number; readKeys: readonly string[]; writeKeys: readonly string[] },
  ) {
    for (let i = 0; i < opts.readers; i++) {
      const db = dbs[i % dbs.length]!;
      this.loops.push(this.loop(async (n) => history.get(db, `r${i}`, opts.readKeys[(n + i) % opts.readKeys.length]!)));
    }
    for (let i = 0; i < opts.writers; i++) {
      const db = dbs[(opts.readers + i) % dbs.length]!;
      this.loops.push(
        this.loop(
          async (n) =>
            void (await history.put(db, `w${i}`, opts.writeKeys[(n * opts.writers + i) % opts.writeKeys.length]!)),
        ),
      );
    }
  }

  private async loop(op: (n: number) => Promise<void>): Promise<void> {
    // Bounded by stop(); each op by the client's deadline.
    for (let n = 0; this.running && n < 10_000_000; n++) {
      await op(n);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }
}
