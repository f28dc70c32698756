/**
 * Digests of a partition's applied state (DESIGN §9, S16; issue 13): what replicas, `dstore
 * check`, the background anti-entropy task, backups and restores compare.
 *
 * - Every stored entry (key, value, version) hashes to 128 bits (SHA-256, truncated); the
 *   partition's digest combines the hashes by lane-wise addition modulo 2^32 (four lanes).
 *   The combination is order-independent, and an entry can be added or taken out in O(1), so
 *   two replicas agree exactly when they hold the same entries, whatever order they were
 *   written or scanned in.
 * - The dedup table (S10) is part of the state, so it is part of the digest: each record
 *   hashes on its own and is added in.
 * - Each key falls in one of DIGEST_BUCKETS buckets (crc32 of the key), and each bucket has
 *   its own digest: two replicas that differ compare buckets first, then list the entries of
 *   the buckets that differ (`detail`), to name the keys without shipping the partition.
 * - The *content* digest covers keys and values only, not versions or the dedup table: what a
 *   restore into another cluster (where every write gets a new version) must reproduce. It
 *   adds up across partitions (`addDigests`), so a backup of 16 partitions can be checked
 *   against a cluster of 8.
 *
 * A digest is computed from what a replica *stores* (a snapshot, read back and checksummed by
 * the backend), not kept up to date by the write path: a digest maintained as writes apply
 * says what the replica meant to store, and would miss a flipped byte on the disk or a value
 * written into the backend behind dstore's back, which are what it is for.
 */
import { createHash, hash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { DedupRecord, Snapshot } from './backend.js';
import { isReserved } from '../core/txn-keys.js';

import { DIGEST_BUCKETS, MAX_DETAIL_ENTRIES } from '../core/limits.js';

export { DIGEST_BUCKETS, MAX_DETAIL_ENTRIES };

const LANES = 4;

/** One entry listed by `detail`: enough to tell which replica holds what for a key. */
export interface DigestDetailEntry {
  readonly key: Uint8Array;
  readonly version: number;
  /** The entry's hash (hex): equal on two replicas iff key, value and version are. */
  readonly hash: string;
}

/** What a replica reports for a partition at one seq. Hex strings, so it travels as JSON too. */
export interface PartitionDigest {
  /** Entries and dedup records together: what replicas must agree on. */
  readonly digest: string;
  /**
   * Keys and values only (no versions, no dedup table) of the keys without an expiry (§16):
   * what a restore must reproduce (a key with a TTL may be gone by then).
   */
  readonly content: string;
  readonly keys: number;
  /** Of `keys`, those `content` leaves out (§16): with a TTL, or dstore's reserved transaction keys. */
  readonly transient?: number;
  /** Digest of each bucket's entries, DIGEST_BUCKETS of them. */
  readonly buckets: readonly string[];
  /** Digest of the dedup table. */
  readonly dedup: string;
  /** The entries of the buckets asked for, by bucket, in key order as scanned. */
  readonly detail?: ReadonlyArray<{ readonly bucket: number; readonly entries: readonly DigestDetailEntry[] }>;
  /** Some entries of the buckets asked for were not listed (MAX_DETAIL_ENTRIES). */
  readonly detailTruncated?: boolean;
}

export const ZERO_DIGEST = '0'.repeat(LANES * 8);

/** The bucket a key falls in. */
export function bucketOf(key: Uint8Array): number {
  return crc32(key) % DIGEST_BUCKETS;
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

function u64(n: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64BE(BigInt(n), 0);
  return b;
}

/** 128 bits of SHA-256 over the parts, domain-separated by `kind`. */
function hash128(kind: string, parts: readonly Uint8Array[]): Buffer {
  const h = createHash('sha256');
  h.update(kind);
  for (const p of parts) {
    h.update(u32(p.length));
    h.update(p);
  }
  return h.digest().subarray(0, LANES * 4);
}

/**
 * The hashes of one stored entry: `content` = SHA-256('c' · len(key) · key · value), and
 * `entry` = SHA-256('e' · content · version [· expiresAt]), both cut to 128 bits (the expiry,
 * §16, only when the value has one, so entries without one hash as they always did). Two one-shot hashes and
 * two buffers per entry: a digest reads every entry of a partition (issue 13's cost goal).
 */
function entryHashes(
  key: Uint8Array,
  value: Uint8Array,
  version: number,
  expiresAt: number | undefined,
): { entry: Buffer; content: Buffer } {
  const c = Buffer.allocUnsafe(5 + key.length + value.length);
  c[0] = 0x63;
  c.writeUInt32BE(key.length, 1);
  c.set(key, 5);
  c.set(value, 5 + key.length);
  const content = hash('sha256', c, 'buffer');
  const e = Buffer.allocUnsafe(1 + 32 + 8 + (expiresAt === undefined ? 0 : 8));
  e[0] = 0x65;
  content.copy(e, 1);
  e.writeUInt32BE(Math.floor(version / 0x1_0000_0000), 33);
  e.writeUInt32BE(version >>> 0, 37);
  if (expiresAt !== undefined) {
    e.writeUInt32BE(Math.floor(expiresAt / 0x1_0000_0000), 41);
    e.writeUInt32BE(expiresAt >>> 0, 45);
  }
  return { entry: hash('sha256', e, 'buffer').subarray(0, LANES * 4), content: content.subarray(0, LANES * 4) };
}

function dedupHash(r: DedupRecord): Buffer {
  const existed = r.existed === undefined ? 0 : r.existed ? 1 : 2;
  return hash128('u', [Buffer.from(r.clientId, 'utf8'), u64(r.requestSeq), u64(r.seq), Uint8Array.of(existed)]);
}

/** A running sum of 128-bit hashes (order-independent). */
class Sum {
  private readonly lanes = new Uint32Array(LANES);

  add(h: Uint8Array): void {
    for (let i = 0; i < LANES; i++) {
      const at = i * 4;
      const v = ((h[at]! << 24) | (h[at + 1]! << 16) | (h[at + 2]! << 8) | h[at + 3]!) >>> 0;
      this.lanes[i] = (this.lanes[i]! + v) >>> 0;
    }
  }

  hex(): string {
    let s = '';
    for (const v of this.lanes) s += v.toString(16).padStart(8, '0');
    return s;
  }
}

function parseDigest(hex: string): Uint8Array {
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new RangeError(`not a digest: ${JSON.stringify(hex)}`);
  return Buffer.from(hex, 'hex');
}

/** The combination of several digests (e.g. the content digests of every partition of a cluster). */
export function addDigests(digests: Iterable<string>): string {
  const sum = new Sum();
  for (const d of digests) sum.add(parseDigest(d));
  return sum.hex();
}

/**
 * Builds a partition's digest from its entries and dedup records, fed in any order. `detail`:
 * the buckets whose entries to list.
 */
export class DigestBuilder {
  private readonly all = new Sum();
  private readonly contentSum = new Sum();
  private readonly dedupSum = new Sum();
  private readonly bucketSums = Array.from({ length: DIGEST_BUCKETS }, () => new Sum());
  private readonly listed = new Map<number, DigestDetailEntry[]>();
  private keys = 0;
  private transient = 0;
  private listedCount = 0;
  private truncated = false;

  constructor(detail: ReadonlySet<number> = new Set()) {
    for (const b of detail) if (Number.isInteger(b) && b >= 0 && b < DIGEST_BUCKETS) this.listed.set(b, []);
  }

  addEntry(key: Uint8Array, value: Uint8Array, version: number, expiresAt?: number): void {
    const { entry: h, content } = entryHashes(key, value, version, expiresAt);
    const bucket = bucketOf(key);
    this.all.add(h);
    this.bucketSums[bucket]!.add(h);
    // §16: a key with a TTL may be gone by a restore, and dstore's transaction keys are not data.
    if (expiresAt === undefined && !isReserved(key)) this.contentSum.add(content);
    else this.transient += 1;
    this.keys += 1;
    const list = this.listed.get(bucket);
    if (list === undefined) return;
    if (this.listedCount >= MAX_DETAIL_ENTRIES) {
      this.truncated = true;
      return;
    }
    list.push({ key: Uint8Array.from(key), version, hash: h.toString('hex') });
    this.listedCount += 1;
  }

  addDedup(record: DedupRecord): void {
    const h = dedupHash(record);
    this.all.add(h);
    this.dedupSum.add(h);
  }

  finish(): PartitionDigest {
    const detail = [...this.listed].sort((a, b) => a[0] - b[0]).map(([bucket, entries]) => ({ bucket, entries }));
    return {
      digest: this.all.hex(),
      content: this.contentSum.hex(),
      keys: this.keys,
      ...(this.transient > 0 ? { transient: this.transient } : {}),
      buckets: this.bucketSums.map((s) => s.hex()),
      dedup: this.dedupSum.hex(),
      ...(detail.length > 0 ? { detail } : {}),
      ...(this.truncated ? { detailTruncated: true } : {}),
    };
  }
}

/**
 * The digest of a snapshot (its data and dedup table at `snapshot.applied`), read in pages of
 * `pageItems`, yielding to the event loop between pages so a large partition does not stall
 * the process. Does not close the snapshot.
 */
export async function digestSnapshot(
  snapshot: Snapshot,
  options: { detail?: ReadonlySet<number>; pageItems?: number } = {},
): Promise<PartitionDigest> {
  const b = new DigestBuilder(options.detail);
  for (const r of snapshot.dedup) b.addDedup(r);
  for await (const page of snapshot.items(options.pageItems ?? 1000)) {
    for (const item of page) b.addEntry(item.key, item.value, item.version, item.expiresAt);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return b.finish();
}
