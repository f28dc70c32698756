/**
 * A 30-second chaos run on real processes, as CI runs it (issue 5): a nameserver and 3 lmdb
 * storage servers, 5 clients on 10 keys, seed 7, whose schedule holds one fault of every
 * kind — a nameserver restart, a SIGKILL and restart, an isolated storage server, a
 * SIGSTOP/SIGCONT and a split (the network kinds only as root; without root they are
 * skipped and the run says so).
 *
 * Proves: the history the clients recorded under those faults (deletes with whether they
 * found their key) is linearizable; faults were really injected; operations succeeded, also
 * after the faults; the cluster settled after healing (every server alive, R members per
 * partition, every primary serving) and every key read back. The report is printed (`# …`).
 * Every process and namespace is removed by the run itself, also when it fails.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runChaos } from '../../src/chaos/run.js';
import type { FaultKind } from '../../src/chaos/schedule.js';
import { findRedisServer } from '../../src/process/redis-server.js';

/** The kinds of issue 5, so seed 7's schedule stays the one this test was written for. */
const FAULT_KINDS: readonly FaultKind[] = ['kill', 'pause', 'restart-nameserver', 'isolate', 'split'];

test('a 30 s chaos run (seed 7): linearizable, faults injected, operations succeed, the cluster recovers', {
  timeout: 240_000,
}, async () => {
  const lines: string[] = [];
  const result = await runChaos(
    {
      durationS: 30,
      seed: 7,
      clients: 5,
      keys: 10,
      nodes: 3,
      partitions: 8,
      replicas: 3,
      backend: 'lmdb',
      networkFaults: true,
      faults: FAULT_KINDS,
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
    },
    (line) => lines.push(line),
  );
  for (const line of result.report.split('\n')) console.log(`# ${line}`);
  assert.equal(result.verdict, 'ok', `verdict ${result.verdict}:\n${result.report}`);
  assert.ok(result.settle.ok, `the cluster did not settle after healing:\n${result.report}`);
  assert.ok(result.faults.length >= 4, `faults injected: ${result.faults.length}`);
  assert.ok(
    result.faults.some((f) => f.kind === 'kill' && !f.note),
    'a storage server was killed and restarted',
  );
  assert.ok(
    result.faults.some((f) => f.kind === 'pause' && !f.note),
    'a node was paused',
  );
  if (!result.networkSkipped)
    assert.ok(
      result.faults.some((f) => f.kind === 'isolate' || f.kind === 'split'),
      'the network was partitioned',
    );
  const ok = result.ops.filter((o) => o.status === 'ok');
  assert.ok(ok.length > 500, `${ok.length} operations succeeded`);
  const lastFaultEnd = Math.max(...result.faults.map((f) => f.endMs ?? 0));
  const afterFaults = ok.filter(
    (o) => !String(o.client).startsWith('final-') && o.invoke - result.loadStartMs > lastFaultEnd,
  );
  assert.ok(result.plan.every((f) => FAULT_KINDS.includes(f.kind)));
  assert.ok(afterFaults.length > 0, 'operations succeeded after the last fault');
});

/**
 * Issue 9: a 25-second chaos run on the redis backend (one redis-server per storage server)
 * with full disks: each storage server's data dir (its Redis' files included) is a small
 * tmpfs that the nemesis fills and frees, besides kills and pauses. Proves: linearizable,
 * no storage server exited on its own (a full disk made it unhealthy, not dead), the disk
 * was really filled (as root), and the cluster settled after the space was freed.
 * Skips when redis-server is not installed; without root the disk-full faults are skipped
 * by the run itself and it says so.
 */
test('a 25 s chaos run on redis with full disks (seed 11): linearizable, no node dies, the cluster recovers', {
  timeout: 240_000,
  skip: findRedisServer() === undefined ? 'redis-server is not installed' : false,
}, async () => {
  const result = await runChaos(
    {
      durationS: 25,
      seed: 11,
      clients: 5,
      keys: 10,
      nodes: 3,
      partitions: 8,
      replicas: 3,
      backend: 'redis',
      networkFaults: false,
      faults: ['disk-full', 'kill', 'pause'],
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
    },
    () => undefined,
  );
  for (const line of result.report.split('\n')) console.log(`# ${line}`);
  assert.equal(result.verdict, 'ok', `verdict ${result.verdict}:\n${result.report}`);
  assert.deepEqual(result.unexpectedExits, [], 'no node exited on its own');
  if (result.diskSkipped) console.log(`# disk-full faults skipped: ${result.diskSkipped}`);
  else
    assert.ok(
      result.faults.some((f) => f.kind === 'disk-full' && /MiB filler/.test(f.note ?? '')),
      `a disk was filled:\n${result.report}`,
    );
});

/**
 * Issue 14: the CAS workload. Every key is a counter that 5 clients increment by
 * compare-and-set (a get, then a put with the version read) under kills, SIGTERM stops (the
 * graceful hand-off, issue 15), pauses and network partitions. Proves: the history (gets and CAS puts) is linearizable, every counter's final
 * value lies within [acknowledged, acknowledged + unknown] increments (none lost, none
 * doubled), and clients really raced (some CAS failed their condition).
 */
test('a 25 s chaos run of CAS counters (seed 21): no increment lost or doubled, linearizable', {
  timeout: 240_000,
}, async () => {
  const result = await runChaos(
    workloadRun({ seed: 21, keys: 4, faults: ['kill', 'pause', 'isolate', 'stop'], workload: 'cas' }),
    () => undefined,
  );
  for (const line of result.report.split('\n')) console.log(`# ${line}`);
  assert.equal(result.verdict, 'ok', `verdict ${result.verdict}:\n${result.report}`);
  assert.match(result.report, /counters \(cas workload\): 4 keys, .* every counter within/);
  const cas = result.ops.filter((o) => o.op === 'cas');
  const acked = cas.filter((o) => o.status === 'ok').length;
  assert.ok(acked > 200, `${acked} increments acknowledged`);
  assert.ok(
    cas.some((o) => o.status === 'fail' && o.error === 'CONDITION_FAILED'),
    'clients raced: some CAS lost to another',
  );
  assert.ok(result.faults.length >= 3, `faults injected:\n${result.report}`);
  // Issue 15: a SIGTERM, under the other faults: the server hands its roles over first.
  assert.ok(
    result.faults.some((f) => f.kind === 'stop' && !f.note),
    `a storage server was stopped with SIGTERM:\n${result.report}`,
  );
});

/**
 * Issue 14: the bank workload. Every key is an account opening with 100; 5 clients transfer
 * money between two accounts and audit every account, each in a transaction (two-phase
 * commit across partitions), under kills, pauses and network partitions. Proves: every audit
 * and the final reads see the total (transfers are atomic, audits see no half of one), every
 * account's history is linearizable, and transfers and audits commit.
 */
test('a 25 s chaos run of bank transfers in transactions (seed 31): the total never changes', {
  timeout: 240_000,
}, async () => {
  const result = await runChaos(
    workloadRun({ seed: 31, keys: 6, faults: ['kill', 'pause', 'isolate', 'split'], workload: 'bank' }),
    () => undefined,
  );
  for (const line of result.report.split('\n')) console.log(`# ${line}`);
  assert.equal(result.verdict, 'ok', `verdict ${result.verdict}:\n${result.report}`);
  const bank =
    /bank: (\d+) transfers committed \((\d+) unknown\), (\d+) audits; every audit saw the total 600; the accounts end with 600/.exec(
      result.report,
    );
  assert.ok(bank, `the bank line:\n${result.report}`);
  assert.ok(Number(bank[1]) > 100, `${bank[1]} transfers committed`);
  assert.ok(Number(bank[3]) > 20, `${bank[3]} audits`);
  assert.ok(result.faults.length >= 3, `faults injected:\n${result.report}`);
});

/** A 25 s run of an issue-14 workload: 3 lmdb storage servers, 8 partitions, 5 clients, network faults as root. */
function workloadRun(o: {
  seed: number;
  keys: number;
  faults: readonly FaultKind[];
  workload: 'cas' | 'bank';
}): Parameters<typeof runChaos>[0] {
  return {
    durationS: 25,
    seed: o.seed,
    clients: 5,
    keys: o.keys,
    nodes: 3,
    partitions: 8,
    replicas: 3,
    backend: 'lmdb',
    networkFaults: true,
    faults: o.faults,
    ratePerSec: 100,
    timeoutMs: 5000,
    attemptTimeoutMs: 1000,
    heartbeatMs: 250,
    deadAfterMs: 2000,
    settleTimeoutMs: 30_000,
    checkBudgetMs: 10_000,
    deleteExisted: true,
    workload: o.workload,
    keep: false,
    logLevel: 'info',
  };
}
