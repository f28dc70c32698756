/**
 * `dstore backup DIR` (issue 13, docs/backup.md): one point-in-time snapshot per partition, read
 * from the partition's primary through the snapshot stream learners use (S11), so writes go on
 * while it is taken; each partition at its own seq. Each snapshot goes to `DIR/partition-<n>.dsb`
 * (src/backup/format.ts) with its digests computed as the items stream; `DIR/manifest.json` is
 * written last and durably, so a directory with a manifest holds a complete backup.
 */
import { readdir, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DstoreError, InvalidArgumentError, UnavailableError } from '../core/errors.js';
import { seq as toSeq } from '../core/types.js';
import { writeFileDurably } from '../process/files.js';
import type { MapReply, SnapshotReadReply } from '../rpc/messages.js';
import { addDigests, DigestBuilder } from '../storage/digest.js';
import { BackupDirNotEmptyError } from './errors.js';
import { DEDUP_PER_FRAME, headerRecord, PartitionFileWriter, partitionFileName } from './format.js';
import { MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION, type Manifest, type ManifestPartition } from './manifest.js';

/** What a backup needs of a cluster (the Client's admin calls). */
export interface BackupSource {
  clusterMap(): Promise<MapReply>;
  snapshotPage(address: string, p: number, epoch: number, session?: string): Promise<SnapshotReadReply>;
}

export interface BackupProgress {
  readonly partition: number;
  readonly keys: number;
  readonly bytes: number;
  readonly done: boolean;
}

export interface BackupOptions {
  /** Only this partition (default: every one). */
  readonly partition?: number;
  /** Partitions read at once (default 4). */
  readonly concurrency?: number;
  /** Attempts per partition when its primary changes or fails mid-snapshot (default 8). */
  readonly attempts?: number;
  readonly onProgress?: (p: BackupProgress) => void;
}

export interface BackupSummary {
  readonly manifest: Manifest;
  readonly seconds: number;
}

/** Bound on the pages of one partition's snapshot (each page holds at least one item). */
const MAX_PAGES = 100_000_000;
const RETRY_BACKOFF_MS = 200;

/** Refuses a DIR that holds anything or is a file; true when it exists (an empty directory). */
export async function checkBackupDir(dir: string): Promise<boolean> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    if (code === 'ENOTDIR') throw new InvalidArgumentError(`backup directory ${dir} is a file, not a directory`);
    throw err;
  }
  if (entries.length > 0) throw new BackupDirNotEmptyError(dir, entries.sort());
  return true;
}

/** Refuses a DIR that holds anything; creates it when missing. */
async function prepareDir(dir: string): Promise<void> {
  if (!(await checkBackupDir(dir))) await mkdir(dir, { recursive: true });
}

/** Runs `fn` on every item with at most `limit` running at once; the first failure is thrown. */
async function forEachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(limit, items.length) }, worker));
  const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) throw rejected.reason;
}

/** Whether a failed snapshot of a partition is worth starting over (new primary, expired session, …). */
function worthRetrying(err: unknown): boolean {
  return err instanceof DstoreError && (err.retryable || err instanceof InvalidArgumentError);
}

/** One partition's snapshot into its file; the file is removed when this fails. */
async function backupPartition(
  source: BackupSource,
  dir: string,
  p: number,
  firstMap: MapReply,
  o: Required<Pick<BackupOptions, 'attempts'>> & BackupOptions,
): Promise<ManifestPartition> {
  let map = firstMap;
  let lastError: unknown;
  for (let attempt = 1; attempt <= o.attempts; attempt++) {
    if (attempt > 1) {
      await new Promise((r) => setTimeout(r, RETRY_BACKOFF_MS * (attempt - 1))); // backoff, not synchronisation
      map = await source.clusterMap();
    }
    const config = map.configs.find((c) => c.partition === p);
    const address = config === undefined ? undefined : map.addresses[config.primary];
    if (config === undefined || address === undefined) {
      lastError = new UnavailableError(`partition ${p} has no primary in the cluster map`);
      continue;
    }
    const file = partitionFileName(p);
    const writer = await PartitionFileWriter.create(join(dir, file));
    try {
      const builder = new DigestBuilder();
      let page = await source.snapshotPage(address, p, config.epoch);
      const applied = page.applied;
      const dedupCount = page.dedup.length; // the dedup table comes with the first page only
      await writer.write(headerRecord(p, applied, map.clusterId, new Date()));
      for (let i = 0; i < page.dedup.length; i += DEDUP_PER_FRAME) {
        const records = page.dedup.slice(i, i + DEDUP_PER_FRAME).map((r) => ({ ...r, seq: toSeq(r.seq) }));
        for (const r of records) builder.addDedup(r);
        await writer.write({ t: 'dedup', records });
      }
      let keys = 0;
      let bytes = 0;
      for (let n = 0; n < MAX_PAGES; n++) {
        if (page.items.length > 0) {
          for (const i of page.items) {
            builder.addEntry(i.key, i.value, i.version, i.expiresAt);
            bytes += i.key.length + i.value.length;
          }
          keys += page.items.length;
          await writer.write({ t: 'items', items: page.items });
        }
        o.onProgress?.({ partition: p, keys, bytes, done: false });
        if (page.done) break;
        const session = page.session;
        page = await source.snapshotPage(address, p, config.epoch, session);
      }
      if (!page.done) throw new Error(`the snapshot of partition ${p} did not end within ${MAX_PAGES} pages`);
      const digest = builder.finish();
      await writer.write({ t: 'trailer', items: keys, dedup: dedupCount, frames: writer.frames });
      const written = await writer.finish();
      o.onProgress?.({ partition: p, keys, bytes, done: true });
      return {
        partition: p,
        file,
        bytes: written.bytes,
        sha256: written.sha256,
        seq: applied.seq,
        epoch: applied.epoch,
        keys: digest.keys,
        ...(digest.transient === undefined ? {} : { transient: digest.transient }),
        digest: digest.digest,
        content: digest.content,
      };
    } catch (err) {
      await writer.abort();
      if (!worthRetrying(err)) throw err;
      lastError = err;
    }
  }
  const why = lastError instanceof Error ? lastError.message : String(lastError);
  throw new UnavailableError(`could not take a snapshot of partition ${p} in ${o.attempts} attempts: ${why}`, {
    cause: lastError,
  });
}

/** Backs the cluster up into `dir` (new or empty); resolves to the manifest written. */
export async function runBackup(
  source: BackupSource,
  dir: string,
  options: BackupOptions = {},
): Promise<BackupSummary> {
  const started = Date.now();
  const createdAt = new Date(started);
  const map = await source.clusterMap();
  if (options.partition !== undefined && options.partition >= map.partitions)
    throw new InvalidArgumentError(
      `--partition ${options.partition}: the cluster has partitions 0..${map.partitions - 1}`,
    );
  await prepareDir(dir);
  const partitions =
    options.partition === undefined ? Array.from({ length: map.partitions }, (_, i) => i) : [options.partition];
  const entries: ManifestPartition[] = [];
  const o = { ...options, attempts: options.attempts ?? 8 };
  try {
    await forEachLimited(partitions, options.concurrency ?? 4, async (p) => {
      entries.push(await backupPartition(source, dir, p, map, o));
    });
  } catch (err) {
    // No manifest: what was written is not a backup. Remove it so DIR can be used again.
    await Promise.all(partitions.map((p) => rm(join(dir, partitionFileName(p)), { force: true })));
    throw err;
  }
  entries.sort((a, b) => a.partition - b.partition);
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    clusterId: map.clusterId,
    partitions: map.partitions,
    createdAt: createdAt.toISOString(),
    finishedAt: new Date().toISOString(),
    keys: entries.reduce((n, e) => n + e.keys, 0),
    bytes: entries.reduce((n, e) => n + e.bytes, 0),
    content: addDigests(entries.map((e) => e.content)),
    entries,
  };
  writeFileDurably(join(dir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  return { manifest, seconds: (Date.now() - started) / 1000 };
}
