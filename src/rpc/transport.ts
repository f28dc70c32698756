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
export type { RpcLogger } from './transport/common.js';
export { silentLogger, RPC_DEFAULTS, defaultMaxQueuedBytes } from './transport/common.js';
export type { MessageContext, CallContext, RpcServerOptions } from './transport/server.js';
export { RpcServer } from './transport/server.js';
export type { RpcConnectionOptions, CallOptions, TypedCallOptions } from './transport/connection.js';
export { RpcConnection } from './transport/connection.js';
export { parseAddress, RpcPool } from './transport/pool.js';
export type { RpcPoolOptions } from './transport/pool.js';
