/**
 * Issue 12's `leader` request at the pure host and the schema: a nameserver without etcd
 * answers that it leads itself since it started; the request and its reply decode.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Nameserver } from '../../src/core/nameserver/nameserver.js';
import { NameserverHost } from '../../src/nameserver/host.js';
import { LeaderReply, NameserverRequest, codec } from '../../src/rpc/messages.js';

const settings = { partitions: 2, replicas: 1, minWriteReplicas: 1, initialNodes: 1 };

describe('the leader request', () => {
  test('a nameserver alone leads itself since it started', () => {
    const host = new NameserverHost(
      Nameserver.newMap('c1', settings),
      true,
      { settings, deadAfterMs: 5000, rereplicateAfterMs: 30_000 },
      1_000,
    );
    host.address = '127.0.0.1:7000';
    host.takeEffects(); // the constructor's (persist the new map)
    const { reply, effects } = host.onRequest({ t: 'leader' }, 2_000);
    assert.deepEqual(reply, {
      ok: true,
      value: { self: 'nameserver', leader: { nodeId: 'nameserver', address: '127.0.0.1:7000', sinceMs: 1_000 } },
    });
    assert.ok(!effects.some((e) => e.kind === 'persist'), 'answering leader persists nothing');
  });

  test('request and reply schemas', () => {
    assert.equal(codec(NameserverRequest).decode({ t: 'leader' }).ok, true);
    assert.equal(codec(NameserverRequest).decode({ t: 'leader', token: 'x' }).ok, true);
    const reply = codec(LeaderReply);
    assert.equal(reply.decode({ self: 'a' }).ok, true);
    assert.equal(reply.decode({ self: 'a', leader: { nodeId: 'b', address: 'h:1', sinceMs: 5 } }).ok, true);
    assert.equal(reply.decode({ self: 'a', leader: { nodeId: 'b', address: 'h:1' } }).ok, false);
  });
});
