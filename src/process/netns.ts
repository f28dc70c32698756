/**
 * Linux network namespaces through iproute2 (`ip`), for the chaos runner's partitions and
 * the multi-host test: whether they can be made here, and removing them with whatever still
 * runs in them. Namespaces are named `<prefix>-<pid>-…` after the process that made them, so
 * those of a process that is gone (SIGKILLed) can be found and removed.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/** Bound on one `ip` command. */
const IP_TIMEOUT_MS = 10_000;

/** Runs `ip args…` and returns its stdout; throws with its stderr. */
export function ip(args: readonly string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: IP_TIMEOUT_MS });
}

/** The first line of a failed command's stderr (or the error's message). */
export function stderrOf(err: unknown): string {
  const e = err as { stderr?: string | Buffer; message?: string };
  return (e.stderr?.toString().trim() || e.message || String(err)).split('\n')[0]!;
}

/** Why network namespaces cannot be made here (`what` needs them), or undefined when they can. */
export function netnsUnavailableReason(what: string): string | undefined {
  if (process.platform !== 'linux') return `${what} need Linux network namespaces`;
  if (process.getuid?.() !== 0) return `${what} need root (network namespaces); run as root to include them`;
  try {
    ip(['-V']);
  } catch {
    return `${what} need the \`ip\` command (iproute2)`;
  }
  const probe = `dsprobe-${process.pid}-${randomBytes(3).toString('hex')}`;
  try {
    ip(['netns', 'add', probe]);
    ip(['netns', 'del', probe]);
  } catch (err) {
    return `cannot create network namespaces here: ${stderrOf(err)}`;
  }
  return undefined;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Kills whatever still runs in namespace `name`, then deletes it (and its interfaces). */
export function deleteNamespace(name: string): void {
  let pids: string[] = [];
  try {
    pids = ip(['netns', 'pids', name])
      .split('\n')
      .filter((l) => /^\d+$/.test(l));
  } catch (err) {
    // A half-created namespace has no processes to list; deleting it is what matters.
    if (!/No such file|Invalid/.test(stderrOf(err)))
      process.stderr.write(`cannot list the processes of network namespace ${name}: ${stderrOf(err)}\n`);
  }
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err; // ESRCH: exited meanwhile
    }
  }
  try {
    ip(['netns', 'del', name]);
  } catch (err) {
    if (!/No such file/.test(stderrOf(err))) throw err;
  }
}

/** Deletes every namespace in `names`, each even when an earlier one fails; then reports the failures. */
export function deleteNamespaces(names: readonly string[]): void {
  const failures: string[] = [];
  for (const name of names) {
    try {
      deleteNamespace(name);
    } catch (err) {
      failures.push(`${name}: ${stderrOf(err)}`);
    }
  }
  if (failures.length > 0) throw new Error(`could not delete network namespaces: ${failures.join('; ')}`);
}

/** Deletes the namespaces `<prefix>-<pid>-…` whose process is gone; returns how many. */
export function removeStaleNamespaces(prefix: string): number {
  let removed = 0;
  for (const line of ip(['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = new RegExp(`^${prefix}-(\\d+)-`).exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    deleteNamespace(name);
    removed++;
  }
  return removed;
}
