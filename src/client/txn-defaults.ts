/** The defaults of a transaction's limits (transaction.ts), apart so the CLI's help needs nothing more. */
export const TXN_DEFAULTS = { timeoutMs: 10_000, maxKeys: 64, maxBytes: 4 * 1024 * 1024, maxAttempts: 10 } as const;
