/**
 * A linearizability checker for key-value histories (issue 5): Wing & Gong's search with
 * Lowe's memoisation, as Porcupine implements it — a depth-first search over the order in
 * which operations take effect, pruned by a cache of (set of linearized operations, model
 * state) pairs already explored.
 *
 * Input: a history of completed client operations, one JSON object per line:
 *
 *   {client, op: 'put'|'get'|'delete'|'cas', key, value?, expect?, existed?, invoke, complete, status}
 *
 * - Values are strings; a get's observed value is `value`, null when the key was absent.
 * - A delete may say whether the key existed just before it (`existed`).
 * - A cas replaced `expect` (null: absent) by `value`; a cas whose comparison failed is a
 *   `fail` (it changed nothing), as in Jepsen.
 * - `status`: `ok` took effect between invoke and complete; `fail` definitely took no effect
 *   (it is left out of the check); `unknown` (timeout, lost connection) may take effect at
 *   any time after `invoke`, or never. An unknown read observed nothing and is left out.
 * - Times are numbers on one clock. An operation precedes another only if it completed
 *   strictly before the other was invoked; equal times count as concurrent.
 *
 * Keys are independent registers (P-compositionality), so each key is checked on its own.
 * The search is bounded per key by a time budget and a step budget: a key that runs out
 * gets the verdict `unknown` instead of hanging. Pure: no I/O, no dependencies.
 */

export type OpKind = 'put' | 'get' | 'delete' | 'cas';
export type OpStatus = 'ok' | 'fail' | 'unknown';

export interface HistoryOp {
  readonly client: string | number;
  readonly op: OpKind;
  readonly key: string;
  /** put/cas: the value written. get: the value read, null when absent. */
  readonly value?: string | null;
  /** cas: the value it required (null: the key absent). */
  readonly expect?: string | null;
  /** delete: whether the key existed just before it, when the store says so. */
  readonly existed?: boolean;
  readonly invoke: number;
  /** When the outcome was known; null or absent for an unknown outcome. */
  readonly complete?: number | null;
  readonly status: OpStatus;
}

export type Verdict = 'ok' | 'violation' | 'unknown';

export interface CheckOptions {
  /** Wall-clock budget per key, in ms (default 10 000). */
  readonly timeBudgetMs?: number;
  /** Search steps per key (default 50 000 000); deterministic, unlike the time budget. */
  readonly maxSteps?: number;
  /** The clock the time budget is measured with (default Date.now). */
  readonly now?: () => number;
  /** The value of every key before the history (default: absent). */
  readonly initial?: (key: string) => string | null;
}

/** One step of the longest linearizable prefix: the operation and the register after it. */
export interface LinearizedStep {
  readonly op: HistoryOp;
  readonly stateAfter: string | null;
}

export interface Explanation {
  readonly key: string;
  /** The longest linearizable prefix the search found, in linearization order. */
  readonly prefix: readonly LinearizedStep[];
  /** The register after that prefix. */
  readonly state: string | null;
  /**
   * The operation that had to take effect next (the earliest-completing definite operation
   * outside the prefix) but could not, and every operation that could have gone before
   * it, each with why it cannot.
   */
  readonly stuck: HistoryOp | undefined;
  readonly candidates: ReadonlyArray<{ readonly op: HistoryOp; readonly reason: string }>;
  readonly text: string;
}

export interface KeyResult {
  readonly key: string;
  readonly verdict: Verdict;
  /** Operations checked (ok and unknown writes; fail and unknown reads are left out). */
  readonly ops: number;
  readonly steps: number;
  readonly elapsedMs: number;
  readonly explanation?: Explanation;
  /** Why the verdict is unknown. */
  readonly reason?: string;
}

export interface CheckResult {
  readonly verdict: Verdict;
  readonly keys: readonly KeyResult[];
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

const KINDS: readonly OpKind[] = ['put', 'get', 'delete', 'cas'];
const STATUSES: readonly OpStatus[] = ['ok', 'fail', 'unknown'];

/** Parses a JSON-lines history; throws naming the line of the first malformed record. */
export function parseHistory(text: string): HistoryOp[] {
  const out: HistoryOp[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch (err) {
      throw new Error(`history line ${i + 1}: not JSON (${(err as Error).message})`);
    }
    const problem = validateOp(raw);
    if (problem) throw new Error(`history line ${i + 1}: ${problem}`);
    out.push(raw as HistoryOp);
  }
  return out;
}

function validateOp(raw: unknown): string | undefined {
  if (typeof raw !== 'object' || raw === null) return 'not an object';
  const o = raw as Record<string, unknown>;
  if (typeof o.client !== 'string' && typeof o.client !== 'number') return '`client` must be a string or a number';
  if (!KINDS.includes(o.op as OpKind)) return '`op` must be put, get, delete or cas';
  if (typeof o.key !== 'string') return '`key` must be a string';
  if (!STATUSES.includes(o.status as OpStatus)) return '`status` must be ok, fail or unknown';
  if (typeof o.invoke !== 'number' || !Number.isFinite(o.invoke)) return '`invoke` must be a finite number';
  if (
    o.complete !== undefined &&
    o.complete !== null &&
    (typeof o.complete !== 'number' || !Number.isFinite(o.complete))
  )
    return '`complete` must be a finite number or null';
  if (o.status !== 'unknown' && (typeof o.complete !== 'number' || o.complete < o.invoke))
    return 'an ok or failed operation needs `complete` >= `invoke`';
  if (o.value !== undefined && o.value !== null && typeof o.value !== 'string')
    return '`value` must be a string or null';
  if (o.expect !== undefined && o.expect !== null && typeof o.expect !== 'string')
    return '`expect` must be a string or null';
  if (o.existed !== undefined && typeof o.existed !== 'boolean') return '`existed` must be a boolean';
  if ((o.op === 'put' || o.op === 'cas') && typeof o.value !== 'string') return `a ${o.op} needs a string \`value\``;
  if (o.op === 'cas' && o.expect === undefined) return 'a cas needs `expect`';
  return undefined;
}

/** One history op as a JSON line (the format parseHistory reads). */
export function formatHistoryLine(op: HistoryOp): string {
  return JSON.stringify(op);
}

// ---------------------------------------------------------------------------------------
// The register model
// ---------------------------------------------------------------------------------------

type State = string | null;

/** Applies `op` to the register `state`: whether it is legal there, and the state after. */
export function stepModel(state: State, op: HistoryOp): { ok: boolean; next: State } {
  switch (op.op) {
    case 'put':
      return { ok: true, next: op.value ?? null };
    case 'get':
      return { ok: state === (op.value ?? null), next: state };
    case 'delete':
      if (op.existed !== undefined && op.existed !== (state !== null)) return { ok: false, next: state };
      return { ok: true, next: null };
    case 'cas':
      if (state !== (op.expect ?? null)) return { ok: false, next: state };
      return { ok: true, next: op.value ?? null };
  }
}

function whyIllegal(state: State, op: HistoryOp): string {
  const show = (s: State) => (s === null ? 'absent' : JSON.stringify(s));
  switch (op.op) {
    case 'get':
      return `it read ${show(op.value ?? null)} but the key is ${show(state)}`;
    case 'delete':
      return `it says the key ${op.existed ? 'existed' : 'did not exist'} but the key is ${show(state)}`;
    case 'cas':
      return `it expected ${show(op.expect ?? null)} but the key is ${show(state)}`;
    case 'put':
      return 'a put is always legal';
  }
}

// ---------------------------------------------------------------------------------------
// Preparing a key's history
// ---------------------------------------------------------------------------------------

/** The one value that stands for every value no read observed (it cannot be a real value: not a string). */
const UNOBSERVED = '\u0000unobserved\u0000';

/**
 * Renames every value that no get read and no cas expected to UNOBSERVED. Exact: the model
 * only ever compares the register with observed values (or with absence), so a history is
 * linearizable iff its renamed form is. It makes writes of unread values interchangeable,
 * which the search exploits. Returns new op objects; `original[i]` is the op renamed as `i`.
 */
function abstractValues(ops: readonly HistoryOp[]): HistoryOp[] {
  const observed = new Set<string>();
  for (const o of ops) {
    if (o.op === 'get' && o.status === 'ok' && o.value != null) observed.add(o.value);
    if (o.op === 'cas' && o.expect != null) observed.add(o.expect);
  }
  return ops.map((o) =>
    (o.op === 'put' || o.op === 'cas') && o.value != null && !observed.has(o.value) ? { ...o, value: UNOBSERVED } : o,
  );
}

/** True when the operation can matter to the check (see the header). */
function relevant(op: HistoryOp): boolean {
  if (op.status === 'fail') return false;
  if (op.op === 'get' && op.status !== 'ok') return false;
  return true;
}

/**
 * An unknown put whose value nobody ever observed (no get read it, no cas expected it) and
 * that no delete reporting `existed: true` could depend on changes no observation: if the
 * history is linearizable without it, the put "never happened" makes it linearizable with
 * it; and it cannot make an illegal history legal. Leaving it out keeps the search small:
 * every unknown operation stays concurrent with everything after its invocation.
 */
function prune(ops: HistoryOp[]): HistoryOp[] {
  const observed = new Set<string>();
  let lastExistedDelete = -Infinity;
  for (const o of ops) {
    if (o.op === 'get' && o.status === 'ok' && o.value != null) observed.add(o.value);
    if (o.op === 'cas' && o.expect != null) observed.add(o.expect);
    if (o.op === 'delete' && o.existed === true)
      lastExistedDelete = Math.max(lastExistedDelete, o.complete ?? Infinity);
  }
  return ops.filter(
    (o) =>
      !(o.status === 'unknown' && o.op === 'put' && !observed.has(o.value ?? '') && !(o.invoke <= lastExistedDelete)),
  );
}

// ---------------------------------------------------------------------------------------
// The search (Wing–Gong with Lowe's memoisation, as in Porcupine's checkSingle)
// ---------------------------------------------------------------------------------------

interface Entry {
  readonly isCall: boolean;
  readonly id: number;
  readonly time: number;
  prev: Entry | null;
  next: Entry | null;
  /** For a call: its return. */
  match: Entry | null;
}

class Bitset {
  readonly words: Uint32Array;
  constructor(n: number) {
    this.words = new Uint32Array(Math.max(1, Math.ceil(n / 32)));
  }
  set(i: number): void {
    this.words[i >>> 5]! |= 1 << (i & 31);
  }
  clear(i: number): void {
    this.words[i >>> 5]! &= ~(1 << (i & 31));
  }
  has(i: number): boolean {
    return (this.words[i >>> 5]! & (1 << (i & 31))) !== 0;
  }
  /** A compact string key: two UTF-16 units per word. */
  key(): string {
    let s = '';
    for (const w of this.words) s += String.fromCharCode(w & 0xffff, w >>> 16);
    return s;
  }
}

function buildList(ops: readonly HistoryOp[]): Entry {
  const events: Entry[] = [];
  ops.forEach((op, id) => {
    const call: Entry = { isCall: true, id, time: op.invoke, prev: null, next: null, match: null };
    const complete = op.status === 'unknown' ? Infinity : (op.complete ?? Infinity);
    const ret: Entry = { isCall: false, id, time: complete, prev: null, next: null, match: null };
    call.match = ret;
    events.push(call, ret);
  });
  // Equal times: calls first, so touching intervals count as concurrent (never a false alarm).
  events.sort((a, b) => a.time - b.time || (a.isCall === b.isCall ? a.id - b.id : a.isCall ? -1 : 1));
  const head: Entry = { isCall: false, id: -1, time: -Infinity, prev: null, next: null, match: null };
  let last = head;
  for (const e of events) {
    last.next = e;
    e.prev = last;
    last = e;
  }
  return head;
}

function lift(call: Entry): void {
  call.prev!.next = call.next;
  if (call.next) call.next.prev = call.prev;
  const ret = call.match!;
  ret.prev!.next = ret.next;
  if (ret.next) ret.next.prev = ret.prev;
}

function unlift(call: Entry): void {
  const ret = call.match!;
  ret.prev!.next = ret;
  if (ret.next) ret.next.prev = ret;
  call.prev!.next = call;
  if (call.next) call.next.prev = call;
}

interface SearchOutcome {
  readonly verdict: Verdict;
  readonly steps: number;
  readonly best: ReadonlyArray<{ id: number; stateAfter: State }>;
  readonly reason?: string;
}

function search(
  ops: readonly HistoryOp[],
  initial: State,
  opts: Required<Pick<CheckOptions, 'timeBudgetMs' | 'maxSteps' | 'now'>>,
): SearchOutcome {
  const head = buildList(ops);
  // Definite (ok) and unknown operations are numbered apart: the memo treats them differently.
  // Two classes of unknown operations are interchangeable and only counted: puts of the
  // value no read observed (see abstractValues) and deletes that report nothing.
  const slot: number[] = [];
  const klass: Array<'definite' | 'unknown' | 'anyPut' | 'anyDelete'> = [];
  let definiteCount = 0;
  let unknownCount = 0;
  for (const o of ops) {
    if (o.status === 'ok') {
      klass.push('definite');
      slot.push(definiteCount++);
    } else if (o.op === 'put' && o.value === UNOBSERVED) {
      klass.push('anyPut');
      slot.push(-1);
    } else if (o.op === 'delete' && o.existed === undefined) {
      klass.push('anyDelete');
      slot.push(-1);
    } else {
      klass.push('unknown');
      slot.push(unknownCount++);
    }
  }
  const definite = new Bitset(definiteCount);
  const unknown = new Bitset(unknownCount);
  let anyPuts = 0;
  let anyDeletes = 0;
  /**
   * Lowe's memo, with one more prune for unknown operations: a configuration (definite
   * operations linearized D, unknown operations linearized U, state s) succeeds only if
   * (D, U', s) does for every U' ⊆ U — an unknown operation may also never take effect, so
   * having used fewer of them only leaves more choices. So a configuration is skipped when
   * one with the same D and s and a subset of its U was already visited. Interchangeable
   * unknown operations enter U as counts: once invoked they stay available (an operation
   * is available when invoked before the earliest return left, which only moves later), so
   * which of them were used does not matter, only how many.
   */
  const cache = new Map<string, Array<{ u: Uint32Array; puts: number; deletes: number }>>();
  const calls: Array<{ entry: Entry; state: State }> = [];
  let definiteLeft = definiteCount;
  let state = initial;
  let best: Array<{ id: number; stateAfter: State }> = [];
  let steps = 0;
  const started = opts.now();
  let entry: Entry | null = head.next;

  const remember = (): boolean => {
    const k = `${definite.key()}\u0000${state === null ? '\u0001' : `\u0002${state}`}`;
    const seen = cache.get(k);
    const u = unknown.words;
    if (seen === undefined) {
      cache.set(k, [{ u: u.slice(), puts: anyPuts, deletes: anyDeletes }]);
      return true;
    }
    for (const v of seen) {
      if (v.puts > anyPuts || v.deletes > anyDeletes) continue;
      let subset = true;
      for (let i = 0; i < u.length; i++) {
        if ((v.u[i]! & ~u[i]!) !== 0) {
          subset = false;
          break;
        }
      }
      if (subset) return false;
    }
    seen.push({ u: u.slice(), puts: anyPuts, deletes: anyDeletes });
    return true;
  };
  const mark = (id: number, on: boolean): void => {
    switch (klass[id]!) {
      case 'definite':
        if (on) definite.set(slot[id]!);
        else definite.clear(slot[id]!);
        return;
      case 'unknown':
        if (on) unknown.set(slot[id]!);
        else unknown.clear(slot[id]!);
        return;
      case 'anyPut':
        anyPuts += on ? 1 : -1;
        return;
      case 'anyDelete':
        anyDeletes += on ? 1 : -1;
        return;
    }
  };

  for (;;) {
    if (definiteLeft === 0) return { verdict: 'ok', steps, best };
    if (++steps > opts.maxSteps)
      return { verdict: 'unknown', steps, best, reason: `search exceeded ${opts.maxSteps} steps` };
    if ((steps & 1023) === 0 && opts.now() - started > opts.timeBudgetMs) {
      return { verdict: 'unknown', steps, best, reason: `search exceeded the time budget of ${opts.timeBudgetMs} ms` };
    }
    if (entry === null) throw new Error('linearizability search ran off the end of the history (a bug in the checker)');
    if (entry.isCall) {
      const op = ops[entry.id]!;
      const r = stepModel(state, op);
      if (r.ok) {
        const before = state;
        mark(entry.id, true);
        state = r.next;
        if (remember()) {
          calls.push({ entry, state: before });
          if (op.status === 'ok') definiteLeft--;
          lift(entry);
          if (calls.length > best.length)
            best = calls.map((c, i) => ({
              id: c.entry.id,
              stateAfter: i + 1 < calls.length ? calls[i + 1]!.state : state,
            }));
          entry = head.next;
          continue;
        }
        mark(entry.id, false);
        state = before;
      }
      entry = entry.next;
      continue;
    }
    // A return: the operation it ends must have taken effect by now. Backtrack.
    const top = calls.pop();
    if (top === undefined) return { verdict: 'violation', steps, best };
    state = top.state;
    mark(top.entry.id, false);
    if (ops[top.entry.id]!.status === 'ok') definiteLeft++;
    unlift(top.entry);
    entry = top.entry.next;
  }
}

// ---------------------------------------------------------------------------------------
// Explaining a violation
// ---------------------------------------------------------------------------------------

function fmtTime(t: number | null | undefined): string {
  if (t === null || t === undefined || !Number.isFinite(t)) return '∞';
  return Number.isInteger(t) ? String(t) : String(Math.round(t * 1000) / 1000);
}

/** One operation, readably: `c3 put "v" [120, 135] ok`. */
export function describeOp(op: HistoryOp): string {
  const show = (s: string | null | undefined) => (s === null || s === undefined ? 'absent' : JSON.stringify(s));
  let what: string;
  switch (op.op) {
    case 'put':
      what = `put ${show(op.value)}`;
      break;
    case 'get':
      what = op.status === 'ok' ? `get → ${show(op.value)}` : 'get';
      break;
    case 'delete':
      what = op.existed === undefined ? 'delete' : `delete (existed: ${op.existed})`;
      break;
    case 'cas':
      what = `cas ${show(op.expect)} → ${show(op.value)}`;
      break;
  }
  const end = op.status === 'unknown' ? '∞)' : `${fmtTime(op.complete)}]`;
  return `client ${op.client} ${what} [${fmtTime(op.invoke)}, ${end} ${op.status}`;
}

function explain(
  key: string,
  ops: readonly HistoryOp[],
  initial: State,
  best: ReadonlyArray<{ id: number; stateAfter: State }>,
): Explanation {
  const inPrefix = new Set(best.map((b) => b.id));
  // The search ran on renamed values (abstractValues): replay the prefix on the real ones.
  let state = initial;
  const prefix = best.map((b) => {
    state = stepModel(state, ops[b.id]!).next;
    return { op: ops[b.id]!, stateAfter: state };
  });
  const rest = ops.map((op, id) => ({ op, id })).filter((x) => !inPrefix.has(x.id));
  let stuck: { op: HistoryOp; id: number } | undefined;
  for (const x of rest) {
    if (x.op.status !== 'ok') continue;
    if (!stuck || (x.op.complete ?? Infinity) < (stuck.op.complete ?? Infinity)) stuck = x;
  }
  const deadline = stuck?.op.complete ?? Infinity;
  const candidates = rest
    .filter((x) => x.op.invoke <= deadline)
    .map((x) => {
      const r = stepModel(state, x.op);
      const reason = r.ok
        ? x.id === stuck?.id
          ? 'legal here, yet no order of the operations after it works'
          : 'legal here, but every order that starts with it fails later'
        : whyIllegal(state, x.op);
      return { op: x.op, reason };
    });
  const show = (s: State) => (s === null ? 'absent' : JSON.stringify(s));
  const lines: string[] = [];
  lines.push(`key ${JSON.stringify(key)} is not linearizable (${ops.length} operations checked).`);
  lines.push(`Longest linearizable prefix (${prefix.length} operations, in the order they take effect):`);
  if (prefix.length === 0) lines.push(`  (none; the key starts ${show(initial)})`);
  const shown = prefix.length > 40 ? prefix.slice(prefix.length - 40) : prefix;
  if (shown.length < prefix.length) lines.push(`  … ${prefix.length - shown.length} earlier operations …`);
  for (const s of shown) lines.push(`  ${describeOp(s.op)}  ⇒ ${show(s.stateAfter)}`);
  lines.push(`After it the key is ${show(state)}.`);
  if (stuck) {
    lines.push(`This operation must take effect next (it completed first of those left), and cannot:`);
    lines.push(`  ${describeOp(stuck.op)}`);
  }
  if (candidates.length > 0) {
    lines.push(`Operations that could take effect at that point:`);
    for (const c of candidates.slice(0, 20)) lines.push(`  ${describeOp(c.op)}: ${c.reason}`);
    if (candidates.length > 20) lines.push(`  … and ${candidates.length - 20} more`);
  }
  return { key, prefix, state, stuck: stuck?.op, candidates, text: lines.join('\n') };
}

// ---------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------

/** Checks the operations of one key (every op must have that key). */
export function checkKey(key: string, history: readonly HistoryOp[], options: CheckOptions = {}): KeyResult {
  const now = options.now ?? Date.now;
  const started = now();
  const initial = options.initial?.(key) ?? null;
  const ops = prune(history.filter((o) => o.key === key && relevant(o)));
  const outcome = search(abstractValues(ops), initial, {
    timeBudgetMs: options.timeBudgetMs ?? 10_000,
    maxSteps: options.maxSteps ?? 50_000_000,
    now,
  });
  const elapsedMs = now() - started;
  const base = { key, verdict: outcome.verdict, ops: ops.length, steps: outcome.steps, elapsedMs };
  if (outcome.verdict === 'violation') return { ...base, explanation: explain(key, ops, initial, outcome.best) };
  if (outcome.verdict === 'unknown') return { ...base, reason: outcome.reason ?? 'budget exhausted' };
  return base;
}

/** Checks a whole history, key by key. */
export function checkHistory(history: readonly HistoryOp[], options: CheckOptions = {}): CheckResult {
  const keys = [...new Set(history.map((o) => o.key))].sort();
  const results = keys.map((k) => checkKey(k, history, options));
  const verdict: Verdict = results.some((r) => r.verdict === 'violation')
    ? 'violation'
    : results.some((r) => r.verdict === 'unknown')
      ? 'unknown'
      : 'ok';
  return { verdict, keys: results };
}

/** A short report: the verdict, then each violating key's explanation. */
export function formatResult(result: CheckResult): string {
  const operations = result.keys.reduce((n, k) => n + k.ops, 0);
  const lines = [`linearizability: ${result.verdict} (${result.keys.length} keys, ${operations} operations)`];
  for (const k of result.keys) {
    if (k.verdict === 'violation') lines.push(k.explanation!.text);
    if (k.verdict === 'unknown') lines.push(`key ${JSON.stringify(k.key)}: unknown (${k.reason})`);
  }
  return lines.join('\n');
}
