/**
 * A short run of the real `bench:size` (the compiled command: 2,000 keys, 0.3 s cells, two
 * checkpoints, JSON) so the benchmark never rots: the three phases are there, every cell did
 * operations, each of the 3 storage servers has memory figures from /proc and a data dir, the
 * write ratio is given, and no server process is left behind. Also the /proc status parser.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, describe, test } from 'node:test';
import { dirUsage, parseStatusMemory } from '../../src/bench/proc-mem.js';
import type { ServerSample, SizeReport } from '../../src/bench/size.js';
import { runScript, type ScriptResult } from './run-script.js';
import { alive } from '../shared/dstore.js';

const SIZE = fileURLToPath(new URL('../../src/bench/size.js', import.meta.url));
const RUN_TIMEOUT_MS = 180_000;
const hasProc = existsSync('/proc/self/status');

function runSize(args: string[]): Promise<ScriptResult> {
  return runScript(SIZE, args, RUN_TIMEOUT_MS);
}

describe('bench:size smoke run', { skip: hasProc ? false : 'needs Linux /proc for the memory figures' }, () => {
  let report: SizeReport;
  let stderr = '';

  before(async () => {
    const run = await runSize(['--keys', '2000', '--duration', '0.3', '--checkpoints', '2', '--json']);
    stderr = run.stderr;
    assert.equal(run.code, 0, `exit code ${run.code}\n${run.stderr}`);
    report = JSON.parse(run.stdout) as SizeReport;
  });

  const assertServers = (servers: readonly ServerSample[], where: string): void => {
    assert.deepEqual(
      servers.map((s) => s.name),
      ['s1', 's2', 's3'],
      where,
    );
    for (const s of servers) {
      for (const f of ['vmRssMiB', 'rssAnonMiB', 'rssFileMiB', 'vmHwmMiB', 'dataDirMiB', 'lmdbFileMiB'] as const) {
        const v = s[f];
        assert.ok(v !== null && v > 0, `${where} ${s.name} ${f} = ${v}\n${stderr}`);
      }
    }
  };

  test('the empty and full phases: cells with operations, memory of 3 servers', () => {
    const { empty, full } = report.phases;
    assert.equal(empty.keysHeld, 2000);
    assert.equal(full.keysHeld, 2000);
    assert.deepEqual(
      empty.cells.map((c) => c.op),
      ['write'],
    );
    assert.deepEqual(
      full.cells.map((c) => c.op),
      ['write', 'read'],
    );
    for (const c of [...empty.cells, ...full.cells]) {
      assert.ok(c.ops > 0 && c.opsPerSec > 0, `${c.op}: no operations\n${stderr}`);
      assert.equal(c.errors, 0, `${c.op}: ${c.errorSample}`);
      assert.ok(c.p50Ms > 0 && c.p99Ms >= c.p50Ms);
    }
    assertServers(empty.servers, 'empty');
    assertServers(full.servers, 'full');
  });

  test('the load: two checkpoints, the last at every key, memory and data dir at each', () => {
    const { load } = report.phases;
    assert.equal(load.keys, 2000);
    assert.deepEqual(
      load.checkpoints.map((c) => c.keysLoaded),
      [1000, 2000],
    );
    for (const cp of load.checkpoints) {
      assert.ok(cp.keysPerSec > 0);
      assertServers(cp.servers, `checkpoint ${cp.keysLoaded}`);
    }
    assert.match(stderr, /checkpoint 1,000 keys/);
  });

  test('the verdicts: write ratio and anon growth per server', () => {
    const v = report.verdicts;
    assert.ok(v.writeRatio !== null && v.writeRatio > 0, `ratio ${v.writeRatio}`);
    assert.equal(v.writeRatioGoal, 0.8);
    assert.deepEqual(v.growthBetweenKeys, [1000, 2000]);
    assert.deepEqual(
      v.anonGrowthMiBPer1MKeys.map((g) => g.name),
      ['s1', 's2', 's3'],
    );
    for (const g of v.anonGrowthMiBPer1MKeys) assert.equal(typeof g.miB, 'number');
  });

  test('every storage server it started is gone', () => {
    const pids = report.phases.full.servers.map((s) => s.pid);
    assert.equal(pids.length, 3);
    assert.deepEqual(
      pids.filter((pid) => pid !== null && alive(pid)),
      [],
    );
  });
});

describe('proc-mem', () => {
  test('parses the memory fields of /proc/PID/status', () => {
    const status =
      'Name:\tnode\nVmHWM:\t  120000 kB\nVmRSS:\t  102400 kB\nRssAnon:\t   51200 kB\nRssFile:\t   50000 kB\n';
    assert.deepEqual(parseStatusMemory(status), {
      vmRssKiB: 102400,
      rssAnonKiB: 51200,
      rssFileKiB: 50000,
      vmHwmKiB: 120000,
    });
    assert.throws(() => parseStatusMemory('Name:\tnode\nVmRSS:\t 1 kB\n'), /no RssAnon/);
  });

  test('sums a directory like du, with the LMDB data file apart', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstore-proc-mem-'));
    try {
      writeFileSync(join(dir, 'lmdb'), Buffer.alloc(8192, 1));
      writeFileSync(join(dir, 'node.log'), 'x'.repeat(100));
      const u = dirUsage(dir);
      assert.equal(u.apparentBytes, 8292);
      assert.equal(u.lmdbApparentBytes, 8192);
      assert.ok(u.allocatedBytes >= u.lmdbAllocatedBytes && u.lmdbAllocatedBytes > 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
