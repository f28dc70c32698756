/**
 * Issue 15: the nameserver's overview (the dashboard's and `dstore top`'s data) from maps and
 * heartbeats: the nodes with heartbeat age and calls, the partition map with lag, the events
 * derived from map changes and liveness, the calls' series; and the storage server's report.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Nameserver } from '../../src/core/nameserver/nameserver.js';
import { epoch, nodeId, partitionId } from '../../src/core/types.js';
import { NameserverHost } from '../../src/nameserver/host.js';
import { aggregate, mergeReports, ClusterWatch, configEvents, MAX_EVENTS } from '../../src/nameserver/overview.js';
import type { ClusterOverview, NameserverRequest, OpsReport } from '../../src/rpc/messages.js';
import { OpStats, opKindOf } from '../../src/storageserver/op-stats.js';

const settings = { partitions: 2, replicas: 2, minWriteReplicas: 1, initialNodes: 2 };
const opts = { settings, deadAfterMs: 1000, rereplicateAfterMs: 60_000 };

function register(id: string): NameserverRequest {
  return {
    t: 'register',
    nodeId: id,
    address: `127.0.0.1:${7000 + Number(id.slice(1))}`,
    backend: 'memory',
    incarnation: `i-${id}`,
    durable: true,
  };
}

function heartbeat(
  id: string,
  lastSeq: number,
  ops?: OpsReport,
  roles: Record<number, string> = {},
): NameserverRequest {
  return {
    t: 'heartbeat',
    nodeId: id,
    incarnation: `i-${id}`,
    uptimeMs: 5000,
    keys: 3,
    progress: [0, 1].map((p) => ({
      partition: p,
      epoch: 1,
      role: roles[p] ?? 'secondary',
      lastSeq,
      lastEpoch: 1,
      commitSeq: lastSeq,
      appliedSeq: lastSeq,
      serving: roles[p] === 'primary',
    })),
    ...(ops === undefined ? {} : { ops }),
  } as NameserverRequest;
}

function overview(host: NameserverHost, now: number): ClusterOverview {
  const { reply } = host.onRequest({ t: 'overview' }, now);
  assert.ok(reply.ok);
  return reply.value as ClusterOverview;
}

describe('overview', () => {
  test('nodes, partition map with lag, events from registration to failover, series', () => {
    const host = new NameserverHost(Nameserver.newMap('c', settings), true, opts, 0);
    host.onRequest(register('s1'), 10);
    host.onRequest(register('s2'), 20);
    let o = overview(host, 30);
    assert.equal(o.formed, true);
    assert.equal(o.partitions.length, 2);
    const p0 = o.partitions[0]!;
    const primary = p0.primary;
    const other = primary === 's1' ? 's2' : 's1';
    assert.deepEqual(p0.secondaries, [other]);
    assert.deepEqual(
      o.events.map((e) => e.kind),
      ['registered', 'registered', 'formed'],
    );
    assert.equal(o.settings.replicas, 2);
    assert.equal(o.settings.deadAfterMs, 1000);

    // Heartbeats: the primary of partition 0 is 5 entries ahead of its secondary; calls reported.
    const roles0 = (id: string): Record<number, string> =>
      Object.fromEntries(o.partitions.map((p) => [p.partition, p.primary === id ? 'primary' : 'secondary']));
    const ops = { intervalMs: 1000, reads: 40, writes: 10, errors: 1, p50Ms: 0.5, p99Ms: 4 };
    host.onRequest(heartbeat(primary, 12, ops, roles0(primary)), 500);
    host.onRequest(heartbeat(other, 7, { ...ops, p99Ms: 9 }, roles0(other)), 510);
    host.onTick(1200);
    o = overview(host, 1300);
    const lagged = o.partitions.find((p) => p.primary === primary)!;
    assert.equal(lagged.lastSeq, 12);
    assert.equal(lagged.serving, true);
    assert.deepEqual(lagged.lag, { [other]: 5 });
    const s = o.nodes.find((n) => n.id === primary)!;
    assert.equal(s.state, 'alive');
    assert.equal(s.heartbeatAgeMs, 800);
    assert.equal(s.opsPerSec, 50);
    assert.equal(s.p99Ms, 4);
    assert.equal(o.nodes[0]!.id, 'nameserver');
    const point = o.series.at(-1)!;
    assert.deepEqual(
      { r: point.readsPerSec, w: point.writesPerSec, e: point.errorsPerSec, p99: point.p99Ms, p50: point.p50Ms },
      { r: 80, w: 20, e: 2, p99: 9, p50: 0.5 },
    );

    // The other node stops: dead after --dead-after-ms, and its partitions fail over.
    host.onRequest(heartbeat(primary, 12, ops, roles0(primary)), 1400);
    host.onRequest(heartbeat(primary, 12, ops, roles0(primary)), 2000);
    host.onTick(2100);
    o = overview(host, 2100);
    assert.equal(o.nodes.find((n) => n.id === other)!.state, 'dead');
    const kinds = o.events.map((e) => `${e.kind}:${e.node ?? ''}`);
    assert.ok(kinds.includes(`dead:${other}`), kinds.join(' '));
    const led = o.partitions.filter((p) => p.primary === primary).length;
    assert.equal(led, 2, 'every partition led by the live node');
    assert.ok(
      o.events.some((e) => e.kind === 'failover' && e.node === primary),
      `a failover to ${primary}: ${kinds.join(' ')}`,
    );
    assert.ok(o.events.some((e) => e.kind === 'secondaryRemoved' || e.kind === 'failover'));
    // Back again: alive.
    host.onRequest(register(other), 2200);
    host.onRequest(heartbeat(other, 12), 2300);
    o = overview(host, 2300);
    assert.ok(o.events.some((e) => e.kind === 'alive' && e.node === other) || o.events.at(-1)!.kind === 'registered');
  });

  test('config changes as events: failover, learner added, promotion, secondary removed', () => {
    const c = (primary: string, secondaries: string[], learners: string[], e: number) => ({
      partition: partitionId(3),
      epoch: epoch(e),
      primary: nodeId(primary),
      secondaries: secondaries.map(nodeId),
      learners: learners.map(nodeId),
    });
    assert.deepEqual(
      configEvents(c('s1', ['s2'], [], 1), c('s2', [], ['s3'], 2)).map((e) => `${e.kind}:${e.node}`),
      ['failover:s2', 'learner:s3'],
    );
    assert.deepEqual(
      configEvents(c('s1', ['s2'], ['s3'], 2), c('s1', ['s3'], ['s2'], 3)).map((e) => `${e.kind}:${e.node}`),
      ['learner:s2', 'promotion:s3', 'secondaryRemoved:s2'],
    );
    assert.match(configEvents(c('s1', ['s2'], [], 1), c('s1', [], ['s2'], 2))[1]!.message, /now a learner/);
  });

  test('the event ring keeps the newest MAX_EVENTS; the series sums fresh reports only', () => {
    const w = new ClusterWatch();
    for (let i = 0; i < MAX_EVENTS + 5; i++) w.record({ atMs: i, kind: 'registered', message: `e${i}` });
    const events = w.recentEvents();
    assert.equal(events.length, MAX_EVENTS);
    assert.equal(events[0]!.atMs, 5);
    const r = { intervalMs: 500, reads: 10, writes: 0, errors: 0, p50Ms: 1, p99Ms: 2 };
    w.onOps('s1', r, 0);
    w.onOps('s2', r, 4000);
    w.sample(5000);
    assert.equal(w.series().at(-1)!.readsPerSec, 20, 's1 is stale (> 3 s), s2 counts at 20/s');
    w.sample(5500); // within the step: no point
    assert.equal(w.series().length, 1);
    assert.deepEqual(aggregate([], 1), {
      atMs: 1,
      readsPerSec: 0,
      writesPerSec: 0,
      errorsPerSec: 0,
      p99Ms: 0,
      p50Ms: 0,
    });
  });
});

describe('the series counts every report', () => {
  test('several heartbeats of one node between two points all count; a node silent since the last point keeps its last rate', () => {
    const w = new ClusterWatch();
    w.sample(1000);
    // s1 heartbeats every 250 ms: four reports before the next point, 10 writes each.
    for (let i = 1; i <= 4; i++)
      w.onOps('s1', { intervalMs: 250, reads: 0, writes: 10, errors: 0, p50Ms: i, p99Ms: 10 * i }, 1000 + 250 * i);
    w.sample(2000);
    const p = w.series().at(-1)!;
    assert.equal(p.writesPerSec, 40, '40 writes in 1 s, not the last report alone');
    assert.equal(p.p99Ms, 40);
    assert.equal(p.p50Ms, 2.5);
    w.sample(3000);
    assert.equal(w.series().at(-1)!.writesPerSec, 40, 'no heartbeat since: its last rate while fresh');
    assert.deepEqual(
      mergeReports(
        { intervalMs: 1, reads: 0, writes: 0, errors: 1, p50Ms: 9, p99Ms: 9 },
        {
          intervalMs: 1,
          reads: 1,
          writes: 0,
          errors: 0,
          p50Ms: 2,
          p99Ms: 3,
        },
      ),
      { intervalMs: 2, reads: 1, writes: 0, errors: 1, p50Ms: 2, p99Ms: 3 },
    );
  });
});

describe('storage server call report (OpStats)', () => {
  test('counts, errors and quantiles within 10 %, then a new interval', () => {
    const s = new OpStats(0);
    for (let i = 1; i <= 100; i++) s.record('read', i, false);
    s.record('write', 1000, true, 5);
    const r = s.take(2000);
    assert.equal(r.intervalMs, 2000);
    assert.equal(r.reads, 100);
    assert.equal(r.writes, 5);
    assert.equal(r.errors, 5);
    assert.ok(r.p50Ms >= 50 && r.p50Ms <= 56, `p50 ${r.p50Ms}`);
    assert.ok(r.p99Ms >= 99 && r.p99Ms <= 110, `p99 ${r.p99Ms}`);
    assert.deepEqual(s.take(2500), { intervalMs: 500, reads: 0, writes: 0, errors: 0, p50Ms: 0, p99Ms: 0 });
    assert.equal(opKindOf('getMany'), 'read');
    assert.equal(opKindOf('putMany'), 'write');
    assert.equal(opKindOf('stats'), undefined);
  });
});
