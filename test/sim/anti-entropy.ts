/**
 * Anti-entropy in the simulator (issue 13, S16): the check of src/check/replicas.ts, driven
 * over the simulated network. It runs synchronously in the world's event loop, so it cannot
 * await checkPartition's promises; it does the same steps with callbacks and the same decision
 * rule (`oddMembers`, shared with checkPartition):
 *
 * 1. the partition's primary logs a digest entry (`digest` call → host.clientDigest);
 * 2. each member (primary and secondaries; not learners) is asked for its digest there
 *    (`digestAt`, retried while it has not applied the entry yet);
 * 3. the odd members are those outside a strict majority of the members; none without one;
 * 4. with repair, each odd member is told to relearn (`relearn` → host.corruptRead, the S13
 *    path: it steps out, the nameserver re-adds it as a learner, it copies the partition, S11).
 *
 * The `repair-disabled` mutation skips step 4.
 */
import { oddMembers } from '../../src/check/replicas.js';
import type { Config, PartitionId } from '../../src/core/types.js';
import type { PartitionDigest } from '../../src/storage/digest.js';
import type { CallResult, Endpoint, SimEvent, World } from './world.js';

export interface CheckOutcome {
  readonly partition: PartitionId;
  /** true: every member answered and all agree; false: they differ; undefined: not known. */
  readonly agree: boolean | undefined;
  readonly odd: readonly string[];
  readonly repaired: readonly string[];
  readonly error?: string;
}

const CALL_TIMEOUT_MS = 1000;
const DIGEST_AT_TRIES = 20;
const DIGEST_AT_RETRY_MS = 100;

/** The checker: an endpoint of its own (`ae`), as `dstore check` or a primary's background task is. */
export class SimAntiEntropy implements Endpoint {
  readonly id = 'ae';
  up = true;
  paused = false;
  inc = 0;
  held: SimEvent[] = [];
  private readonly busy = new Set<PartitionId>();
  readonly stats = { checks: 0, differ: 0, relearns: 0, failed: 0 };

  constructor(
    private readonly world: World,
    private readonly repair: boolean,
  ) {}

  onCall(_from: string, _body: unknown, _respond: (r: CallResult) => void): void {}
  onMessage(_from: string, _body: unknown): void {}

  get idle(): boolean {
    return this.busy.size === 0;
  }

  /** Checks partition `c.partition` as configured by `c`; `done` gets the outcome (unless one is running). */
  check(c: Config, done: (o: CheckOutcome) => void = () => {}): void {
    const p = c.partition;
    if (this.busy.has(p)) return;
    this.busy.add(p);
    this.stats.checks++;
    const finish = (o: CheckOutcome): void => {
      this.busy.delete(p);
      if (o.agree === false) this.stats.differ++;
      if (o.error !== undefined) this.stats.failed++;
      this.world.trace(
        `ANTI-ENTROPY p${p} e${c.epoch}: ${
          o.agree === true
            ? 'replicas agree'
            : o.agree === false
              ? `replicas DIFFER, odd: ${o.odd.join(',') || 'none (no majority)'}`
              : 'unknown'
        }${o.repaired.length ? `; relearning: ${o.repaired.join(',')}` : ''}${o.error ? ` (${o.error})` : ''}`,
      );
      done(o);
    };
    const base = { partition: p, odd: [], repaired: [] };
    this.call(c.primary, { t: 'digest', p, buckets: [] }, `digest p${p}`, (r) => {
      if (!r.ok) return finish({ ...base, agree: undefined, error: `no digest entry: ${r.error.message}` });
      const seq = (r.value as { version: number }).version;
      const members = [c.primary as string, ...c.secondaries];
      const digests = new Map<string, PartitionDigest | string>();
      for (const m of members) {
        this.digestAt(m, p, seq, DIGEST_AT_TRIES, (d) => {
          digests.set(m, d);
          if (digests.size === members.length) this.decide(c, seq, members, digests, finish);
        });
      }
    });
  }

  private decide(
    c: Config,
    seq: number,
    members: readonly string[],
    digests: ReadonlyMap<string, PartitionDigest | string>,
    finish: (o: CheckOutcome) => void,
  ): void {
    const p = c.partition;
    const answered: Array<{ node: string; digest: string }> = [];
    const failed: string[] = [];
    for (const m of members) {
      const d = digests.get(m)!;
      if (typeof d === 'string') failed.push(`${m} (${d})`);
      else answered.push({ node: m, digest: d.digest });
    }
    const error = failed.length > 0 ? `no digest from ${failed.join(', ')}` : undefined;
    const distinct = new Set(answered.map((a) => a.digest));
    if (distinct.size <= 1)
      return finish({
        partition: p,
        agree: failed.length === 0 ? true : undefined,
        odd: [],
        repaired: [],
        ...(error ? { error } : {}),
      });
    const { odd } = oddMembers(members.length, answered);
    const repaired: string[] = [];
    const outcome = (): CheckOutcome => ({ partition: p, agree: false, odd, repaired, ...(error ? { error } : {}) });
    if (!this.repair || odd.length === 0) return finish(outcome());
    let pending = odd.length;
    for (const node of odd) {
      const digest = answered.find((a) => a.node === node)!.digest;
      this.call(node, { t: 'relearn', p, seq, digest }, `relearn p${p} at ${seq}`, (r) => {
        if (r.ok) {
          repaired.push(node);
          this.stats.relearns++;
        }
        if (--pending === 0) finish(outcome());
      });
    }
  }

  private digestAt(
    node: string,
    p: PartitionId,
    seq: number,
    tries: number,
    cb: (d: PartitionDigest | string) => void,
  ) {
    this.call(node, { t: 'digestAt', p, seq }, `digestAt p${p} ${seq}`, (r) => {
      if (r.ok) return cb(r.value as PartitionDigest);
      if (tries <= 1) return cb(r.error.message);
      this.world.schedule(DIGEST_AT_RETRY_MS, this.id, () => this.digestAt(node, p, seq, tries - 1, cb));
    });
  }

  private call(to: string, body: unknown, what: string, cb: (r: CallResult) => void): void {
    this.world.call(this.id, to, body, CALL_TIMEOUT_MS, () => what, cb);
  }
}
