/** The transport's client side: one connection that dials, calls and reconnects. */
import { connect as netConnect, type Socket } from 'node:net';
import {
  ConnectionClosedError,
  type DstoreError,
  errorFromWire,
  InvalidArgumentError,
  MalformedMessageError,
  OverloadedError,
  TimeoutError,
} from '../../core/errors.js';
import { FrameDecoder, FrameWriter, MAX_CALL_ID, MAX_DEADLINE_MS, packBody, type FrameSink } from '../frame.js';
import { GreetingReader, dialerCheck, encodeGreeting, type GreetingRole } from '../handshake.js';
import type { Codec } from '../schema.js';
import { type RpcLogger, silentLogger, RPC_DEFAULTS, defaultMaxQueuedBytes, describe } from './common.js';
import { type FrameHandlers, afterGreeting, dispatchFrame, encodeMessage, runMessageHandler } from './frames.js';

// ---- client ----

export interface RpcConnectionOptions {
  readonly host: string;
  readonly port: number;
  /** Largest frame body accepted or sent, in bytes (limits.ts `maxFrameBytes`). */
  readonly maxFrameBytes: number;
  /** Default `RPC_DEFAULTS.maxInFlightCalls`. */
  readonly maxInFlightCalls?: number;
  /** Outgoing bytes queued before calls are refused and messages dropped. Default `defaultMaxQueuedBytes`. */
  readonly maxQueuedBytes?: number;
  /** Default `RPC_DEFAULTS.connectTimeoutMs`. */
  readonly connectTimeoutMs?: number;
  /** Default `RPC_DEFAULTS.backoffMinMs`. */
  readonly backoffMinMs?: number;
  /** Default `RPC_DEFAULTS.backoffMaxMs`. */
  readonly backoffMaxMs?: number;
  /** Receives one-way messages the server sends on this connection (`ctx.send`). */
  readonly onMessage?: (body: unknown) => void;
  readonly logger?: RpcLogger;
  /**
   * The role the server must announce in its greeting; another one fails calls with
   * WrongRoleError. Default 'any' (no check beyond the protocol itself).
   */
  readonly expectRole?: GreetingRole;
}

export interface CallOptions {
  /** How long to wait for the reply, in ms; also sent to the server as the call's deadline. */
  readonly timeoutMs: number;
}

export interface TypedCallOptions<T> extends CallOptions {
  /** Validates the reply body; a refused reply rejects with MalformedMessageError. */
  readonly reply: Codec<T>;
}

export interface PendingCall {
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
  readonly timeoutMs: number;
  readonly reply: Codec<unknown> | undefined;
}

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'closed';

/**
 * One client TCP connection, shared by any number of concurrent callers; calls are
 * multiplexed by id and their replies may come in any order.
 *
 * Connecting is lazy: the first call or message opens the socket; calls and messages made
 * while it connects wait in the outgoing queue (bounded by `maxQueuedBytes`; a call's
 * deadline `d` is taken when it is queued). When the connection drops, or the attempt fails,
 * every call in flight rejects with ConnectionClosedError (retryable; a call that was sent may
 * or may not have run) and queued messages are dropped.
 *
 * Reconnection is lazy too, with exponential backoff and jitter: after a failed attempt (or a
 * connection that lived less than `backoffMaxMs`) the next attempt may start only after
 * `backoffMinMs` doubled per consecutive failure up to `backoffMaxMs`, drawn uniformly in
 * [delay/2, delay]. During that window calls fail at once with ConnectionClosedError and
 * messages are dropped; the first call or message after it starts the next attempt. After a
 * connection that was up at least `backoffMaxMs`, the first attempt may start at once.
 *
 * The socket does not keep the process alive while no call is in flight.
 */
export class RpcConnection implements FrameSink {
  /** `host:port` */
  readonly address: string;
  private readonly host: string;
  private readonly port: number;
  private readonly maxFrameBytes: number;
  private readonly maxInFlightCalls: number;
  private readonly maxQueuedBytes: number;
  private readonly connectTimeoutMs: number;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly onMessageOption: ((body: unknown) => void) | undefined;
  private readonly logger: RpcLogger;
  private readonly writer: FrameWriter;
  private readonly pending = new Map<number, PendingCall>();
  private readonly onTimeoutBound = (id: number): void => this.onTimeout(id);
  private state: ConnectionState = 'idle';
  /** Why calls are refused once closed: closed by the caller, or a malformed address. */
  private closedError: DstoreError | undefined;
  private socket: Socket | undefined;
  private decoder: FrameDecoder | undefined;
  private nextId = 0;
  private failedAttempts = 0;
  /** performance.now() before which no new attempt starts. */
  private nextAttemptAt = 0;
  private connectedAt = 0;
  /** The current socket's peer sent an acceptable greeting. */
  private greeted = false;
  private lastError: Error | undefined;
  private lastFailure = '';
  /** Set when the last connection was refused by the greeting check; calls fail with it meanwhile. */
  private protocolError: DstoreError | undefined;
  readonly expectRole: GreetingRole;

  constructor(options: RpcConnectionOptions) {
    this.host = options.host;
    this.port = options.port;
    this.address = options.host.includes(':') ? `[${options.host}]:${options.port}` : `${options.host}:${options.port}`;
    this.maxFrameBytes = options.maxFrameBytes;
    this.maxInFlightCalls = options.maxInFlightCalls ?? RPC_DEFAULTS.maxInFlightCalls;
    this.maxQueuedBytes = options.maxQueuedBytes ?? defaultMaxQueuedBytes(options.maxFrameBytes);
    this.connectTimeoutMs = options.connectTimeoutMs ?? RPC_DEFAULTS.connectTimeoutMs;
    this.backoffMinMs = options.backoffMinMs ?? RPC_DEFAULTS.backoffMinMs;
    this.backoffMaxMs = Math.max(this.backoffMinMs, options.backoffMaxMs ?? RPC_DEFAULTS.backoffMaxMs);
    this.onMessageOption = options.onMessage;
    this.expectRole = options.expectRole ?? 'any';
    this.logger = options.logger ?? silentLogger;
    this.writer = new FrameWriter(this.maxQueuedBytes);
    if (options.host === '' || !Number.isInteger(options.port) || options.port < 1 || options.port > 65535) {
      this.state = 'closed';
      this.closedError = new InvalidArgumentError(
        `malformed address ${JSON.stringify(this.address.slice(0, 300))}: expected host:port`,
      );
    }
  }

  /** Calls in flight (sent or queued, not yet answered). */
  get inFlight(): number {
    return this.pending.size;
  }

  get isConnected(): boolean {
    return this.state === 'connected';
  }

  get isClosed(): boolean {
    return this.state === 'closed';
  }

  /**
   * Why the last connection or attempt ended, without retry details ("connect failed:
   * connect ECONNREFUSED 127.0.0.1:7101"); '' if none ended yet.
   */
  get lastFailureReason(): string {
    return this.protocolError?.message ?? this.lastFailure;
  }

  /**
   * Connected, but the peer has sent no greeting yet: a service that waits for a request
   * line (Redis, many text protocols) rather than answering the greeting, or a paused server.
   */
  get awaitingGreeting(): boolean {
    return this.state === 'connected' && !this.greeted;
  }

  /**
   * Sends `body` as a call and resolves with the reply body (validated by `options.reply`
   * when given). Rejects with:
   * - TimeoutError: no reply within `timeoutMs`;
   * - ConnectionClosedError: the connection dropped, could not be opened, is backing off,
   *   or was closed;
   * - OverloadedError: `maxInFlightCalls` calls in flight or the outgoing queue full;
   * - InvalidArgumentError: a body msgpack cannot encode or over `maxFrameBytes`, or a bad
   *   `timeoutMs`;
   * - MalformedMessageError: a reply the codec refuses;
   * - the error the server replied with, rebuilt by `errorFromWire`.
   */
  call<T>(body: unknown, options: TypedCallOptions<T>): Promise<T>;
  call(body: unknown, options: CallOptions): Promise<unknown>;
  call(body: unknown, options: CallOptions & { readonly reply?: Codec<unknown> }): Promise<unknown> {
    const { timeoutMs } = options;
    if (!(timeoutMs > 0)) return Promise.reject(new InvalidArgumentError(`timeoutMs must be > 0, got ${timeoutMs}`));
    if (this.state === 'closed')
      return Promise.reject(this.closedError ?? new ConnectionClosedError(`connection to ${this.address} is closed`));
    if (this.pending.size >= this.maxInFlightCalls) {
      return Promise.reject(
        new OverloadedError(
          `${this.pending.size} calls in flight to ${this.address} (maxInFlightCalls=${this.maxInFlightCalls})`,
        ),
      );
    }
    const waitMs = Math.min(Math.ceil(timeoutMs), MAX_DEADLINE_MS);
    const id = this.allocateId();
    let frame: Buffer;
    try {
      frame = packBody({ t: 'call', id, d: waitMs, b: body });
    } catch (err) {
      return Promise.reject(new InvalidArgumentError(`call body cannot be encoded: ${describe(err)}`, { cause: err }));
    }
    if (frame.length > this.maxFrameBytes) {
      return Promise.reject(
        new InvalidArgumentError(`call of ${frame.length} bytes is over maxFrameBytes=${this.maxFrameBytes}`),
      );
    }
    const refused = this.prepareToSend();
    if (refused !== undefined) return Promise.reject(refused);
    if (!this.writer.write(frame)) {
      return Promise.reject(
        new OverloadedError(`outgoing queue to ${this.address} is full (maxQueuedBytes=${this.maxQueuedBytes})`),
      );
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(this.onTimeoutBound, waitMs, id);
      this.pending.set(id, { resolve, reject, timer, timeoutMs, reply: options.reply });
      if (this.pending.size === 1) this.socket?.ref();
    });
  }

  /**
   * Sends a one-way message, at most once and best effort: true if it was queued (it may
   * still be lost if the connection drops), false if it was dropped because the connection
   * is closed or backing off, the outgoing queue is full, or the body cannot be encoded or
   * is over `maxFrameBytes` (these two are logged). Nothing is retried or queued beyond
   * `maxQueuedBytes`.
   */
  send(body: unknown): boolean {
    if (this.state === 'closed') return false;
    const frame = encodeMessage(body, this.maxFrameBytes, this.logger, { address: this.address });
    if (frame === undefined) return false;
    if (this.prepareToSend() !== undefined) return false;
    return this.writer.write(frame);
  }

  /** Closes the connection; calls in flight reject with ConnectionClosedError. Idempotent. */
  close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.closedError = new ConnectionClosedError(`connection to ${this.address} was closed`);
    const socket = this.socket;
    this.socket = undefined;
    this.decoder?.stop();
    this.decoder = undefined;
    this.writer.detach();
    socket?.destroy();
    this.failAll(this.closedError);
  }

  // ---- connection management ----

  /**
   * Starts connecting if needed; returns why not when backing off: the greeting check's
   * error if that refused the last connection (not retryable), else ConnectionClosedError.
   */
  private prepareToSend(): DstoreError | undefined {
    if (this.state !== 'idle') return undefined;
    const waitMs = this.nextAttemptAt - performance.now();
    if (waitMs > 0) {
      if (this.protocolError !== undefined) return this.protocolError;
      return new ConnectionClosedError(
        `not connected to ${this.address} (${this.lastFailure}); next attempt in ${Math.ceil(waitMs)} ms`,
        { notSent: true },
      );
    }
    this.connect();
    return undefined;
  }

  private connect(): void {
    this.state = 'connecting';
    this.lastError = undefined;
    const socket = netConnect({ host: this.host, port: this.port, noDelay: true });
    const decoder = new FrameDecoder(this.maxFrameBytes, this);
    const greeting = new GreetingReader(this.address);
    this.socket = socket;
    this.decoder = decoder;
    this.greeted = false;
    socket.setTimeout(this.connectTimeoutMs);
    socket.once('timeout', () => socket.destroy(new Error(`connect timed out after ${this.connectTimeoutMs} ms`)));
    socket.once('connect', () => {
      if (this.socket !== socket) return;
      socket.setTimeout(0);
      socket.setKeepAlive(true, 30_000);
      this.state = 'connected';
      this.connectedAt = performance.now();
      // The greeting first; calls queued meanwhile follow at once (the server reads no frame
      // of a dialer whose greeting it refuses).
      socket.write(encodeGreeting(this.expectRole));
      this.writer.attach(socket);
      if (this.pending.size === 0) socket.unref();
      this.logger.debug?.({ address: this.address }, 'rpc connected');
    });
    socket.on('data', (chunk: Buffer) => {
      if (!greeting.isDone) {
        const rest = afterGreeting(greeting, chunk, (r) => {
          const refused = dialerCheck(r, this.address, this.expectRole);
          if (refused !== undefined || r.state !== 'ok') {
            if (this.socket === socket)
              this.refused(refused ?? new ConnectionClosedError(`${this.address}: greeting refused`));
            return false;
          }
          this.protocolError = undefined;
          this.greeted = true;
          return true;
        });
        if (rest === undefined || rest.length === 0) return;
        chunk = rest;
      } else if (!this.greeted) {
        return; // refused: the socket is being destroyed
      }
      decoder.push(chunk);
    });
    socket.on('error', (err) => {
      this.lastError = err;
    });
    socket.once('close', () => this.onSocketClose(socket));
  }

  private onSocketClose(socket: Socket): void {
    if (this.socket !== socket) return; // closed by close(), or an older socket
    const wasConnected = this.state === 'connected';
    this.socket = undefined;
    this.decoder?.stop();
    this.decoder = undefined;
    this.writer.detach();
    const cause = this.lastError;
    const why = cause ? `: ${cause.message}` : '';
    const greeted = this.greeted;
    this.greeted = false;
    this.lastFailure = wasConnected
      ? greeted
        ? `connection closed${why}`
        : `connection closed before a dstore greeting${why}`
      : `connect failed${why}`;
    const now = performance.now();
    if (wasConnected && now - this.connectedAt >= this.backoffMaxMs) {
      // A connection that was healthy for a while: the first new attempt may start at once.
      this.failedAttempts = 0;
      this.nextAttemptAt = now;
    } else {
      this.failedAttempts++;
      const delayMs = Math.min(this.backoffMaxMs, this.backoffMinMs * 2 ** Math.min(this.failedAttempts - 1, 20));
      this.nextAttemptAt = now + delayMs * (0.5 + Math.random() * 0.5);
    }
    this.state = 'idle';
    this.logger.debug?.(
      { address: this.address, reason: this.lastFailure, inFlight: this.pending.size },
      'rpc connection closed',
    );
    if (this.protocolError !== undefined && cause === this.protocolError) {
      this.failAll(this.protocolError);
      return;
    }
    const message = wasConnected
      ? greeted
        ? `connection to ${this.address} closed with the call in flight${why}`
        : `${this.address} closed the connection before sending a dstore greeting${why}`
      : `could not connect to ${this.address}${why}`;
    // Before 'connect' nothing was handed to the socket: those calls were not sent.
    this.failAll(new ConnectionClosedError(message, { cause, notSent: !wasConnected }));
  }

  /** The server's greeting was refused: not dstore, no common version, or the wrong role. */
  private refused(err: DstoreError): void {
    this.logger.warn(
      { address: this.address, reason: err.message, code: err.code },
      'closing rpc connection: greeting refused',
    );
    this.protocolError = err;
    this.decoder?.stop();
    this.lastError = err;
    this.socket?.destroy();
  }

  /** Drops the connection after a protocol violation by the server. */
  private abandon(reason: string, details: object = {}): void {
    this.logger.warn({ address: this.address, reason, ...details }, 'closing rpc connection');
    this.decoder?.stop();
    this.lastError = new Error(reason);
    this.socket?.destroy();
  }

  private failAll(err: DstoreError): void {
    if (this.pending.size === 0) return;
    const calls = [...this.pending.values()];
    this.pending.clear();
    for (const call of calls) {
      clearTimeout(call.timer);
      call.reject(err);
    }
  }

  private allocateId(): number {
    do {
      this.nextId = this.nextId >= MAX_CALL_ID ? 1 : this.nextId + 1;
    } while (this.pending.has(this.nextId));
    return this.nextId;
  }

  private onTimeout(id: number): void {
    const call = this.pending.get(id);
    if (!call) return;
    this.pending.delete(id);
    if (this.pending.size === 0) this.socket?.unref();
    call.reject(new TimeoutError(`call to ${this.address} got no reply within ${call.timeoutMs} ms`));
  }

  private settle(id: number, outcome: { ok: true; value: unknown } | { ok: false; err: Error }): void {
    const call = this.pending.get(id);
    if (!call) {
      this.logger.debug?.({ address: this.address, id }, 'reply to a call no longer in flight; ignored');
      return;
    }
    this.pending.delete(id);
    clearTimeout(call.timer);
    if (this.pending.size === 0) this.socket?.unref();
    if (!outcome.ok) {
      call.reject(outcome.err);
      return;
    }
    if (call.reply === undefined) {
      call.resolve(outcome.value);
      return;
    }
    const decoded = call.reply.decode(outcome.value);
    if (decoded.ok) call.resolve(decoded.value);
    else call.reject(new MalformedMessageError(`reply from ${this.address}: ${decoded.reason}`));
  }

  // FrameSink
  onFrameError(reason: string, frameBytes: number): void {
    this.abandon(reason, { frameBytes, maxFrameBytes: this.maxFrameBytes });
  }

  onFrame(frame: Buffer): void {
    dispatchFrame('client', frame, this.inbound);
  }

  private readonly inbound: FrameHandlers<'client'> = {
    violation: (reason, details) => this.abandon(reason, details),
    malformed: (id, reason) =>
      this.settle(id, { ok: false, err: new MalformedMessageError(`reply from ${this.address}: ${reason}`) }),
    exchange: (reply) =>
      this.settle(
        reply.id,
        reply.e !== undefined ? { ok: false, err: errorFromWire(reply.e) } : { ok: true, value: reply.b },
      ),
    message: (body) => this.onMessage(body),
  };

  private onMessage(body: unknown): void {
    const onMessage = this.onMessageOption;
    if (!onMessage) {
      this.logger.debug?.({ address: this.address }, 'one-way message without an onMessage handler; dropped');
      return;
    }
    runMessageHandler(() => onMessage(body), this.logger, { address: this.address });
  }
}
