/**
 * The pure hosts of issue 10, driven directly: the nameserver host (src/nameserver/host.ts)
 * and the client's retry logic (src/client/retry.ts).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CallRetry, cachedMapForRetry, primaryOf } from '../../src/client/retry.js';
import {
  ConnectionClosedError,
  InvalidArgumentError,
  NodeIdInUseError,
  NotPrimaryError,
  TimeoutError,
  mayHaveApplied,
} from '../../src/core/errors.js';
import { Nameserver } from '../../src/core/nameserver/nameserver.js';
import { NameserverHost, tickPeriodMs } from '../../src/nameserver/host.js';
import type { NameserverRequest } from '../../src/rpc/messages.js';

describe('the nameserver host', () => {
  const settings = { partitions: 2, replicas: 1, minWriteReplicas: 1, initialNodes: 1 };
  const opts = { settings, deadAfterMs: 1000, rereplicateAfterMs: 30_000 };
  const register = (address: string, incarnation: string): NameserverRequest => {
    return { t: 'register', nodeId: 's1', address, backend: 'memory', incarnation, durable: true };
  };

  test('a new map is persisted at start; a registration that forms the cluster is persisted before its reply', () => {
    const host = new NameserverHost(Nameserver.newMap('c', settings), true, opts, 0);
    assert.deepEqual(
      host.takeEffects().map((e) => e.kind),
      ['persist', 'log'],
    );
    const { effects, reply } = host.onRequest(register('127.0.0.1:7001', 'i1'), 10);
    assert.equal(reply.ok, true);
    const persists = effects.filter((e) => e.kind === 'persist');
    assert.ok(persists.length > 0);
    const last = persists[persists.length - 1]!;
    assert.ok(last.kind === 'persist' && last.map.configs.length === 2, 'the formed map is persisted');
    const map = host.onRequest({ t: 'map' }, 20);
    assert.ok(map.reply.ok);
    assert.deepEqual((map.reply.value as { addresses: unknown }).addresses, { s1: '127.0.0.1:7001' });
    assert.deepEqual(map.effects, []);
    assert.equal(tickPeriodMs(1000), 500);
    assert.equal(tickPeriodMs(60), 50);
  });

  test('NODE_ID_IN_USE for a second live server with the same id; a missing partition is INVALID_ARGUMENT', () => {
    const host = new NameserverHost(Nameserver.newMap('c', settings), true, opts, 0);
    host.onRequest(register('127.0.0.1:7001', 'i1'), 10);
    const { effects, reply } = host.onRequest(register('127.0.0.1:7002', 'i2'), 20);
    assert.ok(!reply.ok && reply.error instanceof NodeIdInUseError);
    assert.ok(effects.some((e) => e.kind === 'log' && e.level === 'warn'));
    const promote = host.onRequest({ t: 'promote', p: 9, epoch: 1, learner: 's1', learnerIncarnation: 'i1' }, 30);
    assert.ok(!promote.reply.ok && promote.reply.error instanceof InvalidArgumentError);
    const nodes = host.onRequest({ t: 'nodes' }, 30);
    assert.ok(nodes.reply.ok);
    const listed = (nodes.reply.value as { nodes: Array<{ id: string; state: string }> }).nodes;
    assert.deepEqual(
      listed.map((n) => [n.id, n.state]),
      [
        ['nameserver', 'alive'],
        ['s1', 'alive'],
      ],
    );
  });
});

describe('the client retry logic', () => {
  const map = { formed: true, configs: [{ primary: 'a', secondaries: ['b'] }], addresses: { a: 'h:1' } };

  test('routes to the primary; a map without one is UNAVAILABLE (retryable)', () => {
    assert.deepEqual(primaryOf(map, 0), { node: 'a', address: 'h:1', members: ['a', 'b'] });
    assert.throws(() => primaryOf({ ...map, formed: false }, 0), { code: 'UNAVAILABLE' });
    assert.throws(() => primaryOf({ ...map, addresses: {} }, 0), { code: 'UNAVAILABLE' });
    assert.equal(cachedMapForRetry(new TimeoutError('t'), map), map);
    assert.equal(cachedMapForRetry(new InvalidArgumentError('x'), map), undefined);
  });

  test('each attempt is bounded by attemptTimeoutMs; backoff doubles from 10 ms; the deadline ends the call', () => {
    const call = new CallRetry({ timeoutMs: 1000, attemptTimeoutMs: 300 }, 0, false, 0);
    const first = call.begin(0);
    assert.deepEqual(first, { kind: 'attempt', attempt: 0, attemptMs: 300, map: 'cached' });
    assert.equal(call.sendTimeoutMs(300, 0), 300);
    assert.deepEqual(call.sendFailed(new TimeoutError('t'), 300), { kind: 'retry', delayMs: 10 });
    assert.deepEqual(call.begin(310), { kind: 'attempt', attempt: 1, attemptMs: 300, map: 'refresh' });
    assert.deepEqual(call.sendFailed(new NotPrimaryError('n'), 320), { kind: 'retry', delayMs: 20 });
    assert.equal(call.begin(940).kind, 'end', 'no retry with less than min(100, attemptTimeoutMs/4) left');
    assert.deepEqual(call.expired().kind, 'deadline');
  });

  test('S9: a write that may have been applied ends unknown, even after a definite answer', () => {
    const call = new CallRetry({ timeoutMs: 1000, attemptTimeoutMs: 300 }, 3, true, 0);
    call.begin(0);
    call.sendFailed(new TimeoutError('t'), 300);
    call.begin(310);
    const end = call.sendFailed(new InvalidArgumentError('no'), 320);
    assert.ok(end.kind === 'end' && end.end.kind === 'unknown' && end.end.error.code === 'OUTCOME_UNKNOWN');
    const read = new CallRetry({ timeoutMs: 1000, attemptTimeoutMs: 300 }, 3, false, 0);
    read.begin(0);
    read.sendFailed(new TimeoutError('t'), 300);
    const readEnd = read.sendFailed(new InvalidArgumentError('no'), 320);
    assert.ok(readEnd.kind === 'end' && readEnd.end.kind === 'failed');
  });

  test('mayHaveApplied: definite only when no primary could have received the write', () => {
    assert.equal(mayHaveApplied(new TimeoutError('t')), true);
    assert.equal(mayHaveApplied(new ConnectionClosedError('c')), true);
    assert.equal(mayHaveApplied(new ConnectionClosedError('c', { notSent: true })), false);
    assert.equal(mayHaveApplied(new NotPrimaryError('n')), false);
    assert.equal(mayHaveApplied(new Error('anything else')), true);
  });
});
