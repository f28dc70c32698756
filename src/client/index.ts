/**
 * The dstore client library: `import { connect } from 'dstore'`.
 *
 * ```ts
 * const db = await connect('127.0.0.1:7000');
 * const version = await db.put('greeting', 'hello');
 * const got = await db.get('greeting'); // { value: Uint8Array, version } | undefined
 * await db.delete('greeting');          // true if it existed
 * await db.close();
 * ```
 */
export { connect, connectAdmin, type Admin, type ClientLogger, type ConnectOptions } from './client.js';
export type {
  ClusterInfo,
  Db,
  GetResult,
  NodeInfo,
  ReadOptions,
  ScanEntry,
  ScanOptions,
  ScanResult,
  StorageDump,
  Transaction,
  TransactionOptions,
  WriteOptions,
} from './api.js';
export * from '../core/errors.js';
