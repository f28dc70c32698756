/**
 * The public shape of the client library and of what `nodes` reports.
 */

/** One service as `nodes` lists it (DESIGN §4 "list services"). */
export interface NodeInfo {
  /** Stable id: 'nameserver' for the nameserver, else the storage server's id (e.g. 's1'). */
  readonly id: string;
  readonly role: 'nameserver' | 'storage';
  /** host:port it is reachable at. */
  readonly address: string;
  /**
   * `unhealthy`: its storage backend failed; it serves nothing until it reloaded (issue 4).
   * `unknown`: not heard from since the nameserver (re)started, which counts it as alive for
   * one --dead-after-ms (S15); `dead` after that.
   */
  readonly state: 'alive' | 'dead' | 'starting' | 'unknown' | 'unhealthy';
  /** ms since epoch of the last heartbeat; undefined for the nameserver and for a node not heard from since the nameserver started. */
  readonly lastHeartbeatMs?: number;
  /** Partitions it holds a replica of. */
  readonly partitionsHeld: number;
  /** Partitions it is primary of. */
  readonly partitionsLed: number;
  /** Keys over every partition it holds. */
  readonly keys: number;
  /** Sum over partitions of the last log seq it holds. */
  readonly logSeq?: number;
  readonly backend?: string;
  readonly uptimeMs: number;
  /**
   * S13: partitions whose replica on this node failed a checksum: it serves none of them and
   * relearns each from a healthy member (absent: none).
   */
  readonly corruptPartitions?: readonly number[];
}

export interface ClusterInfo {
  readonly clusterId: string;
  readonly partitions: number;
  readonly replicas: number;
  readonly minWriteReplicas: number;
  /** False until enough storage servers registered to create the cluster map. */
  readonly formed: boolean;
  /** Partitions whose primary reported (last heartbeat) that it serves reads and writes. */
  readonly partitionsReady: number;
  readonly mapVersion: number;
  readonly nodes: readonly NodeInfo[];
}

export interface GetResult {
  readonly value: Uint8Array;
  readonly version: number;
}

/** Keys of one storage server, as `dump` shows them. */
export interface StorageDump {
  readonly nodeId: string;
  readonly address: string;
  /** Keys over every partition it holds (counting replicas). */
  readonly keyCount: number;
  /** Up to `limit` keys, in partition then byte order. */
  readonly keys: readonly Uint8Array[];
  /** True when keys were left out because of the limit. */
  readonly truncated: boolean;
  /** Set when the server could not be reached. */
  readonly error?: string;
}

export interface Db {
  /** Writes `value` under `key`; resolves to the new version once every replica has it. */
  put(key: Uint8Array | string, value: Uint8Array | string): Promise<number>;
  /** Linearizable read; undefined when the key is absent. */
  get(key: Uint8Array | string): Promise<GetResult | undefined>;
  /** Deletes `key`; resolves to whether it existed. */
  delete(key: Uint8Array | string): Promise<boolean>;
  /** Every key of the cluster, partition by partition (each once, read from primaries). */
  scan(): AsyncIterable<Uint8Array>;
  /** Every service with data about it. */
  nodes(): Promise<ClusterInfo>;
  /**
   * The keys of every storage server (for `dump`), read page by page; `limit` keys per
   * server (default 100); `timeoutMs` bounds each page's call (default: the client's).
   */
  dump(options?: { limit?: number; timeoutMs?: number }): Promise<StorageDump[]>;
  close(): Promise<void>;
}
