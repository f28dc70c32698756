/**
 * Stopping with the parent when npm started us (issue 9). `npm start` and `npx dstore …`
 * run the command in `sh -c`; on SIGTERM npm forwards the signal to that shell only, and
 * dash (Debian's /bin/sh) dies of it without passing it on, which left `dstore up` and its
 * whole cluster running as orphans. So a process npm started watches its parent and stops
 * as if it had received SIGTERM when the parent goes away. Outside npm nothing is watched:
 * a cluster started with `setsid dstore up --no-shell &` may outlive its shell on purpose.
 *
 * Node's `process.ppid` is fixed at start, so the current parent is read from
 * /proc/self/stat on Linux (a reparented process shows its new parent at once); elsewhere
 * the original parent is probed with signal 0 (it counts as gone once it was reaped).
 */
import { readFileSync } from 'node:fs';

/** How often the parent is checked, in ms. */
export const PARENT_CHECK_INTERVAL_MS = 250;

/** True when npm (npm start, npm run, npx / npm exec) started this process or an ancestor. */
export function startedByNpm(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.npm_lifecycle_event !== undefined || env.npm_command !== undefined;
}

/** The current parent pid (Linux), or undefined when it cannot be read. */
function currentParentPid(): number | undefined {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(fields[1]);
    return Number.isSafeInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined; // no procfs: the caller falls back to probing the original parent
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/**
 * Calls `onGone(originalParentPid)` once, within PARENT_CHECK_INTERVAL_MS of the parent
 * going away. Returns a function that stops watching. The timer never keeps the process alive.
 */
export function watchParent(onGone: (parentPid: number) => void, intervalMs = PARENT_CHECK_INTERVAL_MS): () => void {
  const original = process.ppid;
  const useProc = process.platform === 'linux' && currentParentPid() === original;
  const timer = setInterval(() => {
    const gone = useProc ? currentParentPid() !== original : !isRunning(original);
    if (!gone) return;
    clearInterval(timer);
    onGone(original);
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
