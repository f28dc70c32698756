/**
 * `dstore backup DIR` and `dstore restore DIR` (issue 13; src/backup, docs/backup.md): connect,
 * run, show progress on stderr when it is a terminal, print a summary (or JSON), and end with the
 * exit code of the outcome (src/backup/help.ts).
 */
import { DstoreError } from '../core/errors.js';
import type { BackupProgress } from '../backup/backup.js';
import {
  BackupCorruptError,
  BackupDirNotEmptyError,
  ClusterNotEmptyError,
  RestoreLoadError,
  RestoreMismatchError,
} from '../backup/errors.js';
import type { RestoreProgress } from '../backup/restore.js';
import { EXIT_BACKUP_UNUSABLE, EXIT_PARTIAL_RESTORE, EXIT_TARGET_NOT_EMPTY } from '../backup/help.js';
import { CliExit, type ClientCliOptions, withAdmin } from './commands.js';

const MiB = 1024 * 1024;
const formatBytes = (n: number): string =>
  n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;

const out = (text: string): void => {
  process.stdout.write(`${text}\n`);
};

/** A progress line on stderr, rewritten in place at most every 200 ms; only when stderr is a terminal. */
function progressLine(): { show: (text: string, force?: boolean) => void; clear: () => void } {
  const tty = Boolean(process.stderr.isTTY);
  let lastMs = 0;
  let shown = false;
  return {
    show: (text, force = false) => {
      if (!tty) return;
      const now = Date.now();
      if (!force && now - lastMs < 200) return;
      lastMs = now;
      shown = true;
      process.stderr.write(`\r\x1b[K${text}`);
    },
    clear: () => {
      if (shown) process.stderr.write('\r\x1b[K');
    },
  };
}

/** Ends the command with `exitCode` after one error line naming what went wrong. */
function fail(err: Error, exitCode: number): never {
  const code = err instanceof DstoreError ? ` (${err.code})` : '';
  process.stderr.write(`error: ${err.message}${code}\n`);
  throw new CliExit(exitCode);
}

export async function backupCommand(
  o: ClientCliOptions & { json?: boolean; partition?: number },
  dir: string,
): Promise<void> {
  const { checkBackupDir, runBackup } = await import('../backup/backup.js');
  const progress = progressLine();
  const partitionsDone = new Set<number>();
  const keysByPartition = new Map<number, number>();
  const onProgress = (p: BackupProgress): void => {
    keysByPartition.set(p.partition, p.keys);
    if (p.done) partitionsDone.add(p.partition);
    let keys = 0;
    for (const n of keysByPartition.values()) keys += n;
    progress.show(`backup: ${partitionsDone.size} partitions done, ${keys} keys`, p.done);
  };
  let summary: Awaited<ReturnType<typeof runBackup>>;
  try {
    await checkBackupDir(dir); // before connecting: a directory in use fails on its own
    summary = await withAdmin(o, (client) =>
      runBackup(client, dir, { onProgress, ...(o.partition === undefined ? {} : { partition: o.partition }) }),
    );
  } catch (err) {
    progress.clear();
    if (err instanceof BackupDirNotEmptyError) fail(err, 2);
    throw err;
  }
  progress.clear();
  const m = summary.manifest;
  if (o.json) {
    out(
      JSON.stringify(
        {
          dir,
          clusterId: m.clusterId,
          partitions: m.entries.length,
          keys: m.keys,
          bytes: m.bytes,
          seconds: summary.seconds,
          content: m.content,
          entries: m.entries.map((e) => ({ partition: e.partition, seq: e.seq, keys: e.keys, bytes: e.bytes })),
        },
        null,
        2,
      ),
    );
    return;
  }
  out(
    `backup of cluster ${m.clusterId.slice(0, 8)} in ${dir}: ${m.entries.length} partitions, ${m.keys} keys, ` +
      `${formatBytes(m.bytes)} in ${summary.seconds.toFixed(1)} s (content digest ${m.content})`,
  );
}

export async function restoreCommand(o: ClientCliOptions & { json?: boolean }, dir: string): Promise<void> {
  const { runRestore, verifyBackup } = await import('../backup/restore.js');
  const progress = progressLine();
  const onProgress = (p: RestoreProgress): void =>
    progress.show(`restore: ${p.phase} ${p.keys}/${p.totalKeys} keys`, p.phase === 'check');
  let summary: Awaited<ReturnType<typeof runRestore>>;
  try {
    // The backup is checked before connecting, so a bad one fails without a cluster too.
    const verified = await verifyBackup(dir, onProgress);
    summary = await withAdmin(o, (client) => runRestore(client, dir, { onProgress, verified }));
  } catch (err) {
    progress.clear();
    if (err instanceof BackupCorruptError) fail(err, EXIT_BACKUP_UNUSABLE);
    if (err instanceof ClusterNotEmptyError) fail(err, EXIT_TARGET_NOT_EMPTY);
    if (err instanceof RestoreLoadError || err instanceof RestoreMismatchError) fail(err, EXIT_PARTIAL_RESTORE);
    throw err;
  }
  progress.clear();
  if (o.json) {
    out(
      JSON.stringify(
        {
          dir,
          keys: summary.keys,
          partitions: summary.partitions,
          content: summary.content,
          verified: true,
          seconds: summary.seconds,
        },
        null,
        2,
      ),
    );
    return;
  }
  out(
    `restored ${dir} (cluster ${summary.manifest.clusterId.slice(0, 8)}): ${summary.keys} keys into ` +
      `${summary.partitions} partitions in ${summary.seconds.toFixed(1)} s; verified: the cluster's content digest ` +
      `${summary.content} is the backup's`,
  );
}
