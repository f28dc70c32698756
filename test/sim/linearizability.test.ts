/**
 * Tests of the linearizability checker (src/check/linearizability.ts). Proves: it accepts
 * hand-written linearizable histories (concurrent writes read in either order, an unknown
 * write that shows up later, or never), rejects the classic anomalies (a stale read, a lost
 * write, a read of a value never written, a delete that saw a key that was not there) and
 * explains them with the key, the operations and the longest linearizable prefix; it
 * agrees with a brute-force checker on thousands of random small histories; and a search
 * that would run too long stops with `unknown`.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type HistoryOp, checkHistory, checkKey, formatResult, parseHistory } from '../../src/check/linearizability.js';
import { bruteForceLinearizable } from './bruteforce.js';
import { Rng } from '../../src/core/rng.js';

const K = 'k';
const put = (
  client: string,
  value: string,
  invoke: number,
  complete: number | null,
  status: HistoryOp['status'] = 'ok',
): HistoryOp => ({ client, op: 'put', key: K, value, invoke, complete, status });
const get = (client: string, value: string | null, invoke: number, complete: number): HistoryOp => ({
  client,
  op: 'get',
  key: K,
  value,
  invoke,
  complete,
  status: 'ok',
});
const del = (
  client: string,
  invoke: number,
  complete: number | null,
  existed?: boolean,
  status: HistoryOp['status'] = 'ok',
): HistoryOp =>
  existed === undefined
    ? { client, op: 'delete', key: K, invoke, complete, status }
    : { client, op: 'delete', key: K, invoke, complete, status, existed };

const verdict = (h: HistoryOp[]) => checkHistory(h).verdict;

describe('linearizable histories', () => {
  test('sequential writes and reads', () => {
    assert.equal(
      verdict([
        put('a', 'x', 0, 1),
        get('b', 'x', 2, 3),
        put('a', 'y', 4, 5),
        get('b', 'y', 6, 7),
        del('a', 8, 9, true),
        get('b', null, 10, 11),
      ]),
      'ok',
    );
  });

  test('a read concurrent with a write may see the old or the new value', () => {
    assert.equal(verdict([put('a', 'x', 0, 1), put('a', 'y', 2, 10), get('b', 'x', 3, 4), get('c', 'y', 5, 6)]), 'ok');
    assert.equal(verdict([put('a', 'x', 0, 1), put('a', 'y', 2, 10), get('b', 'y', 3, 4), get('c', 'y', 5, 6)]), 'ok');
  });

  test('concurrent writes may take effect in either order', () => {
    assert.equal(verdict([put('a', 'x', 0, 10), put('b', 'y', 1, 9), get('c', 'x', 11, 12)]), 'ok');
    assert.equal(verdict([put('a', 'x', 0, 10), put('b', 'y', 1, 9), get('c', 'y', 11, 12)]), 'ok');
  });

  test('an unknown write may show up long after it was invoked', () => {
    assert.equal(
      verdict([put('a', 'x', 0, 1), put('b', 'y', 2, 3, 'unknown'), get('c', 'x', 10, 11), get('c', 'y', 20, 21)]),
      'ok',
    );
  });

  test('an unknown write may never take effect', () => {
    assert.equal(
      verdict([put('a', 'x', 0, 1), put('b', 'y', 2, null, 'unknown'), get('c', 'x', 10, 11), get('c', 'x', 20, 21)]),
      'ok',
    );
  });

  test('a failed write never took effect, and failed or unknown reads observed nothing', () => {
    const h: HistoryOp[] = [
      put('a', 'x', 0, 1),
      put('b', 'y', 2, 3, 'fail'),
      { client: 'c', op: 'get', key: K, value: 'zzz', invoke: 4, complete: 5, status: 'fail' },
      { client: 'c', op: 'get', key: K, invoke: 4, complete: null, status: 'unknown' },
      get('c', 'x', 6, 7),
    ];
    assert.equal(verdict(h), 'ok');
  });

  test('keys are independent', () => {
    const h: HistoryOp[] = [
      { client: 'a', op: 'put', key: 'k1', value: 'x', invoke: 0, complete: 1, status: 'ok' },
      { client: 'a', op: 'put', key: 'k2', value: 'y', invoke: 2, complete: 3, status: 'ok' },
      { client: 'b', op: 'get', key: 'k1', value: 'x', invoke: 4, complete: 5, status: 'ok' },
      { client: 'b', op: 'get', key: 'k2', value: 'y', invoke: 4, complete: 5, status: 'ok' },
    ];
    const r = checkHistory(h);
    assert.equal(r.verdict, 'ok');
    assert.deepEqual(
      r.keys.map((k) => k.key),
      ['k1', 'k2'],
    );
  });

  test('compare-and-set', () => {
    const cas = (
      client: string,
      expect: string | null,
      value: string,
      invoke: number,
      complete: number,
    ): HistoryOp => ({ client, op: 'cas', key: K, expect, value, invoke, complete, status: 'ok' });
    assert.equal(verdict([put('a', 'x', 0, 1), cas('b', 'x', 'y', 2, 3), get('c', 'y', 4, 5)]), 'ok');
    assert.equal(verdict([cas('b', null, 'y', 2, 3), get('c', 'y', 4, 5)]), 'ok');
    assert.equal(verdict([put('a', 'x', 0, 1), cas('b', 'z', 'y', 2, 3)]), 'violation');
  });
});

describe('violations, explained', () => {
  test('a stale read: a read after a completed write returns the old value', () => {
    const h = [put('a', 'x', 0, 1), put('a', 'y', 2, 3), get('b', 'x', 4, 5)];
    const r = checkKey(K, h);
    assert.equal(r.verdict, 'violation');
    const e = r.explanation!;
    assert.equal(e.key, K);
    assert.deepEqual(
      e.prefix.map((s) => s.op.value),
      ['x', 'y'],
    );
    assert.equal(e.state, 'y');
    assert.equal(e.stuck?.op, 'get');
    assert.match(e.text, /key "k" is not linearizable/);
    assert.match(e.text, /Longest linearizable prefix \(2 operations/);
    assert.match(e.text, /client b get → "x" \[4, 5\] ok/);
    assert.match(e.text, /it read "x" but the key is "y"/);
  });

  test('a lost write: an acknowledged write is never seen, though nothing overwrote it', () => {
    const h = [put('a', 'x', 0, 1), put('b', 'y', 2, 3), get('c', 'x', 10, 11), get('c', 'x', 12, 13)];
    assert.equal(verdict(h), 'violation');
  });

  test('a read of a value nobody wrote', () => {
    const r = checkKey(K, [put('a', 'x', 0, 1), get('b', 'ghost', 2, 3)]);
    assert.equal(r.verdict, 'violation');
    assert.match(r.explanation!.text, /it read "ghost" but the key is "x"/);
  });

  test('a read of an unknown write, then of the value before it', () => {
    // Once the unknown write was seen it took effect: reading the older value later is stale.
    assert.equal(
      verdict([put('a', 'x', 0, 1), put('b', 'y', 2, null, 'unknown'), get('c', 'y', 5, 6), get('c', 'x', 7, 8)]),
      'violation',
    );
  });

  test('a read cannot see a write invoked after the read completed', () => {
    assert.equal(verdict([get('c', 'y', 0, 1), put('b', 'y', 2, 3)]), 'violation');
    assert.equal(verdict([get('c', 'y', 0, 1), put('b', 'y', 2, null, 'unknown')]), 'violation');
  });

  test('a delete that says the key existed when it could not have', () => {
    assert.equal(verdict([del('a', 0, 1, true)]), 'violation');
    assert.equal(verdict([put('a', 'x', 0, 1), del('a', 2, 3, false)]), 'violation');
    assert.equal(verdict([put('a', 'x', 0, 1), del('a', 2, 3, true), get('b', null, 4, 5)]), 'ok');
  });

  test('a read of a deleted key', () => {
    assert.equal(verdict([put('a', 'x', 0, 1), del('a', 2, 3), get('b', 'x', 4, 5)]), 'violation');
  });

  test('formatResult names the key and the verdict', () => {
    const text = formatResult(checkHistory([put('a', 'x', 0, 1), get('b', null, 2, 3)]));
    assert.match(text, /^linearizability: violation/);
    assert.match(text, /key "k" is not linearizable/);
  });
});

describe('history files', () => {
  test('JSON lines round-trip; malformed lines are named', () => {
    const text = [
      '{"client":1,"op":"put","key":"a","value":"1","invoke":0,"complete":5,"status":"ok"}',
      '',
      '{"client":2,"op":"get","key":"a","value":"1","invoke":6,"complete":7,"status":"ok"}',
      '{"client":2,"op":"put","key":"a","value":"2","invoke":8,"complete":null,"status":"unknown"}',
    ].join('\n');
    const h = parseHistory(text);
    assert.equal(h.length, 3);
    assert.equal(checkHistory(h).verdict, 'ok');
    assert.throws(
      () => parseHistory('{"client":1,"op":"put","key":"a","invoke":0,"complete":1,"status":"ok"}'),
      /line 1: a put needs a string `value`/,
    );
    assert.throws(
      () => parseHistory('\n{"client":1,"op":"get","key":"a","invoke":3,"complete":1,"status":"ok"}'),
      /line 2: .*complete/,
    );
    assert.throws(() => parseHistory('nope'), /line 1: not JSON/);
  });
});

describe('budgets', () => {
  test('a search over its step budget says unknown, not ok and not violation', () => {
    // Many concurrent writes and a read that fits none of them: a large search.
    const h: HistoryOp[] = [];
    for (let i = 0; i < 14; i++) h.push(put(`c${i}`, `v${i % 3}`, 0, 100));
    h.push(get('r', 'nope', 101, 102));
    const r = checkKey(K, h, { maxSteps: 50 });
    assert.equal(r.verdict, 'unknown');
    assert.match(r.reason!, /50 steps/);
  });

  test('the time budget is measured on the given clock', () => {
    const h: HistoryOp[] = [];
    for (let i = 0; i < 14; i++) h.push(put(`c${i}`, `v${i}`, 0, 100));
    h.push(get('r', 'nope', 101, 102));
    let t = 0;
    const r = checkKey(K, h, { timeBudgetMs: 5, now: () => (t += 1) });
    assert.equal(r.verdict, 'unknown');
    assert.match(r.reason!, /time budget/);
  });
});

describe('cross-check against brute force', () => {
  /** Random single-key histories of 1–7 operations with small values, so collisions happen. */
  function randomHistory(rng: Rng, unknownWeight: number, maxOps: number): HistoryOp[] {
    const n = rng.int(1, maxOps);
    const values = ['a', 'b', 'c'];
    const ops: HistoryOp[] = [];
    // Half of the histories come from a real sequential execution with random
    // linearization points inside random intervals (mostly linearizable), half are noise.
    const realistic = rng.chance(0.5);
    let state: string | null = null;
    const points = Array.from({ length: n }, () => rng.int(0, 30)).sort((x, y) => x - y);
    for (let i = 0; i < n; i++) {
      const at = points[i]!;
      const invoke = at - rng.int(0, 6);
      const complete = at + rng.int(0, 6);
      const status = rng.weighted<HistoryOp['status']>([
        [8, 'ok'],
        [unknownWeight, 'unknown'],
        [1, 'fail'],
      ]);
      const kind = rng.weighted<HistoryOp['op']>([
        [4, 'put'],
        [4, 'get'],
        [2, 'delete'],
        [1, 'cas'],
      ]);
      const client = `c${i}`;
      const doneAt = status === 'unknown' ? null : complete;
      if (kind === 'put') {
        const value = rng.pick(values);
        if (realistic && status !== 'fail') state = value;
        ops.push({ client, op: 'put', key: K, value, invoke, complete: doneAt, status });
      } else if (kind === 'get') {
        const value = realistic ? state : rng.pick([null, ...values]);
        ops.push({ client, op: 'get', key: K, value, invoke, complete: doneAt, status });
      } else if (kind === 'delete') {
        const existed = realistic ? state !== null : rng.pick([undefined, true, false]);
        if (realistic && status !== 'fail') state = null;
        const op: HistoryOp =
          existed === undefined || status === 'unknown'
            ? { client, op: 'delete', key: K, invoke, complete: doneAt, status }
            : { client, op: 'delete', key: K, invoke, complete: doneAt, status, existed };
        ops.push(op);
      } else {
        const expect = realistic ? state : rng.pick([null, ...values]);
        const value = rng.pick(values);
        if (realistic && status !== 'fail') state = value;
        ops.push({ client, op: 'cas', key: K, expect, value, invoke, complete: doneAt, status });
      }
    }
    return rng.shuffle(ops);
  }

  for (const profile of [
    { name: 'mostly definite outcomes', seed: 20240501, runs: 5000, unknownWeight: 2, maxOps: 7 },
    { name: 'mostly unknown outcomes', seed: 777, runs: 3000, unknownWeight: 12, maxOps: 8 },
  ]) {
    test(`the checker and a brute-force search agree on ${profile.runs} random histories (${profile.name})`, () => {
      const rng = new Rng(profile.seed);
      let violations = 0;
      for (let i = 0; i < profile.runs; i++) {
        const h = randomHistory(rng, profile.unknownWeight, profile.maxOps);
        const expected = bruteForceLinearizable(h);
        const got = checkKey(K, h);
        assert.notEqual(got.verdict, 'unknown');
        if ((got.verdict === 'ok') !== expected) {
          assert.fail(
            `history ${i} disagrees: checker ${got.verdict}, brute force ` +
              `${expected ? 'ok' : 'violation'}\n${h.map((o) => JSON.stringify(o)).join('\n')}`,
          );
        }
        if (!expected) violations++;
      }
      // Both kinds of answer were exercised.
      assert.ok(violations > profile.runs / 20 && violations < (profile.runs * 19) / 20, `violations: ${violations}`);
    });
  }
});
