/**
 * The etcd control plane's fence (issue 12, src/control/etcd.ts) against a real etcd: the
 * first candidate leads and saves a map; once its leadership is gone (its lease revoked behind
 * its back, as an expiry during a pause would) and another candidate leads and saves, the old
 * candidate's save is refused with NOT_LEADER naming the new leader, and etcd's map is the new
 * leader's, unchanged.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { EtcdControl, leaseTtlSeconds, normalizePrefix } from '../../src/control/etcd.js';
import { InvalidArgumentError, NotLeaderError } from '../../src/core/errors.js';
import { Nameserver } from '../../src/core/nameserver/nameserver.js';
import { ETCD_INSTALL_HINT, EtcdCluster, findEtcd } from '../../src/process/etcd-server.js';

const skip = findEtcd() === undefined ? `etcd is not installed: ${ETCD_INSTALL_HINT}` : false;
const settings = { partitions: 4, replicas: 1, minWriteReplicas: 1, initialNodes: 1 };

describe('etcd control plane: the fenced map write', { skip }, () => {
  let etcd: EtcdCluster | undefined;
  const controls: EtcdControl[] = [];
  const stop = new AbortController();

  before(async () => {
    etcd = await EtcdCluster.start({ dir: mkdtempSync(join(tmpdir(), 'dstore-etcd-fence-')), members: 1 });
  });
  after(async () => {
    stop.abort();
    for (const c of controls) await c.close().catch(() => undefined);
    await etcd?.destroy();
  });

  function candidate(nodeId: string, prefix = '/dstore/fence-test/'): EtcdControl {
    const c = new EtcdControl({ endpoints: etcd?.clientUrls ?? [], prefix, leaseTtlMs: 1000, nodeId });
    controls.push(c);
    return c;
  }

  test('whole-second leases, rounded up; prefixes end in /', () => {
    assert.equal(leaseTtlSeconds(3000), 3);
    assert.equal(leaseTtlSeconds(3001), 4);
    assert.equal(leaseTtlSeconds(1), 1);
    assert.equal(normalizePrefix('/a'), '/a/');
    assert.equal(normalizePrefix('/a/'), '/a/');
  });

  test("a deposed candidate's save is refused and the stored map stays the new leader's", async () => {
    const a = candidate('a');
    const b = candidate('b');
    const noError = (err: unknown): void => assert.fail(`etcd call failed: ${String(err)}`);
    const wonA = await a.campaign('127.0.0.1:1', stop.signal, noError);
    assert.equal(wonA.info.nodeId, 'a');
    assert.equal((await b.leader())?.nodeId, 'a', 'b sees a lead');

    const v1 = { ...Nameserver.newMap('cluster-1', settings), version: 1 };
    await a.saveMap(v1);
    assert.equal((await b.loadMap())?.version, 1);

    // b waits while a holds the key; a's lease is revoked behind its back (as if it expired).
    const bWins = b.campaign('127.0.0.1:2', stop.signal, noError);
    let lost: string | undefined;
    a.on('lost', (reason) => (lost = reason));
    await a.client.leaseClient.leaseRevoke({ ID: wonA.leaseId });
    const wonB = await bWins;
    assert.equal(wonB.info.nodeId, 'b');
    assert.ok(BigInt(wonB.createRevision) > BigInt(wonA.createRevision), 'a new leader key, a higher revision');

    const v2 = { ...v1, version: 2 };
    await b.saveMap(v2);
    // a has not heard yet (or has): either way its save must be refused by etcd itself.
    const stale = { ...v1, version: 3, clusterId: 'stale' };
    const refusal = await (async () => {
      // Bypass a's own "I lost it" bookkeeping: the fence must hold at etcd with the old revision.
      Object.assign(a, { held: wonA });
      try {
        await a.saveMap(stale);
        return undefined;
      } catch (err) {
        return err;
      }
    })();
    assert.ok(refusal instanceof NotLeaderError, `a's save is refused with NOT_LEADER, got ${String(refusal)}`);
    assert.equal(refusal.leader, '127.0.0.1:2', 'the refusal names the leader etcd knows');
    assert.match(refusal.message, /refused the map transaction/);
    // The same fence guards the answers that write nothing (confirmEpoch): refused for a, fine for b.
    await assert.rejects(a.confirmLeadership(), (err: unknown) => {
      assert.ok(err instanceof NotLeaderError, String(err));
      assert.match(err.message, /refused the leadership check/);
      return true;
    });
    await b.confirmLeadership();
    const stored = await b.loadMap();
    assert.equal(stored?.version, 2, 'the stored map is the new leader’s');
    assert.equal(stored?.clusterId, 'cluster-1');
    assert.equal((await a.leader())?.nodeId, 'b');
    void lost; // may or may not have fired yet; the fence does not depend on it
  });

  test('a map in etcd that is not a dstore map is refused, never replaced (S15)', async () => {
    const c = candidate('d', '/dstore/fence-test-3/');
    await c.client.put(c.mapKey).value('{"not":"a map"}');
    await assert.rejects(c.loadMap(), InvalidArgumentError);
    await c.client.put(c.mapKey).value('not json');
    await assert.rejects(c.loadMap(), /is not valid JSON/);
  });

  test('a candidate that never led cannot save', async () => {
    const c = candidate('c', '/dstore/fence-test-2/');
    await assert.rejects(c.saveMap(Nameserver.newMap('x', settings)), NotLeaderError);
    assert.equal(await c.loadMap(), undefined);
  });
});
