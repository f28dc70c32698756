/**
 * Digests (S16, issue 13): the digest module's properties, the core's capture at a digest
 * entry (nothing past it is applied until the driver holds the state there), and the check's
 * decision rule (the odd replicas are those outside a strict majority; none without one).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { A, B, C, startedCluster, put } from './harness.js';
import { checkPartition, type CheckTransport, type DigestAtReply } from '../../src/check/replicas.js';
import { addDigests, bucketOf, DigestBuilder, DIGEST_BUCKETS, ZERO_DIGEST } from '../../src/storage/digest.js';
import type { Op } from '../../src/core/types.js';

const b = (s: string): Buffer => Buffer.from(s);

function digestOf(entries: Array<[string, string, number]>, detail?: number[]) {
  const d = new DigestBuilder(new Set(detail));
  for (const [k, v, version] of entries) d.addEntry(b(k), b(v), version);
  return d.finish();
}

describe('digest module', () => {
  test('order-independent, and sensitive to a key, a value, a version and a dedup record', () => {
    const base: Array<[string, string, number]> = [
      ['a', '1', 3],
      ['b', '2', 4],
      ['c', '3', 5],
    ];
    const d = digestOf(base);
    assert.equal(digestOf([...base].reverse()).digest, d.digest);
    assert.notEqual(
      digestOf([
        ['a', '1', 3],
        ['b', '2', 4],
        ['c', '4', 5],
      ]).digest,
      d.digest,
      'value',
    );
    assert.notEqual(
      digestOf([
        ['a', '1', 3],
        ['b', '2', 4],
        ['c', '3', 6],
      ]).digest,
      d.digest,
      'version',
    );
    assert.notEqual(
      digestOf([
        ['a', '1', 3],
        ['b', '2', 4],
        ['d', '3', 5],
      ]).digest,
      d.digest,
      'key',
    );
    assert.notEqual(digestOf(base.slice(0, 2)).digest, d.digest, 'a key missing');
    // The content digest ignores versions: what a restore into another cluster reproduces.
    assert.equal(
      digestOf([
        ['a', '1', 9],
        ['b', '2', 9],
        ['c', '3', 9],
      ]).content,
      d.content,
    );
    const withDedup = new DigestBuilder();
    for (const [k, v, version] of base) withDedup.addEntry(b(k), b(v), version);
    withDedup.addDedup({ clientId: 'c1', requestSeq: 1, seq: 3 as never });
    assert.notEqual(withDedup.finish().digest, d.digest, 'the dedup table is part of the state (S10)');
    assert.equal(d.keys, 3);
    assert.equal(new DigestBuilder().finish().digest, ZERO_DIGEST);
  });

  test('buckets narrow a difference down to the key, and content digests add up across partitions', () => {
    const one = digestOf([
      ['x', '1', 1],
      ['y', '2', 2],
    ]);
    const other = digestOf([
      ['x', '1', 1],
      ['y', 'changed', 2],
    ]);
    const differ = one.buckets.flatMap((h, i) => (h === other.buckets[i] ? [] : [i]));
    assert.deepEqual(differ, [bucketOf(b('y'))]);
    const listed = digestOf(
      [
        ['x', '1', 1],
        ['y', '2', 2],
      ],
      differ,
    );
    assert.deepEqual(
      listed.detail?.flatMap((x) => x.entries.map((e) => Buffer.from(e.key).toString())),
      ['y'],
      'the listing of that bucket names the key',
    );
    assert.equal(one.buckets.length, DIGEST_BUCKETS);
    const whole = digestOf([
      ['x', '1', 1],
      ['y', '2', 2],
      ['z', '3', 3],
    ]);
    const split = [
      digestOf([['x', '1', 1]]).content,
      digestOf([
        ['y', '2', 2],
        ['z', '3', 3],
      ]).content,
    ];
    assert.equal(addDigests(split), whole.content);
  });
});

describe('replica core: the capture at a digest entry (S16)', () => {
  test('every replica stops applying at the digest entry until the driver answers digestCaptured', () => {
    const c = startedCluster();
    const digestOp: Op = { kind: 'digest', buckets: [] };
    c.step(A, { kind: 'clientWrite', requestId: 1, op: put('k', 'v1') });
    c.step(A, { kind: 'clientWrite', requestId: 2, op: digestOp });
    c.step(A, { kind: 'clientWrite', requestId: 3, op: put('k', 'v2') });
    c.settle();
    const at = c.replies.get(2);
    assert.equal(at?.kind, 'written', 'a digest entry is answered like a write, with its seq');
    const seq = at?.kind === 'written' ? at.seq : -1;
    assert.deepEqual(c.replies.get(3), { kind: 'written', seq: seq + 1 });
    for (const n of [A, B, C]) {
      assert.ok(
        c.captures.some((x) => x.node === n && x.seq === seq),
        `${n} was asked to capture at ${seq}`,
      );
      assert.equal(c.nodes.get(n)!.appliedSeq, seq, `${n} applied up to the digest entry, not past it`);
    }
    c.step(A, { kind: 'digestCaptured', seq: (seq + 1) as never }); // another seq: ignored
    assert.equal(c.nodes.get(A)!.appliedSeq, seq);
    for (const n of [A, B, C]) c.step(n, { kind: 'digestCaptured', seq: seq as never });
    c.settle();
    for (const n of [A, B, C]) assert.equal(c.nodes.get(n)!.appliedSeq, seq + 1, `${n} applied on after the capture`);
  });
});

describe('check: the odd replicas (S16)', () => {
  const ok = (digest: string): DigestAtReply => ({
    ok: true,
    seq: 7,
    digest,
    keys: 1,
    buckets: Array.from({ length: DIGEST_BUCKETS }, (_, i) => (i === 5 ? digest : ZERO_DIGEST)),
  });
  function transport(digests: Record<string, string>): CheckTransport & { relearned: string[] } {
    const relearned: string[] = [];
    return {
      relearned,
      propose: async () => 7,
      digestAt: async (node) => ok(digests[node]!),
      relearn: async (node) => void relearned.push(node),
    };
  }
  const config = { partition: 0, epoch: 3, primary: 'a', secondaries: ['b', 'c'] };
  const d1 = '1'.repeat(32);
  const d2 = '2'.repeat(32);
  const d3 = '3'.repeat(32);

  test('all agree: nothing odd, nothing repaired', async () => {
    const t = transport({ a: d1, b: d1, c: d1 });
    const r = await checkPartition(t, config, { repair: true });
    assert.equal(r.agree, true);
    assert.deepEqual([r.odd, t.relearned], [[], []]);
  });

  test('one of three differs: it is odd, and relearns only with repair (the primary too)', async () => {
    for (const odd of ['a', 'c']) {
      const digests = { a: d1, b: d1, c: d1, [odd]: d2 };
      const report = transport(digests);
      const r = await checkPartition(report, config, { repair: false });
      assert.deepEqual([r.agree, r.odd, report.relearned], [false, [odd], []]);
      const repair = transport(digests);
      const fixed = await checkPartition(repair, config, { repair: true });
      assert.deepEqual([fixed.repaired, repair.relearned], [[odd], [odd]]);
    }
  });

  test('no strict majority (three different, or two members): reported, nothing repaired', async () => {
    const three = transport({ a: d1, b: d2, c: d3 });
    const r3 = await checkPartition(three, config, { repair: true });
    assert.deepEqual([r3.agree, r3.odd, three.relearned], [false, [], []]);
    const two = transport({ a: d1, b: d2 });
    const r2 = await checkPartition(two, { ...config, secondaries: ['b'] }, { repair: true });
    assert.deepEqual([r2.agree, r2.odd, two.relearned], [false, [], []]);
  });

  test('a member that does not answer leaves the result unknown, never "agree"', async () => {
    const t = transport({ a: d1, b: d1 });
    t.digestAt = async (node) => {
      if (node === 'c') throw new Error('c is down');
      return ok(d1);
    };
    const r = await checkPartition(t, config, { repair: true });
    assert.equal(r.agree, undefined);
    assert.match(r.error ?? '', /c is down/);
  });
});
