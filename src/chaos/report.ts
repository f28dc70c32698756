/**
 * What a chaos run reports, computed from its history and its fault log (pure functions):
 * operations by kind and outcome, error codes, unavailability windows, and the text report.
 *
 * An unavailability window is a stretch of at least `minGapMs` of the load phase in which
 * no operation completed successfully although some operation was waiting — over the whole
 * cluster, or on one partition (on the keys that hash to it). A stretch in which no client
 * tried the partition at all (every client was stuck elsewhere) is not counted against it.
 * Each window is listed with the faults active during it.
 */
import { formatResult, type CheckResult } from '../check/linearizability.js';
import { partitionOf } from '../core/partitioning.js';
import { assertNever } from '../core/types.js';
import type { ChaosOp } from './protocol.js';
import { describeFault, type FaultKind } from './schedule.js';

/** A fault as it was applied: times in ms from the start of the load. */
export interface AppliedFault {
  readonly kind: FaultKind;
  readonly target?: string;
  readonly sides?: readonly [readonly string[], readonly string[]];
  readonly startMs: number;
  /** When it was healed; undefined if the run ended first. */
  readonly endMs?: number;
  /** Why it was not applied or not healed cleanly. */
  readonly note?: string;
}

export interface UnexpectedExit {
  readonly node: string;
  readonly atMs: number;
  readonly code: number | null;
  readonly signal: string | null;
  readonly logTail: string;
}

export interface Window {
  /** 'overall' or a partition number. */
  readonly scope: 'overall' | number;
  readonly fromMs: number;
  readonly toMs: number;
  /** Indices into the fault log of the faults active during the window. */
  readonly faults: readonly number[];
}

export type OpCounts = Record<
  'put' | 'get' | 'delete' | 'cas' | 'total',
  Record<'ok' | 'fail' | 'unknown' | 'total', number>
>;

export function countOps(ops: readonly ChaosOp[]): OpCounts {
  const row = () => ({ ok: 0, fail: 0, unknown: 0, total: 0 });
  const c: OpCounts = { put: row(), get: row(), delete: row(), cas: row(), total: row() };
  for (const o of ops) {
    for (const r of [c[o.op], c.total]) {
      r[o.status]++;
      r.total++;
    }
  }
  return c;
}

/** Error codes of failed and unknown operations, most frequent first. */
export function errorCodes(
  ops: readonly ChaosOp[],
): Array<{ status: 'fail' | 'unknown'; code: string; count: number }> {
  const m = new Map<string, number>();
  for (const o of ops)
    if (o.status !== 'ok' && o.error)
      m.set(`${o.status}\u0000${o.error}`, (m.get(`${o.status}\u0000${o.error}`) ?? 0) + 1);
  return [...m]
    .map(([k, count]) => {
      const [status, code] = k.split('\u0000') as ['fail' | 'unknown', string];
      return { status, code, count };
    })
    .sort((a, b) => b.count - a.count);
}

/**
 * Unavailability windows in [fromMs, toMs] (load-relative ms; `opOffsetMs` is subtracted
 * from the history's times to make them load-relative).
 */
export function unavailability(
  ops: readonly ChaosOp[],
  faults: readonly AppliedFault[],
  o: { fromMs: number; toMs: number; opOffsetMs: number; partitions: number; minGapMs: number },
): Window[] {
  const okTimes = new Map<'overall' | number, number[]>();
  const push = (scope: 'overall' | number, t: number) => {
    let l = okTimes.get(scope);
    if (!l) okTimes.set(scope, (l = []));
    l.push(t);
  };
  const partitionsWithKeys = new Set<number>();
  /** Per scope, when each operation was waiting (load-relative): [invoke, complete or give-up]. */
  const waiting = new Map<'overall' | number, Array<[number, number]>>();
  const wait = (scope: 'overall' | number, span: [number, number]) => {
    let l = waiting.get(scope);
    if (!l) waiting.set(scope, (l = []));
    l.push(span);
  };
  for (const op of ops) {
    const p = partitionOf(Buffer.from(op.key, 'utf8'), o.partitions);
    partitionsWithKeys.add(p);
    const span: [number, number] = [op.invoke - o.opOffsetMs, (op.complete ?? op.end ?? Infinity) - o.opOffsetMs];
    wait('overall', span);
    wait(p, span);
    if (op.status !== 'ok' || op.complete == null) continue;
    const t = op.complete - o.opOffsetMs;
    if (t < o.fromMs || t > o.toMs) continue;
    push('overall', t);
    push(p, t);
  }
  const scopes: Array<'overall' | number> = ['overall', ...[...partitionsWithKeys].sort((a, b) => a - b)];
  const out: Window[] = [];
  for (const scope of scopes) {
    const times = [o.fromMs, ...(okTimes.get(scope) ?? []).sort((a, b) => a - b), o.toMs];
    for (let i = 1; i < times.length; i++) {
      const [a, b] = [times[i - 1]!, times[i]!];
      if (b - a < o.minGapMs) continue;
      // The window starts when somebody began waiting on this scope (nobody tried: no window).
      const overlapping = (waiting.get(scope) ?? []).filter(([from, to]) => from < b && to > a);
      if (overlapping.length === 0) continue;
      const start = Math.max(a, Math.min(...overlapping.map(([from]) => from)));
      if (b - start < o.minGapMs) continue;
      const active = faults.flatMap((f, idx) => (f.startMs < b && (f.endMs ?? Infinity) > start ? [idx] : []));
      out.push({ scope, fromMs: start, toMs: b, faults: active });
    }
  }
  return out;
}

export type ChaosVerdict = 'ok' | 'violation' | 'inconclusive' | 'liveness';

/** Exit codes of `dstore chaos` (documented in its --help and docs/consistency.md). */
export const CHAOS_EXIT = { ok: 0, violation: 1, inconclusive: 3, liveness: 4 } as const;

export interface ReportInput {
  readonly header: string;
  readonly networkNote?: string;
  readonly faults: readonly AppliedFault[];
  readonly ops: readonly ChaosOp[];
  readonly windows: readonly Window[];
  readonly settle: { readonly ok: boolean; readonly ms?: number; readonly problem?: string };
  readonly finalReads: { readonly ok: number; readonly total: number };
  readonly unexpectedExits: readonly UnexpectedExit[];
  /** Issue 13: what the background anti-entropy checks found (absent: they were off). */
  readonly antiEntropy?: {
    readonly checks: number;
    readonly divergences: number;
    readonly incomplete: number;
    readonly unread: readonly string[];
  };
  /** Issue 14: the CAS workload's counter lines (counters.ts). */
  readonly counters?: readonly string[];
  readonly check: CheckResult;
  readonly checkMs: number;
  readonly verdict: ChaosVerdict;
  readonly historyPath?: string;
  readonly keptDir?: string;
}

const s1 = (ms: number): string => (ms / 1000).toFixed(1);

export function formatReport(r: ReportInput): string {
  const lines: string[] = [r.header];
  if (r.networkNote) lines.push(r.networkNote);
  lines.push('', `faults (${r.faults.length}):`);
  if (r.faults.length === 0) lines.push('  none');
  for (const f of r.faults) {
    const when =
      f.endMs === undefined
        ? `${s1(f.startMs).padStart(6)} s – (not healed)`
        : `${s1(f.startMs).padStart(6)} s – ${s1(f.endMs).padStart(6)} s`;
    lines.push(`  ${when}  ${describeFault(f)}${f.note ? `  [${f.note}]` : ''}`);
  }

  const c = countOps(r.ops);
  lines.push('', 'operations (load and final reads):', '            ok    fail  unknown    total');
  for (const kind of ['put', 'get', 'delete', 'cas', 'total'] as const) {
    const x = c[kind];
    if (kind === 'cas' && x.total === 0) continue;
    lines.push(
      `  ${kind.padEnd(7)} ${String(x.ok).padStart(6)} ${String(x.fail).padStart(7)} ` +
        `${String(x.unknown).padStart(8)} ${String(x.total).padStart(8)}`,
    );
  }
  const codes = errorCodes(r.ops);
  if (codes.length > 0)
    lines.push(
      `  errors: ${codes
        .slice(0, 8)
        .map((e) => `${e.code} ${e.count} (${e.status})`)
        .join(', ')}${codes.length > 8 ? ', …' : ''}`,
    );

  lines.push('', 'unavailability (1 s or more without a successful operation):');
  const during = (w: Window): string => {
    if (w.faults.length === 0) return 'no fault active';
    const names = w.faults.map((i) => describeFault(r.faults[i]!).split(' (')[0]);
    const listed =
      names.length > 4 ? `${names.slice(0, 3).join('; ')} and ${names.length - 3} later faults` : names.join('; ');
    return `during ${listed}`;
  };
  const overall = r.windows.filter((w) => w.scope === 'overall');
  if (overall.length === 0) lines.push('  overall: none');
  for (const w of overall.slice(0, 40))
    lines.push(
      `  overall ${s1(w.fromMs).padStart(6)} s – ${s1(w.toMs).padStart(6)} s ` +
        `(${s1(w.toMs - w.fromMs)} s), ${during(w)}`,
    );
  if (overall.length > 40) lines.push(`  … ${overall.length - 40} more`);
  const byPartition = new Map<number, Window[]>();
  for (const w of r.windows)
    if (w.scope !== 'overall') byPartition.set(w.scope, [...(byPartition.get(w.scope) ?? []), w]);
  for (const [p, ws] of [...byPartition].sort((a, b) => a[0] - b[0])) {
    const total = ws.reduce((n, w) => n + w.toMs - w.fromMs, 0);
    const longest = ws.reduce((a, b) => (b.toMs - b.fromMs > a.toMs - a.fromMs ? b : a));
    lines.push(
      `  partition ${p}: ${ws.length} window${ws.length === 1 ? '' : 's'}, ${s1(total)} s in all; longest ` +
        `${s1(longest.toMs - longest.fromMs)} s from ${s1(longest.fromMs)} s, ${during(longest)}`,
    );
  }

  lines.push('', 'after healing:');
  lines.push(
    r.settle.ok
      ? `  the cluster settled (every storage server alive, R members per partition, no learner, every primary ` +
          `serving) ${s1(r.settle.ms ?? 0)} s after the load stopped`
      : `  the cluster did NOT settle: ${r.settle.problem}`,
  );
  lines.push(`  final reads: ${r.finalReads.ok} of ${r.finalReads.total} keys read`);
  if (r.unexpectedExits.length === 0) lines.push('  no node exited on its own');
  for (const e of r.unexpectedExits) {
    lines.push(
      `  ${e.node} exited on its own at ${s1(e.atMs)} s ` +
        `(${e.signal ? `signal ${e.signal}` : `exit code ${e.code}`}); last log lines:`,
    );
    for (const l of e.logTail.split('\n').slice(-6)) lines.push(`    ${l}`);
  }

  if (r.antiEntropy) {
    const ae = r.antiEntropy;
    // Counts are per process: a storage server restarted by a fault counts from its restart.
    lines.push(
      `  anti-entropy: ${ae.checks} checks since the last restarts, ${ae.divergences} found replicas differing` +
        `${ae.divergences > 0 ? ' (a BUG: nothing tampered with the data)' : ''}, ${ae.incomplete} incomplete` +
        `${ae.unread.length > 0 ? `; none reported by ${ae.unread.join(', ')} (restarted since, or no check yet)` : ''}`,
    );
  }

  if (r.counters) lines.push(...r.counters);

  lines.push('', `${formatResult(r.check)} — checked in ${s1(r.checkMs)} s`);
  if (r.historyPath) lines.push(`history: ${r.historyPath}`);
  if (r.keptDir) lines.push(`node data and logs kept in ${r.keptDir}`);
  lines.push('', `verdict: ${verdictLine(r.verdict)}`);
  return lines.join('\n');
}

function verdictLine(v: ChaosVerdict): string {
  switch (v) {
    case 'ok':
      return 'OK — the history is linearizable and the cluster recovered';
    case 'violation':
      return (
        'VIOLATION — the history is not linearizable, replicas were found differing, or a counter of the cas ' +
        'workload is wrong (exit code 1)'
      );
    case 'inconclusive':
      return 'INCONCLUSIVE — no violation found, but the checker ran out of budget on some key (exit code 3)';
    case 'liveness':
      return (
        'LIVENESS PROBLEM — the history is linearizable, but the cluster did not recover (did not settle, a ' +
        'final read failed, or a node exited on its own) (exit code 4)'
      );
    default:
      return assertNever(v);
  }
}
