/**
 * Issue 15, live mode switches, against real processes (a nameserver and 3 lmdb storage
 * servers, R=3): `dstore config set|get` round trip, persisted in the cluster map across a
 * nameserver restart; typed refusals (unknown setting, dead-after ≤ 2 × heartbeat,
 * min-write-replicas > R, a weakening switch without --force, a sync switch on lmdb); the
 * log level switched live (a debug line appears in node.log); min-write-replicas raised to 3
 * refuses writes once a node is dead, lowered again with --force lets them go on.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runDstore } from '../shared/dstore.js';
import { LocalCluster, waitFor } from './cluster.js';

const HEARTBEAT_MS = 200;
const DEAD_AFTER_MS = 1500;

describe('live settings (issue 15)', () => {
  let cluster: LocalCluster;
  const cli = async (...args: string[]) => {
    const r = await runDstore([...args, '--nameserver', cluster.nameserverAddress, '--timeout-ms', '5000']);
    return { code: r.code, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
  };

  before(async () => {
    cluster = await LocalCluster.start({
      nodes: 3,
      partitions: 4,
      replicas: 3,
      heartbeatMs: HEARTBEAT_MS,
      deadAfterMs: DEAD_AFTER_MS,
      rereplicateAfterMs: 600_000,
    });
  });
  after(async () => {
    await cluster?.stop();
  });

  test('config get shows the flags of a map without live settings', async () => {
    const r = await cli('config', 'get', '--json');
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout) as { live: Record<string, unknown>; replicas: number };
    assert.equal(got.live.epoch, 0);
    assert.equal(got.live.readMode, 'linearizable');
    assert.equal(got.live.minWriteReplicas, 2);
    assert.equal(got.live.heartbeatMs, HEARTBEAT_MS);
    assert.equal(got.live.deadAfterMs, DEAD_AFTER_MS);
    assert.equal(got.replicas, 3);
  });

  test('bad values and unknown settings are typed refusals (exit 2), nothing recorded', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['config', 'set', 'colour', 'blue'], /unknown setting 'colour'.*INVALID_ARGUMENT/],
      [['config', 'set', 'dead-after-ms', String(2 * HEARTBEAT_MS)], /dead-after-ms must be above 2 × heartbeat-ms/],
      [['config', 'set', 'heartbeat-ms', '1000'], /must stay above 2 × heartbeat-ms/],
      [['config', 'set', 'min-write-replicas', '4'], /min-write-replicas must be an integer from 1 to 3/],
      [['config', 'set', 'read-mode', 'sloppy'], /read-mode must be linearizable or fast/],
      [['config', 'set', 'log-level', 'loud'], /log-level must be one of/],
      [['config', 'set', 'sync', 'none', '--node', 's1', '--force'], /lmdb backend, which cannot switch its sync/],
      [['config', 'set', 'sync', 'none'], /give --node/],
    ];
    for (const [args, pattern] of cases) {
      const r = await cli(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}; ${r.stderr}`);
      assert.match(r.stderr, pattern, args.join(' '));
    }
    const r = await cli('config', 'get', 'read-mode', '--json');
    assert.deepEqual(JSON.parse(r.stdout), { 'read-mode': 'linearizable' });
  });

  test('config set: recorded in the map (epoch, version), persisted across a nameserver restart', async () => {
    const before = await cluster.map();
    let r = await cli('config', 'set', 'read-mode', 'fast');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /read-mode = fast \(live settings epoch 1\)/);
    r = await cli('config', 'set', 'min-write-replicas', '3');
    assert.equal(r.code, 0, r.stderr);
    const mapFile = JSON.parse(readFileSync(join(cluster.dir, 'nameserver', 'cluster-map.json'), 'utf8'));
    assert.equal(mapFile.live.epoch, 2);
    assert.equal(mapFile.live.readMode, 'fast');
    assert.equal(mapFile.live.minWriteReplicas, 3);
    assert.ok(mapFile.version >= before.version + 2, 'every change bumps the map version');
    await cluster.restart('nameserver');
    await cluster.waitFormed(3);
    r = await cli('config', 'get');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /read-mode\s+fast \(reads may be stale\)/);
    assert.match(r.stdout, /min-write-replicas\s+3 \(R=3\)/);
    assert.match(r.stdout, /epoch\s+2 /);
    const nodes = JSON.parse((await cli('nodes', '--json')).stdout) as { readMode: string; minWriteReplicas: number };
    assert.equal(nodes.readMode, 'fast');
    assert.equal(nodes.minWriteReplicas, 3);
    r = await cli('config', 'set', 'read-mode', 'linearizable');
    assert.equal(r.code, 0, r.stderr);
  });

  test('log-level debug switched live: debug lines appear in node.log', async () => {
    const debugLines = (name: string) => cluster.logLines(name, /"level":20,.*"msg":"live settings applied"/);
    assert.deepEqual(debugLines('s1'), [], 'no debug line at info');
    const r = await cli('config', 'set', 'log-level', 'debug');
    assert.equal(r.code, 0, r.stderr);
    await waitFor('a debug line in s1 node.log', () => debugLines('s1').length > 0, 10_000);
    await waitFor('a debug line in the nameserver node.log', () => debugLines('nameserver').length > 0, 10_000);
    assert.equal((await cli('config', 'set', 'log-level', 'info')).code, 0);
  });

  test('min-write-replicas 3 refuses writes with a node dead; lowered with --force they go on', async () => {
    const db = await cluster.client(3000);
    await db.put('before', 'x');
    await cluster.kill('s3');
    await cluster.waitNodeState('s3', 'dead');
    await waitFor(
      'every partition without s3',
      async () => (await cluster.map()).configs.every((c) => c.primary !== 's3' && !c.secondaries.includes('s3')),
      15_000,
    );
    await assert.rejects(db.put('during', 'x'), (err: Error & { code?: string }) => {
      assert.match(`${err.code} ${err.message}`, /UNAVAILABLE|min-write-replicas/);
      return true;
    });
    let r = await cli('config', 'set', 'min-write-replicas', '2');
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /refused without --force: lowering min-write-replicas from 3 to 2 weakens durability: later writes may be acknowledged once 2 replicas hold them/,
    );
    r = await cli('config', 'set', 'min-write-replicas', '2', '--force');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /warning: lowering min-write-replicas/);
    await waitFor(
      'a write acknowledged with min-write-replicas 2',
      async () => {
        await db.put('after', 'y');
        return true;
      },
      15_000,
    );
    assert.equal(Buffer.from((await db.get('after'))!.value).toString(), 'y');
  });
});
