/**
 * The result of `bench:compare` as data and as one table: a row per system × op ×
 * concurrency with ops/s, p50, p99 and server CPU µs per operation, and for each dstore row
 * its ops/s as a ratio of Redis+WAIT's and etcd's in the same cell (and its p50 as a ratio of
 * etcd's at one caller).
 */
import { table } from '../cli/format.js';
import type { OpKind } from './closed-loop.js';

export const REDIS_SYSTEM = 'redis+wait';
export const ETCD_SYSTEM = 'etcd';

export interface CompareRow {
  readonly system: string;
  readonly op: OpKind;
  readonly concurrency: number;
  readonly ops: number;
  readonly elapsedS: number;
  readonly opsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Server CPU (utime + stime of its server processes) per operation; null without /proc. */
  readonly cpuUsPerOp: number | null;
  readonly errors: number;
  readonly errorSample?: string;
  /** dstore rows: ops/s ÷ Redis+WAIT's ops/s in the same cell (when Redis ran). */
  readonly opsVsRedis?: number;
  /** dstore rows: ops/s ÷ etcd's ops/s in the same cell (when etcd ran). */
  readonly opsVsEtcd?: number;
  /** dstore rows at one caller: p50 ÷ etcd's p50 (lower is better). */
  readonly p50VsEtcd?: number;
}

export interface CompareReport {
  readonly config: {
    readonly durationS: number;
    readonly keys: number;
    readonly valueSize: number;
    readonly concurrency: readonly number[];
    readonly ops: readonly OpKind[];
  };
  /** os.loadavg() at the start and the end (1, 5, 15 min): the machine is shared. */
  readonly loadAverage: { readonly start: readonly number[]; readonly end: readonly number[] };
  /** Each system that ran, with the pids of its server processes (whose CPU is counted). */
  readonly systems: readonly { readonly name: string; readonly description: string; readonly pids: number[] }[];
  readonly skipped: readonly { readonly system: string; readonly reason: string }[];
  readonly rows: readonly CompareRow[];
}

export const isDstore = (system: string): boolean => system === 'dstore' || system.startsWith('dstore ');

/** Adds the ratios to every dstore row whose peer ran the same cell. */
export function withRatios(rows: readonly CompareRow[]): CompareRow[] {
  const find = (system: string, r: CompareRow): CompareRow | undefined =>
    rows.find((p) => p.system === system && p.op === r.op && p.concurrency === r.concurrency && p.ops > 0);
  return rows.map((r) => {
    if (!isDstore(r.system)) return r;
    const redis = find(REDIS_SYSTEM, r);
    const etcd = find(ETCD_SYSTEM, r);
    return {
      ...r,
      ...(redis ? { opsVsRedis: r.opsPerSec / redis.opsPerSec } : {}),
      ...(etcd ? { opsVsEtcd: r.opsPerSec / etcd.opsPerSec } : {}),
      ...(etcd && r.concurrency === 1 && etcd.p50Ms > 0 ? { p50VsEtcd: r.p50Ms / etcd.p50Ms } : {}),
    };
  });
}

const int = (n: number): string => Math.round(n).toLocaleString('en-US');
const ms = (n: number): string => n.toFixed(n < 10 ? 2 : 1);
const ratio = (n: number | undefined): string => (n === undefined ? '' : `${n.toFixed(2)}×`);
const loads = (l: readonly number[]): string => l.map((n) => n.toFixed(2)).join(' ');

export function formatReport(r: CompareReport): string {
  const c = r.config;
  const rows = [
    [
      'system',
      'op',
      'C',
      'ops/s',
      'p50 ms',
      'p99 ms',
      'CPU µs/op',
      'errors',
      'ops/s ÷redis',
      'ops/s ÷etcd',
      'p50 ÷etcd',
    ],
  ];
  for (const row of r.rows) {
    rows.push([
      row.system,
      row.op,
      String(row.concurrency),
      int(row.opsPerSec),
      ms(row.p50Ms),
      ms(row.p99Ms),
      row.cpuUsPerOp === null ? 'n/a' : int(row.cpuUsPerOp),
      int(row.errors),
      ratio(row.opsVsRedis),
      ratio(row.opsVsEtcd),
      ratio(row.p50VsEtcd),
    ]);
  }
  const lines = [
    `bench:compare: ${c.durationS} s per cell, closed loop, C = ${c.concurrency.join(', ')}, ` +
      `${c.ops.map((op) => `${op}s`).join(' and ')}, ${c.valueSize}-byte values, ` +
      `${int(c.keys)} keys (uniform, each written once before)`,
    `load average at start ${loads(r.loadAverage.start)}, at end ${loads(r.loadAverage.end)} (1, 5, 15 min)`,
    '',
    table(rows, new Set([2, 3, 4, 5, 6, 7, 8, 9, 10])),
    '',
    ...r.systems.map((s) => `  ${s.description}`),
    '  CPU µs/op: utime+stime of the system’s server processes (all threads, /proc/PID/stat) over the cell ÷ ops',
    '  ratios: dstore ops/s ÷ the peer’s ops/s in the same cell (higher is better); ' +
      'p50 ÷etcd at C=1 (lower is better)',
    ...r.skipped.map((s) => `  skipped ${s.system}: ${s.reason}`),
  ];
  for (const row of r.rows) {
    if (row.errorSample !== undefined) {
      lines.push(`  ${row.system} ${row.op} C=${row.concurrency}: ${int(row.errors)} errors, e.g. ${row.errorSample}`);
    }
  }
  return lines.join('\n');
}
