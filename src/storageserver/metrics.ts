/**
 * The storage server's Prometheus metrics (docs/metrics.md), counted at the server from the
 * calls it answers and the effects it executes (the core stays pure).
 */
import { Registry } from 'prom-client';

export class StorageMetrics {
  readonly registry = new Registry();
}
