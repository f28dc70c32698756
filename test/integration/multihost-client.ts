/**
 * The client half of the multi-host test (multihost.test.ts), run in its own network
 * namespace: `node multihost-client.js NAMESERVER TOKEN KEYS`. Waits (bounded) for the
 * cluster to form with every partition serving, checks that a client without the token is
 * refused, writes KEYS keys from 8 concurrent callers, reads every one back, and prints one
 * JSON line: { ok, nodes, written, read, mismatches, refusedWithoutToken, error? }.
 */
import { connect, type Db, UnauthorizedError } from '../../src/client/index.js';

const [nameserver = '', token = '', keysArg = '1000'] = process.argv.slice(2);
const KEYS = Number(keysArg);
const FORM_TIMEOUT_MS = 60_000;
const CONCURRENCY = 8;

async function main(): Promise<Record<string, unknown>> {
  // Lazy: this client starts together with the nameserver, which may not listen yet; the
  // loop below waits (bounded) for the cluster instead of connect's one check.
  const db = await connect(nameserver, { timeoutMs: 15_000, clusterToken: token, lazy: true });
  const anonymous = await connect(nameserver, { timeoutMs: 5_000, lazy: true });
  try {
    const deadline = Date.now() + FORM_TIMEOUT_MS;
    let info = await db.nodes().catch(() => undefined);
    while (
      !(
        info?.formed &&
        info.partitionsReady === info.partitions &&
        info.nodes.filter((n) => n.role === 'storage' && n.state === 'alive').length >= 3
      )
    ) {
      if (Date.now() > deadline)
        throw new Error(`cluster not formed within ${FORM_TIMEOUT_MS} ms: ${JSON.stringify(info ?? 'no answer')}`);
      await new Promise((r) => setTimeout(r, 200));
      info = await db.nodes().catch(() => undefined);
    }
    const refusedWithoutToken = await anonymous.nodes().then(
      () => false,
      (err: unknown) => err instanceof UnauthorizedError,
    );

    let next = 0;
    const worker = async (fn: (i: number, db: Db) => Promise<void>) => {
      for (let i = next++; i < KEYS; i = next++) await fn(i, db);
    };
    let written = 0;
    next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, () =>
        worker(async (i) => {
          await db.put(`key-${i}`, `value-${i}`);
          written++;
        }),
      ),
    );
    let read = 0;
    const mismatches: string[] = [];
    next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, () =>
        worker(async (i) => {
          const got = await db.get(`key-${i}`);
          const value = got ? Buffer.from(got.value).toString('utf8') : undefined;
          if (value === `value-${i}`) read++;
          else if (mismatches.length < 10) mismatches.push(`key-${i}: ${String(value)}`);
        }),
      ),
    );
    const nodes = (await db.nodes()).nodes.map((n) => ({ id: n.id, role: n.role, address: n.address, state: n.state }));
    return {
      ok: written === KEYS && read === KEYS && refusedWithoutToken,
      nodes,
      written,
      read,
      mismatches,
      refusedWithoutToken,
    };
  } finally {
    await db.close();
    await anonymous.close();
  }
}

main().then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(result.ok ? 0 : 1);
  },
  (err: unknown) => {
    process.stdout.write(
      `${JSON.stringify({ ok: false, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) })}\n`,
    );
    process.exit(1);
  },
);
