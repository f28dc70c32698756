/**
 * A backup's `manifest.json` (issue 13, docs/backup.md): written last, durably (temp file, fsync,
 * rename, directory fsync), so a directory with a manifest holds a complete backup. It lists every
 * partition's file with its size, sha256, snapshot position and digests, and the sum of the
 * partitions' content digests: what a restored cluster must show, whatever its partition count.
 */
import { addDigests } from '../storage/digest.js';

export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_FORMAT = 'dstore-backup';
export const MANIFEST_VERSION = 1;

export interface ManifestPartition {
  readonly partition: number;
  readonly file: string;
  readonly bytes: number;
  readonly sha256: string;
  /** The partition's applied position the snapshot was taken at. */
  readonly seq: number;
  readonly epoch: number;
  readonly keys: number;
  /** Of `keys`, those the content digest leaves out (§16: with a TTL, or transaction keys). Absent: none. */
  readonly transient?: number;
  /** Digest of entries and dedup table (src/storage/digest.ts): a replica's digest at `seq`. */
  readonly digest: string;
  /** Digest of keys and values only, of the keys without an expiry: what a restore reproduces. */
  readonly content: string;
}

export interface Manifest {
  readonly format: typeof MANIFEST_FORMAT;
  readonly version: number;
  readonly clusterId: string;
  /** Partitions of the backed-up cluster. */
  readonly partitions: number;
  readonly createdAt: string;
  readonly finishedAt: string;
  readonly keys: number;
  readonly bytes: number;
  /** addDigests of every entry's `content`. */
  readonly content: string;
  readonly entries: readonly ManifestPartition[];
}

const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isDigest = (v: unknown): v is string => typeof v === 'string' && /^[0-9a-f]{32}$/.test(v);
const isSha256 = (v: unknown): v is string => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

/** Why `value` is not a manifest entry, or undefined when it is one. */
function entryProblem(e: unknown, i: number): string | undefined {
  if (!isObject(e)) return `entries[${i}] is not an object`;
  const fields: Array<[string, (v: unknown) => boolean, string]> = [
    ['partition', isUint, 'a partition number'],
    ['file', (v) => typeof v === 'string' && /^partition-\d+\.dsb$/.test(v), 'a file name partition-<n>.dsb'],
    ['bytes', isUint, 'a byte count'],
    ['sha256', isSha256, 'a sha256 in hex'],
    ['seq', isUint, 'a seq'],
    ['epoch', isUint, 'an epoch'],
    ['keys', isUint, 'a key count'],
    ['digest', isDigest, 'a digest (32 hex digits)'],
    ['content', isDigest, 'a digest (32 hex digits)'],
  ];
  for (const [name, check, what] of fields)
    if (!check(e[name])) return `entries[${i}].${name} is ${JSON.stringify(e[name])}, not ${what}`;
  if (e.transient !== undefined && (!isUint(e.transient) || e.transient > (e.keys as number)))
    return `entries[${i}].transient is ${JSON.stringify(e.transient)}, not a count within keys`;
  return undefined;
}

/**
 * The manifest in `text`, or why it is not a valid one (a sentence for BackupCorruptError):
 * fields of the right types, entries for distinct partitions below `partitions`, each file named
 * after its partition, and the totals equal to the sums of the entries.
 */
export function parseManifest(text: string): Manifest | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    return `${MANIFEST_FILE} is not valid JSON (${(err as Error).message})`;
  }
  if (!isObject(v)) return `${MANIFEST_FILE} is not a JSON object`;
  if (v.format !== MANIFEST_FORMAT)
    return `${MANIFEST_FILE} has format ${JSON.stringify(v.format)}, not "dstore-backup"`;
  if (v.version !== MANIFEST_VERSION)
    return `${MANIFEST_FILE} has version ${JSON.stringify(v.version)}; this build reads version ${MANIFEST_VERSION}`;
  if (typeof v.clusterId !== 'string') return `${MANIFEST_FILE} has no clusterId`;
  if (!isUint(v.partitions) || v.partitions < 1) return `${MANIFEST_FILE}: partitions is not a positive integer`;
  if (typeof v.createdAt !== 'string' || typeof v.finishedAt !== 'string')
    return `${MANIFEST_FILE}: createdAt or finishedAt is missing`;
  if (!isUint(v.keys) || !isUint(v.bytes)) return `${MANIFEST_FILE}: keys or bytes is not a count`;
  if (!isDigest(v.content)) return `${MANIFEST_FILE}: content is not a digest`;
  if (!Array.isArray(v.entries) || v.entries.length === 0) return `${MANIFEST_FILE} lists no partitions`;
  const seen = new Set<number>();
  for (const [i, e] of v.entries.entries()) {
    const problem = entryProblem(e, i);
    if (problem !== undefined) return `${MANIFEST_FILE}: ${problem}`;
    const entry = e as ManifestPartition;
    if (entry.partition >= v.partitions)
      return `${MANIFEST_FILE}: entries[${i}] is partition ${entry.partition} of a cluster of ${v.partitions}`;
    if (seen.has(entry.partition)) return `${MANIFEST_FILE} lists partition ${entry.partition} twice`;
    if (entry.file !== `partition-${entry.partition}.dsb`)
      return `${MANIFEST_FILE}: partition ${entry.partition}'s file is ${entry.file}`;
    seen.add(entry.partition);
  }
  const entries = v.entries as ManifestPartition[];
  const keys = entries.reduce((n, e) => n + e.keys, 0);
  if (keys !== v.keys) return `${MANIFEST_FILE} says ${v.keys} keys, its partitions add up to ${keys}`;
  const bytes = entries.reduce((n, e) => n + e.bytes, 0);
  if (bytes !== v.bytes) return `${MANIFEST_FILE} says ${v.bytes} bytes, its files add up to ${bytes}`;
  const content = addDigests(entries.map((e) => e.content));
  if (content !== v.content)
    return `${MANIFEST_FILE} says content digest ${v.content}, its partitions add up to ${content}`;
  return v as unknown as Manifest;
}
