/**
 * Integration: a real 3-node cluster (nameserver + 3 storage processes on lmdb, R=3, 16
 * partitions) on free loopback ports. Proves: 1,000 writes from 8 concurrent callers are
 * all acknowledged and read back with their last value; every storage server's dump holds
 * all 1,000 keys (R=3 on 3 nodes); versions grow strictly per partition; a delete removes
 * the key on every replica; bad input gets a typed error and the cluster keeps serving;
 * restarting every process on the same data brings the data back.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { partitionOf } from '../../src/core/partitioning.js';
import { KeyEmptyError, KeyTooLargeError, ValueTooLargeError, type Db } from '../../src/client/index.js';
import { connect as netConnect } from 'node:net';
import { pack } from 'msgpackr';
import { encodeGreeting } from '../../src/rpc/handshake.js';
import { LocalCluster, waitFor } from './cluster.js';

function frame(body: unknown): Buffer {
  const payload = pack(body);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length);
  return Buffer.concat([header, payload]);
}

/** Writes `bytes` on a fresh connection; resolves with what came back (as text) when it closes or after 1 s. */
function sendRaw(address: string, bytes: Buffer): Promise<string> {
  const [host, port] = address.split(':');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = netConnect(Number(port), host!, () => socket.end(bytes));
    const done = () => resolve(Buffer.concat(chunks).toString('latin1'));
    socket.on('data', (c) => chunks.push(c));
    socket.on('close', done);
    socket.on('error', done);
    socket.setTimeout(1000, () => socket.destroy());
  });
}

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

describe('a 3-node cluster', () => {
  let cluster: LocalCluster;
  let db: Db;

  before(async () => {
    cluster = await LocalCluster.start({ nodes: 3, partitions: 16, replicas: 3, backend: 'lmdb' });
    db = await cluster.client();
  });
  after(async () => {
    await cluster?.stop();
  });

  test('1,000 writes from 8 concurrent callers read back, with versions growing per partition', async () => {
    const last = new Map<string, string>();
    const versionsByPartition = new Map<number, number[]>();
    let next = 0;
    const started = Date.now();
    const worker = async (w: number) => {
      for (let i = next++; i < 1000; i = next++) {
        const key = `key-${i % 700}`; // some keys are written twice
        const value = `value-${i}-by-${w}`;
        const version = await db.put(key, value);
        last.set(key, value);
        const p = partitionOf(Buffer.from(key), 16);
        const list = versionsByPartition.get(p) ?? [];
        list.push(version);
        versionsByPartition.set(p, list);
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
    const elapsed = Date.now() - started;
    console.log(`# 1000 writes, 8 callers: ${elapsed} ms (${Math.round(1000 / (elapsed / 1000))} writes/s)`);
    assert.equal(next >= 1000, true);
    // Acknowledgement order within one caller is one valid order; across callers, per
    // partition every acknowledged version is distinct.
    for (const [p, versions] of versionsByPartition) {
      assert.equal(new Set(versions).size, versions.length, `partition ${p} gave one version twice`);
    }
    for (const [key, value] of last) {
      const got = await db.get(key);
      assert.ok(got, `${key} missing`);
      assert.equal(text(got.value), value, `${key} has a stale value`);
    }
  });

  test('a write’s version is strictly greater than the previous write to the same partition', async () => {
    const key = 'monotonic';
    let previous = 0;
    for (let i = 0; i < 20; i++) {
      const v = await db.put(key, `v${i}`);
      assert.ok(v > previous, `version ${v} after ${previous}`);
      previous = v;
      const got = await db.get(key);
      assert.equal(got?.version, v);
    }
  });

  test('every storage server holds every key (R=3 on 3 nodes)', async () => {
    const expected = new Set<string>();
    for (let i = 0; i < 700; i++) expected.add(`key-${i}`);
    expected.add('monotonic');
    // Secondaries apply once the commit point reaches them (S2): wait for it, bounded.
    await waitFor(
      'every storage server to hold every key',
      async () => {
        const dumps = await db.dump({ limit: 100_000 });
        if (dumps.length !== 3) return false;
        return dumps.every(
          (d) => !d.error && d.keyCount === expected.size && d.keys.every((k) => expected.has(text(k))),
        );
      },
      15_000,
    );
  });

  test('delete makes the key absent on every replica', async () => {
    await db.put('doomed', 'x');
    assert.equal(await db.delete('doomed'), true);
    assert.equal(await db.get('doomed'), undefined);
    assert.equal(await db.delete('doomed'), false, 'second delete found the key');
    await waitFor(
      'the delete to reach every replica',
      async () => {
        const dumps = await db.dump({ limit: 100_000 });
        return dumps.length === 3 && dumps.every((d) => !d.keys.some((k) => text(k) === 'doomed'));
      },
      15_000,
    );
  });

  test('bad input gets typed errors and changes nothing', async () => {
    await assert.rejects(db.put('', 'x'), KeyEmptyError);
    await assert.rejects(db.put('k'.repeat(1025), 'x'), KeyTooLargeError);
    await assert.rejects(db.put('big', Buffer.alloc(1024 * 1024 + 1)), ValueTooLargeError);
    assert.equal(await db.get('big'), undefined);
    // A value of exactly the limit is accepted.
    await db.put('big', Buffer.alloc(1024 * 1024, 7));
    assert.equal((await db.get('big'))?.value.length, 1024 * 1024);
    await db.put('ünïcødé 🔑', 'välue ✓');
    assert.equal(text((await db.get('ünïcødé 🔑'))!.value), 'välue ✓');
  });

  test(
    'malformed frames to the nameserver and a storage server get an error or a closed ' +
      'connection; the cluster keeps serving',
    async () => {
      const targets = [cluster.nameserverAddress, `127.0.0.1:${cluster.storagePorts.get('s1')}`];
      const frames: Buffer[] = [
        Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
        Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]), // a 4 GiB length prefix
        Buffer.concat([Buffer.from([0, 0, 0, 4]), Buffer.from([0xc1, 0xc1, 0xc1, 0xc1])]), // invalid msgpack
        frame({ t: 'call', id: 1, b: { t: 'put', p: 'zero', key: 5 } }), // valid envelope, wrong body
        frame({ t: 'call', id: 2, b: { t: 'register', nodeId: '', address: 'x' } }),
        frame({ t: 'msg', b: { t: 'peer', from: 'evil', addr: 'nowhere:1', m: { kind: 'prepare' } } }),
        Buffer.from([0, 0, 0, 10, 1]), // truncated, then the socket closes
      ];
      const replies: string[] = [];
      for (const target of targets) {
        // Without a greeting nothing is read (the server answers only with its own greeting and
        // closes); after a valid one, the frames reach the decoder.
        for (const f of frames) {
          const bare = await sendRaw(target, f);
          assert.ok(
            !bare.includes('MALFORMED_MESSAGE'),
            `a frame without a greeting was read: ${JSON.stringify(bare)}`,
          );
          replies.push(await sendRaw(target, Buffer.concat([encodeGreeting('any'), f])));
        }
      }
      // A call with a readable id gets a MALFORMED_MESSAGE reply; everything else a close.
      assert.ok(
        replies.some((r) => r.includes('MALFORMED_MESSAGE')),
        `no error reply in ${JSON.stringify(replies)}`,
      );
      await db.put('after-garbage', 'fine');
      assert.equal(text((await db.get('after-garbage'))!.value), 'fine');
      const info = await db.nodes();
      assert.equal(info.nodes.filter((n) => n.state === 'alive').length, 4);
    },
  );

  test('restarting every process on the same data dirs brings the data back', async () => {
    await db.put('survivor', 'still here');
    for (const name of ['s1', 's2', 's3', 'nameserver']) await cluster.kill(name, 'SIGKILL');
    for (const name of ['nameserver', 's1', 's2', 's3']) await cluster.restart(name);
    await cluster.waitFormed(3);
    const got = await waitFor('the key to be readable after the restart', async () => db.get('survivor'), 30_000, 200);
    assert.equal(text(got.value), 'still here');
    assert.equal(text((await db.get('key-1'))!.value).startsWith('value-'), true);
    // And writes work again (new epochs, S4).
    const v = await db.put('after-restart', 'ok');
    assert.ok(v > 0);
  });
});
