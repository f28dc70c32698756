/**
 * A Redis that goes away (issue 4), on real processes: a nameserver and 3 storage servers on
 * `--backend redis://…`, each with its own redis-server (loopback, AOF with fsync always, as
 * `dstore up --backend redis` starts them), R=3, 16 partitions; heartbeats every 250 ms,
 * dead after 2 s (failures-harness.ts TIMING).
 *
 * Four writers and one probe per partition for 15 s; the redis-server of s2 is SIGKILLed at
 * 4 s and started again (same dir and port, from its AOF) at 9 s: longer than dead-after, so
 * s2 is removed and rejoins as a learner. A second scenario restarts Redis after 1 s, within
 * dead-after: s2 reloads before it is declared dead and rejoins as a restarted node (its
 * primaries fail over, S4; it stays a secondary where its log survived). Each proves:
 * - the storage server does not exit: it reports itself unhealthy (its `stats`, and `nodes`
 *   on the nameserver) while its Redis is down, and healthy (and alive) again after;
 * - every key reads back with its last acknowledged value, or that of a write whose outcome
 *   was unknown (the History check of failures-harness.ts): nothing acknowledged depended
 *   on a write Redis did not confirm;
 * - it rejoins every partition and all replicas converge (same applied seq and key set).
 * Prints (`# …`) the time from the Redis kill to the first acknowledged write on the
 * partitions s2 led and followed, and from the Redis restart to s2 being healthy and to
 * every partition having 3 replicas again. Skips (one line) without redis-server; every
 * process it starts (redis-server included) is stopped and its dirs removed, also on failure.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { RedisServer } from '../../src/process/redis-server.js';
import { REDIS_SKIP, redisInstalled } from '../storage/redis-server.js';
import { LocalCluster, membersOf } from './cluster.js';
import {
  Clock,
  disturbance,
  History,
  keysByPartition,
  reportRecovery,
  TIMING,
  watchReplicated,
  withLogsOnFailure,
  WriteLoad,
} from './failures-harness.js';

const P = 16;
const NODES = ['s1', 's2', 's3'];
const VICTIM = 's2';

interface Observation {
  readonly ms: number;
  /** The victim's state in `nodes` (the nameserver's view), or the error. */
  readonly nodes: string;
  /** The victim's own `stats` health, or the error. */
  readonly health: string;
}

/** Polls the victim's state every 100 ms until stopped; bounded by the test's own timeline. */
function watch(
  cluster: LocalCluster,
  db: Awaited<ReturnType<LocalCluster['client']>>,
): { stop(): Promise<Observation[]> } {
  const seen: Observation[] = [];
  let running = true;
  const loop = (async () => {
    for (let i = 0; running && i < 10_000; i++) {
      const [nodes, health] = await Promise.all([
        db.nodes().then(
          (info) => String(info.nodes.find((n) => n.id === VICTIM)?.state),
          (err: Error) => `error: ${err.message}`,
        ),
        cluster.stats(VICTIM, 1000).then(
          (s) => String((s as unknown as { health?: { state?: string } }).health?.state),
          (err: Error) => `error: ${err.message}`,
        ),
      ]);
      seen.push({ ms: Date.now(), nodes, health });
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return seen;
    },
  };
}

const skip = redisInstalled ? false : REDIS_SKIP;

test(
  'the Redis of a storage server SIGKILLed at 4 s and restarted at 9 s under 4 writers: it goes unhealthy, recovers ' +
    'in place, nothing acknowledged is lost, replicas converge',
  { skip },
  () => scenario({ killAtMs: 4000, restartAtMs: 9000, endAtMs: 15_000 }),
);

test(
  'the Redis of a storage server down for 1 s (within dead-after) under 4 writers: it reloads before it is declared ' +
    'dead, nothing acknowledged is lost, replicas converge',
  { skip },
  () => scenario({ killAtMs: 4000, restartAtMs: 5000, endAtMs: 11_000 }),
);

async function scenario(timeline: { killAtMs: number; restartAtMs: number; endAtMs: number }): Promise<void> {
  const redisDir = mkdtempSync(join(tmpdir(), 'dstore-test-redis-'));
  const redis = new Map<string, RedisServer>();
  try {
    for (const name of NODES) redis.set(name, await RedisServer.start({ dir: join(redisDir, name) }));
    await using cluster = await LocalCluster.start({
      nodes: 3,
      partitions: P,
      replicas: 3,
      ...TIMING,
      backendOf: (name) => `${redis.get(name)!.url}/0`,
    });
    await withLogsOnFailure(cluster, async () => {
      const dbs = [await cluster.client(), await cluster.client()];
      const history = new History(P);
      const keys = keysByPartition(P, 20, 'k').flat();
      const probeKeys = keysByPartition(P, 1, 'probe').map((l) => l[0]!);
      const before = await cluster.map();
      const led = LocalCluster.ledBy(before, VICTIM);
      const followed = LocalCluster.heldBy(before, VICTIM).filter((p) => !led.includes(p));
      const victimRedis = redis.get(VICTIM)!;

      const watcher = watch(cluster, await cluster.client(2000));
      const clock = new Clock();
      const load = new WriteLoad(history, dbs, { writers: 4, keys, probeKeys });
      await clock.at(timeline.killAtMs);
      const killedAt = Date.now();
      victimRedis.kill('SIGKILL');
      await victimRedis.waitExit();
      await clock.at(timeline.restartAtMs);
      const restartedAt = Date.now();
      await victimRedis.restart();
      const rejoin = watchReplicated(cluster, 40_000);
      await clock.at(timeline.endAtMs);
      await load.stop();
      const rejoinedAt = await rejoin.done;
      const seen = await watcher.stop();

      const c = history.counts();
      console.log(
        `# Redis of ${VICTIM} down ${timeline.killAtMs / 1000}-${timeline.restartAtMs / 1000} s of ` +
          `${timeline.endAtMs / 1000} s: ${history.records.length} writes: ${c.ok} acknowledged, ${c.unknown} ` +
          `unknown, ${c.failed} failed (${c.failedCodes.join(',')})`,
      );
      const ledTimes = reportRecovery(history, `SIGKILL redis of ${VICTIM} (primary) -> writes resume`, led, killedAt);
      const followedTimes = reportRecovery(
        history,
        `SIGKILL redis of ${VICTIM} (secondary) -> writes resume`,
        followed,
        killedAt,
      );
      const unhealthyAt = seen.find((o) => o.ms >= killedAt && o.health === 'unhealthy')?.ms;
      const nodesUnhealthyAt = seen.find((o) => o.ms >= killedAt && o.nodes === 'unhealthy')?.ms;
      const healthyAt = seen.find((o) => o.ms >= restartedAt && o.health === 'healthy')?.ms;
      const aliveAt = seen.find((o) => o.ms >= restartedAt && o.nodes === 'alive')?.ms;
      const since = (from: number, at: number | undefined) => (at === undefined ? 'never' : `${at - from} ms`);
      console.log(
        `# redis killed -> ${VICTIM} reports unhealthy: ${since(killedAt, unhealthyAt)} (stats), ` +
          `${since(killedAt, nodesUnhealthyAt)} (nodes)`,
      );
      console.log(
        `# redis restarted -> ${VICTIM} healthy: ${since(restartedAt, healthyAt)}; alive in nodes: ` +
          `${since(restartedAt, aliveAt)}; every partition has 3 replicas again: ${since(restartedAt, rejoinedAt)}`,
      );
      const d = disturbance(history, restartedAt, rejoinedAt ?? Date.now());
      console.log(
        `# while it rejoined: ${d.writes} writes, slowest acknowledged ${d.maxOkMs} ms, ${d.notOk} not acknowledged`,
      );

      // It stayed up, said it was unhealthy while its Redis was down, and recovered.
      assert.ok(cluster.isRunning(VICTIM), `${VICTIM} exited: ${cluster.logTail(VICTIM)}`);
      // Reopening waits for Redis, so it is unhealthy until shortly after the restart.
      assert.ok(
        unhealthyAt !== undefined && unhealthyAt < restartedAt,
        `${VICTIM} never reported unhealthy in stats while its Redis was down`,
      );
      assert.ok(
        nodesUnhealthyAt !== undefined && nodesUnhealthyAt < restartedAt + 1000,
        `nodes never showed ${VICTIM} unhealthy while its Redis was down`,
      );
      assert.ok(healthyAt !== undefined, `${VICTIM} did not become healthy after its Redis came back`);
      assert.ok(cluster.logLines(VICTIM, /storage failed: unhealthy/).length >= 1, 'no "storage failed" log line');
      assert.ok(cluster.logLines(VICTIM, /storage healthy again/).length >= 1, 'no "storage healthy again" log line');

      const violations = await history.check(dbs[0]!);
      assert.deepEqual(violations, [], `history violations:\n${violations.slice(0, 20).join('\n')}`);
      assert.ok(
        [...ledTimes, ...followedTimes].every((t) => t !== undefined),
        `some partition of ${VICTIM} took no write after its Redis was killed`,
      );

      const map = await cluster.waitReplicated(30_000);
      assert.ok(
        map.configs.every((cfg) => membersOf(cfg).includes(VICTIM)),
        `${VICTIM} is not back in every partition`,
      );
      const { keysByNode } = await cluster.waitConverged(dbs[0]!, 30_000);
      console.log(`# converged: keys per server ${JSON.stringify(Object.fromEntries(keysByNode))}`);
      assert.ok(cluster.isRunning(VICTIM), `${VICTIM} exited at the end`);
    });
  } finally {
    await Promise.all([...redis.values()].map((r) => r.stop()));
    rmSync(redisDir, { recursive: true, force: true });
  }
}
