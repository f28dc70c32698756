/**
 * Issue 13: `dstore up --anti-entropy-ms N --repair off` reaches every storage server it
 * starts: each primary runs its background check (S16) every N ms, and `dstore nodes --json`
 * reports each node's checks (none differing on a healthy cluster) from its heartbeats. Real processes, free
 * ports, a temp data dir; the cluster is stopped even when the test fails.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { freePort } from '../../src/cli/options.js';
import { waitFor } from '../integration/cluster.js';
import { runDstoreText, startUp, type UpCluster } from '../shared/dstore.js';

interface NodeJson {
  readonly id: string;
  readonly role: string;
  readonly antiEntropy?: { checks: number; divergences: number; repaired: number; incomplete: number };
}

async function nodesOf(nameserver: string): Promise<NodeJson[]> {
  const r = await runDstoreText(['nodes', '--json', '--nameserver', nameserver]);
  assert.equal(r.code, 0, `nodes --json failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { nodes: NodeJson[] }).nodes.filter((n) => n.role === 'storage');
}

describe('dstore up passes --anti-entropy-ms and --repair to its storage servers', { timeout: 180_000 }, () => {
  const dirs: string[] = [];
  const clusters: UpCluster[] = [];

  after(async () => {
    for (const c of clusters) await c.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  async function start(extra: string[]): Promise<UpCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'dstore-up-ae-'));
    dirs.push(dir);
    const port = await freePort();
    const up = await startUp(['--data-dir', dir, '--port', String(port), '--storage-port', '0', ...extra]);
    clusters.push(up);
    return up;
  }

  test('every primary checks its partitions every 300 ms; none differs', async () => {
    const up = await start(['--anti-entropy-ms', '300', '--repair', 'off', '--partitions', '6']);
    let last: NodeJson[] = [];
    await waitFor(
      'every storage server to report at least 2 anti-entropy checks in `nodes --json`',
      async () => {
        last = await nodesOf(up.nameserver);
        return last.length === 3 && last.every((n) => (n.antiEntropy?.checks ?? 0) >= 2);
      },
      60_000,
    );
    for (const n of last) {
      assert.equal(n.antiEntropy?.divergences, 0, `${n.id} found replicas differing on a healthy cluster`);
      assert.equal(n.antiEntropy?.repaired, 0, `${n.id} repaired with --repair off`);
    }
  });
});
