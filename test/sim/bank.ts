/**
 * The bank workload (issue 14, `--bank`): the simulated clients run transactions — the
 * protocol of src/client/transaction.ts, driven by txn-driver.ts — instead of single-key
 * operations.
 *
 * - K accounts `acct-0..K-1`, each put to INITIAL before the clients start (the first fault
 *   may come meanwhile: it is retried until done).
 * - Transfers: a transaction reads two accounts and moves a random amount from one to the
 *   other, never below 0. Audits: a read-only transaction reads every account.
 * - Coordinator crashes: with ABANDON_P a transfer's client stops driving it at a random call
 *   (after the record, after some intents, right after the commit point…) and goes on with a
 *   new transaction: what it left must be resolved by the others (the record's TTL, resolving
 *   forward).
 * - Checks: every audit that completed saw the total K × INITIAL (`bank-audit`, at once);
 *   after the heal, once every client is idle, each account read through `readResolved` (so
 *   committed intents are resolved forward and expired ones dropped) sums to the total
 *   (`bank-total`), and no account is negative.
 */
import { ConditionFailedError, OutcomeUnknownError, TransactionAbortedError } from '../../src/core/errors.js';
import {
  type Call,
  type Proc,
  type RawRead,
  readResolved,
  type TxnChecks,
  type TxnState,
  transactionProc,
} from '../../src/client/transaction.js';
import type { SimClient } from './client.js';
import { text } from './disk.js';
import type { Observer } from './observer.js';
import { bytes } from './storage-node.js';
import { SimTxnDriver, type TxnMutation } from './txn-driver.js';
import type { World } from './world.js';

export const INITIAL = 100;
/** A transfer's client abandons it mid-way with this probability (a coordinator crash). */
export const ABANDON_P = 0.15;
/** The share of audits among the bank clients' transactions. */
export const AUDIT_P = 0.3;
/** The transactions' timeout (the pending record's TTL), simulated ms. */
export const TXN_TIMEOUT_MS = 2000;

const checks: TxnChecks = {
  key: (_method, key) => (typeof key === 'string' ? bytes(key) : (key as Uint8Array)),
  value: (value) => (typeof value === 'string' ? bytes(value) : (value as Uint8Array)),
};

const balance = (r: { value: Uint8Array } | undefined): number => (r === undefined ? 0 : Number(text(r.value)));

export const accountNames = (k: number): string[] => Array.from({ length: k }, (_, i) => `acct-${i}`);

export class Bank {
  readonly accounts: readonly string[];
  readonly total: number;
  /** Whether the accounts hold their initial balances (the clients start after). */
  initialised = false;
  readonly stats: Record<string, number> = {};

  constructor(
    private readonly world: World,
    private readonly observer: Observer,
    accounts: number,
    private readonly mutation?: TxnMutation,
  ) {
    this.accounts = accountNames(accounts);
    this.total = accounts * INITIAL;
  }

  private count(k: string): void {
    this.stats[k] = (this.stats[k] ?? 0) + 1;
  }

  /** Puts every account to INITIAL (retrying until done), then `done`. */
  initialise(client: SimClient, done: () => void): void {
    const accounts = this.accounts;
    function* init(): Proc<void> {
      for (const key of accounts) {
        for (;;) {
          try {
            yield { kind: 'put', key: bytes(key), value: bytes(String(INITIAL)), options: { ifVersion: 0 } };
            break;
          } catch (err) {
            // Present: an earlier attempt whose outcome was unknown did it (nobody else writes yet)?
            // A failed condition does not say so: a primary decides it from its log tail, entries
            // that may never commit (docs/consistency.md, "Transactions in the simulator"). Read it.
            if (err instanceof ConditionFailedError) {
              try {
                if (((yield { kind: 'read', key: bytes(key) }) as RawRead).found) break;
              } catch {
                // Read again after the pause.
              }
            }
            yield { kind: 'sleep', ms: 100 };
          }
        }
      }
    }
    client.busy = true;
    new SimTxnDriver(this.world, client).run(init(), () => {
      this.initialised = true;
      this.world.trace(`BANK ${accounts.length} accounts hold ${INITIAL} each`);
      client.busy = false;
      done();
    });
  }

  /** The client's loop: transfers and audits, one at a time, with think time, while it is active. */
  startLoop(client: SimClient, thinkMaxMs: number): void {
    const w = this.world;
    const driver = new SimTxnDriver(w, client, this.mutation);
    const next = (): void => {
      if (!client.active) {
        client.busy = false;
        return;
      }
      client.busy = true;
      const then = () => w.schedule(w.rng.int(0, thinkMaxMs), client.id, next);
      if (w.rng.chance(AUDIT_P)) this.audit(client, driver, then);
      else this.transfer(client, driver, then);
    };
    next();
  }

  private transfer(client: SimClient, driver: SimTxnDriver, then: () => void): void {
    const w = this.world;
    const [from, to] = w.rng.shuffle([...this.accounts]) as [string, string];
    const want = w.rng.int(1, 30);
    const abandonAt = w.rng.chance(ABANDON_P) ? w.rng.int(1, 24) : undefined;
    const body = function* (tx: TxnState): Proc<number> {
      const a = balance(yield* tx.get(from));
      const b = balance(yield* tx.get(to));
      const amount = Math.min(a, want);
      tx.put(from, String(a - amount));
      tx.put(to, String(b + amount));
      return amount;
    };
    w.trace(
      `${client.id} BANK transfer up to ${want} ${from} → ${to}${abandonAt ? ` (abandoned at call ${abandonAt})` : ''}`,
    );
    driver.run(
      transactionProc(body, { timeoutMs: TXN_TIMEOUT_MS }, checks),
      (r) => {
        if (r.ok) {
          this.count('transfer.ok');
          w.trace(`${client.id} BANK transfer ${from} → ${to} committed: ${r.value}`);
        } else {
          const kind =
            r.error instanceof TransactionAbortedError
              ? 'aborted'
              : r.error instanceof OutcomeUnknownError
                ? 'unknown'
                : 'fail';
          this.count(`transfer.${kind}`);
          w.trace(`${client.id} BANK transfer ${from} → ${to} ${kind}: ${(r.error as Error).message}`);
        }
        then();
      },
      {
        ...(abandonAt === undefined ? {} : { abandonAt }),
        onAbandon: (call: Call, n: number) => {
          this.count('transfer.abandoned');
          w.trace(`${client.id} BANK ABANDONS its transfer ${from} → ${to} at call ${n} (${call.kind})`);
          then();
        },
      },
    );
  }

  private audit(client: SimClient, driver: SimTxnDriver, then: () => void): void {
    const w = this.world;
    const accounts = this.accounts;
    const body = function* (tx: TxnState): Proc<number[]> {
      const out: number[] = [];
      for (const a of accounts) out.push(balance(yield* tx.get(a)));
      return out;
    };
    driver.run(transactionProc(body, { timeoutMs: TXN_TIMEOUT_MS }, checks), (r) => {
      if (r.ok) {
        this.count('audit.ok');
        const sum = r.value.reduce((s, x) => s + x, 0);
        w.trace(`${client.id} BANK audit: ${r.value.join(' + ')} = ${sum}`);
        if (sum !== this.total)
          this.observer.fail(
            'bank-audit',
            `${client.id}'s read-only transaction of every account saw ${r.value.join(' + ')} = ${sum}, ` +
              `not the total ${this.total}`,
          );
      } else {
        this.count(r.error instanceof TransactionAbortedError ? 'audit.aborted' : 'audit.fail');
        w.trace(`${client.id} BANK audit failed: ${(r.error as Error).message}`);
      }
      then();
    });
  }

  /**
   * After the heal, with every client idle: each account read through `readResolved`, one
   * after another (nothing writes any more), by `reader` with a correct driver; then the checks.
   */
  finalCheck(reader: SimClient, done: () => void): void {
    const w = this.world;
    const accounts = this.accounts;
    function* readAll(): Proc<RawRead[]> {
      const out: RawRead[] = [];
      for (const a of accounts) out.push(yield* readResolved(bytes(a), w.now + 10_000));
      return out;
    }
    reader.busy = true;
    new SimTxnDriver(w, reader).run(readAll(), (r) => {
      reader.busy = false;
      if (!r.ok) {
        this.observer.report('no-convergence', `the bank's final reads failed: ${(r.error as Error).message}`);
        return done();
      }
      const values = r.value.map((x) => (x.found ? Number(text(x.value!)) : Number.NaN));
      const sum = values.reduce((s, x) => s + x, 0);
      w.trace(`BANK final balances: ${values.join(' + ')} = ${sum}`);
      if (sum !== this.total || values.some((v) => !(v >= 0)))
        this.observer.report(
          'bank-total',
          `after the heal the accounts hold ${accounts.map((a, i) => `${a}=${values[i]}`).join(' ')}: ` +
            `${sum}, not the total ${this.total}`,
        );
      done();
    });
  }
}
