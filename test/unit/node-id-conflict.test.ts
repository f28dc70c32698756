/**
 * Unit test of the nameserver core's node id check (issue 9): a registration of a node id
 * that a live node holds at another address conflicts until that node is dead; the same
 * address (a restart), the same incarnation (a repeated registration), a node known only
 * from the persisted map (after a nameserver restart, S15) and a node whose storage failed
 * do not conflict.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Nameserver } from '../../src/core/nameserver/nameserver.js';
import { nodeId } from '../../src/core/types.js';

const settings = { partitions: 4, replicas: 1, minWriteReplicas: 1, initialNodes: 1 };
const DEAD_AFTER_MS = 5000;
const s1 = nodeId('s1');
const reg = (address: string, incarnation: string) => ({
  nodeId: s1,
  address,
  backend: 'lmdb',
  incarnation,
  durable: true,
});

test('a node id alive at another address conflicts until that node is dead', () => {
  const ns = new Nameserver(
    Nameserver.newMap('test', settings),
    { deadAfterMs: DEAD_AFTER_MS, rereplicateAfterMs: 30_000 },
    0,
  );
  assert.equal(ns.conflictingNode(reg('a:1', 'i1'), 0), undefined, 'unknown id');
  ns.onRegister(reg('a:1', 'i1'), 0);
  assert.equal(ns.conflictingNode(reg('b:2', 'i2'), 1000)?.address, 'a:1', 'alive elsewhere');
  assert.equal(ns.conflictingNode(reg('a:1', 'i2'), 1000), undefined, 'same address: a restart');
  assert.equal(ns.conflictingNode(reg('b:2', 'i1'), 1000), undefined, 'same incarnation');
  assert.equal(ns.conflictingNode(reg('b:2', 'i2'), DEAD_AFTER_MS), ns.nodes.get(s1), 'alive up to --dead-after-ms');
  assert.equal(ns.conflictingNode(reg('b:2', 'i2'), DEAD_AFTER_MS + 1), undefined, 'dead');

  ns.onStorageFailed(s1, 'i1');
  assert.equal(ns.conflictingNode(reg('b:2', 'i2'), 1000), undefined, 'its storage failed: counts as dead');
});

test('after a nameserver restart a node known only from the map does not conflict', () => {
  const before = new Nameserver(
    Nameserver.newMap('test', settings),
    { deadAfterMs: DEAD_AFTER_MS, rereplicateAfterMs: 30_000 },
    0,
  );
  before.onRegister(reg('a:1', 'i1'), 0);
  const after = new Nameserver(before.map, { deadAfterMs: DEAD_AFTER_MS, rereplicateAfterMs: 30_000 }, 10_000);
  assert.equal(after.conflictingNode(reg('b:2', 'i2'), 10_001), undefined);
  after.onRegister(reg('b:2', 'i2'), 10_001);
  assert.equal(after.conflictingNode(reg('a:1', 'i3'), 10_002)?.address, 'b:2', 'now the registered one holds the id');
});
