/** The transport's server side: the listener and one accepted connection. */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import {
  DstoreError,
  InvalidArgumentError,
  MalformedMessageError,
  OverloadedError,
  type WireError,
} from '../../core/errors.js';
import { FrameDecoder, FrameWriter, packBody, type FrameSink } from '../frame.js';
import { GreetingReader, encodeGreeting, roleName, type GreetingResult, type GreetingRole } from '../handshake.js';
import { OVERSIZED_PREFIX_BYTES, peekCall, type OversizedCallHandler } from '../oversized.js';
import type { Codec } from '../schema.js';
import {
  type RpcLogger,
  silentLogger,
  RPC_DEFAULTS,
  defaultMaxQueuedBytes,
  describe,
  isPromiseLike,
  OVERSIZED_SKIP_MAX_BYTES,
  REFUSED_LINGER_MS,
  errorReserveBytes,
  errorReplyBody,
} from './common.js';
import { type FrameHandlers, afterGreeting, dispatchFrame, encodeMessage, runMessageHandler } from './frames.js';

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

export interface ServerSettings<Req, Msg> {
  readonly options: RpcServerOptions<Req, Msg>;
  readonly logger: RpcLogger;
  readonly maxInFlight: number;
  readonly maxQueuedBytes: number;
}

/** One accepted connection. */
export class ServerConnection<Req, Msg> implements FrameSink {
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
    onClosed: (connection: ServerConnection<Req, Msg>) => void,
  ) {
    const { maxFrameBytes, oversizedCall } = settings.options;
    this.decoder = oversizedCall
      ? new FrameDecoder(maxFrameBytes, this, Math.max(maxFrameBytes, OVERSIZED_SKIP_MAX_BYTES), OVERSIZED_PREFIX_BYTES)
      : new FrameDecoder(maxFrameBytes, this);
    this.writer = new FrameWriter(settings.maxQueuedBytes, () => this.onDrain());
    this.messageContext = { connectionId: id, remoteAddress, send: (body) => this.send(body) };
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    // The greeting goes first, before any frame the writer flushes (on setImmediate).
    this.greeting = new GreetingReader(remoteAddress);
    socket.write(encodeGreeting(this.role));
    this.writer.attach(socket);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) =>
      settings.logger.debug?.({ connectionId: id, remoteAddress, err: describe(err) }, 'rpc connection error'),
    );
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
      this.settings.logger.warn(
        { connectionId: this.id, remoteAddress: this.remoteAddress, reason, ...details },
        'closing rpc connection',
      );
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
    const rest = afterGreeting(greeting, chunk, (r) => this.acceptGreeting(r));
    if (rest === undefined) return;
    this.greeting = undefined;
    if (rest.length > 0) this.decoder.push(rest);
  }

  /** Whether the dialer's greeting is one to serve; if not, the connection is refused. */
  private acceptGreeting(r: Exclude<GreetingResult, { state: 'pending' }>): boolean {
    if (r.state === 'refused') {
      this.refuse(r.message);
      return false;
    }
    if (r.greeting.role !== 'any' && r.greeting.role !== this.role) {
      // The dialer reports the mismatch from our greeting (WrongRoleError); we only log it.
      const wanted = roleName(r.greeting.role);
      this.refuse(`a client looking for ${wanted} connected to this ${roleName(this.role).replace(/^an? /, '')}`);
      return false;
    }
    return true;
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
    this.settings.logger.warn(
      { connectionId: this.id, remoteAddress: this.remoteAddress, reason },
      'refusing rpc connection',
    );
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
      this.close(`frame of ${frameBytes} bytes is over maxFrameBytes=${maxFrameBytes} and is not a readable call`, {
        frameBytes,
        maxFrameBytes,
      });
      return false;
    }
    let err: DstoreError | undefined;
    try {
      err = oversizedCall(call, frameBytes);
    } catch (e) {
      this.settings.logger.error({ connectionId: this.id, err: describe(e) }, 'oversizedCall handler failed');
    }
    err ??= new InvalidArgumentError(`call of ${frameBytes} bytes is over maxFrameBytes=${maxFrameBytes}`);
    this.settings.logger.debug?.(
      { connectionId: this.id, id: call.id, frameBytes, maxFrameBytes, code: err.code },
      'oversized call answered with an error',
    );
    this.enqueueReply(call.id, errorReplyBody(call.id, err.toWire()));
    return !this.closed;
  }

  onFrame(frame: Buffer): void {
    dispatchFrame('server', frame, this.inbound);
  }

  private readonly inbound: FrameHandlers<'server'> = {
    violation: (reason, details) => this.close(reason, details),
    malformed: (id, reason) => this.enqueueReply(id, errorReplyBody(id, new MalformedMessageError(reason).toWire())),
    exchange: (call) => this.onCall(call.id, call.d, call.b),
    message: (body) => this.onMessage(body),
  };

  private onCall(id: number, d: number | undefined, raw: unknown): void {
    const { options, maxInFlight } = this.settings;
    if (this.inFlight >= maxInFlight) {
      this.enqueueReply(
        id,
        errorReplyBody(
          id,
          new OverloadedError(
            `connection has ${this.inFlight} calls in flight (maxInFlightPerConnection=${maxInFlight})`,
          ).toWire(),
        ),
      );
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
      frame = errorReplyBody(id, {
        code: 'INTERNAL',
        message: `reply cannot be encoded: ${describe(err)}`,
        retryable: false,
      });
    }
    if (frame.length > options.maxFrameBytes) {
      logger.warn(
        { connectionId: this.id, id, frameBytes: frame.length, maxFrameBytes: options.maxFrameBytes },
        'rpc reply over maxFrameBytes',
      );
      frame = errorReplyBody(id, {
        code: 'INTERNAL',
        message: `reply of ${frame.length} bytes is over maxFrameBytes=${options.maxFrameBytes}`,
        retryable: false,
      });
    }
    this.enqueueReply(id, frame);
  }

  private replyFailure(id: number, err: unknown): void {
    if (this.closed) return;
    let wire: WireError;
    if (err instanceof DstoreError) {
      wire = err.toWire();
    } else {
      this.settings.logger.error(
        { connectionId: this.id, id, err: err instanceof Error ? err : describe(err) },
        'rpc handler failed',
      );
      wire = { code: 'INTERNAL', message: describe(err), retryable: false };
    }
    let frame: Buffer;
    try {
      frame = errorReplyBody(id, wire);
    } catch (encodeErr) {
      // Extra fields of a custom toWire() that msgpack cannot hold: keep code and message.
      frame = errorReplyBody(id, {
        code: wire.code,
        message: `${wire.message} (fields not encodable: ${describe(encodeErr)})`,
      });
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
      const overloaded = errorReplyBody(
        id,
        new OverloadedError(
          `reply of ${frame.length} bytes does not fit the connection's ` +
            `outgoing queue (maxQueuedBytes=${maxQueuedBytes})`,
        ).toWire(),
      );
      if (!this.writer.write(overloaded, errorReserveBytes(maxQueuedBytes))) {
        this.close(
          `outgoing queue over maxQueuedBytes=${maxQueuedBytes} and its reserve: the peer is not reading its replies`,
        );
        return;
      }
    }
    this.pauseIfBacklogged();
  }

  private send(body: unknown): boolean {
    if (this.closed) return false;
    const { logger, options } = this.settings;
    const frame = encodeMessage(body, options.maxFrameBytes, logger, { connectionId: this.id });
    if (frame === undefined) return false;
    if (!this.writer.write(frame)) return false;
    this.pauseIfBacklogged();
    return true;
  }

  /** Backpressure: stop reading requests while replies wait for a slow reader. */
  private pauseIfBacklogged(): void {
    if (!this.paused && this.writer.pendingBytes >= this.settings.maxQueuedBytes / 2) {
      this.paused = true;
      this.socket.pause();
      this.settings.logger.debug?.(
        { connectionId: this.id, pendingBytes: this.writer.pendingBytes },
        'rpc connection paused: replies backlogged',
      );
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
        logger.warn(
          { connectionId: this.id, remoteAddress: this.remoteAddress, reason: decoded.reason },
          'malformed one-way message; dropped',
        );
        return;
      }
      body = decoded.value;
    } else {
      body = raw as Msg;
    }
    runMessageHandler(() => onMessage(body, this.messageContext), logger, { connectionId: this.id });
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
    const connection = new ServerConnection(id, socket, remoteAddress, this.settings, (c) =>
      this.connections.delete(c),
    );
    this.connections.add(connection);
    this.settings.logger.debug?.({ connectionId: id, remoteAddress }, 'rpc connection accepted');
  }
}
