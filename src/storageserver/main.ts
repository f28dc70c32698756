/**
 * Entry point of `dstore storage`: opens the backend and starts the storage server.
 */
import { openDataDir } from '../process/data-dir.js';
import { exitOnFatal } from '../process/fatal.js';
import { createLogger } from '../process/log.js';
import { guardRejections } from './crash-guard.js';
import { openBackend } from '../storage/open.js';
import type { ProcessHttp } from '../http/process-http.js';
import { StorageServer } from './server.js';

export interface RunStorageServerOptions {
  readonly nameserver: string;
  readonly host: string;
  readonly port: number;
  readonly advertise?: string;
  readonly nodeId?: string;
  /** 'memory', 'lmdb', or the URL of this server's own Redis (DESIGN §8). */
  readonly backend: 'memory' | 'lmdb' | `redis://${string}`;
  readonly dataDir: string;
  readonly sync: 'batch' | 'none';
  readonly heartbeatMs: number;
  readonly maxValueBytes: number;
  /** Log entries kept past the point every replica applied (default 1000); S12. */
  readonly logRetainEntries?: number;
  /** S16: the background anti-entropy check's interval in ms (0: off; default 300,000). */
  readonly antiEntropyMs?: number;
  /** S16: whether that check has odd replicas relearn (default true). */
  readonly antiEntropyRepair?: boolean;
  readonly logLevel: string;
  readonly clusterToken?: string;
  /**
   * The process's HTTP port (DESIGN §13; owned by the caller, listening already): the storage
   * server adds its role to it, and registers with its advertised address.
   */
  readonly http?: ProcessHttp;
}

export async function runStorageServer(
  options: RunStorageServerOptions,
): Promise<{ port: number; nodeId: string; close(): Promise<void> }> {
  // One owner per data dir (issue 9): LMDB lets a second process open the same environment.
  const lock = await openDataDir(
    options.dataDir,
    `storage server${options.nodeId === undefined ? '' : ` ${options.nodeId}`}`,
  );
  let server: { port: number; nodeId: string; close(): Promise<void> };
  try {
    server = await startStorageServer(options);
  } catch (err) {
    await lock.release();
    throw err;
  }
  return { ...server, close: () => server.close().finally(() => lock.release()) };
}

async function startStorageServer(
  options: RunStorageServerOptions,
): Promise<{ port: number; nodeId: string; close(): Promise<void> }> {
  const open = () => openBackend(options.backend, { dataDir: options.dataDir, sync: options.sync });
  const log = createLogger({ name: options.nodeId ?? 'storage', level: options.logLevel, dataDir: options.dataDir });
  // Issue 9: an unhandled rejection is logged and decided on (crash-guard.ts), never a silent
  // exit; installed before the backend opens, since opening writes (format record, upgrade).
  // A storage failure before the server exists is the open's own: it fails, and says why.
  let server: StorageServer | undefined;
  const unguard = guardRejections(
    log,
    (err) => server?.reportStorageFailure(err),
    () => exitOnFatal(),
  );
  let backend: Awaited<ReturnType<typeof open>>;
  try {
    backend = await open();
  } catch (err) {
    unguard();
    throw err;
  }
  try {
    server = new StorageServer(
      {
        nameserver: options.nameserver,
        host: options.host,
        port: options.port,
        advertise: options.advertise,
        nodeId: options.nodeId,
        dataDir: options.dataDir,
        heartbeatMs: options.heartbeatMs,
        tickMs: 50,
        maxValueBytes: options.maxValueBytes,
        logRetainEntries: options.logRetainEntries ?? 1000,
        ...(options.antiEntropyMs === undefined ? {} : { antiEntropyMs: options.antiEntropyMs }),
        ...(options.antiEntropyRepair === undefined ? {} : { antiEntropyRepair: options.antiEntropyRepair }),
        // S4: only a durable log lets a restarted replica stay a secondary.
        durable: options.backend !== 'memory' && options.sync === 'batch',
        onFatal: () => exitOnFatal(),
        clusterToken: options.clusterToken,
        callTimeoutMs: Math.max(1000, options.heartbeatMs * 2),
        ...(options.http?.port === undefined ? {} : { httpPort: options.http.port }),
      },
      backend,
      log,
      // After a storage failure the server reopens its backend in place (issue 4).
      open,
    );
  } catch (err) {
    unguard();
    await backend.close();
    throw err;
  }
  const started = server;
  let port: number;
  try {
    port = await started.start();
  } catch (err) {
    unguard();
    throw err;
  }
  options.http?.addRole({
    name: 'storage',
    registry: started.metrics.registry,
    health: () => started.probeHealth(),
    ready: () => started.probeReady(),
  });
  return {
    port,
    nodeId: started.nodeId,
    close: async () => {
      await started.close();
      unguard();
    },
  };
}
