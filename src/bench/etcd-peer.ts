/**
 * etcd as a peer of `bench:compare`: a 3-member cluster on loopback (src/process/etcd-server.ts),
 * driven through the `etcd3` client (gRPC, one client shared by every caller, as its
 * requests multiplex over HTTP/2). A write is a put; a read is a get, linearizable (the
 * client's default: the member confirms its leadership through a ReadIndex round).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { EtcdCluster } from '../process/etcd-server.js';
import type { Caller, Peer } from './closed-loop.js';

/** A throwaway cluster's members need not shut down cleanly: SIGKILL after this bound. */
const STOP_TIMEOUT_MS = 3000;

export class EtcdPeer implements Peer {
  readonly name = 'etcd';
  readonly description = 'etcd: 3 members, default fsync; write = put, read = linearizable get (etcd3 client)';
  private readonly shared: Caller;

  private constructor(
    private readonly cluster: EtcdCluster,
    client: Etcd3,
  ) {
    this.shared = {
      write: async (key, value) => {
        await client.put(key).value(value);
      },
      read: async (key) => (await client.get(key).buffer()) !== null,
    };
  }

  /** Starts the members and connects; `onStarted` gets a stop function before anything starts. */
  static async start(onStarted: (stop: () => Promise<void>) => void): Promise<EtcdPeer> {
    let cluster: EtcdCluster | undefined;
    let client: Etcd3 | undefined;
    let stopped = false;
    const dir = mkdtempSync(join(tmpdir(), 'dstore-compare-etcd-'));
    onStarted(async () => {
      stopped = true;
      client?.close();
      await cluster?.stop(STOP_TIMEOUT_MS);
      rmSync(dir, { recursive: true, force: true });
    });
    const started = await EtcdCluster.start({ dir, members: 3 });
    cluster = started;
    if (stopped) throw new Error('stopped while starting');
    client = new Etcd3({ hosts: started.clientUrls });
    await client.put('bench-compare-ready').value('1');
    return new EtcdPeer(started, client);
  }

  serverPids(): number[] {
    return this.cluster.pids;
  }

  caller(): Caller {
    return this.shared;
  }
}
