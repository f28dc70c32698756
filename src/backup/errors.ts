/**
 * Errors of `dstore backup` and `dstore restore` (issue 13). Each says what is wrong and with
 * which file or partition; the CLI maps each class to its own exit code (src/cli/backup.ts).
 * They are INVALID_ARGUMENT for the library's error table: the backup or the target given
 * cannot be used, and trying again will not change that.
 */
import { InvalidArgumentError } from '../core/errors.js';

/** The backup directory cannot be written: it is not empty (a previous backup is never overwritten). */
export class BackupDirNotEmptyError extends InvalidArgumentError {
  constructor(
    readonly dir: string,
    readonly entries: readonly string[],
  ) {
    const shown = entries.slice(0, 3).join(', ') + (entries.length > 3 ? ', …' : '');
    super(
      `backup directory ${dir} is not empty (${shown}); a backup goes into a new or empty directory ` +
        'and never overwrites another',
    );
  }
}

/**
 * The backup cannot be restored: its manifest is missing or does not parse, or a file is missing,
 * has the wrong size or sha256, a frame fails its CRC, or what it holds disagrees with the manifest.
 * `file` and `partition` name the part at fault when it is one partition's file.
 */
export class BackupCorruptError extends InvalidArgumentError {
  constructor(
    readonly dir: string,
    readonly problem: string,
    readonly file?: string,
    readonly partition?: number,
  ) {
    super(
      file === undefined
        ? `backup ${dir} is not usable: ${problem}`
        : `backup file ${file}${partition === undefined ? '' : ` (partition ${partition})`} is corrupt: ${problem}`,
    );
  }
}

/** `dstore restore` refuses a cluster that holds keys: a restore goes into an empty cluster. */
export class ClusterNotEmptyError extends InvalidArgumentError {
  constructor(
    readonly keys: number,
    readonly partitions: readonly number[],
  ) {
    const shown = partitions.slice(0, 8).join(', ') + (partitions.length > 8 ? ', …' : '');
    super(
      `the target cluster is not empty: it holds ${keys} keys (partitions ${shown}); restore into a new ` +
        'cluster (nothing was written)',
    );
  }
}

/**
 * After loading, the target cluster's content digest (keys and values of every partition) is not
 * the backup's: the cluster holds a partial or different restore.
 */
export class RestoreMismatchError extends Error {
  constructor(
    readonly expected: { readonly content: string; readonly keys: number },
    readonly actual: { readonly content: string; readonly keys: number },
  ) {
    super(
      `the restored cluster does not match the backup: it holds ${actual.keys} keys with content digest ` +
        `${actual.content}, the backup ${expected.keys} keys with content digest ${expected.content}. The ` +
        'cluster holds a partial or different restore: wipe it (or start a new cluster) and run dstore restore again',
    );
    this.name = 'RestoreMismatchError';
  }
}

/** Loading stopped part way (a put failed, or a file changed since it was verified): a partial restore. */
export class RestoreLoadError extends Error {
  constructor(
    readonly loadedKeys: number,
    readonly totalKeys: number,
    options: ErrorOptions & { readonly cause: unknown },
  ) {
    const why = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super(
      `loading stopped after ${loadedKeys} of ${totalKeys} keys: ${why}. The cluster holds a partial restore: ` +
        'wipe it (or start a new cluster) and run dstore restore again',
      options,
    );
    this.name = 'RestoreLoadError';
  }
}
