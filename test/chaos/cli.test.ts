/**
 * `dstore chaos` on the command line, without running a cluster: --help explains the
 * options, the fault kinds and the exit codes; bad input is exit code 2 with one line.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { MAIN } from '../integration/cluster.js';

function dstore(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('dstore chaos --help lists the options, the fault kinds and the exit codes', () => {
  const r = dstore(['chaos', '--help']);
  assert.equal(r.status, 0, r.stderr);
  for (const flag of [
    '--duration',
    '--seed',
    '--history',
    '--clients',
    '--keys',
    '--nodes',
    '--backend',
    '--no-partitions',
    '--faults',
    '--partition-count',
  ]) {
    assert.ok(r.stdout.includes(flag), `--help mentions ${flag}`);
  }
  for (const kind of ['kill', 'pause', 'restart-nameserver', 'isolate', 'split', 'disk-full'])
    assert.ok(r.stdout.includes(kind), `--help explains ${kind}`);
  // Issue 9: the redis backend (one redis-server per storage server) and the disk-full fault.
  assert.match(r.stdout.replace(/\s+/g, ' '), /choices: "lmdb", "memory", "redis"/);
  assert.match(r.stdout, /disk-full\s+fill a storage server's data dir/);
  assert.match(r.stdout, /partitions and disk-full faults are skipped with a message/);
  assert.match(r.stdout, /Exit codes: 0 linearizable/);
});

test('dstore chaos refuses bad input with exit code 2', () => {
  const bad = dstore(['chaos', '--faults', 'kill,explode']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown fault kind "explode"/);
  const replicas = dstore(['chaos', '--nodes', '2', '--replicas', '3']);
  assert.equal(replicas.status, 2);
  assert.match(replicas.stderr, /--replicas \(3\) cannot be above --nodes \(2\)/);
  assert.equal(dstore(['chaos', '--duration', '-1']).status, 2);
  const backend = dstore(['chaos', '--backend', 'postgres']);
  assert.equal(backend.status, 2);
  assert.match(backend.stderr, /Allowed choices are lmdb, memory, redis/);
  const disk = dstore(['chaos', '--faults', 'disk-full,flood']);
  assert.equal(disk.status, 2, 'disk-full is a known kind; the bad one is named');
  assert.match(disk.stderr, /unknown fault kind "flood"; the kinds are .*disk-full/);
});
