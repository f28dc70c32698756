/**
 * `dstore nameserver` and `dstore storage`: run one server process until SIGINT, SIGTERM or
 * SIGHUP (or, when started by `dstore up`, until the parent's IPC channel closes), then close
 * it within a bound and exit. A port already in use is reported as such.
 */
import { resolve } from 'node:path';
import type { ListeningMessage } from './cluster.js';
import {
  type StorageBackend,
  checkListenAllowed,
  CliFailure,
  errnoCode,
  firstFreePort,
  STORAGE_AUTO_PORT_FIRST,
  STORAGE_AUTO_PORT_LAST,
  type SyncMode,
  UsageError,
} from './options.js';

/** Bound on closing a server after a signal, in ms. */
const CLOSE_TIMEOUT_MS = 10_000;

export interface NameserverCliOptions {
  /** `--listen`: the address to bind. */
  readonly host: string;
  readonly port: number;
  /** `--advertise`: the nameserver's address as `nodes` shows it. */
  readonly advertise?: string;
  readonly dataDir: string;
  readonly partitions: number;
  readonly replicas: number;
  readonly minWriteReplicas: number;
  readonly initialNodes?: number;
  readonly heartbeatMs: number;
  readonly deadAfterMs: number;
  /** A partition short of R replicas this long gets a learner on another server. */
  readonly rereplicateAfterMs: number;
  readonly logLevel: string;
  readonly clusterToken?: string;
}

export interface StorageCliOptions {
  readonly nameserver: string;
  /** `--listen`: the address to bind. */
  readonly host: string;
  /** undefined: the first free port from 7101; 0: chosen by the OS. */
  readonly port?: number;
  readonly advertise?: string;
  readonly nodeId?: string;
  readonly backend: StorageBackend;
  readonly dataDir?: string;
  readonly sync: SyncMode;
  readonly heartbeatMs: number;
  readonly maxValueBytes: number;
  /** Log entries kept per partition past the point every replica applied (S12). */
  readonly logRetainEntries: number;
  readonly logLevel: string;
  readonly clusterToken?: string;
}

function notifyParent(message: ListeningMessage): void {
  if (!process.send) return;
  process.send(message);
  // The channel must not keep this process alive on its own; 'disconnect' still fires.
  process.channel?.unref();
}

function portInUse(err: unknown, host: string, port: number, flag: string): never {
  if (errnoCode(err) === 'EADDRINUSE') {
    throw new CliFailure(`port ${port} on ${host} is already in use — is another dstore running? Choose another with ${flag} (0 lets the OS pick)`);
  }
  throw err;
}

/** Keeps the process up until a signal or the parent leaving, then closes `server` and exits. */
function serveUntilStopped(name: string, server: { close(): Promise<void> }): Promise<never> {
  return new Promise<never>(() => {
    let stopping = false;
    const stop = (why: string): void => {
      if (stopping) {
        process.stderr.write(`${name}: ${why} again, exiting now\n`);
        process.exit(1);
      }
      stopping = true;
      const timer = setTimeout(() => {
        process.stderr.write(`${name}: did not close within ${CLOSE_TIMEOUT_MS} ms, exiting\n`);
        process.exit(1);
      }, CLOSE_TIMEOUT_MS);
      timer.unref();
      server.close().then(
        () => process.exit(0),
        (err: unknown) => {
          process.stderr.write(`${name}: error while closing: ${err instanceof Error ? err.message : String(err)}\n`);
          process.exit(1);
        },
      );
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGHUP', () => stop('SIGHUP'));
    // Started by `dstore up` (an IPC channel): the parent going away means stop, never orphan.
    if (process.send) process.on('disconnect', () => stop('parent gone'));
  });
}

export async function runNameserverCommand(o: NameserverCliOptions): Promise<never> {
  checkListenAllowed(o.host, o.clusterToken);
  if (o.minWriteReplicas > o.replicas) throw new UsageError(`--min-write-replicas (${o.minWriteReplicas}) cannot exceed --replicas (${o.replicas})`);
  const { runNameserver } = await import('../nameserver/main.js');
  const server = await runNameserver({
    host: o.host,
    port: o.port,
    dataDir: resolve(o.dataDir),
    partitions: o.partitions,
    replicas: o.replicas,
    minWriteReplicas: o.minWriteReplicas,
    ...(o.initialNodes === undefined ? {} : { initialNodes: o.initialNodes }),
    heartbeatMs: o.heartbeatMs,
    deadAfterMs: o.deadAfterMs,
    rereplicateAfterMs: o.rereplicateAfterMs,
    logLevel: o.logLevel,
    ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
    ...(o.advertise === undefined ? {} : { advertise: o.advertise }),
  }).catch((err: unknown) => portInUse(err, o.host, o.port, '--port'));
  notifyParent({ dstore: 'listening', port: server.port, nodeId: 'nameserver' });
  return serveUntilStopped('nameserver', server);
}

export async function runStorageCommand(o: StorageCliOptions): Promise<never> {
  checkListenAllowed(o.host, o.clusterToken);
  const port = o.port ?? (await firstFreePort(o.host, STORAGE_AUTO_PORT_FIRST, STORAGE_AUTO_PORT_LAST));
  // Without --data-dir: one directory per node id (or port), so two servers never share one.
  const dataDir = resolve(o.dataDir ?? `dstore-data/${o.nodeId ?? `storage-${port}`}`);
  const { runStorageServer } = await import('../storageserver/main.js');
  const server = await runStorageServer({
    nameserver: o.nameserver,
    host: o.host,
    port,
    ...(o.advertise === undefined ? {} : { advertise: o.advertise }),
    ...(o.nodeId === undefined ? {} : { nodeId: o.nodeId }),
    backend: o.backend,
    dataDir,
    sync: o.sync,
    heartbeatMs: o.heartbeatMs,
    maxValueBytes: o.maxValueBytes,
    logRetainEntries: o.logRetainEntries,
    logLevel: o.logLevel,
    ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
  }).catch((err: unknown) => portInUse(err, o.host, port, '--port'));
  notifyParent({ dstore: 'listening', port: server.port, nodeId: server.nodeId });
  return serveUntilStopped(server.nodeId, server);
}
