/**
 * The bank workload's check (issue 14, src/chaos/bank.ts): every audit and the final reads
 * must see the total the accounts opened with.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkBank, formatBank } from '../../src/chaos/bank.js';
import type { ChaosOp } from '../../src/chaos/protocol.js';

const final = (key: string, value: string | null): ChaosOp => ({
  client: `final-${key}`,
  op: 'get',
  key,
  value,
  invoke: 10,
  complete: 11,
  status: 'ok',
});
const cas = (key: string, status: ChaosOp['status']): ChaosOp => ({
  client: 'c1',
  op: 'cas',
  key,
  expect: '100',
  value: '99',
  invoke: 1,
  complete: status === 'unknown' ? null : 2,
  status,
});

test('audits and final reads that keep the total pass; a wrong audit or a lost transfer is named', () => {
  const keys = ['k0', 'k1'];
  const good = checkBank([cas('k0', 'ok'), cas('k1', 'ok'), final('k0', '90'), final('k1', '110')], keys, [200, 200]);
  assert.equal(good.problem, undefined);
  assert.deepEqual(good.transfers, { ok: 1, unknown: 0 });
  assert.match(
    formatBank(good)[0] ?? '',
    /1 transfers committed \(0 unknown\), 2 audits; every audit saw the total 200; the accounts end with 200/,
  );
  const bad = checkBank([final('k0', '90'), final('k1', '100')], keys, [200, 190, 190]);
  assert.equal(bad.problem, '2 audit(s) saw a total other than 200; the accounts end with 190, not 200');
  assert.match(formatBank(bad).join('\n'), /WRONG: .*\n {4}2 audit\(s\) saw 190/);
  const unread = checkBank([final('k0', '100')], keys, []);
  assert.equal(unread.final, undefined);
  assert.equal(unread.problem, undefined);
});
