/**
 * A small network of Linux network namespaces in which one dstore node can be cut off from
 * etcd only (ha-isolate-netns.test.ts). A hub namespace holds a bridge `br0` with the
 * workload's address (.1) and etcd's (.2, where the 3 members listen on their own ports); each
 * node gets a namespace of its own with one veth interface on the bridge (.11, .12, …), all in
 * 10.213.12.0/24. The subnet exists only in these namespaces: nothing is added to the
 * caller's namespace, and no host sysctl is changed.
 *
 * A cut is a pair of FIB rules in the hub, `from <node> to <etcd> blackhole` and back: the
 * node's packets to etcd are dropped when they arrive at the hub and etcd's packets to the
 * node are dropped as they leave it, silently for the node: its established etcd connections
 * stall and new ones are never answered (no RST, no ICMP error), as when a link is cut. The
 * node still reaches the workload and the other nodes (bridged, not routed). Rules are
 * consulted after the `local` table, which would deliver the packets addressed to the hub
 * itself first, so the hub's `local` rule moves behind them (priority 1000).
 * (A blackhole route inside the node's own namespace is not silent: connect() to etcd fails
 * at once with EINVAL there.)
 *
 * Namespaces are named `dsiso-<pid>-<random>-<host>`; `destroy()` kills what still runs in
 * them and deletes them (with their veths and the bridge), and `removeStaleIsolateNamespaces()`
 * deletes those of a run whose process is gone.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { deleteNamespaces, ip, removeStaleNamespaces, stderrOf } from '../../src/process/netns.js';

export const SUBNET_PREFIX = '10.213.12';
const NAME_PREFIX = 'dsiso';
/** Priority of the cut rules; the hub's `local` lookup moves to LOCAL_RULE_PREF, behind them. */
const CUT_RULE_PREF = '100';
const LOCAL_RULE_PREF = '1000';
/** Bound on one health probe run inside the hub (a node process starting, one HTTP request). */
const PROBE_TIMEOUT_MS = 5000;

/** Deletes namespaces of earlier runs whose process is gone; returns how many. */
export function removeStaleIsolateNamespaces(): number {
  return removeStaleNamespaces(NAME_PREFIX);
}

export class EtcdCutNetwork {
  readonly prefix = `${NAME_PREFIX}-${process.pid}-${randomBytes(3).toString('hex')}`;
  readonly hubNs = `${this.prefix}-hub`;
  /** Where the workload runs (in the hub). */
  readonly hubAddress = `${SUBNET_PREFIX}.1`;
  /** Where every etcd member listens (in the hub). */
  readonly etcdAddress = `${SUBNET_PREFIX}.2`;
  private readonly created: string[] = [];
  private readonly nodes = new Map<string, { ns: string; address: string }>();
  private readonly cuts = new Set<string>();
  private destroyed = false;

  private constructor() {}

  /** Creates the hub and one namespace per node; on failure removes what it created. */
  static create(nodeNames: readonly string[]): EtcdCutNetwork {
    if (nodeNames.length > 50) throw new Error('at most 50 nodes (.11–.60)');
    const net = new EtcdCutNetwork();
    try {
      net.build(nodeNames);
    } catch (err) {
      net.destroy();
      throw err;
    }
    return net;
  }

  private build(nodeNames: readonly string[]): void {
    const hub = this.hubNs;
    ip(['netns', 'add', hub]);
    this.created.push(hub);
    ip(['-n', hub, 'link', 'set', 'lo', 'up']);
    ip(['-n', hub, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', hub, 'link', 'set', 'br0', 'up']);
    ip(['-n', hub, 'addr', 'add', `${this.hubAddress}/24`, 'dev', 'br0']);
    ip(['-n', hub, 'addr', 'add', `${this.etcdAddress}/24`, 'dev', 'br0']);
    ip(['-n', hub, 'rule', 'add', 'pref', LOCAL_RULE_PREF, 'lookup', 'local']);
    ip(['-n', hub, 'rule', 'del', 'pref', '0']);
    nodeNames.forEach((name, i) => {
      const ns = `${this.prefix}-${name}`;
      const address = `${SUBNET_PREFIX}.${11 + i}`;
      ip(['netns', 'add', ns]);
      this.created.push(ns);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      ip(['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p${i}`, 'netns', hub]);
      ip(['-n', hub, 'link', 'set', `p${i}`, 'master', 'br0']);
      ip(['-n', hub, 'link', 'set', `p${i}`, 'up']);
      ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
      ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      this.nodes.set(name, { ns, address });
    });
  }

  address(node: string): string {
    return this.node(node).address;
  }

  /** The command prefix that runs a program in the hub. */
  get hubWrapper(): string[] {
    return ['ip', 'netns', 'exec', this.hubNs];
  }

  /** The command prefix that runs a program in `node`'s namespace. */
  wrapper(node: string): string[] {
    return ['ip', 'netns', 'exec', this.node(node).ns];
  }

  private node(name: string): { ns: string; address: string } {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no node ${name} in the network`);
    return n;
  }

  /** Drops every packet between `node` and etcd, both ways. Idempotent. */
  cutFromEtcd(node: string): void {
    if (this.cuts.has(node)) return;
    this.cuts.add(node);
    for (const [from, to] of this.directions(node))
      ip(['-n', this.hubNs, 'rule', 'add', 'pref', CUT_RULE_PREF, 'from', from, 'to', to, 'blackhole']);
  }

  /** Restores the path between `node` and etcd. Idempotent. */
  healFromEtcd(node: string): void {
    if (!this.cuts.has(node)) return;
    for (const [from, to] of this.directions(node)) {
      try {
        ip(['-n', this.hubNs, 'rule', 'del', 'pref', CUT_RULE_PREF, 'from', from, 'to', to, 'blackhole']);
      } catch (err) {
        if (!/No such file|not exist/i.test(stderrOf(err))) throw err;
      }
    }
    this.cuts.delete(node);
  }

  private directions(node: string): [string, string][] {
    const a = this.address(node);
    return [
      [a, this.etcdAddress],
      [this.etcdAddress, a],
    ];
  }

  /** The hub's FIB rules, for a failure message. */
  describeRules(): string {
    try {
      return ip(['-n', this.hubNs, 'rule', 'show']).trim();
    } catch (err) {
      return `(ip rule show failed: ${stderrOf(err)})`;
    }
  }

  /**
   * Whether etcd at `clientUrl` answers `/health` with {"health":"true"}, asked from inside
   * the hub (this process's namespace has no route there): a one-request node script.
   */
  healthCheckInHub(clientUrl: string): Promise<boolean> {
    const script =
      'fetch(process.argv[1] + "/health", { signal: AbortSignal.timeout(1000) })' +
      '.then((r) => r.text()).then((t) => process.exit(/"health"\\s*:\\s*"true"/.test(t) ? 0 : 1), () => process.exit(1))';
    const [command, ...args] = [...this.hubWrapper, process.execPath, '-e', script, clientUrl];
    return new Promise((resolve) => {
      execFile(command ?? 'ip', args, { timeout: PROBE_TIMEOUT_MS }, (err) => resolve(err === null));
    });
  }

  /** Kills what runs in the namespaces and deletes them. Idempotent; synchronous. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    deleteNamespaces([...this.created].reverse());
  }
}
