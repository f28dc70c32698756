/**
 * Issue 12: a 28-second chaos run of `chaos --ha` — a real 3-member etcd and three `dstore node`
 * processes (storage server + nameserver candidate each, lease TTL 2 s), clients given every
 * candidate as seeds — under the leader faults, seed 7, whose schedule holds one of each:
 * kill-etcd (SIGKILL a member, start it again), kill-leader (SIGKILL the node that leads, start
 * it again), pause-leader (SIGSTOP it past the lease TTL, SIGCONT) and isolate-leader (its relays
 * to etcd drop every byte).
 *
 * Proves: each fault was applied to the node that led when it started (named in the report),
 * the history the clients recorded is linearizable, operations succeeded after the last fault,
 * the cluster settled and every key was read back (verdict OK). Skipped without etcd.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runChaos } from '../../src/chaos/run.js';
import { LEADER_FAULT_KINDS } from '../../src/chaos/schedule.js';
import { ETCD_INSTALL_HINT, findEtcd } from '../../src/process/etcd-server.js';

const skip = findEtcd() === undefined ? `etcd is not installed: ${ETCD_INSTALL_HINT}` : false;

test('a 28 s chaos --ha run with the leader faults (seed 7): every fault applied, linearizable, recovered', {
  skip,
  timeout: 240_000,
}, async () => {
  const result = await runChaos(
    {
      durationS: 28,
      seed: 7,
      clients: 5,
      keys: 10,
      nodes: 3,
      partitions: 8,
      replicas: 3,
      backend: 'lmdb',
      networkFaults: false,
      faults: LEADER_FAULT_KINDS,
      ratePerSec: 100,
      timeoutMs: 5000,
      attemptTimeoutMs: 1000,
      heartbeatMs: 250,
      deadAfterMs: 2000,
      settleTimeoutMs: 30_000,
      checkBudgetMs: 10_000,
      deleteExisted: true,
      keep: false,
      logLevel: 'info',
      ha: true,
      leaseTtlMs: 2000,
    },
    () => undefined,
  );
  for (const line of result.report.split('\n')) console.log(`# ${line}`);
  assert.equal(result.verdict, 'ok', `verdict ${result.verdict}:\n${result.report}`);
  for (const kind of LEADER_FAULT_KINDS) {
    const applied = result.faults.filter((f) => f.kind === kind);
    assert.ok(applied.length > 0, `no ${kind} in the run:\n${result.report}`);
    for (const f of applied) {
      assert.equal(f.note, undefined, `${kind} was not applied cleanly (${f.note}):\n${result.report}`);
      const targets = kind === 'kill-etcd' ? ['m1', 'm2', 'm3'] : ['n1', 'n2', 'n3'];
      assert.ok(targets.includes(f.target ?? ''), `${kind} names its target, got ${f.target}`);
    }
  }
  for (const f of result.faults.filter((x) => x.kind === 'pause-leader' || x.kind === 'isolate-leader'))
    assert.ok((f.endMs ?? 0) - f.startMs > 2000, `${f.kind} outlasted the 2 s lease TTL: ${JSON.stringify(f)}`);
  assert.ok(result.settle.ok, `the cluster did not settle after healing:\n${result.report}`);
  const ok = result.ops.filter((o) => o.status === 'ok');
  assert.ok(ok.length > 500, `${ok.length} operations succeeded`);
  const lastFaultEnd = Math.max(...result.faults.map((f) => f.endMs ?? 0));
  const afterFaults = ok.filter(
    (o) => !String(o.client).startsWith('final-') && o.invoke - result.loadStartMs > lastFaultEnd,
  );
  assert.ok(afterFaults.length > 0, 'operations succeeded after the last fault');
});
