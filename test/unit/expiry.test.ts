/**
 * The expiry index (src/storageserver/expiry.ts, DESIGN §16): applied puts with an expiry are
 * due at their deadline, any later write of the key unindexes it, a due key comes back after
 * EXPIRY_RETRY_MS until it goes, work per call is bounded, and a scan's stale find never
 * replaces a newer applied version.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EXPIRY_RETRY_MS, ExpiryIndex } from '../../src/storageserver/expiry.js';
import { epoch, type LogEntry, partitionId, seq } from '../../src/core/types.js';

const P = partitionId(0);
const b = (s: string) => Buffer.from(s);
const put = (s: number, key: string, expiresAt?: number): LogEntry => ({
  epoch: epoch(1),
  seq: seq(s),
  op:
    expiresAt === undefined
      ? { kind: 'put', key: b(key), value: b('v') }
      : { kind: 'put', key: b(key), value: b('v'), expiresAt },
});
const del = (s: number, key: string): LogEntry => ({
  epoch: epoch(1),
  seq: seq(s),
  op: { kind: 'delete', key: b(key) },
});
const names = (due: ReturnType<ExpiryIndex['due']>) => due.map((d) => `${Buffer.from(d.key).toString()}@${d.version}`);

test('due at the deadline, in deadline order; later writes unindex; a due key returns until it goes', () => {
  const x = new ExpiryIndex();
  x.applied(P, [put(1, 'a', 1000), put(2, 'b', 500), put(3, 'c', 2000), put(4, 'd')]);
  assert.equal(x.size(P), 3);
  assert.deepEqual(names(x.due(P, 499, 10)), []);
  assert.deepEqual(names(x.due(P, 1000, 10)), ['b@2', 'a@1']);
  // Not gone yet: they come back after the retry delay, not before.
  assert.deepEqual(names(x.due(P, 1000 + EXPIRY_RETRY_MS - 1, 10)), []);
  x.applied(P, [del(5, 'b'), put(6, 'c')]); // b deleted, c rewritten without an expiry
  assert.deepEqual(names(x.due(P, 5000, 10)), ['a@1']);
  x.forget(P, b('a'), 1);
  assert.deepEqual(names(x.due(P, 99_999, 10)), []);
  assert.equal(x.size(P), 0);
});

test('a bounded number per call; a stale scan find does not replace a newer version', () => {
  const x = new ExpiryIndex();
  x.applied(
    P,
    Array.from({ length: 100 }, (_, i) => put(i + 1, `k${i}`, 10 + i)),
  );
  assert.equal(x.due(P, 1000, 30).length, 30);
  assert.equal(x.due(P, 1000, 100).length, 70);
  x.applied(P, [put(200, 'k0', 50_000)]);
  x.found(P, [{ key: b('k0'), version: 1, expiresAt: 10 }]);
  assert.deepEqual(
    names(x.due(P, 49_999, 200)).filter((n) => n.startsWith('k0@')),
    [],
  );
  assert.deepEqual(
    names(x.due(P, 50_000, 200)).filter((n) => n.startsWith('k0@')),
    ['k0@200'],
  );
  x.drop(P);
  assert.equal(x.size(P), 0);
});
