#!/usr/bin/env node
// The disk path's floor (docs/benchmarks.md, issue 11): CPU and latency of the LMDB
// transactions a storage server commits, without dstore around them.
//
//   node scripts/bench-lmdb.mjs [txns] [writes-per-txn]      (defaults 400 and 60)
//
// Each "write" is what a replica's batch does for one acknowledged write: a log put, a data
// put (a random key of 16 × 700) and the delete of an old log entry, 120-byte values, one
// LMDB write transaction per batch. Modes, run one after another in fresh environments:
//   sync          what dstore does with --sync batch (the commit fsyncs)
//   sync+child    the same with a child transaction per write (dstore uses one per batch)
//   overlapping   lmdb-js overlappingSync (commit visible before the flush; awaited serially)
//   nosync        no fsync at all (dstore --sync none): not durable
//   nosync+wal    no LMDB fsync, plus the batch's bytes appended to a file and fdatasync'ed:
//                 the shape of a write-ahead log beside LMDB (see docs/benchmarks.md)
// and last, with no LMDB at all: one 4 KiB append plus fdatasync per transaction (the price
// of one sync on this machine; per write = per transaction ÷ writes-per-txn).
// Prints per mode: user and system CPU µs per write (process.cpuUsage) and the p50 of one
// transaction, in ms. Writes into a temporary directory that it removes.
import { closeSync, fdatasync, fdatasyncSync, mkdtempSync, openSync, rmSync, write, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { open } from 'lmdb';

const TXNS = Number(process.argv[2] ?? 400);
const PER_TXN = Number(process.argv[3] ?? 60);
const PARTITIONS = 16;
const KEYS = 700;
const LOG_KEEP = 200;
const fdatasyncAsync = promisify(fdatasync);
const writeAsync = promisify(write);

const MODES = {
  sync: { overlappingSync: false },
  'sync+child': { overlappingSync: false },
  overlapping: { overlappingSync: true, separateFlushed: true },
  writemap: { overlappingSync: false, useWritemap: true },
  nometasync: { overlappingSync: false, noMetaSync: true },
  nosync: { noSync: true },
  'nosync+wal': { noSync: true },
};

function key(p, tag, n) {
  const b = Buffer.alloc(12);
  b.writeUInt32BE(p, 0);
  b.writeUInt32BE(tag, 4);
  b.writeUInt32BE(n, 8);
  return b;
}

async function run(mode, dir) {
  const env = open({ path: join(dir, 'lmdb'), maxDbs: 4, eventTurnBatching: false, ...MODES[mode] });
  const data = env.openDB({ name: 'data', keyEncoding: 'binary', encoding: 'binary' });
  const log = env.openDB({ name: 'log', keyEncoding: 'binary', encoding: 'binary' });
  const value = Buffer.alloc(120, 7);
  await env.transaction(() => {
    for (let p = 0; p < PARTITIONS; p++) for (let i = 0; i < KEYS; i++) data.put(key(p, 1, i), value);
  });
  const wal = mode === 'nosync+wal' ? openSync(join(dir, 'wal'), 'w') : undefined;
  let seq = 0;
  const one = () => {
    const p = (Math.random() * PARTITIONS) | 0;
    seq++;
    log.put(key(p, 0, seq), value);
    data.put(key(p, 1, (Math.random() * KEYS) | 0), value);
    if (seq > LOG_KEEP) log.remove(key(p, 0, seq - LOG_KEEP));
  };
  const latencies = [];
  const cpu0 = process.cpuUsage();
  for (let t = 0; t < TXNS; t++) {
    const start = performance.now();
    await env.transaction(() => {
      for (let w = 0; w < PER_TXN; w++) {
        if (mode === 'sync+child') data.transactionSync(one);
        else one();
      }
    });
    if (wal !== undefined) {
      await writeAsync(wal, Buffer.alloc(PER_TXN * 140, 1));
      await fdatasyncAsync(wal);
    }
    latencies.push(performance.now() - start);
  }
  const cpu = process.cpuUsage(cpu0);
  if (wal !== undefined) closeSync(wal);
  await env.close();
  latencies.sort((a, b) => a - b);
  const writes = TXNS * PER_TXN;
  const row = [
    mode.padEnd(12),
    (cpu.user / writes).toFixed(1).padStart(8),
    (cpu.system / writes).toFixed(1).padStart(8),
    latencies[latencies.length >> 1].toFixed(2).padStart(8),
  ];
  console.log(row.join(' '));
}

console.log(`${TXNS} transactions of ${PER_TXN} writes each (log put + data put + log delete, 120-byte values)`);
console.log('mode         user µs/w  sys µs/w  txn p50 ms');
function syncOnly(dir) {
  const fd = openSync(join(dir, 'log'), 'w');
  const page = Buffer.alloc(4096, 1);
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  for (let t = 0; t < TXNS; t++) {
    writeSync(fd, page);
    fdatasyncSync(fd);
  }
  const wallUs = ((performance.now() - start) * 1000) / TXNS;
  const cpu = process.cpuUsage(cpu0);
  closeSync(fd);
  const per = (us) => `${(us / TXNS).toFixed(0)} µs`;
  console.log(
    `append 4 KiB + fdatasync: wall ${wallUs.toFixed(0)} µs, user ${per(cpu.user)}, sys ${per(cpu.system)} each`,
  );
}

for (const mode of Object.keys(MODES)) {
  const dir = mkdtempSync(join(tmpdir(), 'dstore-bench-lmdb-'));
  try {
    await run(mode, dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const dir = mkdtempSync(join(tmpdir(), 'dstore-bench-lmdb-'));
try {
  syncOnly(dir);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
