/**
 * BalancedDecider's choices: round robin, ejection and its backoff, DNS changes. The replicas
 * here are stand-ins that answer or fail on command, and the clock is injected, because these
 * are choices over time; test/integration/fleet-shims runs it against real replicas.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type CheckRequest, CheckResponse } from "../../services/contract/gen/greyfleet/v1/greylist";
import { BalancedDecider } from "../../services/shared/balanced-decider";
import { type ErrorCode, GreyfleetError } from "../../services/shared/errors";
import { parseDecisionTargets } from "../../services/shared/settings";
import { rcpt } from "../support/engine";

/**
 * A replica stand-in: counts its checks, fails with `failWith` while it is set, and says its
 * connection is up while `up` is.
 */
class Replica {
  checks = 0;
  closed = false;
  retired = false;
  failWith: ErrorCode | undefined;
  up = true;

  constructor(readonly address: string) {}

  connected(): boolean {
    return this.up;
  }

  check(_request: CheckRequest): Promise<CheckResponse> {
    this.checks++;
    if (this.failWith) return Promise.reject(new GreyfleetError(this.failWith, `${this.address} fails`));
    return Promise.resolve(CheckResponse.fromPartial({ smtpText: this.address }));
  }

  close(): void {
    this.closed = true;
  }

  retire(): void {
    this.retired = true;
  }
}

function fleet(
  addresses: readonly string[],
  lookup?: (host: string) => Promise<{ address: string; family: number }[]>,
) {
  const replicas = new Map<string, Replica>();
  const clock = { ms: 1_000_000 };
  const changes: string[][] = [];
  const targets = lookup ? parseDecisionTargets("dns:greyfleet.test:50051") : parseDecisionTargets(addresses.join(","));
  assert.ok(!("error" in targets));
  const balanced = new BalancedDecider(targets, {
    connect: (address) => {
      const replica = new Replica(address);
      replicas.set(address, replica);
      return replica;
    },
    onChange: (now) => changes.push([...now]),
    now: () => clock.ms,
    ...(lookup ? { lookup } : {}),
  });
  const ask = async () => {
    try {
      return (await balanced.check(rcpt())).smtpText;
    } catch (error) {
      assert.ok(error instanceof GreyfleetError);
      return `failed: ${error.code}`;
    }
  };
  /** Asks until `answer` comes back; fails after ten tries rather than looping. */
  const askUntil = async (answer: string) => {
    const seen = [];
    for (let i = 0; i < 10; i++) {
      seen.push(await ask());
      if (seen.at(-1) === answer) return;
    }
    assert.fail(`never answered ${answer}: ${seen.join(", ")}`);
  };
  const replica = (address: string) => replicas.get(address) as Replica;
  return { balanced, replica, clock, changes, ask, askUntil };
}

describe("parseDecisionTargets", () => {
  it("reads one address, a list and a DNS name; refuses anything else by name", () => {
    assert.deepEqual(parseDecisionTargets("10.0.0.1:50051"), { kind: "list", addresses: ["10.0.0.1:50051"] });
    assert.deepEqual(parseDecisionTargets("a:1, [::1]:2"), { kind: "list", addresses: ["a:1", "[::1]:2"] });
    assert.deepEqual(parseDecisionTargets("dns:greyfleet.mail.svc:50051"), {
      kind: "dns",
      host: "greyfleet.mail.svc",
      port: 50051,
    });
    assert.deepEqual(parseDecisionTargets("a:1,b"), { error: '"b" is not HOST:PORT (or use dns:NAME:PORT)' });
    assert.deepEqual(parseDecisionTargets("dns:greyfleet"), {
      error: '"dns:greyfleet" is not HOST:PORT (or use dns:NAME:PORT)',
    });
    assert.ok("error" in parseDecisionTargets(""));
  });
});

describe("BalancedDecider", () => {
  it("sends checks round robin", async () => {
    const { ask } = fleet(["a:1", "b:1", "c:1"]);
    const answered = [];
    for (let i = 0; i < 6; i++) answered.push(await ask());
    assert.deepEqual(answered, ["a:1", "b:1", "c:1", "a:1", "b:1", "c:1"]);
  });

  it("ejects a failing replica for 1 s, then 2 s, 4 s … up to 30 s; one answer puts it back at 1 s", async () => {
    const { ask, askUntil, replica, clock } = fleet(["a:1", "b:1"]);
    replica("b:1").failWith = "unavailable";
    // b's one failed check (not retried on a), then only a until b is due again, and fails again.
    await askUntil("failed: unavailable");
    const outFor = async (): Promise<number> => {
      const start = clock.ms;
      const before = replica("b:1").checks;
      for (let step = 0; step < 200; step++) {
        clock.ms += 250;
        const answer = await ask();
        if (replica("b:1").checks > before) {
          assert.equal(answer, "failed: unavailable", "b's failure is the caller's, not retried on a");
          return clock.ms - start;
        }
        assert.equal(answer, "a:1");
      }
      return assert.fail("b never came back");
    };
    assert.equal(await outFor(), 1_000);
    assert.equal(await outFor(), 2_000);
    assert.equal(await outFor(), 4_000);
    assert.equal(await outFor(), 8_000);
    assert.equal(await outFor(), 16_000);
    assert.equal(await outFor(), 30_000);
    assert.equal(await outFor(), 30_000);
    replica("b:1").failWith = undefined;
    clock.ms += 30_000;
    await askUntil("b:1");
    replica("b:1").failWith = "deadline_exceeded";
    await askUntil("failed: deadline_exceeded");
    clock.ms += 1_000; // the answer in between reset the backoff to 1 s
    await askUntil("failed: deadline_exceeded");
  });

  it("keeps a replica that refuses one check as invalid: the check was at fault, not the replica", async () => {
    const { ask, replica } = fleet(["a:1", "b:1"]);
    replica("b:1").failWith = "invalid_argument";
    const answered = [];
    for (let i = 0; i < 4; i++) answered.push(await ask());
    assert.deepEqual(answered, ["a:1", "failed: invalid_argument", "a:1", "failed: invalid_argument"]);
  });

  it("with every replica ejected, tries the one due back soonest rather than failing unasked", async () => {
    // b goes out first, then a, then c: the rotation points at a (the first) again and c went out
    // last, so only "due back soonest" picks b.
    const { ask, replica, clock } = fleet(["a:1", "b:1", "c:1"]);
    const checks = () => ["a:1", "b:1", "c:1"].map((address) => replica(address).checks);
    replica("b:1").failWith = "unavailable";
    assert.deepEqual([await ask(), await ask(), await ask()], ["a:1", "failed: unavailable", "c:1"]); // b out until +1 s
    clock.ms += 200;
    replica("a:1").failWith = "unavailable";
    assert.equal(await ask(), "failed: unavailable"); // a out until +1.2 s
    clock.ms += 100;
    replica("c:1").failWith = "unavailable";
    assert.equal(await ask(), "failed: unavailable"); // b skipped; c out until +1.3 s
    assert.deepEqual(checks(), [2, 1, 2]);
    replica("b:1").failWith = undefined;
    assert.equal(await ask(), "b:1");
    assert.deepEqual(checks(), [2, 2, 2], "only b was asked");
  });

  it("prefers replicas whose connection is up; with none up, goes round robin over the rest", async () => {
    const { ask, replica } = fleet(["a:1", "b:1", "c:1"]);
    replica("b:1").up = false;
    const answered = [];
    for (let i = 0; i < 4; i++) answered.push(await ask());
    assert.deepEqual(answered, ["a:1", "c:1", "a:1", "c:1"]);
    assert.equal(replica("b:1").checks, 0);
    replica("a:1").up = false;
    replica("c:1").up = false;
    answered.length = 0;
    for (let i = 0; i < 3; i++) answered.push(await ask());
    assert.deepEqual([...answered].sort(), ["a:1", "b:1", "c:1"]);
  });

  it("a replica still down when its ejection ends gets no check until its connection is back", async () => {
    const { ask, askUntil, replica, clock } = fleet(["a:1", "b:1"]);
    replica("b:1").failWith = "unavailable";
    await askUntil("failed: unavailable"); // b's stream broke: ejected, and its channel is down
    replica("b:1").up = false;
    clock.ms += 60_000; // long past any ejection
    const answered = [];
    for (let i = 0; i < 4; i++) answered.push(await ask());
    assert.deepEqual(answered, ["a:1", "a:1", "a:1", "a:1"]);
    assert.equal(replica("b:1").checks, 1, "no check failed on b while it was down");
    replica("b:1").failWith = undefined;
    replica("b:1").up = true;
    await askUntil("b:1");
  });

  it("follows a DNS name: new addresses join, gone ones retire, a failed lookup keeps what it had", async () => {
    let answer: { address: string; family: number }[] | Error = [{ address: "10.0.0.1", family: 4 }];
    const lookup = async () => {
      if (answer instanceof Error) throw answer;
      return answer;
    };
    const { balanced, replica, changes, ask } = fleet([], lookup);
    assert.equal(await ask(), "failed: unavailable", "no replica is known before the first lookup");
    await balanced.refresh();
    assert.deepEqual(balanced.addresses, ["10.0.0.1:50051"]);
    answer = [
      { address: "10.0.0.1", family: 4 },
      { address: "fd00::2", family: 6 },
    ];
    await balanced.refresh();
    assert.deepEqual(balanced.addresses, ["10.0.0.1:50051", "[fd00::2]:50051"]);
    assert.deepEqual(new Set([await ask(), await ask()]), new Set(["10.0.0.1:50051", "[fd00::2]:50051"]));
    answer = new Error("ENOTFOUND greyfleet.test");
    await balanced.refresh();
    assert.deepEqual(balanced.addresses, ["10.0.0.1:50051", "[fd00::2]:50051"]);
    answer = [{ address: "fd00::2", family: 6 }];
    await balanced.refresh();
    assert.deepEqual(balanced.addresses, ["[fd00::2]:50051"]);
    // Gone from the name, maybe still serving: it answers what it has, then closes (retire).
    assert.deepEqual([replica("10.0.0.1:50051").retired, replica("10.0.0.1:50051").closed], [true, false]);
    assert.deepEqual(changes, [["10.0.0.1:50051"], ["10.0.0.1:50051", "[fd00::2]:50051"], ["[fd00::2]:50051"]]);
    balanced.close();
    assert.equal(replica("[fd00::2]:50051").closed, true);
    assert.equal(await ask(), "failed: unavailable");
    // A lookup that ends after close() opens nothing.
    answer = [{ address: "10.0.0.9", family: 4 }];
    await balanced.refresh();
    assert.deepEqual([balanced.addresses, replica("10.0.0.9:50051")], [[], undefined]);
  });
});
