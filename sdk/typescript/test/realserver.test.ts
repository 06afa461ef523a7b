// The key cache and the verifier against the real server (agentrouter-auth serve), started here
// with each test's own keys and policy, and tokens from `agentrouter-auth token sign`. The
// requests that reach the server are counted from its /metrics.

import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { promisify } from "node:util";

import {
  Client,
  InvalidTokenError,
  KeySetCache,
  KeysUnavailableError,
  TokenVerifier,
  type KeySetCacheOptions,
} from "../src/index.js";
import { claimsFor, FakeClock, Logs, rawToken, waitFor } from "./origin.js";

const run = promisify(execFile);

/** The iss of the tokens these tests sign (loopback: http is allowed). */
const TEST_ISSUER = "http://127.0.0.1/agentrouter-test";

/** The argv that runs agentrouter-auth, from AGENTROUTER_TEST_AUTH_CLI (a JSON array). */
function authCli(): string[] {
  const value = process.env["AGENTROUTER_TEST_AUTH_CLI"];
  if (!value) {
    throw new Error(
      "AGENTROUTER_TEST_AUTH_CLI is not set: run these tests through " +
        "`pytest tests/interop/test_sdk_typescript.py`, which passes the server's command line",
    );
  }
  const argv = JSON.parse(value) as unknown;
  if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === "string")) {
    throw new Error("AGENTROUTER_TEST_AUTH_CLI is not a JSON array of arguments");
  }
  return argv as string[];
}

/** Runs `agentrouter-auth ARGS` and returns what it printed. */
async function cli(...args: string[]): Promise<string> {
  const [command = "", ...rest] = authCli();
  try {
    const { stdout } = await run(command, [...rest, ...args], { timeout: 60_000 });
    return stdout.trim();
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? "";
    throw new Error(`agentrouter-auth ${args.join(" ")} failed:\n${stderr}`);
  }
}

/** A rotation policy with the given HTTP freshness (max-age, swr, sie). */
function policyOf(maxAge: string, swr: string, sie: string): string[] {
  return ["--cache-max-age", maxAge, "--stale-while-revalidate", swr, "--stale-if-error", sie];
}

/** A key directory holding one active key per alg, under policy. */
async function newKeys(policy: string[], ...algs: string[]): Promise<string> {
  const folder = mkdtempSync(join(tmpdir(), "agentrouter-ts-"));
  after(() => rmSync(folder, { recursive: true, force: true }));
  const keys = join(folder, "keys");
  await cli("keys", "init", "--keys-dir", keys, ...policy, ...algs.flatMap((alg) => ["--alg", alg]));
  return keys;
}

/** A loopback address that was free a moment ago. */
async function freeAddress(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  assert.ok(address !== null && typeof address === "object");
  return `127.0.0.1:${address.port}`;
}

/** A running `agentrouter-auth serve`. */
class AuthServer {
  url = "";
  readonly #process: ChildProcess;
  readonly #exited: Promise<void>;

  private constructor(
    readonly keys: string,
    readonly policy: string[],
    argv: string[],
  ) {
    const [command = "", ...rest] = argv;
    this.#process = spawn(command, rest, { detached: true, stdio: ["ignore", "ignore", "pipe"] });
    this.#exited = new Promise((resolve) => this.#process.once("exit", () => resolve()));
    after(() => this.#kill("SIGKILL"));
  }

  /** Serves keys with the policy and extra flags (on httpAddr, or a free port); resolves once
   * /readyz answers 200. */
  static async start(keys: string, policy: string[], httpAddr: string, ...extra: string[]): Promise<AuthServer> {
    const argv = [
      ...authCli(), "serve", "--keys-dir", keys, "--http-addr", httpAddr || "127.0.0.1:0",
      "--grpc-addr", "127.0.0.1:0", "--log-format", "json", "--reload-interval", "250ms",
      ...policy, ...extra,
    ]; // prettier-ignore
    const server = new AuthServer(keys, policy, argv);
    let output = "";
    server.url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listener within 60 s:\n${output}`)), 60_000);
      server.#process.stderr?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        const found = /HTTP listening on (\S+):(\d+),/.exec(output);
        if (found) {
          clearTimeout(timer);
          resolve(`http://${found[1]}:${found[2]}`);
        }
      });
      void server.#exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`the server exited before listening:\n${output}`));
      });
    });
    await waitFor("the server is ready", async () => {
      try {
        return (await fetch(`${server.url}/readyz`)).status === 200;
      } catch {
        return false;
      }
    });
    return server;
  }

  #kill(signal: NodeJS.Signals): void {
    try {
      process.kill(-(this.#process.pid ?? 0), signal);
    } catch {
      // already gone
    }
  }

  /** Ends the server as an orchestrator does (SIGTERM), and waits for it. */
  async stop(): Promise<void> {
    this.#process.kill("SIGTERM");
    await this.#exited;
  }

  /** A token from `agentrouter-auth token sign` with the key of alg. */
  async sign(alg: string, ttl = "10s", issuer = TEST_ISSUER): Promise<string> {
    return await cli(
      "token", "sign", "--keys-dir", this.keys, "--issuer", issuer,
      "--claims", '{"sub":"svc","aud":"api"}', "--ttl", ttl, "--alg", alg, ...this.policy,
    ); // prettier-ignore
  }

  /** The kids the server publishes now (read over REST, which the Connect counts exclude). */
  async servedKids(): Promise<string[]> {
    const document = (await (await fetch(`${this.url}/.well-known/jwks.json`)).json()) as {
      keys: { kid: string }[];
    };
    return document.keys.map((key) => key.kid);
  }

  /** The server's Connect GetJWKS requests and 304s, from /metrics. */
  async metrics(): Promise<{ gets: number; notModified: number }> {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    let gets = 0;
    let notModified = 0;
    for (const line of text.split("\n")) {
      if (line.startsWith("#")) continue;
      const [name = "", value = ""] = line.split(" ");
      const number = Number(value);
      if (!Number.isFinite(number)) continue;
      if (
        name.startsWith("agentrouter_auth_requests_total{") &&
        name.includes('method="GetJWKS"') &&
        name.includes('protocol="connect"')
      ) {
        gets += number;
      } else if (name === "agentrouter_auth_not_modified_total") {
        notModified += number;
      }
    }
    return { gets, notModified };
  }

  async wantGets(want: number, why: string): Promise<void> {
    assert.equal((await this.metrics()).gets, want, `Connect GetJWKS requests: ${why}`);
  }
}

/** The kid in a token's header. */
function kidOf(token: string): string {
  const header = JSON.parse(Buffer.from(token.split(".")[0] ?? "", "base64url").toString()) as {
    kid: string;
  };
  return header.kid;
}

/** A verifier over the server's GetJWKS on clock. */
function serverVerifier(s: AuthServer, clock: FakeClock, options: KeySetCacheOptions = {}): TokenVerifier {
  const client = new Client({ baseUrl: s.url, timeoutMs: 3000 });
  const cache = new KeySetCache(client, { ...clock.clocks, logger: new Logs(), ...options });
  return new TokenVerifier(cache, { issuer: TEST_ISSUER, audience: "api" });
}

async function mustVerify(verifier: TokenVerifier, token: string): Promise<void> {
  const claims = await verifier.verify(token);
  assert.equal(claims["iss"], TEST_ISSUER);
  assert.equal(claims["sub"], "svc");
}

/** How long the rotation run lasts: the issue asks for 60 s; AGENTROUTER_TEST_ROTATION_RUN
 * (seconds) runs that, 10 s by default. */
function rotationRunMs(): number {
  const value = process.env["AGENTROUTER_TEST_ROTATION_RUN"];
  if (value === undefined || value === "") return 10_000;
  const seconds = Number(value.replace(/s$/, ""));
  if (!Number.isFinite(seconds) || seconds <= 0) {
    throw new Error(`AGENTROUTER_TEST_ROTATION_RUN: a number of seconds, got ${value}`);
  }
  return seconds * 1000;
}

describe("the key cache and the verifier against the real server", { concurrency: true }, () => {
  test("a key activated seconds ago verifies after one refresh", async () => {
    const policy = policyOf("60s", "10s", "60s");
    const s = await AuthServer.start(await newKeys(policy, "ES256"), policy, "", "--rotation", "off");
    const clock = new FakeClock();
    const verifier = serverVerifier(s, clock);
    await mustVerify(verifier, await s.sign("ES256"));
    await cli("keys", "init", "--keys-dir", s.keys, "--alg", "EdDSA", ...policy);
    const token = await s.sign("EdDSA");
    await waitFor("the server publishes the new key", async () => (await s.servedKids()).includes(kidOf(token)));
    await s.wantGets(1, "one fetch so far");
    await mustVerify(verifier, token);
    await s.wantGets(2, "the new key's kid caused one refresh");
    await mustVerify(verifier, token);
    await s.wantGets(2, "then the key is cached");
  });

  test("a removed key stops verifying once the cached answer ages out", async () => {
    const policy = policyOf("5s", "5s", "60s");
    const s = await AuthServer.start(await newKeys(policy, "ES256", "EdDSA"), policy, "", "--rotation", "off");
    const clock = new FakeClock();
    const verifier = serverVerifier(s, clock);
    const token = await s.sign("EdDSA");
    await mustVerify(verifier, token);
    await cli("keys", "remove", "--force", "--keys-dir", s.keys, ...policy, "--", kidOf(token));
    await waitFor("the server stops publishing the key", async () => !(await s.servedKids()).includes(kidOf(token)));
    clock.advance(4_000);
    await mustVerify(verifier, token); // the cached answer is fresh: no request
    await s.wantGets(1, "a fresh answer is used as it is");
    clock.advance(7_000); // past max-age + stale-while-revalidate: revalidated before use
    await assert.rejects(verifier.verify(token), InvalidTokenError);
    assert.deepEqual(await s.metrics(), { gets: 2, notModified: 0 }, "the revalidation returned the new set");
    await mustVerify(verifier, await s.sign("ES256"));
  });

  test("the server stopped: the cached set within stale-if-error, then keys unavailable", async () => {
    const policy = policyOf("5s", "0s", "30s");
    const s = await AuthServer.start(await newKeys(policy, "ES256"), policy, "", "--rotation", "off");
    const clock = new FakeClock();
    const logs = new Logs();
    const verifier = serverVerifier(s, clock, { logger: logs });
    const token = await s.sign("ES256");
    await mustVerify(verifier, token);
    await s.stop();
    clock.advance(10_000);
    await mustVerify(verifier, token); // the refresh fails: the cached set, within stale-if-error
    clock.advance(2_000);
    await mustVerify(verifier, token);
    assert.equal(logs.warnings.length, 1, `one warning for the streak: ${logs.warnings.join("\n")}`);
    clock.advance(30_000); // 42 s: past max-age 5 + stale-if-error 30
    await assert.rejects(verifier.verify(token), (err: unknown) => {
      assert.ok(err instanceof KeysUnavailableError, String(err));
      assert.ok(!(err instanceof InvalidTokenError));
      return true;
    });
  });

  test("a warm cache makes no request; 10,000 random kids cost one request per cooldown; 304s on revalidation", async () => {
    const policy = policyOf("60s", "0s", "60s");
    const s = await AuthServer.start(await newKeys(policy, "ES256"), policy, "", "--rotation", "off");
    const clock = new FakeClock();
    const verifier = serverVerifier(s, clock, { unknownKidCooldownMs: 2_000 });
    const token = await s.sign("ES256", "5m"); // still valid after the 71 s this test's clock moves
    await mustVerify(verifier, token);
    for (let i = 0; i < 500; i++) await mustVerify(verifier, token);
    await s.wantGets(1, "a warm cache verifies without a request");
    // 10,000 tokens with random kids over 10 s (of the fake clock), 8 callers at a time: at most
    // one request per cooldown of 2 s reaches the server.
    const failures = new Set<string>();
    await Promise.all(
      Array.from({ length: 8 }, async (_, worker) => {
        for (let i = 0; i < 1250; i++) {
          clock.advance(1);
          const kid = `${worker}-${i}-${Math.random().toString(36).slice(2, 8)}`;
          const forged = rawToken({ alg: "ES256", kid }, claimsFor(clock.now()), Buffer.from("signature"));
          await verifier.verify(forged).then(
            () => failures.add("a forged token verified"),
            (err: unknown) => {
              if (!(err instanceof InvalidTokenError)) failures.add(String(err));
            },
          );
        }
      }),
    );
    assert.deepEqual([...failures], [], "every random kid is an invalid token");
    const { gets } = await s.metrics();
    const flood = gets - 1;
    assert.ok(flood >= 1 && flood <= 6, `10,000 random kids in 10 s, cooldown 2 s: ${flood} requests`);
    // Past max-age, a revalidation: the server answers 304.
    const before = await s.metrics();
    clock.advance(61_000);
    await mustVerify(verifier, token);
    assert.deepEqual(await s.metrics(), { gets: before.gets + 1, notModified: before.notModified + 1 });
  });

  test("fromIssuer discovers the jwks_uri and checks the issuer", async () => {
    const policy = policyOf("60s", "10s", "60s");
    const address = await freeAddress();
    const issuer = `http://${address}`;
    const s = await AuthServer.start(
      await newKeys(policy, "RS256"), policy, address, "--rotation", "off", "--issuer", issuer,
    ); // prettier-ignore
    const client = new Client({ baseUrl: s.url });
    for (const wrong of [`${issuer}/`, `https://${address}`]) {
      await assert.rejects(TokenVerifier.fromIssuer(client, wrong, { audience: "api" }), /another issuer/);
    }
    await assert.rejects(TokenVerifier.fromIssuer(client, issuer, {}), /no audience/);
    const verifier = await TokenVerifier.fromIssuer(client, issuer, { audience: "api" });
    const claims = await verifier.verify(await s.sign("RS256", "1m", issuer));
    assert.equal(claims["iss"], issuer);
    // A token of another issuer, signed by the same key, is refused.
    await assert.rejects(verifier.verify(await s.sign("RS256")), InvalidTokenError);
  });

  test("a rotation run: tokens from token sign keep verifying with 0 failures", async () => {
    // A key signs for 3 s, published 2 s ahead; the set is fresh for 1 s (max-age + swr must be
    // at most publish-ahead / 2).
    const policy = [
      "--rotation-period", "3s", "--publish-ahead", "2s", "--cache-max-age", "1s",
      "--stale-while-revalidate", "0s", "--stale-if-error", "10s", "--retain-after", "20s",
      "--max-token-ttl", "10s", "--clock-skew", "5s",
    ]; // prettier-ignore
    const s = await AuthServer.start(await newKeys(policy, "ES256"), policy, "", "--rotation", "auto");
    const cache = new KeySetCache(new Client({ baseUrl: s.url }), {
      unknownKidCooldownMs: 1_000,
      logger: new Logs(),
    });
    const verifier = new TokenVerifier(cache, { issuer: TEST_ISSUER, audience: "api" });
    // One loop signs tokens with `token sign` (a few seconds each on a loaded machine); the other
    // verifies the newest one every 50 ms, so each key's tokens are verified across the set's
    // revalidations and the rotations.
    const kids = new Set<string>();
    const failures: string[] = [];
    let verified = 0;
    let newest = await s.sign("ES256");
    kids.add(kidOf(newest));
    const end = Date.now() + rotationRunMs();
    const signing = (async () => {
      while (Date.now() < end) {
        const token = await s.sign("ES256");
        kids.add(kidOf(token));
        newest = token;
      }
    })();
    while (Date.now() < end) {
      const token = newest;
      await verifier.verify(token).then(
        () => verified++,
        (err: unknown) => failures.push(`kid ${kidOf(token)}: ${String(err)}`),
      );
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await signing;
    assert.deepEqual(failures, [], `${verified} verified`);
    assert.ok(kids.size >= 2, `the run saw ${kids.size} signing key(s), want a rotation`);
    const { gets, notModified } = await s.metrics();
    console.log(
      `# rotation: ${verified} verifications over ${rotationRunMs() / 1000} s of tokens from ` +
        `${kids.size} keys, 0 failures; ${gets} requests reached the server, ${notModified} of them 304`,
    );
  });
});
