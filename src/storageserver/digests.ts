/**
 * The digests a storage server computed at digest entries (S16), kept for whoever compares
 * them (`dstore check`, the background anti-entropy task): the last KEPT_PER_PARTITION per
 * partition, each found by its seq. A caller may ask before the digest is ready: `waitFor`
 * resolves when it is, or rejects after a bounded wait.
 */
import { UnavailableError } from '../core/errors.js';
import type { PartitionId } from '../core/types.js';
import type { PartitionDigest } from '../storage/digest.js';

export const KEPT_PER_PARTITION = 8;

export type DigestOutcome =
  | ({ readonly ok: true; readonly seq: number } & PartitionDigest)
  | { readonly ok: false; readonly seq: number; readonly error: string };

export class DigestRecords {
  private readonly byPartition = new Map<PartitionId, DigestOutcome[]>();
  private readonly waiters = new Map<string, Array<(d: DigestOutcome) => void>>();

  /** The replica's epoch when each kept digest was captured, by `<p>/<seq>`. */
  private readonly epochs = new Map<string, number>();

  /** `epoch`: the replica's epoch at the capture (a relearn is refused once it moved, S16). */
  record(p: PartitionId, outcome: DigestOutcome, epoch?: number): void {
    if (epoch !== undefined) this.epochs.set(`${p}:${outcome.seq}`, epoch);
    const list = this.byPartition.get(p) ?? [];
    const kept = list.filter((d) => d.seq !== outcome.seq);
    kept.push(outcome);
    kept.sort((a, b) => a.seq - b.seq);
    this.byPartition.set(p, kept.slice(-KEPT_PER_PARTITION));
    for (const d of kept.slice(0, -KEPT_PER_PARTITION)) this.epochs.delete(`${p}:${d.seq}`);
    const key = `${p}:${outcome.seq}`;
    for (const w of this.waiters.get(key) ?? []) w(outcome);
    this.waiters.delete(key);
  }

  /** The replica's epoch when the digest of `p` at `seq` was captured. */
  epochAt(p: PartitionId, seq: number): number | undefined {
    return this.epochs.get(`${p}:${seq}`);
  }

  get(p: PartitionId, seq: number): DigestOutcome | undefined {
    return this.byPartition.get(p)?.find((d) => d.seq === seq);
  }

  /** The digest of `p` at `seq`, once computed; UnavailableError after `timeoutMs`. */
  waitFor(p: PartitionId, seq: number, timeoutMs: number): Promise<DigestOutcome> {
    const have = this.get(p, seq);
    if (have !== undefined) return Promise.resolve(have);
    const key = `${p}:${seq}`;
    return new Promise((resolve, reject) => {
      const done = (d: DigestOutcome) => {
        clearTimeout(timer);
        resolve(d);
      };
      const timer = setTimeout(() => {
        const list = this.waiters.get(key)?.filter((w) => w !== done) ?? [];
        if (list.length > 0) this.waiters.set(key, list);
        else this.waiters.delete(key);
        reject(
          new UnavailableError(
            `no digest of partition ${p} at seq ${seq} here after ${timeoutMs} ms (not applied yet, or not a member)`,
          ),
        );
      }, timeoutMs);
      timer.unref();
      const list = this.waiters.get(key) ?? [];
      list.push(done);
      this.waiters.set(key, list);
    });
  }

  /** Forget a partition (dropped, relearned): its digests describe a state that is gone. */
  forget(p: PartitionId): void {
    for (const d of this.byPartition.get(p) ?? []) this.epochs.delete(`${p}:${d.seq}`);
    this.byPartition.delete(p);
  }
}
