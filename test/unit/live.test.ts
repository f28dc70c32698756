/**
 * Issue 15, live settings, pure parts: validation and the epoch (src/core/nameserver/live.ts),
 * and the nameserver host's setSetting — the map persisted before the reply (S3), the
 * settings in heartbeat and register replies, an old map without the section, a follower's
 * plan for the two calls.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InvalidArgumentError } from '../../src/core/errors.js';
import { changeLive, defaultLive, liveForNode } from '../../src/core/nameserver/live.js';
import { Nameserver } from '../../src/core/nameserver/nameserver.js';
import { followerPlan } from '../../src/nameserver/follower.js';
import { NameserverHost, parseMap } from '../../src/nameserver/host.js';
import type { NameserverRequest } from '../../src/rpc/messages.js';

describe('live settings (issue 15)', () => {
  const base = defaultLive({ minWriteReplicas: 2, heartbeatMs: 1000, deadAfterMs: 5000, logLevel: 'info' });
  const nodes = { s1: { backend: 'lmdb' }, m1: { backend: 'memory' } };

  test('each change bumps the epoch; bad values and unknown settings are typed errors', () => {
    const a = changeLive(base, 3, nodes, 'read-mode', 'fast');
    assert.equal(a.live.epoch, 1);
    assert.equal(a.live.readMode, 'fast');
    const b = changeLive(a.live, 3, nodes, 'min-write-replicas', '3');
    assert.equal(b.live.epoch, 2);
    assert.equal(b.weakens, undefined, 'raising weakens nothing');
    const bad: Array<[string, string, RegExp, { node?: string; force?: boolean }?]> = [
      ['nope', '1', /unknown setting 'nope'/],
      ['min-write-replicas', '4', /from 1 to 3/],
      ['min-write-replicas', '0', /from 1 to 3/],
      ['min-write-replicas', '2.5', /integer/],
      ['dead-after-ms', '2000', /above 2 × heartbeat-ms \(2000\)/],
      ['heartbeat-ms', '2500', /must stay above 2 × heartbeat-ms/],
      ['read-mode', 'eventual', /linearizable or fast/],
      ['sync', 'none', /lmdb backend, which cannot switch/, { node: 's1', force: true }],
      ['sync', 'none', /no storage server 'zz'/, { node: 'zz' }],
      ['log-level', 'debug', /--node applies to sync only/, { node: 's1' }],
    ];
    for (const [name, value, pattern, opts] of bad)
      assert.throws(
        () => changeLive(b.live, 3, nodes, name, value, opts),
        (err: Error) => err instanceof InvalidArgumentError && pattern.test(err.message),
        `${name} ${value}`,
      );
    assert.throws(
      () => changeLive(b.live, 3, nodes, 'min-write-replicas', '2'),
      /refused without --force: lowering min-write-replicas from 3 to 2 weakens durability/,
    );
    const lowered = changeLive(b.live, 3, nodes, 'min-write-replicas', '2', { force: true });
    assert.match(lowered.weakens ?? '', /weakens durability/);
    const memory = changeLive(b.live, 3, nodes, 'sync', 'none', { node: 'm1' });
    assert.deepEqual(liveForNode(memory.live, 'm1').sync, 'none');
    assert.equal(liveForNode(memory.live, 's1').sync, undefined);
  });

  test('setSetting persists the map before its reply; replies carry the settings; the map round-trips', () => {
    const settings = { partitions: 2, replicas: 1, minWriteReplicas: 1, initialNodes: 1 };
    const opts = { settings, deadAfterMs: 1000, rereplicateAfterMs: 30_000, heartbeatMs: 200 };
    const host = new NameserverHost(Nameserver.newMap('c', settings), true, opts, 0);
    host.takeEffects();
    const register: NameserverRequest = {
      t: 'register',
      nodeId: 's1',
      address: '127.0.0.1:7001',
      backend: 'memory',
      incarnation: 'i1',
      durable: false,
    };
    const first = host.onRequest(register, 10);
    assert.ok(first.reply.ok);
    assert.equal((first.reply.value as { live?: unknown }).live, undefined, 'no live section yet: nothing sent');
    const step = host.setSetting('log-level', 'debug', {}, 20);
    assert.ok(step.reply.ok);
    assert.equal(step.effects[0]?.kind, 'persist', 'S3: persisted before anything else');
    const persisted = step.effects[0]!.kind === 'persist' ? step.effects[0].map : undefined;
    assert.equal(persisted?.live?.logLevel, 'debug');
    assert.equal(persisted?.live?.heartbeatMs, 200, 'the flags are where the section starts from');
    const hb = host.onRequest(
      { t: 'heartbeat', nodeId: 's1', incarnation: 'i1', uptimeMs: 1, keys: 0, progress: [] },
      30,
    );
    assert.ok(hb.reply.ok);
    assert.deepEqual((hb.reply.value as { live?: { epoch: number; logLevel: string } }).live?.epoch, 1);
    const refused = host.setSetting('dead-after-ms', '100', {}, 40);
    assert.ok(!refused.reply.ok && refused.reply.error instanceof InvalidArgumentError);
    assert.equal(refused.effects.filter((e) => e.kind === 'persist').length, 0, 'nothing recorded');
    // The persisted map's text loads with the section; a map without it, with the flags.
    const reloaded = new NameserverHost(parseMap(JSON.stringify(persisted), 'map'), false, opts, 50);
    assert.equal(reloaded.live.logLevel, 'debug');
    const { live: _dropped, ...old } = persisted!;
    const older = new NameserverHost(parseMap(JSON.stringify(old), 'map'), false, opts, 50);
    assert.equal(older.live.epoch, 0);
    assert.equal(older.live.deadAfterMs, 1000);
  });

  test('a follower answers configGet from the stored map and refuses configSet', () => {
    assert.equal(followerPlan({ t: 'configGet' }), 'fromStoredMap');
    assert.equal(followerPlan({ t: 'configSet', name: 'read-mode', value: 'fast' }), 'refuse');
  });
});
