/**
 * Schema helpers for the rpc edge (DESIGN §10, STYLE §1): untrusted values become typed
 * values only through a compiled TypeBox validator. `codec(schema)` never throws; its type
 * derives from the schema.
 *
 *   const PutRequest = Type.Object({ t: Type.Literal('put'), p: Uint32, key: Bytes, value: Bytes });
 *   const putRequest = codec(PutRequest);
 *   const parsed = putRequest.decode(body); // { ok: true, value } | { ok: false, reason }
 *
 * Numbers: `Type.Integer` accepts only finite integers (NaN, ±Infinity, 1.5 and BigInt are
 * refused) and `Type.Number` only finite numbers (TypeBox's default policy, relied on here).
 * Binary: msgpackr yields `Buffer`, a subclass of Uint8Array, which `Bytes` accepts.
 */
import { Type, type Static, type TSchema, type TUint8Array, type TInteger } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';

export { Type };
export type { Static, TSchema };

export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

export interface Codec<T> {
  /** Checks `x` against the schema; the value is `x` itself (not copied), typed. Never throws. */
  decode(x: unknown): Decoded<T>;
}

/** Longest failure reason kept (a hostile value could otherwise make a huge message). */
const MAX_REASON_CHARS = 200;

/** A compiled validator for `schema`; the failure reason names the first failing path. */
export function codec<T extends TSchema>(schema: T): Codec<Static<T>> {
  const check = TypeCompiler.Compile(schema);
  return {
    decode(x: unknown): Decoded<Static<T>> {
      try {
        if (check.Check(x)) return { ok: true, value: x };
        const first = check.Errors(x).First();
        const reason = first ? `${first.path || '/'}: ${first.message}` : 'does not match the schema';
        return { ok: false, reason: reason.slice(0, MAX_REASON_CHARS) };
      } catch (err) {
        // A compiled check only reads the value; a throw here means a value no message can
        // hold (e.g. a getter that throws). Report it as a mismatch.
        return {
          ok: false,
          reason: `unreadable value: ${err instanceof Error ? err.message : String(err)}`.slice(0, MAX_REASON_CHARS),
        };
      }
    },
  };
}

/** Binary data; accepts Buffer (what msgpackr yields) and any Uint8Array. */
export const Bytes: TUint8Array = Type.Uint8Array();

/** Binary data of at most `maxByteLength` bytes. */
export function bytes(maxByteLength: number): TUint8Array {
  return Type.Uint8Array({ maxByteLength });
}

/** 0..2^32-1 */
export const Uint32: TInteger = Type.Integer({ minimum: 0, maximum: 0xffff_ffff });

/** 0..2^53-1: seqs, epochs, versions. */
export const Uint53: TInteger = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
