/**
 * The command lines of the roles (`dstore nameserver …`, `dstore storage …`, `dstore node …`) as a local
 * cluster starts them: one list of flags per role, for `dstore up`/`bench --spawn`
 * (src/cli/cluster.ts) and chaos (src/chaos/run.ts). An undefined field is left out (the
 * role's default applies).
 */

export interface NameserverArgs {
  readonly listen?: string;
  readonly port: number;
  readonly dataDir: string;
  readonly partitions: number;
  readonly replicas: number;
  readonly minWriteReplicas?: number;
  readonly initialNodes: number;
  readonly heartbeatMs: number;
  readonly deadAfterMs: number;
  readonly rereplicateAfterMs?: number;
  readonly logLevel: string;
  /**
   * `--http-port` (issue 15). Undefined: `off`, not the role's default (7080): the clusters of
   * tests, chaos and bench run side by side.
   */
  readonly httpPort?: number | 'off';
}

export interface StorageArgs {
  readonly nameserver: string;
  readonly listen?: string;
  readonly port: number;
  readonly nodeId: string;
  readonly backend: string;
  readonly dataDir: string;
  readonly sync?: string;
  readonly heartbeatMs: number;
  readonly maxValueBytes?: number;
  readonly logRetainEntries?: number;
  /** S16: the background check's interval (`--anti-entropy-ms`) and `--repair on|off`. */
  readonly antiEntropyMs?: number;
  readonly repair?: 'on' | 'off';
  readonly logLevel: string;
  /** `--http-port` (issue 15; the role's default: off). */
  readonly httpPort?: number | 'off';
}

/** `dstore node …` (issue 12): a storage server and a nameserver candidate in one process. */
export interface NodeArgs extends Omit<StorageArgs, 'nameserver'> {
  readonly etcd: readonly string[];
  /** Every node's nameserver address (the seeds). */
  readonly nameserver: string;
  readonly nameserverPort: number;
  readonly partitions: number;
  readonly replicas: number;
  readonly minWriteReplicas?: number;
  readonly initialNodes: number;
  readonly deadAfterMs: number;
  readonly rereplicateAfterMs?: number;
  readonly leaseTtlMs?: number;
  readonly etcdPrefix?: string;
}

function flag(name: string, value: string | number | undefined): string[] {
  return value === undefined ? [] : [name, String(value)];
}

export function nameserverArgs(o: NameserverArgs): string[] {
  return [
    ...flag('--listen', o.listen),
    ...flag('--port', o.port),
    ...flag('--data-dir', o.dataDir),
    ...flag('--partitions', o.partitions),
    ...flag('--replicas', o.replicas),
    ...flag('--min-write-replicas', o.minWriteReplicas),
    ...flag('--initial-nodes', o.initialNodes),
    ...flag('--heartbeat-ms', o.heartbeatMs),
    ...flag('--dead-after-ms', o.deadAfterMs),
    ...flag('--rereplicate-after-ms', o.rereplicateAfterMs),
    ...flag('--log-level', o.logLevel),
    ...flag('--http-port', o.httpPort ?? 'off'),
  ];
}

export function storageArgs(o: StorageArgs): string[] {
  return [
    ...flag('--nameserver', o.nameserver),
    ...flag('--listen', o.listen),
    ...flag('--port', o.port),
    ...flag('--node-id', o.nodeId),
    ...flag('--backend', o.backend),
    ...flag('--data-dir', o.dataDir),
    ...flag('--sync', o.sync),
    ...flag('--heartbeat-ms', o.heartbeatMs),
    ...flag('--max-value-bytes', o.maxValueBytes),
    ...flag('--log-retain-entries', o.logRetainEntries),
    ...flag('--anti-entropy-ms', o.antiEntropyMs),
    ...flag('--repair', o.repair),
    ...flag('--log-level', o.logLevel),
    ...flag('--http-port', o.httpPort),
  ];
}

export function nodeArgs(o: NodeArgs): string[] {
  return [
    ...flag('--etcd', o.etcd.join(',')),
    ...flag('--etcd-prefix', o.etcdPrefix),
    ...flag('--lease-ttl-ms', o.leaseTtlMs),
    ...flag('--nameserver', o.nameserver),
    ...flag('--listen', o.listen),
    ...flag('--port', o.port),
    ...flag('--nameserver-port', o.nameserverPort),
    ...flag('--node-id', o.nodeId),
    ...flag('--backend', o.backend),
    ...flag('--data-dir', o.dataDir),
    ...flag('--sync', o.sync),
    ...flag('--partitions', o.partitions),
    ...flag('--replicas', o.replicas),
    ...flag('--min-write-replicas', o.minWriteReplicas),
    ...flag('--initial-nodes', o.initialNodes),
    ...flag('--heartbeat-ms', o.heartbeatMs),
    ...flag('--dead-after-ms', o.deadAfterMs),
    ...flag('--rereplicate-after-ms', o.rereplicateAfterMs),
    ...flag('--max-value-bytes', o.maxValueBytes),
    ...flag('--log-retain-entries', o.logRetainEntries),
    ...flag('--anti-entropy-ms', o.antiEntropyMs),
    ...flag('--repair', o.repair),
    ...flag('--log-level', o.logLevel),
    ...flag('--http-port', o.httpPort),
  ];
}
