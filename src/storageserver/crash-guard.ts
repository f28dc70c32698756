/**
 * What a storage server process does with a promise rejection nobody handled (issue 9).
 *
 * Node's default is to exit with code 1 and a stack on stderr, which on a full disk nobody
 * may see. A storage library that rejects an internal promise of its own on a failed write
 * (lmdb did, for every commit that failed with ENOSPC, EROFS or EIO) then kills a server that
 * should only have gone unhealthy. The decision, made deliberately here:
 * - a rejection raised inside the storage engine's own code (its stack is in lmdb or in
 *   the Redis client, ioredis, and its helper packages) is a storage failure: logged as such, the server goes unhealthy
 *   and reopens its backend with backoff, exactly as for a failed batch (the failed batch
 *   itself is reported to its caller too; a second report of one failure does nothing);
 * - anything else is a bug in dstore: logged at fatal level with its stack, and reported to
 *   `onFatal`, which exits 70 (as for a broken invariant, STYLE §3), never silently.
 */
import type { Logger } from '../process/log.js';

/**
 * Packages whose own rejections are storage failures, by the path of their code: lmdb (and
 * its native helpers, @lmdb), and the Redis client the redis backend uses, ioredis, with the
 * packages it runs its replies and errors through (redis-parser, redis-errors,
 * standard-as-callback, cluster-key-slot, @ioredis/commands).
 */
const STORAGE_ENGINE_PACKAGES = [
  'lmdb',
  '@lmdb',
  'ioredis',
  '@ioredis',
  'redis-parser',
  'redis-errors',
  'standard-as-callback',
  'cluster-key-slot',
];
/** `.../node_modules/<package>/...`, either slash; a scope (`@lmdb`) matches its packages. */
const STORAGE_ENGINE_PATHS = STORAGE_ENGINE_PACKAGES.map(
  (name) => new RegExp(`[\\\\/]node_modules[\\\\/]${name}[\\\\/]`),
);

/** Whether `reason` was raised by the storage engine's own code (see the file comment). */
export function isStorageEngineRejection(reason: unknown): reason is Error {
  if (!(reason instanceof Error)) return false;
  const stack = reason.stack ?? '';
  // The first frame names where it was thrown: a library's, or ours.
  const firstFrame = stack.split('\n').find((line) => /^\s+at /.test(line)) ?? '';
  return STORAGE_ENGINE_PATHS.some((re) => re.test(firstFrame));
}

/**
 * Installs the policy for this process; returns its removal (for close). `onStorageFailure`
 * makes the server unhealthy (it ignores a failure it already handles); `onFatal` ends the
 * process on any other rejection (the entry point passes exitOnFatal, src/process/fatal.ts).
 */
export function guardRejections(
  log: Logger,
  onStorageFailure: (err: Error) => void,
  onFatal: (err: Error) => void,
): () => void {
  const listener = (reason: unknown): void => {
    if (isStorageEngineRejection(reason)) {
      log.error(
        { err: reason.message, stack: reason.stack },
        'unhandled rejection inside the storage engine: treated as a storage failure',
      );
      onStorageFailure(reason);
      return;
    }
    const err = reason instanceof Error ? reason : new Error(String(reason));
    log.fatal({ err: err.message, stack: err.stack }, 'unhandled promise rejection (a bug); exiting 70');
    onFatal(err);
  };
  process.on('unhandledRejection', listener);
  return () => {
    process.off('unhandledRejection', listener);
  };
}
