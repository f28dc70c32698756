/**
 * Small real filesystems for disk-full faults (issue 9): a size-limited tmpfs mounted on a
 * directory, filled with a filler file until the kernel answers ENOSPC, and emptied again.
 * Used by the chaos runner's disk-full fault and the disk-full tests. Mounting needs root
 * (CAP_SYS_ADMIN) on Linux; `smallFsUnavailableReason` says why it cannot be done here.
 */
import { execFileSync } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  openSync,
  closeSync,
  rmSync,
  rmdirSync,
  statfsSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Bound on one mount/umount command. */
const MOUNT_TIMEOUT_MS = 10_000;
/** The filler is written in chunks of this size. */
const FILL_CHUNK_BYTES = 64 * 1024;
/** The filler file's name inside the filled filesystem. */
export const FILLER_NAME = 'disk-full-filler';

function run(cmd: string, args: readonly string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: MOUNT_TIMEOUT_MS });
}

function firstLine(err: unknown): string {
  const e = err as { stderr?: string | Buffer; message?: string };
  return (e.stderr?.toString().trim() || e.message || String(err)).split('\n')[0]!;
}

/** Why a small tmpfs cannot be mounted here (`what` needs it), or undefined when it can. */
export function smallFsUnavailableReason(what: string): string | undefined {
  if (process.platform !== 'linux') return `${what} needs Linux (a size-limited tmpfs)`;
  if (process.getuid?.() !== 0) return `${what} needs root to mount a small tmpfs; run as root to include it`;
  const probe = mkdtempSync(join(tmpdir(), 'dstore-fsprobe-'));
  try {
    run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', probe]);
    run('umount', [probe]);
  } catch (err) {
    return `${what}: cannot mount a tmpfs here: ${firstLine(err)}`;
  } finally {
    rmdirSync(probe);
  }
  return undefined;
}

/** A size-limited tmpfs mounted on `dir` (created when missing). */
export class SmallFs {
  private mounted = true;

  private constructor(
    readonly dir: string,
    readonly bytes: number,
  ) {}

  static mount(dir: string, bytes: number): SmallFs {
    if (!Number.isSafeInteger(bytes) || bytes < 64 * 1024)
      throw new RangeError(`a small filesystem of ${bytes} bytes is too small`);
    mkdirSync(dir, { recursive: true });
    run('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir]);
    return new SmallFs(dir, bytes);
  }

  /** Bytes still free for an unprivileged writer. */
  freeBytes(): number {
    const s = statfsSync(this.dir);
    return s.bavail * s.bsize;
  }

  /**
   * Fills every free byte with a filler file (until ENOSPC) and returns its size. What the
   * filesystem's other users then write fails with ENOSPC until `free` removes it.
   */
  fill(): number {
    const fd = openSync(join(this.dir, FILLER_NAME), 'a');
    const chunk = Buffer.alloc(FILL_CHUNK_BYTES, 0x5a);
    let written = 0;
    try {
      // Bounded: each round writes at least one byte of a filesystem of `bytes` bytes, or ends.
      for (let i = 0; i <= this.bytes; i++) {
        let n: number;
        try {
          n = writeSync(fd, chunk, 0, chunk.length);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw err;
        }
        if (n === 0) break;
        written += n;
      }
    } finally {
      closeSync(fd);
    }
    return written;
  }

  /** Removes the filler: the space is free again. */
  free(): void {
    try {
      unlinkSync(join(this.dir, FILLER_NAME));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  /** Unmounts (lazily, so a process still holding a file cannot block it); the files are gone. */
  unmount(): void {
    if (!this.mounted) return;
    this.mounted = false;
    try {
      run('umount', ['-l', this.dir]);
    } catch (err) {
      process.stderr.write(`cannot unmount the small filesystem on ${this.dir}: ${firstLine(err)}\n`);
    }
  }

  [Symbol.dispose](): void {
    this.unmount();
  }
}

/** Removes `dir` after unmounting whatever small filesystem is on it (cleanup after a crash). */
export function removeSmallFsDir(dir: string): void {
  try {
    run('umount', ['-l', dir]);
  } catch {
    // Not mounted (the usual case): nothing to unmount.
  }
  rmSync(dir, { recursive: true, force: true });
}
