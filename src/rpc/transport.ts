/**
 * Message-based RPC over TCP (DESIGN §10): `RpcServer` answers calls and receives one-way
 * messages; `RpcConnection` is one multiplexed client connection (lazy connect, reconnection
 * with exponential backoff and jitter, a deadline on every call); `RpcPool` keeps one
 * connection per `host:port`.
 *
 * Wire format: every connection opens with a greeting each way (handshake.ts: magic, protocol
 * versions, role); then frames and envelopes (frame.ts). A peer whose greeting is not dstore's,
 * or shares no protocol version, is refused: the server closes the connection (logged), the
 * client fails its calls with ProtocolMismatchError, or WrongRoleError when the listener is
 * not the role it expected (a storage server given as the nameserver). Bodies are opaque here; a server or caller may
 * pass a `Codec` (schema.ts) to get validated, typed bodies.
 *
 * Failure handling, per connection and never beyond it:
 * - a frame over `maxFrameBytes`, an undecodable body, or an invalid envelope that is not a
 *   call with a readable id closes the connection (logged with the reason);
 * - an invalid call with a readable id, or a call body its codec refuses, gets a
 *   MALFORMED_MESSAGE error reply;
 * - a handler's DstoreError becomes an error reply with its wire form; anything else it
 *   throws becomes INTERNAL and is logged.
 *
 * Bounds (all per connection): calls in flight (`maxInFlightCalls` on the client,
 * `maxInFlightPerConnection` on the server: OVERLOADED beyond), queued outgoing bytes
 * (`maxQueuedBytes`: a client refuses calls with OVERLOADED and drops messages; a server
 * stops reading from a peer whose replies pile up past half of it, answers OVERLOADED
 * instead of a reply that does not fit, and closes a peer that does not read even those),
 * and the bytes of one partial frame (`maxFrameBytes`).
 */
import { createServer, connect as netConnect, type AddressInfo, type Server, type Socket } from 'node:net';
import {
  ConnectionClosedError,
  DstoreError,
  errorFromWire,
  InvalidArgumentError,
  MalformedMessageError,
  OverloadedError,
  TimeoutError,
  type WireError,
} from '../core/errors.js';
import { FrameDecoder, FrameWriter, MAX_CALL_ID, MAX_DEADLINE_MS, packBody, parseEnvelope, unpackBody, type FrameSink } from './frame.js';
import { GreetingReader, dialerCheck, encodeGreeting, roleName, type GreetingRole } from './handshake.js';
import { OVERSIZED_PREFIX_BYTES, peekCall, type OversizedCallHandler } from './oversized.js';
import type { Codec } from './schema.js';

// ---- logging ----

/** The part of a pino logger the transport uses. */
export interface RpcLogger {
  debug?(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const noop = (): void => undefined;
export const silentLogger: RpcLogger = { debug: noop, warn: noop, error: noop };

// ---- defaults ----

const MiB = 1024 * 1024;

export const RPC_DEFAULTS = {
  /** Calls one client connection keeps in flight before refusing with OVERLOADED. */
  maxInFlightCalls: 10_000,
  /** Calls one server connection runs at once before answering OVERLOADED. */
  maxInFlightPerConnection: 10_000,
  /** Connections a server accepts at once. */
  maxConnections: 10_000,
  /** Connections an RpcPool keeps; the least recently used one is closed beyond it. */
  maxPoolConnections: 1024,
  /** How long a TCP connect may take, in ms. */
  connectTimeoutMs: 5_000,
  /** First reconnection delay, in ms (doubled per failed attempt, with jitter). */
  backoffMinMs: 50,
  /** Largest reconnection delay, in ms. */
  backoffMaxMs: 2_000,
} as const;

/** Default bound of a connection's outgoing queue: room for two maximal frames, at least 8 MiB. */
export function defaultMaxQueuedBytes(maxFrameBytes: number): number {
  return Math.max(8 * MiB, 2 * (maxFrameBytes + 4));
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function isPromiseLike(x: unknown): x is PromiseLike<unknown> {
  return typeof x === 'object' && x !== null && typeof (x as { then?: unknown }).then === 'function';
}

/**
 * Largest oversized call a server with `oversizedCall` skips and answers (the frame of the
 * largest value any dstore build accepts, twice over); beyond it the connection is closed.
 */
const OVERSIZED_SKIP_MAX_BYTES = 256 * MiB;

/** How long a refused connection may stay half-closed before it is destroyed, in ms. */
const REFUSED_LINGER_MS = 2000;

/** Room above `maxQueuedBytes` for small error replies that stand in for replies that did not fit. */
function errorReserveBytes(maxQueuedBytes: number): number {
  return Math.max(64 * 1024, Math.floor(maxQueuedBytes / 8));
}

function errorReplyBody(id: number, e: WireError): Buffer {
  return packBody({ t: 'reply', id, e });
}

// ---- server ----

export interface MessageContext {
  /** Server-unique id of the connection the frame came on. */
  readonly connectionId: number;
  /** `ip:port` of the peer. */
  readonly remoteAddress: string;
  /**
   * Sends a one-way message back on this connection (the client's `onMessage` gets it).
   * False when it was dropped: connection closed, outgoing queue full, or body too large.
   */
  send(body: unknown): boolean;
}

export interface CallContext extends MessageContext {
  /**
   * When the caller stops waiting, in `Date.now()` ms: receipt time plus the time the caller
   * had left when it sent the call. `Infinity` if the call carried no deadline.
   */
  readonly deadlineMs: number;
}

export interface RpcServerOptions<Req = unknown, Msg = unknown> {
  /** Address to bind (DESIGN §12: loopback unless told otherwise). */
  readonly host: string;
  /** What this server is, announced in its greeting (handshake.ts). Default 'any'. */
  readonly role?: GreetingRole;
  /** Port to bind; 0 picks a free one (see `listen()`). */
  readonly port: number;
  /** Largest frame body accepted or sent, in bytes (limits.ts `maxFrameBytes`). */
  readonly maxFrameBytes: number;
  /**
   * Answers a call. The resolved value is the reply body; a thrown (or rejected) DstoreError
   * is sent as an error reply; anything else thrown becomes INTERNAL and is logged.
   */
  readonly handler: (body: Req, ctx: CallContext) => unknown;
  /** Receives one-way messages; without it they are dropped. Errors it throws are logged. */
  readonly onMessage?: (body: Msg, ctx: MessageContext) => void;
  /** Validates call bodies before `handler`; a refused body gets MALFORMED_MESSAGE. */
  readonly requests?: Codec<Req>;
  /** Validates one-way message bodies before `onMessage`; a refused one is logged and dropped. */
  readonly messages?: Codec<Msg>;
  /**
   * Set: a call over `maxFrameBytes` (up to OVERSIZED_SKIP_MAX_BYTES) is skipped without
   * buffering and answered with the error this returns for its first fields (oversized.ts),
   * or INVALID_ARGUMENT naming the sizes; the connection stays open. Unset: such a frame
   * closes the connection. A frame whose start is not a call always closes it.
   */
  readonly oversizedCall?: OversizedCallHandler;
  readonly logger?: RpcLogger;
  /** Default `RPC_DEFAULTS.maxConnections`. */
  readonly maxConnections?: number;
  /** Default `RPC_DEFAULTS.maxInFlightPerConnection`. */
  readonly maxInFlightPerConnection?: number;
  /**
   * Outgoing bytes one connection may hold; reading from it pauses at half, a reply that does
   * not fit is replaced by an OVERLOADED error, and a peer that does not read even those is
   * closed. Default `defaultMaxQueuedBytes`.
   */
  readonly maxQueuedBytes?: number;
}

interface ServerSettings<Req, Msg> {
  readonly options: RpcServerOptions<Req, Msg>;
  readonly logger: RpcLogger;
  readonly maxInFlight: number;
  readonly maxQueuedBytes: number;
}

/** One accepted connection. */
class ServerConnection<Req, Msg> implements FrameSink {
  private readonly decoder: FrameDecoder;
  private readonly writer: FrameWriter;
  private inFlight = 0;
  private closed = false;
  private paused = false;
  private readonly messageContext: MessageContext;
  /** Reads the peer's greeting; undefined once it was accepted and frames flow. */
  private greeting: GreetingReader | undefined;

  constructor(
    readonly id: number,
    private readonly socket: Socket,
    readonly remoteAddress: string,
    private readonly settings: ServerSettings<Req, Msg>,
    private readonly onClosed: (connection: ServerConnection<Req, Msg>) => void,
  ) {
    const { maxFrameBytes, oversizedCall } = settings.options;
    this.decoder = oversizedCall ? new FrameDecoder(maxFrameBytes, this, Math.max(maxFrameBytes, OVERSIZED_SKIP_MAX_BYTES), OVERSIZED_PREFIX_BYTES) : new FrameDecoder(maxFrameBytes, this);
    this.writer = new FrameWriter(settings.maxQueuedBytes, () => this.onDrain());
    this.messageContext = { connectionId: id, remoteAddress, send: (body) => this.send(body) };
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    // The greeting goes first, before any frame the writer flushes (on setImmediate).
    this.greeting = new GreetingReader(remoteAddress);
    socket.write(encodeGreeting(this.role));
    this.writer.attach(socket);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => settings.logger.debug?.({ connectionId: id, remoteAddress, err: describe(err) }, 'rpc connection error'));
    socket.once('close', () => {
      this.closed = true;
      this.decoder.stop();
      this.writer.detach();
      onClosed(this);
    });
  }

  /** Closes the connection now; a reason means a misbehaving peer and is logged. */
  close(reason?: string, details: object = {}): void {
    if (this.closed) return;
    this.closed = true;
    this.decoder.stop();
    this.writer.detach();
    if (reason !== undefined) {
      this.settings.logger.warn({ connectionId: this.id, remoteAddress: this.remoteAddress, reason, ...details }, 'closing rpc connection');
    }
    this.socket.destroy();
  }

  private get role(): GreetingRole {
    return this.settings.options.role ?? 'any';
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return; // refused: the rest is read and dropped until the peer goes
    const greeting = this.greeting;
    if (greeting === undefined) {
      this.decoder.push(chunk);
      return;
    }
    const r = greeting.push(chunk);
    if (r.state === 'pending') return;
    if (r.state === 'refused') {
      this.refuse(r.message);
      return;
    }
    if (r.greeting.role !== 'any' && r.greeting.role !== this.role) {
      // The dialer reports the mismatch from our greeting (WrongRoleError); we only log it.
      this.refuse(`a client looking for ${roleName(r.greeting.role)} connected to this ${roleName(this.role).replace(/^an? /, '')}`);
      return;
    }
    this.greeting = undefined;
    if (r.rest.length > 0) this.decoder.push(r.rest);
  }

  /**
   * Refuses a peer after its greeting: no frame of it is read. The connection is ended
   * gracefully so our greeting, already sent, reaches a dstore dialer, which then reports the
   * mismatch itself; a peer that does not close is cut off after a while.
   */
  private refuse(reason: string): void {
    this.closed = true;
    this.decoder.stop();
    this.writer.detach();
    this.settings.logger.warn({ connectionId: this.id, remoteAddress: this.remoteAddress, reason }, 'refusing rpc connection');
    this.socket.end();
    setTimeout(() => this.socket.destroy(), REFUSED_LINGER_MS).unref();
  }

  // FrameSink
  onFrameError(reason: string, frameBytes: number): void {
    this.close(reason, { frameBytes, maxFrameBytes: this.settings.options.maxFrameBytes });
  }

  /** Only with `oversizedCall`: answer a call that is too large, skip its bytes, go on. */
  onOversizedFrame(prefix: Buffer, frameBytes: number): boolean {
    const { maxFrameBytes, oversizedCall } = this.settings.options;
    const call = peekCall(prefix);
    if (call === undefined || oversizedCall === undefined) {
      this.close(`frame of ${frameBytes} bytes is over maxFrameBytes=${maxFrameBytes} and is not a readable call`, { frameBytes, maxFrameBytes });
      return false;
    }
    let err: DstoreError | undefined;
    try {
      err = oversizedCall(call, frameBytes);
    } catch (e) {
      this.settings.logger.error({ connectionId: this.id, err: describe(e) }, 'oversizedCall handler failed');
    }
    err ??= new InvalidArgumentError(`call of ${frameBytes} bytes is over maxFrameBytes=${maxFrameBytes}`);
    this.settings.logger.debug?.({ connectionId: this.id, id: call.id, frameBytes, maxFrameBytes, code: err.code }, 'oversized call answered with an error');
    this.enqueueReply(call.id, errorReplyBody(call.id, err.toWire()));
    return !this.closed;
  }

  onFrame(frame: Buffer): void {
    let value: unknown;
    try {
      value = unpackBody(frame);
    } catch (err) {
      this.close(`undecodable frame body: ${describe(err)}`, { frameBytes: frame.length });
      return;
    }
    const parsed = parseEnvelope(value);
    if (!parsed.ok) {
      if (parsed.t === 'call' && parsed.id !== undefined) {
        this.enqueueReply(parsed.id, errorReplyBody(parsed.id, new MalformedMessageError(parsed.reason).toWire()));
      } else {
        this.close(`invalid envelope: ${parsed.reason}`);
      }
      return;
    }
    const envelope = parsed.envelope;
    switch (envelope.t) {
      case 'call':
        this.onCall(envelope.id, envelope.d, envelope.b);
        return;
      case 'msg':
        this.onMessage(envelope.b);
        return;
      case 'reply':
        this.close('a reply sent to a server');
        return;
    }
  }

  private onCall(id: number, d: number | undefined, raw: unknown): void {
    const { options, maxInFlight } = this.settings;
    if (this.inFlight >= maxInFlight) {
      this.enqueueReply(id, errorReplyBody(id, new OverloadedError(`connection has ${this.inFlight} calls in flight (maxInFlightPerConnection=${maxInFlight})`).toWire()));
      return;
    }
    let body: Req;
    if (options.requests) {
      const decoded = options.requests.decode(raw);
      if (!decoded.ok) {
        this.enqueueReply(id, errorReplyBody(id, new MalformedMessageError(`call body: ${decoded.reason}`).toWire()));
        return;
      }
      body = decoded.value;
    } else {
      body = raw as Req; // no codec: Req is `unknown` unless the caller said otherwise
    }
    const ctx: CallContext = {
      connectionId: this.id,
      remoteAddress: this.remoteAddress,
      deadlineMs: d === undefined ? Infinity : Date.now() + d,
      send: this.messageContext.send,
    };
    this.inFlight++;
    let result: unknown;
    try {
      result = options.handler(body, ctx);
    } catch (err) {
      this.inFlight--;
      this.replyFailure(id, err);
      return;
    }
    if (isPromiseLike(result)) {
      Promise.resolve(result).then(
        (value) => {
          this.inFlight--;
          this.reply(id, value);
        },
        (err: unknown) => {
          this.inFlight--;
          this.replyFailure(id, err);
        },
      );
      return;
    }
    this.inFlight--;
    this.reply(id, result);
  }

  private reply(id: number, value: unknown): void {
    if (this.closed) return;
    const { logger, options } = this.settings;
    let frame: Buffer;
    try {
      frame = packBody({ t: 'reply', id, b: value });
    } catch (err) {
      logger.error({ connectionId: this.id, id, err: describe(err) }, 'rpc reply cannot be encoded');
      frame = errorReplyBody(id, { code: 'INTERNAL', message: `reply cannot be encoded: ${describe(err)}`, retryable: false });
    }
    if (frame.length > options.maxFrameBytes) {
      logger.warn({ connectionId: this.id, id, frameBytes: frame.length, maxFrameBytes: options.maxFrameBytes }, 'rpc reply over maxFrameBytes');
      frame = errorReplyBody(id, { code: 'INTERNAL', message: `reply of ${frame.length} bytes is over maxFrameBytes=${options.maxFrameBytes}`, retryable: false });
    }
    this.enqueueReply(id, frame);
  }

  private replyFailure(id: number, err: unknown): void {
    if (this.closed) return;
    let wire: WireError;
    if (err instanceof DstoreError) {
      wire = err.toWire();
    } else {
      this.settings.logger.error({ connectionId: this.id, id, err: err instanceof Error ? err : describe(err) }, 'rpc handler failed');
      wire = { code: 'INTERNAL', message: describe(err), retryable: false };
    }
    let frame: Buffer;
    try {
      frame = errorReplyBody(id, wire);
    } catch (encodeErr) {
      // Extra fields of a custom toWire() that msgpack cannot hold: keep code and message.
      frame = errorReplyBody(id, { code: wire.code, message: `${wire.message} (fields not encodable: ${describe(encodeErr)})` });
    }
    this.enqueueReply(id, frame);
  }

  /**
   * Queues a reply. One that does not fit under `maxQueuedBytes` is replaced by a small
   * OVERLOADED error reply, which may use a reserve above the bound (reading is paused by
   * then, so only calls already read can add to it); a peer that exhausts even the reserve is
   * not reading its replies and is disconnected.
   */
  private enqueueReply(id: number, frame: Buffer): void {
    if (this.closed) return;
    if (!this.writer.write(frame)) {
      const { maxQueuedBytes } = this.settings;
      const overloaded = errorReplyBody(id, new OverloadedError(`reply of ${frame.length} bytes does not fit the connection's outgoing queue (maxQueuedBytes=${maxQueuedBytes})`).toWire());
      if (!this.writer.write(overloaded, errorReserveBytes(maxQueuedBytes))) {
        this.close(`outgoing queue over maxQueuedBytes=${maxQueuedBytes} and its reserve: the peer is not reading its replies`);
        return;
      }
    }
    this.pauseIfBacklogged();
  }

  private send(body: unknown): boolean {
    if (this.closed) return false;
    const { logger, options } = this.settings;
    let frame: Buffer;
    try {
      frame = packBody({ t: 'msg', b: body });
    } catch (err) {
      logger.error({ connectionId: this.id, err: describe(err) }, 'rpc message cannot be encoded; dropped');
      return false;
    }
    if (frame.length > options.maxFrameBytes) {
      logger.warn({ connectionId: this.id, frameBytes: frame.length, maxFrameBytes: options.maxFrameBytes }, 'rpc message over maxFrameBytes; dropped');
      return false;
    }
    if (!this.writer.write(frame)) return false;
    this.pauseIfBacklogged();
    return true;
  }

  /** Backpressure: stop reading requests while replies wait for a slow reader. */
  private pauseIfBacklogged(): void {
    if (!this.paused && this.writer.pendingBytes >= this.settings.maxQueuedBytes / 2) {
      this.paused = true;
      this.socket.pause();
      this.settings.logger.debug?.({ connectionId: this.id, pendingBytes: this.writer.pendingBytes }, 'rpc connection paused: replies backlogged');
    }
  }

  private onDrain(): void {
    if (this.paused && !this.closed && this.writer.pendingBytes < this.settings.maxQueuedBytes / 2) {
      this.paused = false;
      this.socket.resume();
      this.settings.logger.debug?.({ connectionId: this.id }, 'rpc connection resumed');
    }
  }

  private onMessage(raw: unknown): void {
    const { options, logger } = this.settings;
    const onMessage = options.onMessage;
    if (!onMessage) {
      logger.debug?.({ connectionId: this.id }, 'one-way message without an onMessage handler; dropped');
      return;
    }
    let body: Msg;
    if (options.messages) {
      const decoded = options.messages.decode(raw);
      if (!decoded.ok) {
        logger.warn({ connectionId: this.id, remoteAddress: this.remoteAddress, reason: decoded.reason }, 'malformed one-way message; dropped');
        return;
      }
      body = decoded.value;
    } else {
      body = raw as Msg;
    }
    try {
      const result: unknown = onMessage(body, this.messageContext);
      if (isPromiseLike(result)) {
        Promise.resolve(result).catch((err: unknown) => logger.error({ connectionId: this.id, err: err instanceof Error ? err : describe(err) }, 'rpc onMessage failed'));
      }
    } catch (err) {
      logger.error({ connectionId: this.id, err: err instanceof Error ? err : describe(err) }, 'rpc onMessage failed');
    }
  }
}

/**
 * Serves calls and one-way messages on one TCP port.
 *
 *   const server = new RpcServer({ host: '127.0.0.1', port: 0, maxFrameBytes, handler });
 *   const port = await server.listen();
 *   ...
 *   await server.close();
 */
export class RpcServer<Req = unknown, Msg = unknown> {
  private readonly server: Server;
  private readonly settings: ServerSettings<Req, Msg>;
  private readonly connections = new Set<ServerConnection<Req, Msg>>();
  private nextConnectionId = 1;
  private closing: Promise<void> | undefined;

  constructor(options: RpcServerOptions<Req, Msg>) {
    this.settings = {
      options,
      logger: options.logger ?? silentLogger,
      maxInFlight: options.maxInFlightPerConnection ?? RPC_DEFAULTS.maxInFlightPerConnection,
      maxQueuedBytes: options.maxQueuedBytes ?? defaultMaxQueuedBytes(options.maxFrameBytes),
    };
    this.server = createServer({ noDelay: true }, (socket) => this.onConnection(socket));
    this.server.maxConnections = options.maxConnections ?? RPC_DEFAULTS.maxConnections;
  }

  /** Binds; resolves with the bound port (useful with port 0). Rejects on e.g. EADDRINUSE. */
  listen(): Promise<number> {
    const { host, port } = this.settings.options;
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        this.server.on('error', (err) => this.settings.logger.error({ err: describe(err) }, 'rpc server error'));
        resolve((this.server.address() as AddressInfo).port);
      });
    });
  }

  /** The bound port, or undefined before `listen()`. */
  get port(): number | undefined {
    const address = this.server.address();
    return address !== null && typeof address === 'object' ? address.port : undefined;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Stops listening and closes every connection; replies still being computed are dropped. */
  close(): Promise<void> {
    this.closing ??= new Promise((resolve) => {
      this.server.close(() => resolve()); // an error here only means "was not listening"
      for (const connection of this.connections) connection.close();
    });
    return this.closing;
  }

  private onConnection(socket: Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const id = this.nextConnectionId++;
    const remoteAddress = `${socket.remoteAddress ?? 'unknown'}:${socket.remotePort ?? 0}`;
    const connection = new ServerConnection(id, socket, remoteAddress, this.settings, (c) => this.connections.delete(c));
    this.connections.add(connection);
    this.settings.logger.debug?.({ connectionId: id, remoteAddress }, 'rpc connection accepted');
  }
}

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

interface PendingCall {
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
  readonly timeoutMs: number;
  readonly reply: Codec<unknown> | undefined;
}

type ConnectionState = 'idle' | 'connecting' | 'connected' | 'closed';

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
      this.closedError = new InvalidArgumentError(`malformed address ${JSON.stringify(this.address.slice(0, 300))}: expected host:port`);
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
    if (this.state === 'closed') return Promise.reject(this.closedError ?? new ConnectionClosedError(`connection to ${this.address} is closed`));
    if (this.pending.size >= this.maxInFlightCalls) {
      return Promise.reject(new OverloadedError(`${this.pending.size} calls in flight to ${this.address} (maxInFlightCalls=${this.maxInFlightCalls})`));
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
      return Promise.reject(new InvalidArgumentError(`call of ${frame.length} bytes is over maxFrameBytes=${this.maxFrameBytes}`));
    }
    const refused = this.prepareToSend();
    if (refused !== undefined) return Promise.reject(refused);
    if (!this.writer.write(frame)) {
      return Promise.reject(new OverloadedError(`outgoing queue to ${this.address} is full (maxQueuedBytes=${this.maxQueuedBytes})`));
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
    let frame: Buffer;
    try {
      frame = packBody({ t: 'msg', b: body });
    } catch (err) {
      this.logger.error({ address: this.address, err: describe(err) }, 'rpc message cannot be encoded; dropped');
      return false;
    }
    if (frame.length > this.maxFrameBytes) {
      this.logger.warn({ address: this.address, frameBytes: frame.length, maxFrameBytes: this.maxFrameBytes }, 'rpc message over maxFrameBytes; dropped');
      return false;
    }
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
      return new ConnectionClosedError(`not connected to ${this.address} (${this.lastFailure}); next attempt in ${Math.ceil(waitMs)} ms`, { notSent: true });
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
        const r = greeting.push(chunk);
        if (r.state === 'pending') return;
        const refused = dialerCheck(r, this.address, this.expectRole);
        if (refused !== undefined || r.state !== 'ok') {
          if (this.socket === socket) this.refused(refused ?? new ConnectionClosedError(`${this.address}: greeting refused`));
          return;
        }
        this.protocolError = undefined;
        this.greeted = true;
        chunk = r.rest;
        if (chunk.length === 0) return;
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
    this.lastFailure = wasConnected ? (greeted ? `connection closed${why}` : `connection closed before a dstore greeting${why}`) : `connect failed${why}`;
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
    this.logger.debug?.({ address: this.address, reason: this.lastFailure, inFlight: this.pending.size }, 'rpc connection closed');
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
    this.logger.warn({ address: this.address, reason: err.message, code: err.code }, 'closing rpc connection: greeting refused');
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
    let value: unknown;
    try {
      value = unpackBody(frame);
    } catch (err) {
      this.abandon(`undecodable frame body: ${describe(err)}`, { frameBytes: frame.length });
      return;
    }
    const parsed = parseEnvelope(value);
    if (!parsed.ok) {
      if (parsed.t === 'reply' && parsed.id !== undefined) {
        this.settle(parsed.id, { ok: false, err: new MalformedMessageError(`reply from ${this.address}: ${parsed.reason}`) });
      } else {
        this.abandon(`invalid envelope: ${parsed.reason}`);
      }
      return;
    }
    const envelope = parsed.envelope;
    switch (envelope.t) {
      case 'reply':
        if (envelope.e !== undefined) this.settle(envelope.id, { ok: false, err: errorFromWire(envelope.e) });
        else this.settle(envelope.id, { ok: true, value: envelope.b });
        return;
      case 'msg':
        this.onMessage(envelope.b);
        return;
      case 'call':
        this.abandon('a call sent to a client');
        return;
    }
  }

  private onMessage(body: unknown): void {
    const onMessage = this.onMessageOption;
    if (!onMessage) {
      this.logger.debug?.({ address: this.address }, 'one-way message without an onMessage handler; dropped');
      return;
    }
    try {
      const result: unknown = onMessage(body);
      if (isPromiseLike(result)) {
        Promise.resolve(result).catch((err: unknown) => this.logger.error({ address: this.address, err: err instanceof Error ? err : describe(err) }, 'rpc onMessage failed'));
      }
    } catch (err) {
      this.logger.error({ address: this.address, err: err instanceof Error ? err : describe(err) }, 'rpc onMessage failed');
    }
  }
}

// ---- pool ----

/** Splits `host:port` or `[v6]:port`; throws InvalidArgumentError on anything else. */
export function parseAddress(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  let host = colon > 0 ? address.slice(0, colon) : '';
  const portText = address.slice(colon + 1);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  const port = Number(portText);
  if (host === '' || host.includes('[') || host.includes(']') || !/^\d{1,5}$/.test(portText) || port < 1 || port > 65535) {
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
      (this.options.logger ?? silentLogger).warn({ address: address.slice(0, 300), err: describe(err) }, 'malformed rpc address');
      return new RpcConnection({ ...this.options, host: address, port: 0, onMessage: undefined, ...(expectRole ? { expectRole } : {}) });
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
