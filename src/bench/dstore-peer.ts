/**
 * dstore as a peer of `bench:compare`: the temporary cluster of `dstore bench --spawn`
 * (a nameserver and 3 storage servers, R=3, in a temp dir; src/cli/bench.ts), with the
 * backend and sync mode asked for, driven through the client library (one Db shared by
 * every caller, as `dstore bench` does). Server CPU counts the storage servers only: the
 * nameserver is not on the path of a request.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Db } from '../client/api.js';
import { connect } from '../client/index.js';
import { createTempCluster, SPAWN_REPLICAS, SPAWN_STORAGE_SERVERS, startTempCluster } from '../cli/bench.js';
import type { LocalCluster } from '../cli/cluster.js';
import type { BackendName, SyncMode } from '../cli/options.js';
import type { Caller, Peer } from './closed-loop.js';

export interface DstorePeerOptions {
  readonly backend: BackendName;
  readonly sync: SyncMode;
  readonly valueSize: number;
  readonly logLevel: string;
}

/** The row label of a dstore variant, e.g. 'dstore', 'dstore sync=none', 'dstore memory'. */
export function dstoreLabel(o: Pick<DstorePeerOptions, 'backend' | 'sync'>): string {
  const parts = ['dstore'];
  if (o.backend !== 'lmdb') parts.push(o.backend);
  if (o.sync !== 'batch') parts.push(`sync=${o.sync}`);
  return parts.join(' ');
}

export class DstorePeer implements Peer {
  readonly name: string;
  readonly description: string;
  private readonly shared: Caller;

  private constructor(
    o: DstorePeerOptions,
    private readonly cluster: LocalCluster,
    db: Db,
  ) {
    this.name = dstoreLabel(o);
    this.description =
      `${this.name}: nameserver + ${SPAWN_STORAGE_SERVERS} storage servers, R=${SPAWN_REPLICAS}, ` +
      `backend ${o.backend}, --sync ${o.sync}; CPU of the storage servers only (nameserver excluded)`;
    this.shared = {
      write: async (key, value) => {
        await db.put(key, value);
      },
      read: async (key) => (await db.get(key)) !== undefined,
    };
  }

  /** Starts the cluster and connects; `onStarted` gets a stop function before anything starts. */
  static async start(o: DstorePeerOptions, onStarted: (stop: () => Promise<void>) => void): Promise<DstorePeer> {
    const dir = mkdtempSync(join(tmpdir(), 'dstore-compare-'));
    const cluster = createTempCluster(dir, o);
    let db: Db | undefined;
    onStarted(async () => {
      try {
        await db?.close();
      } finally {
        await cluster.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
    await startTempCluster(cluster, undefined);
    db = await connect(cluster.nameserverAddress, { timeoutMs: 10_000 });
    return new DstorePeer(o, cluster, db);
  }

  serverPids(): number[] {
    return [...this.cluster.storage.values()].flatMap((p) => (p.pid === undefined ? [] : [p.pid]));
  }

  /** Each storage server: its node name, pid (undefined when not running) and data dir. */
  storageServers(): { name: string; pid: number | undefined; dataDir: string }[] {
    return [...this.cluster.storage.values()].map((p) => ({ name: p.name, pid: p.pid, dataDir: p.dataDir }));
  }

  caller(): Caller {
    return this.shared;
  }
}
