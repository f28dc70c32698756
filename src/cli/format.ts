/**
 * Human-readable output of the CLI and the shell: values (UTF-8 when valid, else hex),
 * ages and durations, aligned tables, colours (only on a TTY with NO_COLOR unset), and the
 * JSON forms used by `--json`.
 */
import type { ClusterInfo, NodeInfo, ScanResult, StorageDump } from '../client/api.js';
import { quoteArg } from './tokenize.js';

export interface Style {
  readonly enabled: boolean;
  bold(s: string): string;
  dim(s: string): string;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  cyan(s: string): string;
}

const wrap = (open: number, close: number) => (s: string) => `\x1b[${open}m${s}\x1b[${close}m`;
const plain = (s: string): string => s;

export function makeStyle(enabled: boolean): Style {
  if (!enabled) return { enabled, bold: plain, dim: plain, red: plain, green: plain, yellow: plain, cyan: plain };
  return {
    enabled,
    bold: wrap(1, 22),
    dim: wrap(2, 22),
    red: wrap(31, 39),
    green: wrap(32, 39),
    yellow: wrap(33, 39),
    cyan: wrap(36, 39),
  };
}

/** Colours only on a terminal, and never when NO_COLOR is set (https://no-color.org). */
export function colourWanted(isTTY: boolean, env: NodeJS.ProcessEnv = process.env): boolean {
  return isTTY && (env.NO_COLOR === undefined || env.NO_COLOR === '');
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The text of `bytes` when they are valid UTF-8, else undefined. */
export function utf8OrUndefined(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    // Not valid UTF-8: the caller shows hex instead (an expected case, nothing to report).
    return undefined;
  }
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Longest value the shell prints in full, in bytes. */
export const MAX_SHOWN_VALUE_BYTES = 4096;

/**
 * A value as the shell shows it: quoted UTF-8 text (so spaces and empty values are visible,
 * and the output can be typed back), or hex with a note when it is not UTF-8.
 */
export function formatValue(bytes: Uint8Array, maxBytes = MAX_SHOWN_VALUE_BYTES): string {
  const shown = bytes.length > maxBytes ? bytes.subarray(0, maxBytes) : bytes;
  const more =
    bytes.length > maxBytes
      ? ` … (${bytes.length} bytes; showing the first ${maxBytes}; dstore get prints it all)`
      : '';
  const text = utf8OrUndefined(shown) ?? (more ? utf8OrUndefined(trimPartialUtf8(shown)) : undefined);
  if (text !== undefined) return JSON.stringify(text) + more;
  return `0x${toHex(shown)}${more} (not valid UTF-8: shown as hex, ${bytes.length} bytes)`;
}

/** Drops up to 3 bytes of a UTF-8 sequence cut at the end. */
function trimPartialUtf8(bytes: Uint8Array): Uint8Array {
  let end = bytes.length;
  for (let back = 0; back < 3 && end > 0 && ((bytes[end - 1] as number) & 0xc0) === 0x80; back++) end--;
  if (end > 0 && ((bytes[end - 1] as number) & 0xc0) === 0xc0) end--;
  return bytes.subarray(0, end);
}

/** A key as shown in listings: bare when it needs no quoting, else quoted; hex when not UTF-8. */
export function formatKey(bytes: Uint8Array): string {
  const text = utf8OrUndefined(bytes);
  return text === undefined ? `0x${toHex(bytes)} (hex)` : quoteArg(text);
}

/** JSON form of a key or value: the string when valid UTF-8, else `{ hex }`. */
export function bytesToJson(bytes: Uint8Array): string | { hex: string } {
  const text = utf8OrUndefined(bytes);
  return text === undefined ? { hex: toHex(bytes) } : text;
}

/** "0.4s ago", "12s ago", "3m ago", "2h ago". */
export function formatAgo(ms: number): string {
  if (ms < 0) ms = 0;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s ago`;
  if (ms < 120_000) return `${Math.round(ms / 1000)}s ago`;
  if (ms < 2 * 3_600_000) return `${Math.round(ms / 60_000)}m ago`;
  if (ms < 2 * 86_400_000) return `${Math.round(ms / 3_600_000)}h ago`;
  return `${Math.round(ms / 86_400_000)}d ago`;
}

/** "850ms", "42s", "5m 2s", "2h 3m", "1d 2h". */
export function formatDuration(ms: number): string {
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** Visible width of a string (ANSI colour codes do not count). */
function width(s: string): number {
  return [...s.replace(/\x1b\[[0-9;]*m/g, '')].length;
}

/** Left-aligned columns separated by two spaces; `right` lists right-aligned column indexes. */
export function table(rows: readonly (readonly string[])[], right: ReadonlySet<number> = new Set()): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, width(cell))));
  return rows
    .map((row) =>
      row
        .map((cell, i) => {
          const pad = ' '.repeat((widths[i] ?? 0) - width(cell));
          if (right.has(i)) return pad + cell;
          return i === row.length - 1 ? cell : cell + pad;
        })
        .join('  '),
    )
    .join('\n');
}

export function formatNodes(
  info: ClusterInfo,
  style: Style,
  nowMs: number,
  processes?: ReadonlyMap<string, string>,
): string {
  const header = ['NODE', 'ROLE', 'ADDRESS', 'STATE', 'HEARTBEAT', 'HELD', 'LED', 'KEYS', 'BACKEND', 'UPTIME'];
  if (processes) header.push('PROCESS');
  const rows: string[][] = [header.map((h) => style.bold(h))];
  const stateText = (n: NodeInfo): string =>
    (n.state === 'alive' ? style.green(n.state) : n.state === 'dead' ? style.red(n.state) : style.yellow(n.state)) +
    // Issue 15: being drained, or stopping after handing its roles over.
    (n.moving === undefined ? '' : style.yellow(` (${n.moving})`));
  for (const n of info.nodes) {
    const storage = n.role === 'storage';
    const row = [
      n.id,
      n.role,
      n.address,
      stateText(n),
      n.lastHeartbeatMs === undefined ? '-' : formatAgo(nowMs - n.lastHeartbeatMs),
      storage ? String(n.partitionsHeld) : '-',
      storage ? String(n.partitionsLed) : '-',
      storage ? String(n.keys) : '-',
      n.backend ?? '-',
      // A dead node, or one not heard from since the nameserver restarted, has no uptime to show.
      n.state === 'dead' || n.state === 'unknown' ? '-' : formatDuration(n.uptimeMs),
    ];
    if (processes) row.push(processes.get(n.id) ?? '-');
    rows.push(row);
  }
  // Processes the cluster does not list yet (e.g. a storage server that never registered).
  if (processes) {
    for (const [id, state] of processes) {
      if (!info.nodes.some((n) => n.id === id))
        rows.push([
          id,
          id === 'nameserver' ? 'nameserver' : 'storage',
          '-',
          style.yellow('unregistered'),
          '-',
          '-',
          '-',
          '-',
          '-',
          '-',
          state,
        ]);
    }
  }
  // S13: a replica that failed a checksum is named, with its partitions, under the table.
  const corrupt = info.nodes
    .filter((n) => (n.corruptPartitions?.length ?? 0) > 0)
    .map((n) =>
      style.red(
        `${n.id}: partition${n.corruptPartitions!.length === 1 ? '' : 's'} ${n.corruptPartitions!.join(', ')} ` +
          `corrupt (S13), relearning from a healthy replica`,
      ),
    );
  // S16: divergences the background anti-entropy check found, per node that leads the partition.
  const diverged = info.nodes
    .filter((n) => (n.antiEntropy?.divergences ?? 0) > 0)
    .map((n) => {
      const ae = n.antiEntropy!;
      const last = ae.last
        ? `; last: partition ${ae.last.partition} at seq ${ae.last.seq}` +
          `${ae.last.odd.length > 0 ? `, odd ${ae.last.odd.join(', ')}` : ', no majority'}, ${formatAgo(nowMs - ae.last.atMs)}`
        : '';
      return style.red(
        `${n.id}: anti-entropy found replicas differing ${ae.divergences} time(s) in ${ae.checks} checks, ` +
          `${ae.repaired} relearned${last}`,
      );
    });
  const storageCount = info.nodes.filter((n) => n.role === 'storage').length;
  const alive = info.nodes.filter((n) => n.role === 'storage' && n.state === 'alive').length;
  const summary =
    `cluster ${info.clusterId.slice(0, 8)}: ${info.formed ? 'formed' : style.yellow('not formed yet')}, ` +
    `map version ${info.mapVersion}, ` +
    `${info.partitions} partitions, R=${info.replicas}, min write replicas ${info.minWriteReplicas}, ` +
    `${alive}/${storageCount} storage servers alive`;
  const leader = leaderLine(info, nowMs);
  return (
    `${table(rows, new Set([5, 6, 7]))}\n${[...corrupt, ...diverged].map((line) => `${line}\n`).join('')}` +
    `${leader === undefined ? '' : `${style.bold(leader)}\n`}${style.dim(summary)}`
  );
}

/**
 * Which nameserver leads and since when (issue 12): `leader n2 (h2:7000) since <ISO time> (5m ago)`,
 * elected through etcd; a nameserver alone (no etcd) leads since it started. Undefined when the
 * answer names neither (a nameserver of an older version with no nameserver row).
 */
export function leaderLine(info: ClusterInfo, nowMs: number): string | undefined {
  const since = (ms: number): string => `since ${new Date(ms).toISOString()} (${formatAgo(nowMs - ms)})`;
  if (info.leader !== undefined) {
    const { nodeId, address, sinceMs } = info.leader;
    const answered =
      info.nameserverId !== undefined && info.nameserverId !== nodeId ? `; answered by ${info.nameserverId}` : '';
    return `leader ${nodeId} (${address}) ${since(sinceMs)}, elected through etcd${answered}`;
  }
  const ns = info.nodes.find((n) => n.role === 'nameserver');
  if (ns === undefined) return undefined;
  return `leader ${ns.id} (${ns.address}) ${since(nowMs - ns.uptimeMs)}, a single nameserver (no etcd)`;
}

export function formatDump(dumps: readonly StorageDump[], style: Style, listAll: boolean): string {
  if (dumps.length === 0) return 'no storage servers';
  const lines: string[] = [];
  for (const d of dumps) {
    const head = `${style.bold(d.nodeId)} (${d.address})`;
    if (d.error !== undefined) {
      lines.push(`${head}: ${style.red(`listing failed: ${d.error}`)}`);
      continue;
    }
    lines.push(`${head}: ${d.keyCount} ${d.keyCount === 1 ? 'key' : 'keys'}`);
    for (const k of d.keys) lines.push(`  ${formatKey(k)}`);
    if (d.truncated) {
      const left = d.keyCount - d.keys.length;
      lines.push(
        style.dim(`  … ${left > 0 ? `${left} more` : 'more'}${listAll ? '' : ' (dump --all lists every key)'}`),
      );
    }
  }
  return lines.join('\n');
}

export function dumpToJson(dumps: readonly StorageDump[]): unknown {
  return dumps.map((d) => ({
    nodeId: d.nodeId,
    address: d.address,
    keyCount: d.keyCount,
    truncated: d.truncated,
    keys: d.keys.map(bytesToJson),
    ...(d.error === undefined ? {} : { error: d.error }),
  }));
}

/**
 * Issue 14: a scan's entries, one a line (`key`, or `key = value (version n)` with values), then,
 * when more remain, where to resume (`resume`: how the caller says it, given the cursor).
 */
export function formatScan(result: ScanResult, style: Style, resume: (next: Uint8Array) => string): string {
  const lines = result.entries.map((e) =>
    e.value === undefined
      ? formatKey(e.key)
      : `${formatKey(e.key)} = ${formatValue(e.value)} ${style.dim(`(version ${e.version})`)}`,
  );
  const n = result.entries.length;
  const count = `(${n} ${n === 1 ? 'key' : 'keys'}`;
  if (result.next === undefined) lines.push(style.dim(`${count}; end of the scan)`));
  else lines.push(style.yellow(`${count}; more remain: ${resume(result.next)})`));
  return lines.join('\n');
}

/** JSON form of a scan (issue 14): `{ entries: [{ key, value?, version? }], next? }`. */
export function scanToJson(result: ScanResult): unknown {
  return {
    entries: result.entries.map((e) =>
      e.value === undefined
        ? { key: bytesToJson(e.key) }
        : { key: bytesToJson(e.key), value: bytesToJson(e.value), version: e.version },
    ),
    ...(result.next === undefined ? {} : { next: bytesToJson(result.next) }),
  };
}
