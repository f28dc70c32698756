/**
 * The reserved key space of transactions (DESIGN §16, docs/transactions.md). Keys that start
 * with RESERVED_PREFIX (`\x00dstore\x00`) belong to dstore: the intent on a user key K is
 * `prefix · 'i' · K`, a transaction record is `prefix · 't' · <16 hex digits> · K1` (K1 the first
 * key the transaction writes). A reserved key is routed by the user key it names, so an intent
 * lives in its key's partition and a record in its first key's. Pure.
 */

/** `\x00dstore\x00`. */
export const RESERVED_PREFIX: Uint8Array = Uint8Array.of(0, 0x64, 0x73, 0x74, 0x6f, 0x72, 0x65, 0);
const INTENT = 0x69; // 'i'
const RECORD = 0x74; // 't'
/** Hex digits of a transaction id. */
export const TXN_ID_CHARS = 16;
/** How many bytes a reserved key may have beyond the user key it names. */
export const RESERVED_OVERHEAD_BYTES = RESERVED_PREFIX.length + 1 + TXN_ID_CHARS;

export function isReserved(key: Uint8Array): boolean {
  if (key.length < RESERVED_PREFIX.length) return false;
  for (let i = 0; i < RESERVED_PREFIX.length; i++) if (key[i] !== RESERVED_PREFIX[i]) return false;
  return true;
}

function reserved(kind: number, middle: Uint8Array, userKey: Uint8Array): Uint8Array {
  const out = new Uint8Array(RESERVED_PREFIX.length + 1 + middle.length + userKey.length);
  out.set(RESERVED_PREFIX, 0);
  out[RESERVED_PREFIX.length] = kind;
  out.set(middle, RESERVED_PREFIX.length + 1);
  out.set(userKey, RESERVED_PREFIX.length + 1 + middle.length);
  return out;
}

/** The key of the intent on user key `key`. */
export function intentKey(key: Uint8Array): Uint8Array {
  return reserved(INTENT, new Uint8Array(0), key);
}

/** The first bytes of every intent key (a prefix scan of a partition finds its intents). */
export const INTENT_PREFIX: Uint8Array = reserved(INTENT, new Uint8Array(0), new Uint8Array(0));

export function isIntentKey(key: Uint8Array): boolean {
  return isReserved(key) && key.length > RESERVED_PREFIX.length && key[RESERVED_PREFIX.length] === INTENT;
}

/** The user key an intent key is on (call only for an intent key). */
export function userKeyOfIntent(key: Uint8Array): Uint8Array {
  return key.subarray(RESERVED_PREFIX.length + 1);
}

/** The key of transaction `id`'s record (`id`: TXN_ID_CHARS hex digits) placed with user key `firstKey`. */
export function recordKey(id: string, firstKey: Uint8Array): Uint8Array {
  if (!new RegExp(`^[0-9a-f]{${TXN_ID_CHARS}}$`).test(id)) throw new RangeError(`not a transaction id: ${id}`);
  const middle = new Uint8Array(TXN_ID_CHARS);
  for (let i = 0; i < TXN_ID_CHARS; i++) middle[i] = id.charCodeAt(i);
  return reserved(RECORD, middle, firstKey);
}

/** A key's bytes as a string (one char per byte): a map key. */
export function keyName(key: Uint8Array): string {
  let s = '';
  for (let i = 0; i < key.length; i++) s += String.fromCharCode(key[i]!);
  return s;
}

/** The bytes `partitionOf` hashes: the user key a reserved key names, or the key itself. */
export function routeOf(key: Uint8Array): Uint8Array {
  if (!isReserved(key) || key.length <= RESERVED_PREFIX.length) return key;
  const kind = key[RESERVED_PREFIX.length];
  if (kind === INTENT) return key.subarray(RESERVED_PREFIX.length + 1);
  if (kind === RECORD && key.length >= RESERVED_OVERHEAD_BYTES) return key.subarray(RESERVED_OVERHEAD_BYTES);
  return key;
}
