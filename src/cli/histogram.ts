/**
 * A latency histogram in the manner of HdrHistogram: log-linear buckets over microseconds,
 * exact below 256 µs and within 1/128 (< 0.8 %) above, in a fixed 3,456-slot array, so
 * memory stays bounded however many operations a benchmark records.
 */

const SUB_BITS = 7;
const SUB = 1 << SUB_BITS; // 128 sub-buckets per power of two
/** Largest recordable value, in µs (about 71 minutes); larger values are clamped. */
export const MAX_RECORDABLE_US = 2 ** 32 - 1;
const SLOTS = 2 * SUB + (32 - SUB_BITS) * SUB;

function indexOf(us: number): number {
  if (us < 2 * SUB) return us;
  const msb = 31 - Math.clz32(us);
  const shift = msb - SUB_BITS;
  const mantissa = us >>> shift; // in [SUB, 2 * SUB)
  return 2 * SUB + (shift - 1) * SUB + (mantissa - SUB);
}

/** Highest value that falls into slot `index`. */
function highestOf(index: number): number {
  if (index < 2 * SUB) return index;
  const shift = Math.floor((index - 2 * SUB) / SUB) + 1;
  const mantissa = ((index - 2 * SUB) % SUB) + SUB;
  return (mantissa + 1) * 2 ** shift - 1;
}

export class Histogram {
  private readonly counts = new Float64Array(SLOTS);
  private total = 0;
  private maxUs = 0;
  private minUs = Infinity;
  private sumUs = 0;

  /** Records one latency in microseconds (negative as 0, fractions rounded). */
  recordUs(us: number): void {
    const v = Math.min(MAX_RECORDABLE_US, Math.max(0, Math.round(us)));
    const i = indexOf(v);
    this.counts[i] = (this.counts[i] ?? 0) + 1;
    this.total++;
    this.sumUs += v;
    if (v > this.maxUs) this.maxUs = v;
    if (v < this.minUs) this.minUs = v;
  }

  recordMs(ms: number): void {
    this.recordUs(ms * 1000);
  }

  get count(): number {
    return this.total;
  }

  get maxMs(): number {
    return this.maxUs / 1000;
  }

  get meanMs(): number {
    return this.total === 0 ? 0 : this.sumUs / this.total / 1000;
  }

  /** The value below or at which `p` percent of the recorded values fall, in ms (0 when empty). */
  percentileMs(p: number): number {
    if (this.total === 0) return 0;
    const rank = Math.max(1, Math.ceil((Math.min(100, Math.max(0, p)) / 100) * this.total));
    let seen = 0;
    for (let i = 0; i < SLOTS; i++) {
      seen += this.counts[i] ?? 0;
      if (seen >= rank) return Math.min(highestOf(i), this.maxUs) / 1000;
    }
    return this.maxUs / 1000;
  }

  /** Adds every value of `other` to this histogram. */
  add(other: Histogram): void {
    for (let i = 0; i < SLOTS; i++) this.counts[i] = (this.counts[i] ?? 0) + (other.counts[i] ?? 0);
    this.total += other.total;
    this.sumUs += other.sumUs;
    this.maxUs = Math.max(this.maxUs, other.maxUs);
    this.minUs = Math.min(this.minUs, other.minUs);
  }
}
