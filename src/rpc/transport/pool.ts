/** Client connections keyed by address. */
import { InvalidArgumentError } from '../../core/errors.js';
import type { GreetingRole } from '../handshake.js';
import { silentLogger, RPC_DEFAULTS, describe } from './common.js';
import { type RpcConnectionOptions, RpcConnection } from './connection.js';

// ---- pool ----

/** Splits `host:port` or `[v6]:port`; throws InvalidArgumentError on anything else. */
export function parseAddress(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  let host = colon > 0 ? address.slice(0, colon) : '';
  const portText = address.slice(colon + 1);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  const port = Number(portText);
  if (
    host === '' ||
    host.includes('[') ||
    host.includes(']') ||
    !/^\d{1,5}$/.test(portText) ||
    port < 1 ||
    port > 65535
  ) {
    throw new InvalidArgumentError(`malformed address ${JSON.stringify(address.slice(0, 300))}: expected host:port`);
  }
  return { host, port };
}

export interface RpcPoolOptions extends Omit<RpcConnectionOptions, 'host' | 'port' | 'onMessage'> {
  /** Connections kept; beyond it the least recently used is closed. Default `RPC_DEFAULTS.maxPoolConnections`. */
  readonly maxConnections?: number;
  /** Receives one-way messages any pooled connection gets, with the connection's address. */
  readonly onMessage?: (body: unknown, address: string) => void;
}

/** Client connections keyed by `host:port`, created on first use and reused. */
export class RpcPool {
  private readonly connections = new Map<string, RpcConnection>();
  private readonly maxConnections: number;
  private closed = false;

  constructor(private readonly options: RpcPoolOptions) {
    this.maxConnections = Math.max(1, options.maxConnections ?? RPC_DEFAULTS.maxPoolConnections);
  }

  get size(): number {
    return this.connections.size;
  }

  /**
   * The connection to `address` (`host:port`), created if needed. Never throws (addresses
   * often come from the network): for a malformed address it logs a warning and returns a
   * closed connection whose calls reject with InvalidArgumentError and whose messages are
   * dropped; after `close()` it returns a closed connection (ConnectionClosedError).
   * `expectRole`: the role the server must announce (RpcConnectionOptions.expectRole); it is
   * fixed when the connection is created, by the first `get` of that address.
   */
  get(address: string, expectRole?: GreetingRole): RpcConnection {
    const existing = this.connections.get(address);
    if (existing !== undefined && !existing.isClosed) {
      // Keep the map in least-recently-used order.
      this.connections.delete(address);
      this.connections.set(address, existing);
      return existing;
    }
    let host: string;
    let port: number;
    try {
      ({ host, port } = parseAddress(address));
    } catch (err) {
      (this.options.logger ?? silentLogger).warn(
        { address: address.slice(0, 300), err: describe(err) },
        'malformed rpc address',
      );
      return new RpcConnection({
        ...this.options,
        host: address,
        port: 0,
        onMessage: undefined,
        ...(expectRole ? { expectRole } : {}),
      });
    }
    const onMessage = this.options.onMessage;
    const connection = new RpcConnection({
      ...this.options,
      host,
      port,
      onMessage: onMessage ? (body: unknown) => onMessage(body, address) : undefined,
      ...(expectRole ? { expectRole } : {}),
    });
    if (this.closed) {
      connection.close();
      return connection;
    }
    this.connections.delete(address);
    this.connections.set(address, connection);
    while (this.connections.size > this.maxConnections) {
      const oldest = this.connections.keys().next();
      if (oldest.done === true) break;
      this.delete(oldest.value);
    }
    return connection;
  }

  /** Closes and forgets the connection to `address`, if any. */
  delete(address: string): void {
    const connection = this.connections.get(address);
    if (connection === undefined) return;
    this.connections.delete(address);
    connection.close();
  }

  /** Closes every connection; calls in flight reject with ConnectionClosedError. */
  close(): void {
    this.closed = true;
    for (const connection of this.connections.values()) connection.close();
    this.connections.clear();
  }
}
