/**
 * The CAS workload's own check (issue 14): every key is a counter clients increment by
 * compare-and-set, so its final value must equal the increments that took effect: at least
 * the acknowledged ones, at most those plus the ones whose outcome is unknown. Fewer is a
 * lost increment, more a doubled one (or one that was reported failed and happened). The
 * linearizability checker judges the same history op by op; this is the sum a user would see.
 */
import type { ChaosOp } from './protocol.js';

export interface CounterResult {
  readonly key: string;
  /** The final read's value; undefined when the final read failed. */
  readonly final: number | undefined;
  readonly acked: number;
  readonly unknown: number;
  /** Why the counter is wrong; undefined when it is right (or could not be read). */
  readonly problem?: string;
}

export function checkCounters(ops: readonly ChaosOp[], keys: readonly string[]): CounterResult[] {
  return keys.map((key) => {
    let acked = 0;
    let unknown = 0;
    for (const o of ops) {
      if (o.key !== key || o.op !== 'cas') continue;
      if (o.status === 'ok') acked++;
      else if (o.status === 'unknown') unknown++;
    }
    const read = ops.find((o) => o.client === `final-${key}` && o.op === 'get' && o.status === 'ok');
    if (read === undefined) return { key, final: undefined, acked, unknown };
    const final = read.value == null ? 0 : Number(read.value);
    const base = { key, final, acked, unknown };
    if (!Number.isSafeInteger(final))
      return { ...base, problem: `its final value ${JSON.stringify(read.value)} is not a count` };
    if (final < acked) return { ...base, problem: `${acked - final} acknowledged increment(s) lost` };
    if (final > acked + unknown)
      return { ...base, problem: `${final - acked - unknown} increment(s) more than acknowledged or unknown` };
    return base;
  });
}

/** The report's lines on the counters. */
export function formatCounters(results: readonly CounterResult[]): string[] {
  const wrong = results.filter((r) => r.problem !== undefined);
  const total = (f: (r: CounterResult) => number) => results.reduce((s, r) => s + f(r), 0);
  const lines = [
    `  counters (cas workload): ${results.length} keys, final sum ${total((r) => r.final ?? 0)}, ` +
      `${total((r) => r.acked)} acknowledged increments, ${total((r) => r.unknown)} unknown; ` +
      (wrong.length === 0 ? 'every counter within [acknowledged, acknowledged + unknown]' : `${wrong.length} WRONG`),
  ];
  for (const r of wrong.slice(0, 10))
    lines.push(`    ${r.key}: final ${r.final}, acknowledged ${r.acked}, unknown ${r.unknown}: ${r.problem}`);
  return lines;
}
