/**
 * A Decider over several decision replicas: `--decision` names them as a list
 * ("10.0.0.1:50051,10.0.0.2:50051") or as every address of a DNS name ("dns:greyfleet:50051",
 * re-resolved every few seconds: a headless Kubernetes Service). Checks go round robin to the
 * replicas in service; a replica whose stream fails (or that misses a deadline) is ejected for a
 * while, doubling up to a limit. Among the replicas in service, those whose connection is up are
 * preferred: a replica whose ejection has ended but whose channel has not reconnected gets no
 * checks while another can take them. So a dead replica costs the checks in flight on it when it
 * died, not one per recipient nor one per ejection. A failed check is never retried elsewhere: it
 * may have been recorded.
 *
 * grpc-js's own round_robin balances calls, but a shim sends its checks on one long-lived
 * CheckStream (one call), which that would pin to one replica; so each replica gets its own
 * GrpcDecider (its own channel and stream) and the spreading happens here, per check.
 */
import { lookup } from "node:dns/promises";
import type { CheckRequest, CheckResponse } from "../contract/gen/greyfleet/v1/greylist";
import type { CheckOptions, Decider } from "./decider";
import { GreyfleetError } from "./errors";
import type { DecisionTargets } from "./settings";

/** The Decider of one replica: closable, and able to say whether its connection is up. */
export type ReplicaDecider = Decider & {
  close(): void;
  /** Closes once the checks in flight are settled (a replica dropped while serving); else close(). */
  retire?(): void;
  /** Whether a check now would find the replica (unknown: assumed so). */
  connected?(): boolean;
};

/** One replica and its ejection state. */
interface Replica {
  readonly address: string;
  readonly decider: ReplicaDecider;
  /** Not picked before this time (epoch ms); 0 = in service. */
  ejectedUntilMs: number;
  /** The next ejection's length, ms. */
  backoffMs: number;
}

/** Ejection lengths, ms: the first, and the most after doubling. */
const EJECT_FIRST_MS = 1_000;
const EJECT_MAX_MS = 30_000;

/** A Decider spreading checks over decision replicas. */
export class BalancedDecider implements Decider {
  private replicas: Replica[] = [];
  private next = 0;
  private resolveTimer: NodeJS.Timeout | undefined;
  private closed = false;

  private readonly connect: (address: string) => ReplicaDecider;
  private readonly onChange: (addresses: readonly string[]) => void;
  private readonly now: () => number;
  private readonly lookup: (host: string) => Promise<readonly { address: string; family: number }[]>;

  constructor(
    private readonly targets: DecisionTargets,
    options: {
      /** Makes the Decider of one replica address. */
      connect: (address: string) => ReplicaDecider;
      /** Told the replica addresses whenever they change. */
      onChange?: (addresses: readonly string[]) => void;
      now?: () => number;
      /** Every address of a name; the system resolver unless a test gives its own. */
      lookup?: (host: string) => Promise<readonly { address: string; family: number }[]>;
    },
  ) {
    this.connect = options.connect;
    this.onChange = options.onChange ?? (() => {});
    this.now = options.now ?? Date.now;
    this.lookup = options.lookup ?? ((host) => lookup(host, { all: true }));
    if (targets.kind === "list") this.setAddresses(targets.addresses);
  }

  /** Resolves the DNS name now and then every `everyMs`; a list needs nothing. */
  async start(everyMs: number): Promise<void> {
    if (this.targets.kind !== "dns") return;
    await this.refresh();
    const loop = (): void => {
      if (this.closed) return;
      this.resolveTimer = setTimeout(() => void this.refresh().finally(loop), everyMs);
      this.resolveTimer.unref();
    };
    loop();
  }

  /** The replica addresses in use. */
  get addresses(): readonly string[] {
    return this.replicas.map((replica) => replica.address);
  }

  check(request: CheckRequest, options: CheckOptions = {}): Promise<CheckResponse> {
    const replica = this.pick();
    if (!replica) return Promise.reject(new GreyfleetError("unavailable", "no decision replica is known"));
    return replica.decider.check(request, options).then(
      (response) => {
        replica.backoffMs = EJECT_FIRST_MS;
        return response;
      },
      (error: unknown) => {
        const code = error instanceof GreyfleetError ? error.code : "internal";
        if (code === "unavailable" || code === "deadline_exceeded") this.eject(replica);
        throw error;
      },
    );
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.resolveTimer);
    for (const replica of this.replicas) replica.decider.close();
    this.replicas = [];
  }

  /**
   * Round robin over the replicas in service whose connection is up; else over those in service;
   * if every one is ejected, the one back soonest.
   */
  private pick(): Replica | undefined {
    const nowMs = this.now();
    let unconnected: number | undefined;
    for (let tried = 0; tried < this.replicas.length; tried++) {
      const index = this.next++ % this.replicas.length;
      const replica = this.replicas[index] as Replica;
      if (replica.ejectedUntilMs > nowMs) continue;
      if (replica.decider.connected?.() !== false) return replica;
      unconnected ??= index;
    }
    if (unconnected !== undefined) {
      this.next = unconnected + 1; // the rotation goes on from the one picked
      return this.replicas[unconnected];
    }
    return this.replicas.reduce<Replica | undefined>(
      (soonest, replica) =>
        soonest === undefined || replica.ejectedUntilMs < soonest.ejectedUntilMs ? replica : soonest,
      undefined,
    );
  }

  private eject(replica: Replica): void {
    const nowMs = this.now();
    if (replica.ejectedUntilMs > nowMs) return; // already out: its other in-flight checks failing too
    replica.ejectedUntilMs = nowMs + replica.backoffMs;
    replica.backoffMs = Math.min(replica.backoffMs * 2, EJECT_MAX_MS);
  }

  /** Resolves the DNS name once (start does it every few seconds). */
  async refresh(): Promise<void> {
    if (this.targets.kind !== "dns") return;
    const { host, port } = this.targets;
    try {
      const found = await this.lookup(host);
      const addresses = found.map((a) => (a.family === 6 ? `[${a.address}]:${port}` : `${a.address}:${port}`));
      if (addresses.length > 0) this.setAddresses(addresses);
    } catch {
      // The name does not resolve now: keep the replicas known so far (none at start: checks
      // fail as unavailable and the shim's failure mode answers).
    }
  }

  private setAddresses(addresses: readonly string[]): void {
    if (this.closed) return; // a lookup that ended after close(): nothing may be opened any more
    const wanted = new Set(addresses);
    const kept = this.replicas.filter((replica) => wanted.has(replica.address));
    // A replica the name no longer gives (a rollout, a readiness blip) may still be serving: it
    // gets no new checks and answers the ones it has.
    for (const replica of this.replicas) {
      if (!wanted.has(replica.address)) (replica.decider.retire ?? replica.decider.close).call(replica.decider);
    }
    const known = new Set(kept.map((replica) => replica.address));
    for (const address of wanted) {
      if (!known.has(address)) {
        kept.push({ address, decider: this.connect(address), ejectedUntilMs: 0, backoffMs: EJECT_FIRST_MS });
      }
    }
    const changed = kept.length !== this.replicas.length || kept.some((r, i) => r !== this.replicas[i]);
    this.replicas = kept;
    if (changed) this.onChange(this.addresses);
  }
}
