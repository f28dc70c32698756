/**
 * `dstore nameserver`, `dstore storage` and `dstore node` (both in one process, issue 12): run a server process until SIGINT, SIGTERM or
 * SIGHUP (or, when started by `dstore up`, until the parent's IPC channel closes; when started
 * by npm, until the parent goes away), then close it within a bound and exit. A port already
 * in use is reported as such; a data dir that cannot be used or is locked by another process
 * is bad input (exit code 2).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { EtcdSettings } from '../control/elected-nameserver.js';
import { NodeIdInUseError } from '../core/errors.js';
import { advertisedAddress, formatHostPort } from '../process/address.js';
import { DataDirError, dataDirPath } from '../process/data-dir.js';
import { startedByNpm, watchParent } from '../process/parent-watch.js';
import type { ProcessHttp } from '../http/process-http.js';
import type { ListeningMessage } from './cluster.js';
import {
  type StorageBackend,
  checkListenAllowed,
  CliFailure,
  errnoCode,
  firstFreePort,
  type HttpPortOption,
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
  /** `--etcd` and its companions (issue 12); absent: one nameserver, the map in --data-dir. */
  readonly etcd?: EtcdSettings;
  /** `--http-port` (issue 15): /health, /ready, /metrics and the dashboard; 'off': none. */
  readonly httpPort: HttpPortOption;
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
  /** S16: the background check's interval (0: off) and whether it repairs. */
  readonly antiEntropyMs?: number;
  readonly repair?: 'on' | 'off';
  readonly logLevel: string;
  readonly clusterToken?: string;
  /** `--http-port` (issue 15): /health, /ready and /metrics; 'off' (the default): none. */
  readonly httpPort: HttpPortOption;
}

/**
 * `dstore node` (issue 12): a storage server and a nameserver candidate elected through etcd, in
 * one process, with one data dir (`nameserver/` and `storage/` under it). The candidate's node
 * id is the storage server's.
 */
export interface NodeCliOptions extends Omit<StorageCliOptions, 'nameserver' | 'port' | 'dataDir'> {
  /** The storage server's port (0: chosen by the OS). */
  readonly port: number;
  /** The candidate's port; undefined: `port` − 101 (0 when `port` is 0). */
  readonly nameserverPort?: number;
  /** Every node's nameserver address (seeds of the storage server); its own is added when missing. */
  readonly nameserver?: string;
  /** undefined: ./dstore-data/<node-id>, or ./dstore-data/node. */
  readonly dataDir?: string;
  readonly partitions: number;
  readonly replicas: number;
  readonly minWriteReplicas: number;
  readonly initialNodes?: number;
  readonly deadAfterMs: number;
  readonly rereplicateAfterMs: number;
  /** Required: a node's candidate is always elected through etcd. */
  readonly etcd: Omit<EtcdSettings, 'nodeId'>;
}

/** A node's candidate listens this far below its storage port unless --nameserver-port says otherwise. */
export const NODE_NAMESERVER_PORT_OFFSET = 101;

/** The node's nameserver port: the flag, else the storage port − 101 (0 for 0). */
export function nodeNameserverPort(port: number, nameserverPort: number | undefined): number {
  if (nameserverPort !== undefined) return nameserverPort;
  if (port === 0) return 0;
  if (port <= NODE_NAMESERVER_PORT_OFFSET)
    throw new UsageError(`--port ${port} leaves no default --nameserver-port (--port − 101); give --nameserver-port`);
  return port - NODE_NAMESERVER_PORT_OFFSET;
}

/** The seed list of a node's storage server: the given addresses, plus its own candidate's when missing. */
export function nodeSeeds(given: string | undefined, own: string): string {
  const seeds = given === undefined ? [] : given.split(',').filter((s) => s !== '');
  return (seeds.includes(own) ? seeds : [...seeds, own]).join(',');
}

/**
 * The process's HTTP port (issue 15), listening before the servers start (so a storage server
 * registers its address): its probes answer 503 ("starting") until a role is added.
 */
async function startHttp(
  host: string,
  port: HttpPortOption,
  clusterToken: string | undefined,
  logLevel: string,
): Promise<ProcessHttp | undefined> {
  if (port === 'off') return undefined;
  const { ProcessHttp } = await import('../http/process-http.js');
  const { createLogger } = await import('../process/log.js');
  const log = createLogger({ name: 'http', level: logLevel, stderr: true });
  const http = new ProcessHttp({ host, port, log, ...(clusterToken === undefined ? {} : { clusterToken }) });
  await http.listen().catch((err: unknown) => startFailure(err, host, port, '--http-port'));
  return http;
}

/** A server, then the HTTP port, closed in that order. */
function withHttp(server: { close(): Promise<void> }, http: ProcessHttp | undefined): { close(): Promise<void> } {
  return { close: () => server.close().finally(() => http?.close()) };
}

function httpField(http: ProcessHttp | undefined): { httpPort?: number } {
  return http?.port === undefined ? {} : { httpPort: http.port };
}

function notifyParent(message: ListeningMessage): void {
  if (!process.send) return;
  process.send(message);
  // The channel must not keep this process alive on its own; 'disconnect' still fires.
  process.channel?.unref();
}

/** The absolute path of a --data-dir value; an empty one is bad input. */
function dataDirArg(value: string): string {
  try {
    return dataDirPath(value);
  } catch (err) {
    return startFailure(err, '', 0, '');
  }
}

/**
 * How a failed start is reported: a data dir that cannot be used, or a node id a live server
 * holds, is bad input (exit code 2).
 */
function startFailure(err: unknown, host: string, port: number, flag: string): never {
  if (err instanceof DataDirError) throw new UsageError(err.message);
  if (err instanceof NodeIdInUseError) throw new UsageError(`${err.message} (${err.code})`);
  if (errnoCode(err) === 'EADDRINUSE') {
    throw new CliFailure(
      `port ${port} on ${host} is already in use — is another dstore running? Choose another ` +
        `with ${flag} (0 lets the OS pick)`,
    );
  }
  throw err;
}

/**
 * Stops the process on SIGINT, SIGTERM, SIGHUP, the parent's IPC channel closing (started by
 * `dstore up`) or the parent going away (started by npm; parent-watch.ts), from the moment
 * it is called: a storage server may wait for its nameserver for as long as it takes, and
 * must not outlive its parent meanwhile. Before `serve` there is nothing to close; after
 * it, the server is closed within a bound, then the process exits.
 */
function stopHandlers(name: string): { serve(server: { close(): Promise<void> }): Promise<never> } {
  let server: { close(): Promise<void> } | undefined;
  let stopping = false;
  const stop = (why: string): void => {
    if (stopping) {
      process.stderr.write(`${name}: ${why} again, exiting now\n`);
      process.exit(1);
    }
    stopping = true;
    if (!server) {
      process.stderr.write(`${name}: ${why} while starting; exiting\n`);
      process.exit(0);
    }
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
  else if (startedByNpm()) watchParent((ppid) => stop(`parent process ${ppid} gone`));
  return {
    serve(s) {
      server = s;
      return new Promise<never>(() => undefined);
    },
  };
}

/** The nameserver settings `dstore nameserver` and `dstore node` take from the same flags. */
function clusterSettings(
  o: Pick<
    NameserverCliOptions,
    | 'partitions'
    | 'replicas'
    | 'minWriteReplicas'
    | 'initialNodes'
    | 'heartbeatMs'
    | 'deadAfterMs'
    | 'rereplicateAfterMs'
    | 'logLevel'
    | 'clusterToken'
  >,
) {
  return {
    partitions: o.partitions,
    replicas: o.replicas,
    minWriteReplicas: o.minWriteReplicas,
    ...(o.initialNodes === undefined ? {} : { initialNodes: o.initialNodes }),
    heartbeatMs: o.heartbeatMs,
    deadAfterMs: o.deadAfterMs,
    rereplicateAfterMs: o.rereplicateAfterMs,
    logLevel: o.logLevel,
    ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
  };
}

export async function runNameserverCommand(o: NameserverCliOptions): Promise<never> {
  checkListenAllowed(o.host, o.clusterToken);
  if (o.minWriteReplicas > o.replicas)
    throw new UsageError(`--min-write-replicas (${o.minWriteReplicas}) cannot exceed --replicas (${o.replicas})`);
  const { runNameserver } = await import('../nameserver/main.js');
  const lifetime = stopHandlers('nameserver');
  // Bad input first: once the HTTP port listens, a failed start must close it (or the process stays).
  const dataDir = dataDirArg(o.dataDir);
  const http = await startHttp(o.host, o.httpPort, o.clusterToken, o.logLevel);
  const server = await runNameserver({
    host: o.host,
    port: o.port,
    dataDir,
    ...clusterSettings(o),
    ...(o.advertise === undefined ? {} : { advertise: o.advertise }),
    ...(o.etcd === undefined ? {} : { etcd: o.etcd }),
    ...(http === undefined ? {} : { http }),
  }).catch(async (err: unknown) => {
    await http?.close();
    return startFailure(err, o.host, o.port, '--port');
  });
  notifyParent({ dstore: 'listening', port: server.port, nodeId: 'nameserver', ...httpField(http) });
  return lifetime.serve(withHttp(server, http));
}

export async function runStorageCommand(o: StorageCliOptions): Promise<never> {
  checkListenAllowed(o.host, o.clusterToken);
  const port = o.port ?? (await firstFreePort(o.host, STORAGE_AUTO_PORT_FIRST, STORAGE_AUTO_PORT_LAST));
  // Without --data-dir: one directory per node id (or port), so two servers never share one.
  const dataDir = dataDirArg(o.dataDir ?? `dstore-data/${o.nodeId ?? `storage-${port}`}`);
  const { runStorageServer } = await import('../storageserver/main.js');
  const lifetime = stopHandlers(o.nodeId ?? 'storage server');
  const http = await startHttp(o.host, o.httpPort, o.clusterToken, o.logLevel);
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
    ...(o.antiEntropyMs === undefined ? {} : { antiEntropyMs: o.antiEntropyMs }),
    ...(o.repair === undefined ? {} : { antiEntropyRepair: o.repair === 'on' }),
    logLevel: o.logLevel,
    ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
    ...(http === undefined ? {} : { http }),
  }).catch(async (err: unknown) => {
    await http?.close();
    return startFailure(err, o.host, port, '--port');
  });
  notifyParent({ dstore: 'listening', port: server.port, nodeId: server.nodeId, ...httpField(http) });
  return lifetime.serve(withHttp(server, http));
}

export async function runNodeCommand(o: NodeCliOptions): Promise<never> {
  checkListenAllowed(o.host, o.clusterToken);
  if (o.minWriteReplicas > o.replicas)
    throw new UsageError(`--min-write-replicas (${o.minWriteReplicas}) cannot exceed --replicas (${o.replicas})`);
  if (o.initialNodes !== undefined && o.initialNodes < o.replicas)
    throw new UsageError(`--initial-nodes (${o.initialNodes}) cannot be below --replicas (${o.replicas})`);
  const nameserverPort = nodeNameserverPort(o.port, o.nameserverPort);
  if (o.port !== 0 && nameserverPort === o.port)
    throw new UsageError(`--nameserver-port (${nameserverPort}) must differ from --port`);
  const dataDir = dataDirArg(o.dataDir ?? `dstore-data/${o.nodeId ?? 'node'}`);
  const nameserverDir = join(dataDir, 'nameserver');
  const storageDir = join(dataDir, 'storage');
  const { runNameserver } = await import('../nameserver/main.js');
  const { runStorageServer } = await import('../storageserver/main.js');
  const { loadNodeId } = await import('../storageserver/server.js');
  // The candidate is named after the storage server: its id (given, or kept in the data dir) first.
  let nodeId: string;
  try {
    mkdirSync(storageDir, { recursive: true });
    nodeId = loadNodeId(storageDir, o.nodeId);
  } catch (err) {
    return startFailure(err, o.host, o.port, '--port');
  }
  const lifetime = stopHandlers(`node ${nodeId}`);
  // Closed in reverse: the storage server first, then the candidate (which resigns, so another leads at once).
  const parts: { close(): Promise<void> }[] = [];
  const forever = lifetime.serve({
    async close() {
      for (const part of [...parts].reverse()) await part.close();
    },
  });
  // --advertise names the storage server; the candidate is announced at the same host, its own port.
  const advertiseHost = o.advertise?.replace(/:\d+$/, '');
  // One HTTP port for the node (issue 15): its storage server's role, and the candidate's
  // (whose routes answer while it leads; a following candidate does not make the node unready).
  const http = await startHttp(o.host, o.httpPort, o.clusterToken, o.logLevel);
  if (http) parts.push(http);
  const candidate = await runNameserver({
    host: o.host,
    port: nameserverPort,
    dataDir: nameserverDir,
    ...clusterSettings(o),
    ...(advertiseHost === undefined ? {} : { advertise: formatHostPort(advertiseHost, nameserverPort) }),
    etcd: { ...o.etcd, nodeId },
    ...(http === undefined ? {} : { http, followerReady: true }),
  }).catch(async (err: unknown) => {
    await http?.close();
    return startFailure(err, o.host, nameserverPort, '--nameserver-port');
  });
  parts.push(candidate);
  const own = advertisedAddress({
    listen: o.host,
    port: candidate.port,
    advertise: advertiseHost === undefined ? undefined : formatHostPort(advertiseHost, candidate.port),
  });
  const storage = await runStorageServer({
    nameserver: nodeSeeds(o.nameserver, own),
    host: o.host,
    port: o.port,
    ...(o.advertise === undefined ? {} : { advertise: o.advertise }),
    nodeId,
    backend: o.backend,
    dataDir: storageDir,
    sync: o.sync,
    heartbeatMs: o.heartbeatMs,
    maxValueBytes: o.maxValueBytes,
    logRetainEntries: o.logRetainEntries,
    ...(o.antiEntropyMs === undefined ? {} : { antiEntropyMs: o.antiEntropyMs }),
    ...(o.repair === undefined ? {} : { antiEntropyRepair: o.repair === 'on' }),
    logLevel: o.logLevel,
    ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
    ...(http === undefined ? {} : { http }),
  }).catch(async (err: unknown) => {
    await candidate.close();
    await http?.close();
    return startFailure(err, o.host, o.port, '--port');
  });
  parts.push(storage);
  notifyParent({ dstore: 'listening', port: storage.port, nodeId: storage.nodeId, ...httpField(http) });
  return forever;
}
