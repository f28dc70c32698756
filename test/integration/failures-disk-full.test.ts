/**
 * A full disk does not kill a storage server (issue 9), on a real small filesystem: s1's data
 * dir is a 24 MiB tmpfs; under write load (small writes on every partition, plus 64 KiB
 * values so its lmdb file must grow) a filler file takes every free byte. Proves:
 * - s1 stays up (its process runs, it answers `stats` as unhealthy) instead of exiting on
 *   lmdb's unhandled commit rejection, and `nodes` shows it unhealthy;
 * - every partition it led gets a new primary at once: measured from the fill, and asserted
 *   well under --dead-after-ms (10 s here), by awaiting the map, not by sleeping;
 * - once the filler is removed, s1 reopens its backend and rejoins by itself (healthy,
 *   every partition back at R serving replicas with s1 a member);
 * - no acknowledged write is lost (every key read back, History.check: S9).
 * Skips with one line when a tmpfs cannot be mounted here (not root, not Linux).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SmallFs, smallFsUnavailableReason } from '../../src/process/small-fs.js';
import { LocalCluster, membersOf, waitFor } from './cluster.js';
import { History, WriteLoad, keysByPartition, withLogsOnFailure } from './failures-harness.js';

const SKIP = smallFsUnavailableReason('the disk-full test');
const FS_BYTES = 24 * 1024 * 1024;
const DEAD_AFTER_MS = 10_000;
const HEARTBEAT_MS = 250;
const PARTITIONS = 4;

interface Stats {
  readonly health: { readonly state: 'healthy' | 'unhealthy'; readonly reason?: string };
}

test('a full disk makes a storage server unhealthy, failed over at once; it rejoins when space is freed, losing no ' +
  'acknowledged write', {
  skip: SKIP ?? false,
  timeout: 180_000,
}, async () => {
  let fs: SmallFs | undefined;
  await using cluster = await LocalCluster.start({
    partitions: PARTITIONS,
    heartbeatMs: HEARTBEAT_MS,
    deadAfterMs: DEAD_AFTER_MS,
    setupDataDir: (name, dir) => {
      if (name !== 's1') return undefined;
      fs = SmallFs.mount(dir, FS_BYTES);
      return () => fs!.unmount();
    },
  });
  await withLogsOnFailure(cluster, async () => {
    assert.ok(fs, 's1 has its small filesystem');
    const map0 = await cluster.waitReplicated(30_000);
    const led = LocalCluster.ledBy(map0, 's1');
    assert.ok(led.length > 0, `s1 leads no partition in ${JSON.stringify(map0.configs)}`);

    const history = new History(PARTITIONS);
    const dbs = [await cluster.client(), await cluster.client()];
    const keys = keysByPartition(PARTITIONS, 16).flat();
    const load = new WriteLoad(history, dbs, { writers: 6, keys });
    // Large values on s1's partitions: its lmdb file has to grow, so the fill bites at once.
    const bigKeys = keysByPartition(PARTITIONS, 64, 'big')
      .filter((_, p) => led.includes(p))
      .flat();
    const big = Buffer.alloc(64 * 1024, 0x61);
    let bulkRunning = true;
    const bulk = (async () => {
      for (let i = 0; bulkRunning; i++) {
        try {
          await dbs[0]!.put(bigKeys[i % bigKeys.length]!, big);
        } catch {
          // refused while failing over: the check below covers the small keys
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    })();
    try {
      await waitFor('some acknowledged writes before the fill', () => history.counts().ok >= 50, 20_000, 50);

      const fillMs = Date.now();
      const filled = fs.fill();
      console.log(`# filled s1's data dir with ${filled} bytes; ${fs.freeBytes()} bytes free`);

      // Unhealthy, still running and answering, and failed over at once.
      const unhealthy = await waitFor(
        's1 to report itself unhealthy',
        async () => {
          assert.ok(cluster.isRunning('s1'), `s1 exited: ${cluster.logTail('s1')}`);
          const st = (await cluster.stats('s1', 2000)) as unknown as Stats;
          return st.health.state === 'unhealthy' ? st.health : undefined;
        },
        20_000,
        50,
      );
      console.log(`# s1 unhealthy after ${Date.now() - fillMs} ms: ${unhealthy.reason}`);
      const failedOver = await waitFor(
        'every partition s1 led to have another primary',
        async () => {
          const map = await cluster.map(2000);
          return led.every((p) => map.configs[p]!.primary !== 's1' && !membersOf(map.configs[p]!).includes('s1'))
            ? map
            : undefined;
        },
        DEAD_AFTER_MS,
        20,
      );
      const failoverMs = Date.now() - fillMs;
      console.log(
        `# partitions ${led.join(',')} failed over ${failoverMs} ms after the fill (dead-after ${DEAD_AFTER_MS} ms); ` +
          `new primaries ${led.map((p) => failedOver.configs[p]!.primary).join(',')}`,
      );
      assert.ok(
        failoverMs < DEAD_AFTER_MS / 2,
        `failover took ${failoverMs} ms, not well under --dead-after-ms ${DEAD_AFTER_MS}`,
      );
      const db = dbs[1]!;
      const info = await db.nodes();
      assert.equal(info.nodes.find((n) => n.id === 's1')?.state, 'unhealthy', `nodes: ${JSON.stringify(info.nodes)}`);
      const okAtFailover = history.counts().ok;
      await waitFor(
        'writes acknowledged after the failover',
        () => history.counts().ok >= okAtFailover + 50,
        20_000,
        50,
      );
      assert.ok(cluster.isRunning('s1'), 's1 still runs while its disk is full');

      // Space freed: s1 reopens and rejoins by itself.
      const freeMs = Date.now();
      fs.free();
      await waitFor(
        's1 to be healthy again',
        async () => {
          assert.ok(cluster.isRunning('s1'), `s1 exited: ${cluster.logTail('s1')}`);
          const st = (await cluster.stats('s1', 2000)) as unknown as Stats;
          return st.health.state === 'healthy';
        },
        30_000,
        50,
      );
      const healthyMs = Date.now() - freeMs;
      const map = await cluster.waitReplicated(60_000);
      const rejoinMs = Date.now() - freeMs;
      assert.ok(
        map.configs.every((c) => membersOf(c).includes('s1')),
        `s1 is not back in every partition: ${JSON.stringify(map.configs)}`,
      );
      console.log(`# space freed: s1 healthy after ${healthyMs} ms, every partition at R with s1 after ${rejoinMs} ms`);
      const okAtRejoin = history.counts().ok;
      await waitFor('writes acknowledged after s1 rejoined', () => history.counts().ok >= okAtRejoin + 50, 20_000, 50);
    } finally {
      bulkRunning = false;
      await load.stop();
      await bulk;
    }
    const counts = history.counts();
    console.log(
      `# writes: ${counts.ok} acknowledged, ${counts.failed} failed (${counts.failedCodes.join(',')}), ` +
        `${counts.unknown} unknown`,
    );
    const violations = await history.check(dbs[1]!);
    assert.deepEqual(violations, [], `acknowledged writes lost or wrong:\n${violations.slice(0, 20).join('\n')}`);
    assert.ok(cluster.isRunning('s1'), 's1 ran throughout');
    assert.ok(cluster.logLines('s1', /storage failed: unhealthy/).length > 0, 's1 logged its storage failure');
  });
});
