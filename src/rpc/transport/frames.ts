/**
 * What both ends of a transport connection do with frames the same way (the server side,
 * server.ts, and the client side, connection.ts): read the peer's greeting before any frame,
 * decode and check a received frame, encode a one-way message within the size limit, and run
 * the `onMessage` handler.
 */
import { type Envelope, packBody, parseEnvelope, unpackBody } from '../frame.js';
import type { GreetingReader, GreetingResult } from '../handshake.js';
import { assertNever } from '../../core/types.js';
import { type RpcLogger, describe, isPromiseLike } from './common.js';

/**
 * The peer's greeting comes before any frame (handshake.ts): feeds `chunk` to `greeting` and
 * returns the bytes after the greeting (the first frames, maybe none), or undefined while the
 * greeting is incomplete or when `accept`, which judges the complete greeting, refuses it.
 */
export function afterGreeting(
  greeting: GreetingReader,
  chunk: Buffer,
  accept: (result: Exclude<GreetingResult, { state: 'pending' }>) => boolean,
): Buffer | undefined {
  const r = greeting.push(chunk);
  if (r.state === 'pending' || !accept(r) || r.state !== 'ok') return undefined;
  return r.rest;
}

/** The side of a connection: a server answers calls, a client gets the replies. */
export type Side = 'server' | 'client';

/** What each side may receive: calls and messages on a server, replies and messages on a client. */
export type Inbound<S extends Side> = Extract<Envelope, { t: (S extends 'server' ? 'call' : 'reply') | 'msg' }>;

/**
 * A received frame, decoded:
 * - `envelope`: a valid one this side may receive;
 * - `malformed`: the peer's call (on a server) or reply (on a client) has a readable id but is
 *   otherwise invalid: only that call fails, the connection stays;
 * - `violation`: anything else wrong, which closes the connection (`reason`, `details` logged).
 */
export type InboundFrame<S extends Side> =
  | { readonly kind: 'envelope'; readonly envelope: Inbound<S> }
  | { readonly kind: 'malformed'; readonly id: number; readonly reason: string }
  | { readonly kind: 'violation'; readonly reason: string; readonly details: object };

export function readFrame<S extends Side>(side: S, frame: Buffer): InboundFrame<S> {
  let value: unknown;
  try {
    value = unpackBody(frame);
  } catch (err) {
    return {
      kind: 'violation',
      reason: `undecodable frame body: ${describe(err)}`,
      details: { frameBytes: frame.length },
    };
  }
  const parsed = parseEnvelope(value);
  const answered = side === 'server' ? 'call' : 'reply';
  if (!parsed.ok) {
    if (parsed.t === answered && parsed.id !== undefined)
      return { kind: 'malformed', id: parsed.id, reason: parsed.reason };
    return { kind: 'violation', reason: `invalid envelope: ${parsed.reason}`, details: {} };
  }
  const envelope = parsed.envelope;
  if (envelope.t !== 'msg' && envelope.t !== answered) {
    const reason = side === 'server' ? 'a reply sent to a server' : 'a call sent to a client';
    return { kind: 'violation', reason, details: {} };
  }
  return { kind: 'envelope', envelope: envelope as Inbound<S> };
}

/** What a side does with each outcome of `readFrame`. */
export interface FrameHandlers<S extends Side> {
  /** Closes the connection; `reason` and `details` go to the log. */
  violation(reason: string, details: object): void;
  /** Fails just the call `id` with a MalformedMessageError. */
  malformed(id: number, reason: string): void;
  /** A call (on a server) or a reply (on a client). */
  exchange(envelope: Exclude<Inbound<S>, { t: 'msg' }>): void;
  /** A one-way message's body. */
  message(body: unknown): void;
}

/** Reads a received frame and hands the outcome to the side's handler. */
export function dispatchFrame<S extends Side>(side: S, frame: Buffer, handlers: FrameHandlers<S>): void {
  const inbound = readFrame(side, frame);
  switch (inbound.kind) {
    case 'violation':
      handlers.violation(inbound.reason, inbound.details);
      return;
    case 'malformed':
      handlers.malformed(inbound.id, inbound.reason);
      return;
    case 'envelope': {
      const envelope: Envelope = inbound.envelope;
      if (envelope.t === 'msg') handlers.message(envelope.b);
      else handlers.exchange(envelope as Exclude<Inbound<S>, { t: 'msg' }>);
      return;
    }
    default:
      assertNever(inbound);
  }
}

/**
 * A one-way message's frame, or undefined when it is dropped: a body msgpack cannot encode
 * (logged as an error) or a frame over `maxFrameBytes` (logged as a warning). `context`
 * names the connection in the log.
 */
export function encodeMessage(
  body: unknown,
  maxFrameBytes: number,
  logger: RpcLogger,
  context: object,
): Buffer | undefined {
  let frame: Buffer;
  try {
    frame = packBody({ t: 'msg', b: body });
  } catch (err) {
    logger.error({ ...context, err: describe(err) }, 'rpc message cannot be encoded; dropped');
    return undefined;
  }
  if (frame.length > maxFrameBytes) {
    logger.warn({ ...context, frameBytes: frame.length, maxFrameBytes }, 'rpc message over maxFrameBytes; dropped');
    return undefined;
  }
  return frame;
}

/** Runs an `onMessage` handler; what it throws or rejects with is logged, never raised. */
export function runMessageHandler(run: () => unknown, logger: RpcLogger, context: object): void {
  const failed = (err: unknown): void =>
    logger.error({ ...context, err: err instanceof Error ? err : describe(err) }, 'rpc onMessage failed');
  try {
    const result = run();
    if (isPromiseLike(result)) Promise.resolve(result).catch(failed);
  } catch (err) {
    failed(err);
  }
}
