/**
 * `dstore restore DIR` (issue 13, docs/backup.md), in three steps:
 *
 * 1. Verify the whole backup before anything is written: the manifest, every file's size and
 *    sha256, every frame's CRC, header and trailer, and the digests recomputed from the items
 *    against the manifest's. A problem names the file and the partition (BackupCorruptError).
 * 2. Refuse a target cluster that holds any key (ClusterNotEmptyError): every partition's digest
 *    at a fresh digest entry (S16), asked of its primary, must count 0 keys.
 * 3. Load every item with ordinary puts (bounded concurrency), then compare the sum of the target's
 *    content digests (keys and values; versions are new in the new cluster) with the backup's.
 *
 * The dedup table and versions are not restored: writes in the new cluster get new versions.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DstoreError, UnavailableError } from '../core/errors.js';
import { isReserved } from '../core/txn-keys.js';
import { readFileIfExists } from '../process/files.js';
import type { DigestAtReply, MapReply } from '../rpc/messages.js';
import { addDigests } from '../storage/digest.js';
import { BackupCorruptError, ClusterNotEmptyError, RestoreLoadError, RestoreMismatchError } from './errors.js';
import { type BackupItem, FrameError, readPartitionFile } from './format.js';
import { MANIFEST_FILE, type Manifest, type ManifestPartition, parseManifest } from './manifest.js';

/** What a restore needs of the target cluster (the Client's calls). */
export interface RestoreTarget {
  clusterMap(): Promise<MapReply>;
  proposeDigest(p: number, buckets?: readonly number[]): Promise<number>;
  digestAt(address: string, p: number, seq: number, waitMs?: number): Promise<DigestAtReply>;
  put(key: Uint8Array, value: Uint8Array, options?: { ttlMs?: number }): Promise<number>;
}

export interface RestoreProgress {
  readonly phase: 'verify' | 'load' | 'check';
  readonly keys: number;
  readonly totalKeys: number;
}

export interface RestoreOptions {
  /** Puts in flight at once (default 32). */
  readonly concurrency?: number;
  /** Attempts per put, each within the client's own retries and deadline (default 3). */
  readonly putAttempts?: number;
  readonly onProgress?: (p: RestoreProgress) => void;
  /** The manifest verifyBackup returned for `dir` (step 1 is then not done again). */
  readonly verified?: Manifest;
}

export interface RestoreSummary {
  readonly manifest: Manifest;
  readonly keys: number;
  /** The target cluster's content digest after the load (equal to the manifest's). */
  readonly content: string;
  readonly partitions: number;
  readonly seconds: number;
}

/** Reads and checks the manifest of `dir`. */
export function readManifest(dir: string): Manifest {
  let text: string | undefined;
  try {
    text = readFileIfExists(join(dir, MANIFEST_FILE));
  } catch (err) {
    throw new BackupCorruptError(dir, `${MANIFEST_FILE} cannot be read (${(err as Error).message})`);
  }
  if (text === undefined)
    throw new BackupCorruptError(dir, `there is no ${MANIFEST_FILE} (not a backup, or one that did not finish)`);
  const parsed = parseManifest(text);
  if (typeof parsed === 'string') throw new BackupCorruptError(dir, parsed);
  return parsed;
}

/** Checks one partition's file against its manifest entry; `onItems` gets its items as read. */
async function checkPartitionFile(
  dir: string,
  manifest: Manifest,
  e: ManifestPartition,
  onItems?: (items: readonly BackupItem[]) => Promise<void>,
): Promise<void> {
  const corrupt = (problem: string): BackupCorruptError => new BackupCorruptError(dir, problem, e.file, e.partition);
  const path = join(dir, e.file);
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw corrupt(code === 'ENOENT' ? 'the file is missing' : `it cannot be read (${(err as Error).message})`);
  }
  if (size !== e.bytes) throw corrupt(`it is ${size} bytes, the manifest says ${e.bytes}`);
  let got: Awaited<ReturnType<typeof readPartitionFile>>;
  try {
    got = await readPartitionFile(path, onItems);
  } catch (err) {
    if (err instanceof FrameError) throw corrupt(err.message);
    if (err instanceof DstoreError) throw err; // a failed put while loading: not the file's fault
    throw corrupt(`it cannot be read (${(err as Error).message})`);
  }
  const { header, trailer, digest } = got;
  if (got.sha256 !== e.sha256) throw corrupt(`its sha256 is ${got.sha256}, the manifest says ${e.sha256}`);
  if (header.partition !== e.partition) throw corrupt(`its header says partition ${header.partition}`);
  if (header.seq !== e.seq || header.epoch !== e.epoch)
    throw corrupt(
      `its header says seq ${header.seq} epoch ${header.epoch}, the manifest seq ${e.seq} epoch ${e.epoch}`,
    );
  if (header.clusterId !== manifest.clusterId)
    throw corrupt(`its header names cluster ${header.clusterId}, the manifest ${manifest.clusterId}`);
  if (trailer.items !== e.keys || digest.keys !== e.keys)
    throw corrupt(`it holds ${digest.keys} items, the manifest says ${e.keys}`);
  if (digest.content !== e.content)
    throw corrupt(`its content digest is ${digest.content}, the manifest says ${e.content}`);
  if (digest.digest !== e.digest) throw corrupt(`its digest is ${digest.digest}, the manifest says ${e.digest}`);
}

/** Step 1: the whole backup checked; throws BackupCorruptError naming what is wrong. */
export async function verifyBackup(dir: string, onProgress?: (p: RestoreProgress) => void): Promise<Manifest> {
  const manifest = readManifest(dir);
  let keys = 0;
  for (const e of manifest.entries) {
    await checkPartitionFile(dir, manifest, e);
    keys += e.keys;
    onProgress?.({ phase: 'verify', keys, totalKeys: manifest.keys });
  }
  return manifest;
}

export interface PartitionContent {
  readonly partition: number;
  readonly keys: number;
  readonly content: string;
}

const DIGEST_ATTEMPTS = 5;
const DIGEST_BACKOFF_MS = 200;

/**
 * S16: each partition's digest at a fresh digest entry, from its primary (the map is refreshed
 * and the partition tried again, a bounded number of times, when the primary moved or failed).
 */
export async function clusterContents(target: RestoreTarget): Promise<PartitionContent[]> {
  const first = await target.clusterMap();
  const one = async (p: number): Promise<PartitionContent> => {
    let map = first;
    let lastError = '';
    for (let attempt = 1; attempt <= DIGEST_ATTEMPTS; attempt++) {
      if (attempt > 1) {
        await new Promise((r) => setTimeout(r, DIGEST_BACKOFF_MS * (attempt - 1))); // backoff, not synchronisation
        map = await target.clusterMap();
      }
      try {
        const seq = await target.proposeDigest(p);
        const config = map.configs.find((c) => c.partition === p);
        const address = config === undefined ? undefined : map.addresses[config.primary];
        if (address === undefined) {
          lastError = 'no primary in the cluster map';
          continue;
        }
        const reply = await target.digestAt(address, p, seq);
        // §16: keys with an expiry and transaction keys are not compared (content leaves them out).
        if (reply.ok) return { partition: p, keys: reply.keys - (reply.transient ?? 0), content: reply.content };
        lastError = `${config?.primary} has no digest at seq ${seq}: ${reply.error}`;
      } catch (err) {
        if (!(err instanceof DstoreError) || !err.retryable) throw err;
        lastError = err.message;
      }
    }
    throw new UnavailableError(`no digest of partition ${p} in ${DIGEST_ATTEMPTS} attempts: ${lastError}`);
  };
  const out: PartitionContent[] = [];
  // A few partitions at a time: each digest reads the whole partition on every replica.
  for (let p = 0; p < first.partitions; p += 4) {
    const batch = Array.from({ length: Math.min(4, first.partitions - p) }, (_, i) => one(p + i));
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

/** Puts with at most `limit` in flight; `add` waits for a free slot; the first failure stops it. */
class PutPool {
  private readonly inFlight = new Set<Promise<void>>();
  private failure: { err: unknown } | undefined;
  done = 0;

  constructor(
    private readonly limit: number,
    private readonly put: (item: BackupItem) => Promise<void>,
  ) {}

  async add(item: BackupItem): Promise<void> {
    while (this.inFlight.size >= this.limit) await Promise.race(this.inFlight);
    if (this.failure) throw this.failure.err;
    const p: Promise<void> = this.put(item).then(
      () => {
        this.done += 1;
        this.inFlight.delete(p);
      },
      (err: unknown) => {
        this.failure ??= { err };
        this.inFlight.delete(p);
      },
    );
    this.inFlight.add(p);
  }

  async drain(): Promise<void> {
    await Promise.all(this.inFlight);
    if (this.failure) throw this.failure.err;
  }
}

/**
 * §16: a key with an expiry is restored with the time it has left (the same deadline, by this
 * machine's clock); one past it is not restored: it is gone in the source cluster too.
 */
async function putWithRetries(target: RestoreTarget, item: BackupItem, attempts: number): Promise<void> {
  // §16: dstore's transaction keys (records, intents) are not restored: they name the old cluster's transactions.
  if (isReserved(item.key)) return;
  for (let attempt = 1; ; attempt++) {
    try {
      if (item.expiresAt === undefined) await target.put(item.key, item.value);
      else {
        const ttlMs = item.expiresAt - Date.now();
        if (ttlMs < 1) return;
        await target.put(item.key, item.value, { ttlMs });
      }
      return;
    } catch (err) {
      // Writing the same value again is harmless (OUTCOME_UNKNOWN included): the content is what counts.
      if (attempt >= attempts || !(err instanceof DstoreError) || !err.retryable) throw err;
    }
  }
}

/** Restores the backup in `dir` into the (empty) target cluster; see the file comment. */
export async function runRestore(
  target: RestoreTarget,
  dir: string,
  options: RestoreOptions = {},
): Promise<RestoreSummary> {
  const started = Date.now();
  const manifest = options.verified ?? (await verifyBackup(dir, options.onProgress));
  const before = await clusterContents(target);
  const holding = before.filter((c) => c.keys > 0);
  if (holding.length > 0)
    throw new ClusterNotEmptyError(
      holding.reduce((n, c) => n + c.keys, 0),
      holding.map((c) => c.partition),
    );
  const attempts = options.putAttempts ?? 3;
  const pool = new PutPool(options.concurrency ?? 32, (item) => putWithRetries(target, item, attempts));
  try {
    for (const e of manifest.entries) {
      await checkPartitionFile(dir, manifest, e, async (items) => {
        for (const item of items) await pool.add(item);
        options.onProgress?.({ phase: 'load', keys: pool.done, totalKeys: manifest.keys });
      });
    }
    await pool.drain();
  } catch (err) {
    await pool.drain().catch(() => undefined); // the first failure is the one reported
    throw new RestoreLoadError(pool.done, manifest.keys, { cause: err });
  }
  options.onProgress?.({ phase: 'check', keys: pool.done, totalKeys: manifest.keys });
  const after = await clusterContents(target);
  const actual = { content: addDigests(after.map((c) => c.content)), keys: after.reduce((n, c) => n + c.keys, 0) };
  // §16: keys with an expiry and transaction keys are left out of both sides (content digests never cover them).
  const expected = manifest.keys - manifest.entries.reduce((n, e) => n + (e.transient ?? 0), 0);
  if (actual.content !== manifest.content || actual.keys !== expected)
    throw new RestoreMismatchError({ content: manifest.content, keys: expected }, actual);
  return {
    manifest,
    keys: actual.keys,
    content: actual.content,
    partitions: after.length,
    seconds: (Date.now() - started) / 1000,
  };
}
