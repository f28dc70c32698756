/**
 * Issue 15: how `dstore config get` and the shell's `config` show the live settings.
 */
import type { ConfigReply } from '../rpc/messages.js';

/** One setting's value as `config get` shows it (`sync`: per node, or "batch (every node)"). */
export function liveValue(live: ConfigReply['live'], setting: string): unknown {
  switch (setting) {
    case 'read-mode':
      return live.readMode;
    case 'min-write-replicas':
      return live.minWriteReplicas;
    case 'heartbeat-ms':
      return live.heartbeatMs;
    case 'dead-after-ms':
      return live.deadAfterMs;
    case 'log-level':
      return live.logLevel;
    case 'sync':
      return live.sync;
    default:
      return undefined;
  }
}

/** `config get`'s table: one line per setting (or the one asked for). */
export function formatLive(reply: ConfigReply, setting?: string): string {
  const { live } = reply;
  const names = ['read-mode', 'min-write-replicas', 'heartbeat-ms', 'dead-after-ms', 'log-level', 'sync'];
  const lines: string[] = [];
  for (const name of setting === undefined ? names : [setting]) {
    let v = liveValue(live, name);
    if (name === 'sync') {
      const entries = Object.entries(live.sync);
      v = entries.length === 0 ? "each node's --sync" : entries.map(([n, m]) => `${n}=${m}`).join(' ');
    }
    if (name === 'min-write-replicas') v = `${String(v)} (R=${reply.replicas})`;
    if (name === 'read-mode' && v === 'fast') v = 'fast (reads may be stale)';
    lines.push(`${name.padEnd(20)}${String(v)}`);
  }
  if (setting === undefined) lines.push(`${'epoch'.padEnd(20)}${live.epoch} (map version ${reply.mapVersion})`);
  return lines.join('\n');
}
