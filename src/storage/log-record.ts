/**
 * The on-disk form of records both durable backends (lmdb, redis) store: log entries and
 * stored values (data records) in particular: crc32 · msgpack payload (S13). One format,
 * so a record means the same thing whichever engine holds it.
 *
 * A record may be *bound* to bytes it is stored under (a stored value to its key): the
 * checksum then covers those bytes too, so a value that moved to another key, or a key
 * whose bytes changed, fails the check like a flipped byte in the value does.
 */
import { crc32 } from 'node:zlib';
import { Packr } from 'msgpackr';
import { StorageFailureError } from '../core/errors.js';
import {
  type LogEntry,
  type Op,
  type VersionedValue,
  assertNever,
  epoch as toEpoch,
  seq as toSeq,
} from '../core/types.js';

/**
 * S13: a record failed its checksum or does not decode: the replica must report itself
 * corrupt (stop acking, relearn). A StorageFailureError on the wire, marked for the server.
 */
export class CorruptRecordError extends StorageFailureError {
  readonly corrupt = true;
}

/**
 * S13: whether a backend's read failed because a stored record is corrupt. Every backend
 * reports corruption this way (the memory backend, which keeps no checksums, never does);
 * checked by a field, not by class, so an error that crossed a module boundary still counts.
 */
export function isCorruptRecord(err: unknown): err is CorruptRecordError {
  return err instanceof Error && (err as { corrupt?: unknown }).corrupt === true;
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

export const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isBytes = (v: unknown): v is Uint8Array => v instanceof Uint8Array;

/** The checksum of a record's payload, covering the bytes it is bound to first (file comment). */
function checksum(payload: Uint8Array, boundTo: Uint8Array | undefined): number {
  return boundTo === undefined ? crc32(payload) : crc32(payload, crc32(boundTo));
}

/**
 * crc32 · msgpack(value) (S13); with `boundTo`, the checksum also covers those bytes (they
 * are not stored). The payload is copied: msgpackr reuses its output buffer.
 */
export function sealRecord(value: unknown, boundTo?: Uint8Array): Buffer {
  const payload = packr.pack(value);
  const out = Buffer.allocUnsafe(4 + payload.length);
  out.writeUInt32BE(checksum(payload, boundTo), 0);
  payload.copy(out, 4);
  return out;
}

/**
 * The value of a sealed record; a CorruptRecordError when its checksum (over `boundTo` and
 * the payload) or its encoding is wrong.
 */
export function openRecord(raw: Buffer, what: string, boundTo?: Uint8Array): unknown {
  if (raw.length < 4) throw new CorruptRecordError(`${what}: a record of ${raw.length} bytes has no checksum (S13)`);
  const payload = raw.subarray(4);
  if (checksum(payload, boundTo) !== raw.readUInt32BE(0))
    throw new CorruptRecordError(`${what}: checksum mismatch (S13)`);
  try {
    return packr.unpack(payload) as unknown;
  } catch (err) {
    throw new CorruptRecordError(`${what}: the record does not decode`, { cause: err });
  }
}

const OP_PUT = 0;
const OP_DELETE = 1;
const OP_EPOCH_START = 2;
const OP_DIGEST = 3;

/**
 * A log entry as [epoch, seq, op code, key, value, clientId, requestSeq], absent fields null;
 * a put with an expiry (§16) has it as an eighth field (records without one read as before).
 */
export function encodeEntry(e: LogEntry): Buffer {
  const tagClient = e.tag ? e.tag.clientId : null;
  const tagSeq = e.tag ? e.tag.requestSeq : null;
  switch (e.op.kind) {
    case 'put':
      return e.op.expiresAt === undefined
        ? sealRecord([e.epoch, e.seq, OP_PUT, e.op.key, e.op.value, tagClient, tagSeq])
        : sealRecord([e.epoch, e.seq, OP_PUT, e.op.key, e.op.value, tagClient, tagSeq, e.op.expiresAt]);
    case 'delete':
      return sealRecord([e.epoch, e.seq, OP_DELETE, e.op.key, null, tagClient, tagSeq]);
    case 'epochStart':
      return sealRecord([e.epoch, e.seq, OP_EPOCH_START, null, null, tagClient, tagSeq]);
    case 'digest':
      return sealRecord([e.epoch, e.seq, OP_DIGEST, null, [...e.op.buckets], tagClient, tagSeq]);
    default:
      return assertNever(e.op);
  }
}

/**
 * The entry a record holds. `bytes` makes the key and value the caller keeps: a view into
 * `raw` when the record outlives nothing that reuses it (lmdb), a copy otherwise (redis).
 */
export function decodeEntry(raw: Buffer, what: string, bytes: (b: Uint8Array) => Uint8Array): LogEntry {
  const t = openRecord(raw, what);
  if (!Array.isArray(t) || t.length < 7 || t.length > 8) throw new CorruptRecordError(`${what}: not a log entry`);
  const [ep, s, code, key, value, clientId, requestSeq, expiresAt] = t as unknown[];
  if (!isUint(ep) || !isUint(s)) throw new CorruptRecordError(`${what}: bad epoch or seq`);
  let op: Op;
  if (code === OP_PUT && isBytes(key) && isBytes(value) && expiresAt === undefined)
    op = { kind: 'put', key: bytes(key), value: bytes(value) };
  else if (code === OP_PUT && isBytes(key) && isBytes(value) && isUint(expiresAt))
    op = { kind: 'put', key: bytes(key), value: bytes(value), expiresAt };
  else if (code === OP_DELETE && isBytes(key)) op = { kind: 'delete', key: bytes(key) };
  else if (code === OP_EPOCH_START) op = { kind: 'epochStart' };
  else if (code === OP_DIGEST && Array.isArray(value) && value.every(isUint)) op = { kind: 'digest', buckets: value };
  else throw new CorruptRecordError(`${what}: bad op`);
  if (typeof clientId === 'string' && isUint(requestSeq))
    return { epoch: toEpoch(ep), seq: toSeq(s), op, tag: { clientId, requestSeq } };
  return { epoch: toEpoch(ep), seq: toSeq(s), op };
}

/**
 * A stored value (data record): [version, value bytes] or, with an expiry (§16), [version,
 * value bytes, expiresAt], sealed and bound to its key, so a get, scan or snapshot that reads
 * it verifies both (S13). Shared by lmdb and redis.
 */
export function encodeStoredValue(key: Uint8Array, version: number, value: Uint8Array, expiresAt?: number): Buffer {
  return sealRecord(expiresAt === undefined ? [version, value] : [version, value, expiresAt], key);
}

/**
 * The version and value a stored value record holds, checked against the key it was read
 * under; a CorruptRecordError when it does not match. `bytes` as for decodeEntry.
 */
export function decodeStoredValue(
  raw: Buffer,
  key: Uint8Array,
  what: string,
  bytes: (b: Uint8Array) => Uint8Array,
): VersionedValue {
  const t = openRecord(raw, what, key);
  if (!Array.isArray(t) || t.length < 2 || t.length > 3) throw new CorruptRecordError(`${what}: not a stored value`);
  const [version, value, expiresAt] = t as unknown[];
  if (!isUint(version) || !isBytes(value)) throw new CorruptRecordError(`${what}: bad version or value`);
  if (expiresAt === undefined) return { version: toSeq(version), value: bytes(value) };
  if (!isUint(expiresAt)) throw new CorruptRecordError(`${what}: bad expiry`);
  return { version: toSeq(version), value: bytes(value), expiresAt };
}
