/**
 * The CAS workload's counter check (issue 14, src/chaos/counters.ts): a counter's final value
 * must lie within [acknowledged, acknowledged + unknown] increments.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkCounters, formatCounters } from '../../src/chaos/counters.js';
import type { ChaosOp } from '../../src/chaos/protocol.js';

const cas = (key: string, status: ChaosOp['status']): ChaosOp => ({
  client: 'c1',
  op: 'cas',
  key,
  expect: null,
  value: '1',
  invoke: 1,
  complete: status === 'unknown' ? null : 2,
  status,
});
const final = (key: string, value: string | null): ChaosOp => ({
  client: `final-${key}`,
  op: 'get',
  key,
  value,
  invoke: 10,
  complete: 11,
  status: 'ok',
});

test('a counter within [acknowledged, acknowledged + unknown] passes; fewer is lost, more is doubled', () => {
  const ops = [
    cas('a', 'ok'),
    cas('a', 'ok'),
    cas('a', 'unknown'),
    cas('a', 'fail'),
    final('a', '3'),
    cas('b', 'ok'),
    cas('b', 'ok'),
    final('b', '1'),
    cas('c', 'ok'),
    cas('c', 'fail'),
    final('c', '2'),
    final('d', null),
  ];
  const r = checkCounters(ops, ['a', 'b', 'c', 'd', 'e']);
  assert.deepEqual(
    r.map((x) => [x.key, x.final, x.acked, x.unknown, x.problem]),
    [
      ['a', 3, 2, 1, undefined],
      ['b', 1, 2, 0, '1 acknowledged increment(s) lost'],
      ['c', 2, 1, 0, '1 increment(s) more than acknowledged or unknown'],
      ['d', 0, 0, 0, undefined],
      ['e', undefined, 0, 0, undefined],
    ],
  );
  const lines = formatCounters(r);
  assert.match(lines[0] ?? '', /5 keys, final sum 6, 5 acknowledged increments, 1 unknown; 2 WRONG/);
  assert.match(lines[1] ?? '', /b: final 1, acknowledged 2, unknown 0: 1 acknowledged increment\(s\) lost/);
});
