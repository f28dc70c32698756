/**
 * A brute-force linearizability checker for small single-key histories, to cross-check
 * src/check/linearizability.ts: it tries every order of every subset of the unknown
 * operations (all ok operations included) that respects real time, with no pruning and no
 * memoisation. Exponential; for histories of at most ~8 operations.
 */
import { type HistoryOp, stepModel } from '../../src/check/linearizability.js';

export function bruteForceLinearizable(history: readonly HistoryOp[], initial: string | null = null): boolean {
  const ops = history.filter((o) => o.status !== 'fail' && !(o.op === 'get' && o.status !== 'ok'));
  if (ops.length > 10) throw new Error('bruteForceLinearizable: too many operations');
  const done = new Array<boolean>(ops.length).fill(false);
  const end = (o: HistoryOp) => (o.status === 'unknown' ? Infinity : (o.complete ?? Infinity));

  const go = (state: string | null): boolean => {
    // Done when every ok operation took effect (unknown ones may never).
    if (ops.every((o, i) => done[i] || o.status !== 'ok')) return true;
    for (let i = 0; i < ops.length; i++) {
      if (done[i]) continue;
      const o = ops[i]!;
      // o may go next only if no operation left completed strictly before o was invoked.
      const blocked = ops.some((p, j) => j !== i && !done[j] && p.status === 'ok' && end(p) < o.invoke);
      if (blocked) continue;
      const r = stepModel(state, o);
      if (!r.ok) continue;
      done[i] = true;
      const found = go(r.next);
      done[i] = false;
      if (found) return true;
    }
    return false;
  };
  return go(initial);
}
