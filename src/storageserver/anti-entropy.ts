/**
 * Background anti-entropy (DESIGN §9, S16; issue 13): every `intervalMs` a storage server
 * checks each partition it serves as primary (src/check/replicas.ts: a digest entry, every
 * member's digest at it, the odd replicas named and, with `repair`, told to relearn). One
 * partition at a time, spread over the interval, so the cost stays a trickle.
 *
 * What it found is logged (a divergence as an error, with the keys that differ), counted,
 * and reported in `stats` and heartbeats (so `nodes` shows it).
 */
import {
  checkPartition,
  type CheckTransport,
  type PartitionCheck,
  type PartitionConfigView,
} from '../check/replicas.js';
import type { Logger } from '../process/log.js';

export interface AntiEntropyStats {
  /** Partition checks run. */
  readonly checks: number;
  /** Checks that found replicas differing. */
  readonly divergences: number;
  /** Replicas told to relearn. */
  readonly repaired: number;
  /** Checks that could not compare every member (a member down, a timeout). */
  readonly incomplete: number;
  /** The last divergence found, for `nodes` and `stats`. */
  readonly last?: {
    readonly partition: number;
    readonly seq: number;
    readonly odd: readonly string[];
    readonly atMs: number;
  };
}

export interface AntiEntropyDeps {
  readonly intervalMs: number;
  readonly repair: boolean;
  /** The partitions this server serves as primary now, with their configurations. */
  readonly led: () => PartitionConfigView[];
  readonly transport: CheckTransport;
  readonly log: Logger;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

export class AntiEntropy {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private stopped = false;
  private queue: number[] = [];
  private counts = { checks: 0, divergences: 0, repaired: 0, incomplete: 0 };
  private last: AntiEntropyStats['last'];

  constructor(private readonly deps: AntiEntropyDeps) {}

  get stats(): AntiEntropyStats {
    return { ...this.counts, ...(this.last ? { last: this.last } : {}) };
  }

  start(): void {
    if (this.deps.intervalMs <= 0) return;
    this.schedule(this.deps.intervalMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.step(), ms);
    this.timer.unref();
  }

  /** Checks the next partition of this round; a round is the partitions led when it began. */
  private async step(): Promise<void> {
    if (this.stopped || this.running) return;
    if (this.queue.length === 0) this.queue = this.deps.led().map((c) => c.partition);
    const p = this.queue.shift();
    const config = p === undefined ? undefined : this.deps.led().find((c) => c.partition === p);
    this.running = true;
    try {
      if (config) this.report(await checkPartition(this.deps.transport, config, { repair: this.deps.repair }));
    } catch (err) {
      this.deps.log.warn({ err, partition: p }, 'anti-entropy check failed');
    } finally {
      this.running = false;
    }
    // The rest of the round spread over the interval; the next round one interval later.
    const left = this.queue.length;
    this.schedule(left > 0 ? Math.max(10, Math.floor(this.deps.intervalMs / (left + 1))) : this.deps.intervalMs);
  }

  private report(r: PartitionCheck): void {
    this.counts.checks += 1;
    this.counts.repaired += r.repaired.length;
    const fields = { partition: r.partition, epoch: r.epoch, seq: r.seq };
    if (r.agree === false) {
      this.counts.divergences += 1;
      this.last = { partition: r.partition, seq: r.seq ?? 0, odd: r.odd, atMs: Date.now() };
      this.deps.log.error(
        {
          ...fields,
          members: r.members,
          odd: r.odd,
          repaired: r.repaired,
          keys: r.differing.map((k) => ({ key: hex(k.key), replicas: k.replicas })),
          moreKeys: r.differingTruncated,
          ...(r.error ? { problems: r.error } : {}),
        },
        r.odd.length === 0
          ? 'anti-entropy: replicas differ and no majority agrees; nothing repaired (S16)'
          : `anti-entropy: replicas differ; ${r.repaired.length > 0 ? 'the odd ones relearn' : 'not repaired'} (S16)`,
      );
    } else if (r.agree === undefined) {
      this.counts.incomplete += 1;
      this.deps.log.warn({ ...fields, problems: r.error }, 'anti-entropy: could not compare every replica');
    } else this.deps.log.debug({ ...fields, digest: r.members[0]?.digest }, 'anti-entropy: replicas agree');
  }
}
