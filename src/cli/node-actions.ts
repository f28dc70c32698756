/**
 * The node actions of `dstore up` — kill, stop, pause, resume, restart, spawn — as one
 * function that both the shell's commands (up.ts) and the dashboard's buttons (through the
 * nameserver's IPC request, src/nameserver/up-control.ts) call.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { assertNever } from '../core/types.js';
import type { NodeAction, NodeActionResult } from '../nameserver/up-control.js';
import { ClusterStartError, LocalCluster, type ManagedProcess } from './cluster.js';
import type { HaCluster } from './ha-cluster.js';
import { quoteArg } from './tokenize.js';

/** Bound on a node's exit after SIGTERM before SIGKILL, in ms. */
export const STOP_TIMEOUT_MS = 5000;

/** What `up` runs, either way: the classic roles (LocalCluster) or identical nodes with etcd (HaCluster). */
export type UpCluster = LocalCluster | HaCluster;

const done = (message: string): NodeActionResult => ({ outcome: 'done', message });
const warning = (message: string): NodeActionResult => ({ outcome: 'warning', message });
const refused = (message: string): NodeActionResult => ({ outcome: 'refused', message });

/** A start failure with the end of the node's log, as the shell shows it. */
function withLogTail(e: unknown): unknown {
  return e instanceof ClusterStartError && e.logTail
    ? new Error(`${e.message}\nlast lines of ${e.logPath}:\n${e.logTail}`)
    : e;
}

/**
 * Runs `action` on node `name` (ignored for `spawn`). A refusal is a result; a start that
 * fails (restart, spawn) throws, with the end of the node's log.
 */
export async function runNodeAction(
  cluster: UpCluster,
  dataDir: string,
  action: NodeAction,
  name: string | undefined,
): Promise<NodeActionResult> {
  if (action === 'spawn') {
    if (!(cluster instanceof LocalCluster))
      return refused('spawn adds a storage server of the classic roles; up --ha has identical nodes only');
    const p = await cluster
      .spawnStorage((id) => existsSync(join(dataDir, id)))
      .catch((e: unknown) => {
        throw withLogTail(e);
      });
    return done(`spawned ${p.name} (pid ${p.pid}, port ${p.port}, data dir ${p.dataDir})`);
  }
  const p = cluster.process(name ?? '');
  if (!p)
    return refused(`no node ${quoteArg(name ?? '')}; nodes are ${cluster.processes.map((q) => q.name).join(', ')}`);
  const notRunning = (q: ManagedProcess): NodeActionResult =>
    refused(`${q.name} is not running (${q.describe()}); restart ${q.name} starts it`);
  switch (action) {
    case 'kill': {
      if (!p.running) return notRunning(p);
      p.signal('SIGKILL');
      const gone = await p.waitExit(STOP_TIMEOUT_MS);
      return gone
        ? done(`${p.name} killed (SIGKILL)`)
        : { outcome: 'failed', message: `${p.name} (pid ${p.pid}) did not exit after SIGKILL` };
    }
    case 'stop': {
      if (!p.running) return notRunning(p);
      const how = await p.stop(STOP_TIMEOUT_MS);
      return how === 'killed'
        ? warning(`${p.name} did not stop within ${STOP_TIMEOUT_MS / 1000} s; killed (SIGKILL)`)
        : done(`${p.name} stopped (SIGTERM)`);
    }
    case 'pause':
      if (!p.running) return notRunning(p);
      if (p.state === 'paused') return refused(`${p.name} is already paused; resume ${p.name} continues it`);
      p.signal('SIGSTOP');
      return done(`${p.name} paused (SIGSTOP); resume ${p.name} continues it`);
    case 'resume':
      if (p.state !== 'paused') return refused(`${p.name} is not paused (${p.describe()})`);
      p.signal('SIGCONT');
      return done(`${p.name} resumed (SIGCONT)`);
    case 'restart': {
      if (p.running) await p.stop(STOP_TIMEOUT_MS);
      if (p.role === 'storage' && cluster instanceof LocalCluster) await cluster.options.beforeStorageStart?.(p.name); // its Redis, if it died
      const port = await p.start(cluster.options.startTimeoutMs).catch((e: unknown) => {
        throw withLogTail(e);
      });
      return done(`${p.name} started (pid ${p.pid}, port ${port})`);
    }
    default:
      return assertNever(action);
  }
}
