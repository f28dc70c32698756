/**
 * Whether an lmdb data dir has room to write again after a storage failure (issue 9).
 *
 * Reopening lmdb on a full disk succeeds (opening writes nothing), so without this check the
 * server would register again, take a learner's snapshot, fail at its first write and go
 * unhealthy again, over and over. Only the lmdb backend keeps its files in the data dir; the
 * redis backend's disk is Redis' own (Redis refuses writes itself, or exits, when it is full).
 */
import { statfsSync } from 'node:fs';
import { StorageFailureError } from '../core/errors.js';

/** `{ freeBytes }` of an lmdb data dir's filesystem, for a log line; empty when unknown or not lmdb. */
export function freeSpaceOf(backendKind: string, dataDir: string): { freeBytes?: number } {
  if (backendKind !== 'lmdb') return {};
  try {
    const s = statfsSync(dataDir);
    return { freeBytes: s.bavail * s.bsize };
  } catch {
    return {}; // unknown: the log line goes without it
  }
}

/** Throws a StorageFailureError when the data dir of an lmdb backend has less than `minFreeBytes` free. */
export function checkDataDirNotFull(backendKind: string, dataDir: string, minFreeBytes: number): void {
  if (backendKind !== 'lmdb') return;
  let free: number;
  try {
    const s = statfsSync(dataDir);
    free = s.bavail * s.bsize;
  } catch (err) {
    throw new StorageFailureError(`cannot read the free space of ${dataDir}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (free < minFreeBytes)
    throw new StorageFailureError(
      `the data dir ${dataDir} is still full: ${free} bytes free, waiting for ${minFreeBytes}`,
    );
}
