/**
 * The bank workload's own check (issue 14): money is only moved between accounts, in
 * transactions, so every audit (a read-only transaction of every account) must see the total
 * the accounts opened with, and so must the final reads after the heal. The linearizability
 * checker judges each account's history (transfers are `cas` ops); this is what catches a
 * transfer applied in half, or an audit that saw half of one.
 */
import { BANK_INITIAL, type ChaosOp } from './protocol.js';

export interface BankResult {
  readonly total: number;
  readonly audits: number;
  /** Audit totals other than `total`, with how often each was seen. */
  readonly wrongAudits: ReadonlyArray<readonly [number, number]>;
  /** The sum of the final reads; undefined when a final read failed. */
  readonly final: number | undefined;
  readonly transfers: { readonly ok: number; readonly unknown: number };
  readonly problem?: string;
}

export function checkBank(
  ops: readonly ChaosOp[],
  keys: readonly string[],
  auditTotals: readonly number[],
): BankResult {
  const total = keys.length * BANK_INITIAL;
  const wrong = new Map<number, number>();
  for (const t of auditTotals) if (t !== total) wrong.set(t, (wrong.get(t) ?? 0) + 1);
  let final: number | undefined = 0;
  for (const key of keys) {
    const read = ops.find((o) => o.client === `final-${key}` && o.op === 'get' && o.status === 'ok');
    if (read === undefined) final = undefined;
    else if (final !== undefined) final += Number(read.value ?? 0);
  }
  // Each transfer is two cas ops; count the first account's.
  const casOps = ops.filter((o) => o.op === 'cas');
  const transfers = {
    ok: casOps.filter((o) => o.status === 'ok').length / 2,
    unknown: casOps.filter((o) => o.status === 'unknown').length / 2,
  };
  const wrongAudits = [...wrong];
  const problems = [
    ...(wrongAudits.length > 0
      ? [`${wrongAudits.reduce((n, [, c]) => n + c, 0)} audit(s) saw a total other than ${total}`]
      : []),
    ...(final !== undefined && final !== total ? [`the accounts end with ${final}, not ${total}`] : []),
  ];
  return {
    total,
    audits: auditTotals.length,
    wrongAudits,
    final,
    transfers,
    ...(problems.length > 0 ? { problem: problems.join('; ') } : {}),
  };
}

/** The report's lines on the bank. */
export function formatBank(b: BankResult): string[] {
  const lines = [
    `  bank: ${b.transfers.ok} transfers committed (${b.transfers.unknown} unknown), ${b.audits} audits; ` +
      (b.problem === undefined
        ? `every audit saw the total ${b.total}; the accounts end with ` +
          (b.final === undefined ? '(a final read failed)' : String(b.final))
        : `WRONG: ${b.problem}`),
  ];
  for (const [t, n] of b.wrongAudits.slice(0, 5)) lines.push(`    ${n} audit(s) saw ${t}`);
  return lines;
}
