/**
 * A 2-second run of the real `bench:compare` (the compiled command, one caller, 0.3 s cells,
 * 200 keys) against every system installed here, so the benchmark never rots: each system
 * that ran gives a write row and a read row with ops > 0 and a CPU figure, dstore's rows
 * carry their ratios to the peers that ran, and no process it started is left behind. A
 * peer whose binary is missing is skipped with the line saying how to install it.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { before, describe, test } from 'node:test';
import type { CompareReport } from '../../src/bench/report.js';
import { ETCD_INSTALL_HINT, findEtcd } from '../../src/process/etcd-server.js';
import { findRedisServer, REDIS_INSTALL_HINT } from '../../src/process/redis-server.js';
import { runScript, type ScriptResult } from './run-script.js';
import { alive } from '../shared/dstore.js';

const COMPARE = fileURLToPath(new URL('../../src/bench/compare.js', import.meta.url));
const RUN_TIMEOUT_MS = 180_000;
const redisInstalled = findRedisServer() !== undefined;
const etcdInstalled = findEtcd() !== undefined;

function runCompare(args: string[]): Promise<ScriptResult> {
  return runScript(COMPARE, args, RUN_TIMEOUT_MS);
}

describe('bench:compare smoke run', () => {
  let report: CompareReport;
  let stderr = '';

  before(async () => {
    const run = await runCompare(['--json', '--duration', '0.3', '--concurrency', '1', '--keys', '200']);
    stderr = run.stderr;
    assert.equal(run.code, 0, `exit code ${run.code}\n${run.stderr}`);
    report = JSON.parse(run.stdout) as CompareReport;
  });

  const rowsOf = (system: string) => report.rows.filter((r) => r.system === system);

  const assertRan = (system: string): void => {
    const rows = rowsOf(system);
    assert.deepEqual(rows.map((r) => r.op).sort(), ['read', 'write'], stderr);
    for (const r of rows) {
      assert.ok(r.ops > 0, `${system} ${r.op}: no operations\n${stderr}`);
      assert.equal(r.errors, 0, `${system} ${r.op}: ${r.errorSample}`);
      // Measured (the servers' /proc was read): a number. It may be 0 — /proc counts CPU in 10 ms
      // ticks, and a 0.3 s cell of Redis GETs on a loaded machine can stay under one.
      assert.ok(
        typeof r.cpuUsPerOp === 'number' && Number.isFinite(r.cpuUsPerOp) && r.cpuUsPerOp >= 0,
        `${system} ${r.op}: CPU ${r.cpuUsPerOp}`,
      );
      assert.ok(r.p50Ms > 0 && r.p99Ms >= r.p50Ms);
    }
  };

  test('redis+wait', { skip: redisInstalled ? false : `redis-server is not installed: ${REDIS_INSTALL_HINT}` }, () =>
    assertRan('redis+wait'),
  );

  test('etcd', { skip: etcdInstalled ? false : `etcd is not installed: ${ETCD_INSTALL_HINT}` }, () =>
    assertRan('etcd'),
  );

  test('dstore, with its ratios to the peers that ran', () => {
    assertRan('dstore');
    for (const r of rowsOf('dstore')) {
      assert.equal(r.opsVsRedis !== undefined, redisInstalled, `ratio to Redis: ${JSON.stringify(r)}`);
      assert.equal(r.opsVsEtcd !== undefined, etcdInstalled, `ratio to etcd: ${JSON.stringify(r)}`);
      assert.equal(r.p50VsEtcd !== undefined, etcdInstalled);
    }
  });

  test('every server process it started is gone', () => {
    const pids = report.systems.flatMap((s) => s.pids);
    assert.ok(pids.length >= 3);
    assert.deepEqual(pids.filter(alive), []);
  });

  test('a missing peer is skipped with how to install it; load average reported', () => {
    const skipped = report.skipped.map((s) => s.system).sort();
    const expected = [...(redisInstalled ? [] : ['redis+wait']), ...(etcdInstalled ? [] : ['etcd'])].sort();
    assert.deepEqual(skipped, expected);
    for (const s of report.skipped) assert.match(s.reason, /apt-get install/);
    assert.equal(report.loadAverage.start.length, 3);
    assert.equal(report.loadAverage.end.length, 3);
  });
});
