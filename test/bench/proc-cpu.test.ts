/**
 * The pieces of `bench:compare` that need no peer: the /proc CPU sampler reads a real
 * process's utime + stime (a busy child's CPU goes up; a pid that is gone gives no figure;
 * a command name with blanks and parentheses does not shift the fields), and the report puts
 * each dstore row's ratios against the peers of the same cell into one table.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { clockTicks, parseStatCpuTicks, processCpuUs, sampleCpuUs } from '../../src/bench/proc-cpu.js';
import { type CompareReport, type CompareRow, formatReport, withRatios } from '../../src/bench/report.js';

const hasProc = existsSync('/proc/self/stat');

describe('proc CPU sampler', { skip: hasProc ? false : 'no /proc (not Linux)' }, () => {
  test('parses utime + stime after the command name, whatever it holds', () => {
    // Fields 14 and 15 (utime 250, stime 70) after a comm with a blank and a ')'.
    const stat = '4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 70 0 0 20 0 3 0 100 1000 50';
    assert.equal(parseStatCpuTicks(stat), 320);
    assert.throws(() => parseStatCpuTicks('garbage'), /not a \/proc/);
    assert.ok(clockTicks() > 0);
  });

  test("a busy child's CPU goes up; a pid that is gone gives no figure", async () => {
    const child = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
    try {
      const pid = child.pid;
      assert.ok(pid !== undefined);
      const before = processCpuUs(pid);
      const deadline = Date.now() + 20_000;
      let after = before;
      // At least 100 ms of CPU: many clock ticks, so not a rounding artefact.
      while (after - before < 100_000) {
        assert.ok(Date.now() < deadline, `the busy child used only ${after - before} µs of CPU in 20 s`);
        await sleep(50);
        after = processCpuUs(pid);
      }
      assert.equal(sampleCpuUs([pid, process.pid]) !== undefined, true);
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
      assert.equal(sampleCpuUs([pid]), undefined);
    } finally {
      child.kill('SIGKILL');
    }
  });
});

const row = (system: string, op: 'write' | 'read', concurrency: number, opsPerSec: number, p50Ms: number) =>
  ({
    system,
    op,
    concurrency,
    ops: opsPerSec * 5,
    elapsedS: 5,
    opsPerSec,
    p50Ms,
    p99Ms: p50Ms * 3,
    cpuUsPerOp: 40,
    errors: 0,
  }) satisfies CompareRow;

describe('bench:compare report', () => {
  test('dstore rows get ops/s ratios of the same cell, and p50 vs etcd at C=1', () => {
    const rows = withRatios([
      row('redis+wait', 'write', 1, 4000, 0.25),
      row('etcd', 'write', 1, 1000, 1),
      row('redis+wait', 'write', 64, 20_000, 3),
      row('dstore', 'write', 1, 2000, 0.5),
      row('dstore sync=none', 'write', 64, 10_000, 6),
      row('dstore', 'read', 1, 500, 2), // no peer ran reads
    ]);
    const [, etcd, , d1, d64, dRead] = rows;
    assert.equal(etcd?.opsVsRedis, undefined); // only dstore rows carry ratios
    assert.equal(d1?.opsVsRedis, 0.5);
    assert.equal(d1?.opsVsEtcd, 2);
    assert.equal(d1?.p50VsEtcd, 0.5);
    assert.equal(d64?.opsVsRedis, 0.5);
    assert.equal(d64?.opsVsEtcd, undefined); // etcd did not run C=64
    assert.equal(d64?.p50VsEtcd, undefined); // only at C=1
    assert.equal(dRead?.opsVsRedis, undefined);

    const report: CompareReport = {
      config: { durationS: 5, keys: 10_000, valueSize: 100, concurrency: [1, 64], ops: ['write', 'read'] },
      loadAverage: { start: [1, 0.5, 0.25], end: [2, 1, 0.5] },
      systems: [{ name: 'dstore', description: 'dstore: nameserver excluded', pids: [1] }],
      skipped: [{ system: 'etcd', reason: 'etcd is not installed: install it with `apt-get install etcd-server`' }],
      rows,
    };
    const text = formatReport(report);
    const lines = text.split('\n');
    const dstoreLine = lines.find((l) => l.startsWith('dstore ') && / 1 /.test(l) && l.includes('write'));
    assert.ok(dstoreLine, text);
    assert.match(dstoreLine, /2,000 +0\.50 +1\.50 +40 +0 +0\.50× +2\.00× +0\.50×$/);
    assert.match(text, /load average at start 1\.00 0\.50 0\.25, at end 2\.00 1\.00 0\.50/);
    assert.match(text, /skipped etcd: .*apt-get install etcd-server/);
    assert.match(text, /nameserver excluded/);
    // One header and one line per row, all columns aligned: every table line is as wide as the header.
    const header = lines.findIndex((l) => l.startsWith('system'));
    assert.ok(header >= 0);
    assert.equal(lines.slice(header + 1, header + 1 + rows.length).length, rows.length);
  });
});
