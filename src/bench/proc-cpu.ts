/**
 * CPU time of server processes from /proc (Linux): utime + stime of `/proc/<pid>/stat`, the
 * process line, which sums every thread of the process (a storage server's main thread and
 * lmdb's write thread, etcd's goroutines, Redis's I/O threads). Sampled right before and
 * after a benchmark cell; the difference divided by the cell's operations is the server CPU
 * per operation. The unit is the kernel's clock tick (`getconf CLK_TCK`, 100 on Linux).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let clockTicksPerSec: number | undefined;

/** The kernel's clock ticks per second (USER_HZ), 100 when `getconf` is not available. */
export function clockTicks(): number {
  if (clockTicksPerSec === undefined) {
    try {
      const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
      clockTicksPerSec = Number.isInteger(n) && n > 0 ? n : 100;
    } catch {
      clockTicksPerSec = 100; // no getconf: Linux's USER_HZ is 100 on every common platform
    }
  }
  return clockTicksPerSec;
}

/**
 * utime + stime of a /proc/<pid>/stat line, in clock ticks. The command name (field 2) is in
 * parentheses and may hold spaces or parentheses, so the fields are counted after the last ')'.
 */
export function parseStatCpuTicks(stat: string): number {
  const close = stat.lastIndexOf(')');
  if (close < 0) throw new Error(`not a /proc/<pid>/stat line: ${JSON.stringify(stat.slice(0, 80))}`);
  const fields = stat
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error(`no utime/stime in /proc/<pid>/stat line: ${JSON.stringify(stat.slice(0, 80))}`);
  }
  return utime + stime;
}

/** CPU time used so far by process `pid` (all its threads), in µs. Throws when it is gone. */
export function processCpuUs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return (parseStatCpuTicks(stat) * 1_000_000) / clockTicks();
}

/** Summed CPU time of `pids`, in µs; undefined when /proc cannot be read (not Linux, a pid gone). */
export function sampleCpuUs(pids: readonly number[]): number | undefined {
  try {
    return pids.reduce((sum, pid) => sum + processCpuUs(pid), 0);
  } catch {
    return undefined; // no /proc here, or a server exited: no CPU figure for this cell
  }
}
