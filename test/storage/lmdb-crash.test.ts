/**
 * The lmdb backend (format 3) killed with SIGKILL while it writes: a batch resolves once its
 * log half is durable, and LMDB commits the applies behind it, so a kill lands between the
 * log's sync and the applies' commit most of the time. A child process (lmdb-crash-child.ts)
 * writes like a replica; the test kills it after a random number of acknowledged batches,
 * several times over the same dir, and after each kill reopens the backend and checks:
 * every acknowledged entry is in the log or applied (nothing acknowledged is lost); the
 * applied position lies within the log (base ≤ applied ≤ last) and every entry after the base
 * reads back; the applied state holds exactly the values of the entries up to the applied
 * position; re-applying the rest (as a restarted replica does) gives every acknowledged value.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { LmdbBackend } from '../../src/storage/lmdb.js';
import { CRASH_PARTITIONS, crashEntry } from './lmdb-crash-workload.js';

const CHILD = new URL('./lmdb-crash-child.js', import.meta.url).pathname;
const KILLS = 6;

/** Runs the child until it acknowledged `acks` batches, then SIGKILLs it; the last seq acknowledged. */
async function writeThenKill(dir: string, acks: number): Promise<number> {
  const child: ChildProcess = spawn(process.execPath, [CHILD, dir], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    let count = 0;
    let last = 0;
    const lines = createInterface({ input: child.stdout! });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${acks} acks within 60 s; stderr: ${stderr}`)), 60_000);
      lines.on('line', (line) => {
        const m = /^acked (\d+)$/.exec(line);
        if (!m) return;
        last = Number(m[1]);
        count += 1;
        if (count === acks) {
          clearTimeout(timer);
          child.kill('SIGKILL');
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        if (count < acks) reject(new Error(`the writer exited (${code}) after ${count} acks: ${stderr}`));
      });
    });
    return last;
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

test('SIGKILLed between the log sync and the applies, again and again: nothing acknowledged is lost, ' +
  'the applied state matches the log', { timeout: 180_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'dstore-lmdb-crash-'));
  try {
    let acked = 0;
    let lagged = 0;
    for (let kill = 0; kill < KILLS; kill++) {
      acked = await writeThenKill(dir, 40 + Math.floor(Math.random() * 400));
      const backend = await LmdbBackend.open({ dataDir: dir, logSegmentBytes: 64 * 1024 });
      try {
        const states = await backend.partitions();
        assert.deepStrictEqual(
          states.map((s) => s.partition),
          CRASH_PARTITIONS,
        );
        for (const s of states) {
          const what = `kill ${kill}, partition ${s.partition}`;
          assert.equal(s.corrupt, undefined, what);
          assert.ok(
            s.logLast.seq >= acked,
            `${what}: the log holds every acknowledged entry (${s.logLast.seq} < ${acked})`,
          );
          assert.ok(s.logBase.seq <= s.applied.seq && s.applied.seq <= s.logLast.seq, `${what}: ${JSON.stringify(s)}`);
          if (s.applied.seq < acked - 1) lagged += 1;
          const log = await backend.readLog(s.partition, {
            fromSeq: s.logBase.seq,
            toSeq: s.logLast.seq,
            limit: 100_000,
          });
          assert.deepStrictEqual(
            log.map((e) => e.seq),
            Array.from({ length: s.logLast.seq - s.logBase.seq }, (_, i) => s.logBase.seq + 1 + i),
            what,
          );
          // The applied state: each key's latest value among entries ≤ applied.
          for (let k = 0; k < 97; k++) {
            let latest = 0;
            for (let e = s.applied.seq; e > 0 && e > s.applied.seq - 97; e--) if (e % 97 === k) latest = e;
            const got = await backend.get(s.partition, Buffer.from(`k${k}`));
            if (latest === 0) assert.equal(got, undefined, `${what}: k${k}`);
            else
              assert.deepStrictEqual(
                [Buffer.from(got!.value).toString(), got!.version],
                [`v${latest}`, latest],
                `${what}: k${k}`,
              );
          }
          // Re-applied from the log, as a restarted replica does: the acknowledged values.
          const rest = log.filter((e) => e.seq > s.applied.seq);
          if (rest.length > 0) await backend.writeBatch([{ kind: 'apply', partition: s.partition, entries: rest }]);
          const top = await backend.get(s.partition, Buffer.from(`k${acked % 97}`));
          assert.equal(Buffer.from(top!.value).toString(), `v${crashEntry(acked).seq}`, what);
        }
      } finally {
        await backend.close();
      }
    }
    console.log(`# ${KILLS} kills; the applied state lagged the acknowledged log ${lagged} of ${KILLS * 2} times`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
