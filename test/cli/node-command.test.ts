/**
 * Issue 12, without etcd: the leader line of `nodes` (elected, answered by a follower, a
 * nameserver alone), the default nameserver port and the seed list of `dstore node`, and the
 * bad input it and `up --ha` refuse with exit code 2 before starting anything.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ClusterInfo } from '../../src/client/api.js';
import { leaderLine } from '../../src/cli/format.js';
import { nodeNameserverPort, nodeSeeds } from '../../src/cli/serve.js';
import { findEtcd } from '../../src/process/etcd-server.js';
import { runDstoreText } from '../shared/dstore.js';

const NOW = Date.UTC(2026, 0, 2, 3, 4, 5);
const base: ClusterInfo = {
  clusterId: '0123456789abcdef',
  partitions: 4,
  replicas: 3,
  minWriteReplicas: 2,
  formed: true,
  partitionsReady: 4,
  mapVersion: 3,
  nodes: [
    {
      id: 'nameserver',
      role: 'nameserver',
      address: '127.0.0.1:7000',
      state: 'alive',
      partitionsHeld: 0,
      partitionsLed: 0,
      keys: 0,
      uptimeMs: 90_000,
    },
  ],
};

describe('nodes: the leader line', () => {
  test('elected through etcd: the leader, its address and since when', () => {
    const info = { ...base, nameserverId: 'n2', leader: { nodeId: 'n2', address: 'h2:7000', sinceMs: NOW - 5000 } };
    assert.equal(
      leaderLine(info, NOW),
      'leader n2 (h2:7000) since 2026-01-02T03:04:00.000Z (5.0s ago), elected through etcd',
    );
  });

  test('answered by a follower: it says which node answered', () => {
    const info = { ...base, nameserverId: 'n1', leader: { nodeId: 'n2', address: 'h2:7000', sinceMs: NOW } };
    assert.match(leaderLine(info, NOW) ?? '', /^leader n2 \(h2:7000\) since .*; answered by n1$/);
  });

  test('a nameserver alone leads since it started', () => {
    assert.equal(
      leaderLine(base, NOW),
      'leader nameserver (127.0.0.1:7000) since 2026-01-02T03:02:35.000Z (90s ago), a single nameserver (no etcd)',
    );
  });
});

describe('dstore node: ports and seeds', () => {
  test('the candidate listens 101 below the storage port unless told', () => {
    assert.equal(nodeNameserverPort(7101, undefined), 7000);
    assert.equal(nodeNameserverPort(7102, undefined), 7001);
    assert.equal(nodeNameserverPort(0, undefined), 0);
    assert.equal(nodeNameserverPort(7101, 9000), 9000);
    assert.throws(() => nodeNameserverPort(80, undefined), /give --nameserver-port/);
  });

  test('its own candidate is always among the seeds, once', () => {
    assert.equal(nodeSeeds(undefined, 'h1:7000'), 'h1:7000');
    assert.equal(nodeSeeds('h1:7000,h2:7000', 'h1:7000'), 'h1:7000,h2:7000');
    assert.equal(nodeSeeds('h2:7000,h3:7000', 'h1:7000'), 'h2:7000,h3:7000,h1:7000');
  });

  test('without --etcd, or with a port that leaves no nameserver port, it exits 2', async () => {
    const none = await runDstoreText(['node']);
    assert.equal(none.code, 2, none.stderr);
    assert.match(none.stderr, /dstore node needs --etcd/);
    const low = await runDstoreText(['node', '--etcd', 'http://127.0.0.1:1', '--port', '80']);
    assert.equal(low.code, 2, low.stderr);
    assert.match(low.stderr, /give --nameserver-port/);
    const help = await runDstoreText(['node', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /dstore node --node-id n1 .*\n.*--etcd http:\/\/h1:2379/);
  });

  test('up --ha refuses --backend redis (exit 2)', { skip: findEtcd() === undefined }, async () => {
    const r = await runDstoreText(['up', '--ha', '--no-shell', '--backend', 'redis', '--data-dir', '/nonexistent/x']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--backend lmdb or memory, not redis/);
  });
});
