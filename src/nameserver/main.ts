/**
 * Entry point of `dstore nameserver`: builds the process from its options.
 */
import { openDataDir } from '../process/data-dir.js';
import { createLogger } from '../process/log.js';
import type { EtcdSettings } from '../control/elected-nameserver.js';
import type { ProcessHttp } from '../http/process-http.js';
import { type NameserverView, nameserverRole, nameserverRoutes } from './http.js';
import { type NameserverConfig, NameserverProcess } from './server.js';

export interface RunNameserverOptions {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly partitions: number;
  readonly replicas: number;
  readonly minWriteReplicas: number;
  /** Storage servers that must register before the cluster map is created (default: replicas). */
  readonly initialNodes?: number;
  readonly heartbeatMs: number;
  readonly deadAfterMs: number;
  /** A partition short of R replicas this long gets a learner on another server (default 30000). */
  readonly rereplicateAfterMs?: number;
  readonly logLevel: string;
  readonly clusterToken?: string;
  /** Address shown for the nameserver in `nodes` (default: the listen address). */
  readonly advertise?: string;
  /** Issue 12: one of several candidates elected through etcd, the map stored there (absent: the file). */
  readonly etcd?: EtcdSettings;
  /**
   * The process's HTTP port (DESIGN §13; owned and listened by the caller): the nameserver adds
   * its role (/health, /ready, /metrics) and its routes (nameserverRoutes) to it.
   */
  readonly http?: ProcessHttp;
  /** Inside `dstore node`: a following candidate counts as ready (the node's storage server decides). */
  readonly followerReady?: boolean;
}

export async function runNameserver(options: RunNameserverOptions): Promise<{ port: number; close(): Promise<void> }> {
  // One owner per data dir (issue 9): a second nameserver on this cluster-map.json refuses to start.
  const lock = await openDataDir(options.dataDir, 'nameserver');
  let server: { port: number; close(): Promise<void> };
  try {
    server = await startNameserver(options);
  } catch (err) {
    await lock.release();
    throw err;
  }
  return { port: server.port, close: () => server.close().finally(() => lock.release()) };
}

async function startNameserver(options: RunNameserverOptions): Promise<{ port: number; close(): Promise<void> }> {
  const log = createLogger({ name: 'nameserver', level: options.logLevel, dataDir: options.dataDir });
  const minWriteReplicas = Math.min(options.minWriteReplicas, options.replicas);
  const cfg: NameserverConfig = {
    host: options.host,
    port: options.port,
    dataDir: options.dataDir,
    heartbeatMs: options.heartbeatMs,
    deadAfterMs: options.deadAfterMs,
    rereplicateAfterMs: options.rereplicateAfterMs ?? 30_000,
    logLevel: options.logLevel,
    clusterToken: options.clusterToken,
    ...(options.advertise === undefined ? {} : { advertise: options.advertise }),
    settings: {
      partitions: options.partitions,
      replicas: options.replicas,
      minWriteReplicas,
      initialNodes: Math.max(options.initialNodes ?? options.replicas, options.replicas),
    },
  };
  let ns: { start(): Promise<number>; close(): Promise<void>; readonly view: NameserverView };
  if (options.etcd === undefined) ns = new NameserverProcess(cfg, log);
  else {
    const { ElectedNameserverProcess } = await import('../control/elected-nameserver.js');
    ns = new ElectedNameserverProcess(cfg, options.etcd, log);
  }
  const port = await ns.start();
  if (options.http) {
    nameserverRoutes(options.http.server, ns.view);
    options.http.addRole(nameserverRole(ns.view, options.followerReady === true));
  }
  return { port, close: () => ns.close() };
}
