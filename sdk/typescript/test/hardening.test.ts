// What the key cache refuses and how it bounds a failing server (issue 20): no redirect is
// followed; a 304 with another ETag is a failed refresh; stale-if-error bounds every stale use
// after a failed refresh; callers with a usable set never wait for a hung server; weak keys
// (small-order Ed25519 points, RSA with e < 3 or even) are skipped; no URL query in a log line.

import { create, toBinary } from "@bufbuild/protobuf";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, generatePrimeSync, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

import { GetOpenIDConfigurationResponseSchema } from "../src/gen/tars/auth/v1/auth_pb.js";
import { parseKeySet, primalityTests } from "../src/keyset.js";
import {
  Client,
  InvalidTokenError,
  KeysUnavailableError,
  KeySetCache,
  TokenVerifier,
  type KeySetCacheOptions,
} from "../src/index.js";
import { b64, claimsFor, FakeClock, Logs, origin, Origin, SigningKey, verifierOver, waitFor } from "./origin.js";

/** A local server answering each request with `answer`; it records each If-None-Match. */
async function server(answer: (n: number, res: ServerResponse) => void): Promise<{ url: string; inm: string[] }> {
  const inm: string[] = [];
  const s = createServer((req, res) => {
    inm.push(String(req.headers["if-none-match"] ?? ""));
    answer(inm.length, res);
  });
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  after(() => {
    s.closeAllConnections();
    s.close();
  });
  return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`, inm };
}

test("a redirect is a failed fetch, for GetJWKS and a jwks_uri alike (even to the same origin)", async () => {
  const key = new SigningKey("ES256");
  const o = await origin(key);
  const redirector = await server((_n, res) => res.writeHead(302, { location: `${o.url}/jwks` }).end());
  for (const jwksUri of [undefined, `${redirector.url}/jwks`]) {
    const client = new Client({ baseUrl: redirector.url, timeoutMs: 5000 });
    const cache = new KeySetCache(client, { jwksUri, logger: new Logs() });
    await assert.rejects(cache.key(key.kid), KeysUnavailableError, `jwksUri ${jwksUri}`);
  }
  assert.equal(o.requests, 0, "the redirect was followed");
});

test("a 304 with another ETag is a failed refresh: the ETag is not adopted", async () => {
  const a = new SigningKey("ES256");
  const body = JSON.stringify({ keys: [a.jwk()] });
  const s = await server((n, res) => {
    const headers = { "cache-control": "max-age=10, stale-if-error=100" };
    if (n === 1) res.writeHead(200, { ...headers, etag: '"a"', "content-type": "application/json" }).end(body);
    else res.writeHead(304, { ...headers, etag: '"b"' }).end();
  });
  const clock = new FakeClock();
  const logs = new Logs();
  const cache = new KeySetCache(new Client({ baseUrl: s.url, timeoutMs: 5000 }), { ...clock.clocks, logger: logs });
  await cache.key(a.kid);
  clock.advance(11_000);
  await cache.key(a.kid); // the set is kept, within stale-if-error
  await cache.settled();
  assert.equal(logs.warnings.length, 1, "the 304 with another ETag was not counted as an error");
  clock.advance(2_000); // past the backoff
  await cache.key(a.kid);
  await cache.settled();
  // Neither adopted nor sent again: the retry is unconditional (see D below).
  assert.deepEqual(s.inm, ["", '"a"', ""], "the retry sent the ETag the 304 disowned, or adopted the other one");
});

test("a 304 renews the set when its tag matches the cached one weakly (a compressing proxy weakens tags)", async () => {
  const a = new SigningKey("ES256");
  const body = JSON.stringify({ keys: [a.jwk()] });
  for (const [cached, revalidated] of [['W/"v1"', '"v1"'], ['"v1"', 'W/"v1"']]) {
    const s = await server((n, res) => {
      const headers = { "cache-control": "max-age=10" };
      if (n === 1) res.writeHead(200, { ...headers, etag: cached, "content-type": "application/json" }).end(body);
      else res.writeHead(304, { ...headers, etag: revalidated }).end();
    });
    const clock = new FakeClock();
    const logs = new Logs();
    const cache = new KeySetCache(new Client({ baseUrl: s.url, timeoutMs: 5000 }), { ...clock.clocks, logger: logs });
    await cache.key(a.kid);
    clock.advance(11_000); // stale, no stale-if-error: only a renewal answers
    await cache.key(a.kid);
    clock.advance(5_000); // fresh again from the 304: no request
    await cache.key(a.kid);
    await cache.settled();
    assert.deepEqual(s.inm, ["", cached], `cached ${cached}, 304 with ${revalidated}`);
    assert.equal(logs.warnings.length, 0);
  }
});

test("stale-while-revalidate does not extend the set's use past stale-if-error once a refresh failed", async () => {
  const key = new SigningKey("ES256");
  const o = await origin(key);
  o.cacheControl = "max-age=10, stale-while-revalidate=86400, stale-if-error=0";
  const clock = new FakeClock();
  const logs = new Logs();
  const cache = o.cache(clock, {}, logs);
  await cache.key(key.kid);
  o.status = 503;
  clock.advance(15_000); // within stale-while-revalidate, no refresh failed yet: answered at once
  await cache.key(key.kid);
  await waitFor("the background refresh fails", () => logs.warnings.length === 1);
  for (const later of [5_000, 3600_000, 21 * 3600_000]) {
    clock.advance(later);
    await assert.rejects(cache.key(key.kid), KeysUnavailableError, `+${later} ms: the set was used`);
  }
  // A success resets.
  o.status = 200;
  clock.advance(120_000);
  await cache.key(key.kid);
  clock.advance(15_000);
  await cache.key(key.kid);
});

test("within stale-if-error, a hung server never stalls a caller: the retry runs in the background", { timeout: 30_000 }, async () => {
  const key = new SigningKey("ES256");
  const o = await origin(key);
  o.cacheControl = "max-age=10, stale-if-error=100";
  const clock = new FakeClock();
  const logs = new Logs();
  const cache = o.cache(clock, {}, logs);
  await cache.key(key.kid);
  o.status = 503;
  clock.advance(11_000);
  await cache.key(key.kid); // the refresh fails: the set within stale-if-error
  assert.equal(logs.warnings.length, 1);
  o.status = 200;
  let open = (): void => {};
  o.hold = new Promise<void>((resolve) => (open = resolve));
  clock.advance(2_000); // past the 1 s backoff
  const before = o.requests;
  await cache.key(key.kid); // answered from the set while the retry hangs
  await waitFor("the retry reaches the origin", () => o.requests === before + 1);
  // The retry is still in flight, so once the origin answers, the set is refreshed. A caller that
  // had waited for it would have been answered only at the client's timeout, which ends the retry.
  open();
  await waitFor("the background retry succeeds", () => logs.infos.length === 1);
  assert.equal(o.requests, before + 1, "one retry");
});

test("weak keys are skipped: small-order Ed25519 points, RSA e < 3 or even", async () => {
  const good = new SigningKey("EdDSA");
  const rsa = new SigningKey("RS256").jwk();
  const ed = (kid: string, x: Uint8Array): Record<string, unknown> => ({
    ...good.jwk(),
    kid,
    x: Buffer.from(x).toString("base64url"),
  });
  const identity = new Uint8Array(32);
  identity[0] = 1; // (0, 1): order 1
  const orderTwo = new Uint8Array(32).fill(0xff); // (0, -1): y = p - 1
  orderTwo[0] = 0xec;
  orderTwo[31] = 0x7f;
  const orderFour = new Uint8Array(32); // y = 0: (±sqrt(-1), 0)
  const weak: Record<string, unknown> = {
    "ed-identity": ed("ed-identity", identity),
    "ed-order-2": ed("ed-order-2", orderTwo),
    "ed-order-4": ed("ed-order-4", orderFour),
    "rsa-e1": { ...rsa, kid: "rsa-e1", e: "AQ" },
    "rsa-e2": { ...rsa, kid: "rsa-e2", e: "Ag" },
    "rsa-e65536": { ...rsa, kid: "rsa-e65536", e: "AQAA" },
  };
  const o = await new Origin().start();
  o.setBody(Buffer.from(JSON.stringify({ keys: [good.jwk(), ...Object.values(weak)] })));
  const clock = new FakeClock();
  const cache = o.cache(clock, { unknownKidCooldownMs: 3_600_000 });
  await cache.key(good.kid);
  for (const kid of Object.keys(weak)) {
    await assert.rejects(cache.key(kid), InvalidTokenError, `key ${kid} was not skipped`);
  }
  // The forgery the identity key allows (R = identity, S = 0) is refused.
  const header = Buffer.from(JSON.stringify({ alg: "EdDSA", kid: "ed-identity" })).toString("base64url");
  const claims = Buffer.from(JSON.stringify(claimsFor(clock.now()))).toString("base64url");
  const forged = new Uint8Array(64);
  forged[0] = 1;
  const token = `${header}.${claims}.${Buffer.from(forged).toString("base64url")}`;
  await assert.rejects(verifierOver(cache).verify(token), InvalidTokenError);
});

test("no URL query or fragment in a log line or an error", async () => {
  const key = new SigningKey("ES256");
  const o = await origin(key);
  o.status = 503;
  const logs = new Logs();
  const cache = new KeySetCache(o.client(), {
    jwksUri: `${o.url}/jwks?access_token=SECRET123#frag456`,
    logger: logs,
  });
  await assert.rejects(cache.key(key.kid), (err: unknown) => {
    assert.ok(err instanceof KeysUnavailableError, String(err));
    assert.doesNotMatch(err.message, /SECRET123|frag456/);
    return true;
  });
  assert.equal(logs.warnings.length, 1);
  assert.doesNotMatch(logs.warnings.join("\n"), /SECRET123|frag456|access_token/);
  assert.match(logs.warnings[0] ?? "", /no set is cached/, "a first-fetch failure says no set is cached");
  assert.doesNotMatch(logs.warnings[0] ?? "", /cached set is used/);
});

test('JSON member names are matched exactly: {"KEYS": [...]} is not a set', async () => {
  const key = new SigningKey("ES256");
  const o = await new Origin().start();
  o.setBody(Buffer.from(JSON.stringify({ KEYS: [key.jwk()] })));
  await assert.rejects(o.cache(new FakeClock()).key(key.kid), KeysUnavailableError);
});

test("a discovery document's empty jwks_uri is refused", async () => {
  const o = await new Origin().start();
  assert.throws(() => new KeySetCache(o.client(), { jwksUri: "" }), Error);
});

// What the key cache refuses or bounds: malformed keys, a 304 of another tag, unknown kids while
// refreshes fail, redirects to plain http, weak or oversized RSA keys, odd token bytes and key
// encodings, odd jwks_uri spellings, huge timeouts, a clock that steps.

/** A key cache over `url` on `clock`, reporting to `logs`. */
function cacheOf(url: string, clock: FakeClock, logs = new Logs(), options: KeySetCacheOptions = {}): KeySetCache {
  return new KeySetCache(new Client({ baseUrl: url, timeoutMs: 60_000 }), { ...clock.clocks, logger: logs, ...options });
}

/** Rejects if `promise` has not settled within `ms`: a bound on a wait, not a measure of speed. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, bound]);
  } finally {
    clearTimeout(timer);
  }
}

test("one malformed key (RSA n \"A\") is skipped; the set's good key verifies", async () => {
  const good = new SigningKey("ES256");
  const o = await new Origin().start();
  const junk = { kty: "RSA", n: "A", e: "AQAB", kid: "junk", alg: "RS256" };
  const junkE = { ...new SigningKey("RS256").jwk(), kid: "junk-e", e: "AQABA" };
  o.setBody(Buffer.from(JSON.stringify({ keys: [good.jwk(), junk, junkE] })));
  const clock = new FakeClock();
  const cache = o.cache(clock, { unknownKidCooldownMs: 3_600_000 });
  const claims = await verifierOver(cache).verify(good.sign(claimsFor(clock.now())));
  assert.equal(claims["sub"], "svc");
  await assert.rejects(cache.key("junk"), InvalidTokenError);
  await assert.rejects(cache.key("junk-e"), InvalidTokenError);
});

test("a 304 with another ETag drops the cached ETag: the first retry is unconditional and recovers", async () => {
  const a = new SigningKey("ES256");
  const body = JSON.stringify({ keys: [a.jwk()] });
  const s = await server((_n, res) => {
    const headers = { "cache-control": "max-age=10, stale-if-error=100" };
    if (res.req.headers["if-none-match"] !== undefined) res.writeHead(304, { ...headers, etag: '"other"' }).end();
    else res.writeHead(200, { ...headers, etag: '"a"', "content-type": "application/json" }).end(body);
  });
  const clock = new FakeClock();
  const logs = new Logs();
  const cache = cacheOf(s.url, clock, logs);
  await cache.key(a.kid);
  clock.advance(11_000);
  await cache.key(a.kid); // the 304 with another tag: a failed refresh, the set kept
  await cache.settled();
  assert.equal(logs.warnings.length, 1);
  clock.advance(2_000); // past the backoff: the retry
  await cache.key(a.kid);
  await cache.settled();
  assert.deepEqual(s.inm, ["", '"a"', ""], "the retry sent the ETag the 304 disowned");
  assert.equal(logs.infos.length, 1, "the retry's 200 did not end the failure");
  clock.advance(9_000); // fresh from the retry's 200
  await cache.key(a.kid);
  assert.equal(s.inm.length, 3);
});

test("while refreshes fail, an unknown kid is keys-unavailable at once, never waiting for a retry in flight", { timeout: 30_000 }, async () => {
  const key = new SigningKey("ES256");
  const body = JSON.stringify({ keys: [key.jwk()] });
  const hung: ServerResponse[] = [];
  const s = await server((n, res) => {
    const headers = { "cache-control": "max-age=10, stale-if-error=100" };
    if (n === 1) res.writeHead(200, { ...headers, "content-type": "application/json" }).end(body);
    else if (n === 2) res.writeHead(503, headers).end();
    else hung.push(res); // accepted, never answered
  });
  after(() => hung.forEach((res) => res.destroy()));
  const clock = new FakeClock();
  const logs = new Logs();
  const cache = cacheOf(s.url, clock, logs, { unknownKidCooldownMs: 0 });
  await cache.key(key.kid);
  clock.advance(11_000);
  await cache.key(key.kid); // the refresh fails (503): the set, within stale-if-error
  // (2) Within the backoff, no retry running: an unknown kid may be a new key the cache cannot
  // fetch now: keys unavailable (503, retry later), not an invalid token.
  await assert.rejects(cache.key("new-kid"), KeysUnavailableError);
  clock.advance(2_000); // past the backoff: a known kid starts the retry, which hangs
  await cache.key(key.kid);
  await waitFor("the retry reaches the server", () => s.inm.length === 3);
  // (1) The retry is in flight (for the client's 60 s timeout): answered without waiting for it.
  await within(
    5_000,
    "an unknown kid waited for the retry in flight",
    assert.rejects(cache.key("another-kid"), KeysUnavailableError),
  );
  assert.equal(s.inm.length, 3, "an unknown kid sent a request");
});

test("while a fresh set's refreshes fail, an unknown kid past the backoff starts a background retry; its key is found once it succeeds", async () => {
  const key = new SigningKey("ES256");
  const added = new SigningKey("EdDSA");
  const o = await origin(key);
  o.cacheControl = "max-age=3600";
  const clock = new FakeClock();
  const logs = new Logs();
  const cache = o.cache(clock, { unknownKidCooldownMs: 0 }, logs);
  await cache.key(key.kid);
  o.status = 503;
  await assert.rejects(cache.key(added.kid), KeysUnavailableError); // its refresh failed
  o.status = 200;
  o.publish(key, added);
  clock.advance(2_000); // past the 1 s backoff; the set is still fresh
  await assert.rejects(cache.key(added.kid), KeysUnavailableError); // answered at once...
  await cache.settled(); // ...while the retry it started runs
  assert.equal((await cache.key(added.kid)).kid, added.kid, "no retry: the new key stays unknown until max-age");
  assert.equal(logs.infos.length, 1);
});

test("an https issuer whose discovery document names an http:// jwks_uri is refused", async () => {
  const d = await discovery(() => ({ issuer: "https://issuer.example", jwksUri: "http://127.0.0.1:1/jwks" }));
  await assert.rejects(
    TokenVerifier.fromIssuer(new Client({ baseUrl: d.url, timeoutMs: 5000 }), "https://issuer.example", { audience: "api" }),
    /jwks_uri/,
  );
  // An http issuer may name an http jwks_uri; an https issuer an https one.
  for (const [issuer, jwksUri] of [
    ["http://issuer.example", "http://127.0.0.1:1/jwks"],
    ["https://issuer.example", "https://127.0.0.1:1/jwks"],
  ] as const) {
    const ok = await discovery(() => ({ issuer, jwksUri }));
    await TokenVerifier.fromIssuer(new Client({ baseUrl: ok.url, timeoutMs: 5000 }), issuer, { audience: "api" });
  }
});

test("the client follows no redirect from https to http (discovery included)", async (t) => {
  const tls = selfSignedCert(t.name);
  const plain = await discovery(() => ({ issuer: "iss", jwksUri: "http://127.0.0.1:1/jwks" }));
  const s = createHttpsServer({ key: tls.key, cert: tls.cert }, (req, res) => {
    res.writeHead(307, { location: `${plain.url}${req.url ?? "/"}` }).end();
  });
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  after(() => {
    s.closeAllConnections();
    s.close();
  });
  const url = `https://127.0.0.1:${(s.address() as AddressInfo).port}`;
  const fetchTrusting = await trustingFetch(tls.cert);
  // The TLS peer is reached (so what follows is its redirect refused, not a TLS failure).
  const direct = await fetchTrusting(`${url}/x`, { redirect: "manual" });
  assert.equal(direct.status, 307);
  const client = new Client({ baseUrl: url, timeoutMs: 5000, fetch: fetchTrusting });
  await assert.rejects(TokenVerifier.fromIssuer(client, "iss", { audience: "api" }), /discovery failed/);
  await assert.rejects(client.auth.getJWKS({}));
  const cache = new KeySetCache(client, { logger: new Logs() });
  await assert.rejects(cache.key("any"), KeysUnavailableError);
  assert.equal(plain.requests, 0, "a redirect to http was followed");
});

test("a jwks_uri with whitespace, control characters, backslashes or no host is refused at construction", async () => {
  const o = await new Origin().start();
  for (const jwksUri of [
    " http://h/jwks",
    "http://h/jwks ",
    "http://h/jw\nks",
    "http://h/jw\tks",
    "http://h/a b",
    "http://h/\u0000",
    "http:\\\\h\\jwks",
    "http://h\\jwks",
    "http:h/jwks",
    "http:/h/jwks",
    "http:///jwks",
    "http://h/a\u2028b",
    "http://h/a\u3000b",
    "http://h/a\u1680b",
  ]) {
    assert.throws(() => new KeySetCache(o.client(), { jwksUri }), Error, JSON.stringify(jwksUri));
  }
  const d = await discovery(() => ({ issuer: "iss", jwksUri: "http:h/jwks" }));
  await assert.rejects(
    TokenVerifier.fromIssuer(new Client({ baseUrl: d.url, timeoutMs: 5000 }), "iss", { audience: "api" }),
    Error,
  );
  assert.equal(o.requests, 0);
});

test("an RSA key whose modulus is prime is kept in the set but refused when a token names it; a token signed with d = e^-1 mod (n-1) is invalid", { timeout: 60_000 }, async () => {
  const good = new SigningKey("ES256");
  const e = 65537n;
  let n = 0n;
  while (n === 0n || (n - 1n) % e === 0n) n = generatePrimeSync(2048, { bigint: true });
  const d = modInverse(e, n - 1n);
  const prime = { kty: "RSA", kid: "prime-n", alg: "RS256", use: "sig", n: bigToB64(n), e: bigToB64(e) };
  const o = await new Origin().start();
  o.setBody(Buffer.from(JSON.stringify({ keys: [good.jwk(), prime] })));
  const clock = new FakeClock();
  const cache = o.cache(clock, { unknownKidCooldownMs: 3_600_000 });
  const verifier = verifierOver(cache);
  assert.equal((await verifier.verify(good.sign(claimsFor(clock.now())))).sub, "svc");
  const input = `${b64({ alg: "RS256", kid: "prime-n" })}.${b64({ ...claimsFor(clock.now()), sub: "forged-prime" })}`;
  const digest = createHash("sha256").update(input).digest();
  const prefix = Buffer.from("3031300d060960864801650304020105000420", "hex");
  const em = Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(256 - 3 - prefix.length - 32, 0xff), Buffer.from([0]), prefix, digest]);
  const signature = modPow(BigInt(`0x${em.toString("hex")}`), d, n);
  const token = `${input}.${bigToB64(signature, 256)}`;
  const primeRefused = (err: unknown): boolean => {
    assert.ok(err instanceof InvalidTokenError, String(err));
    assert.equal(err.message, "invalid token: the key of the token's kid is not usable: its RSA modulus is prime");
    return true;
  };
  await assert.rejects(verifier.verify(token), primeRefused, "the forged token verified");
  await assert.rejects(verifier.verify(token), primeRefused, "the forged token verified the second time");
  await assert.rejects(cache.key("prime-n"), primeRefused, "the prime-n key was used");
  assert.equal((await verifier.verify(good.sign(claimsFor(clock.now())))).sub, "svc");
  assert.equal(o.requests, 1, "a token naming the prime key refreshed the set");
  // A set whose only key has a prime modulus is a set: its tokens are invalid, not the set.
  o.setBody(Buffer.from(JSON.stringify({ keys: [prime] })));
  await assert.rejects(o.cache(new FakeClock()).key("prime-n"), primeRefused);
});

/** An RSA JWK whose n is a fresh random odd number of exactly `bits` bits (a composite, as a
 * hostile server would send: it costs the prime test as much as a real modulus). */
function randomRsaJwk(kid: string, bits: number): Record<string, unknown> {
  const bytes = randomBytes(Math.ceil(bits / 8));
  const top = bits % 8 === 0 ? 8 : bits % 8;
  bytes[0] = ((bytes[0] ?? 0) & ((1 << top) - 1)) | (1 << (top - 1)); // exactly `bits` bits
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) | 1; // odd
  return { kty: "RSA", kid, alg: "RS256", use: "sig", n: bytes.toString("base64url"), e: "AQAB" };
}

function jwksBody(keys: unknown[]): ArrayBuffer {
  const bytes = Buffer.from(JSON.stringify({ keys }));
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

test("RSA keys over 4096 bits are skipped, as in Go (go-jose MaxRSAModulusBits); a 4096-bit key is kept", async () => {
  const keys = [randomRsaJwk("rsa-4096", 4096), randomRsaJwk("rsa-4097", 4097), randomRsaJwk("rsa-8192", 8192)];
  assert.deepEqual([...(await parseKeySet(jwksBody(keys))).keys()], ["rsa-4096"]);
});

test("reading a set of 64 fresh 4096-bit RSA keys tests no modulus for primality; a token naming one tests that one, once, for every cache", { timeout: 60_000 }, async () => {
  const keys = Array.from({ length: 64 }, (_, i) => randomRsaJwk(`rsa-${i}`, 4096));
  const before = primalityTests();
  assert.equal((await parseKeySet(jwksBody(keys))).size, 64);
  assert.equal(primalityTests() - before, 0, "reading the set tested moduli for primality");
  const o = await new Origin().start();
  o.setBody(Buffer.from(JSON.stringify({ keys })));
  const clock = new FakeClock();
  const verifier = verifierOver(o.cache(clock));
  const token = `${b64({ alg: "RS256", kid: "rsa-7" })}.${b64(claimsFor(clock.now()))}.${Buffer.alloc(512).toString("base64url")}`;
  const signatureRefused = (err: unknown): boolean => {
    assert.ok(err instanceof InvalidTokenError, String(err));
    assert.match(err.message, /signature does not verify/);
    return true;
  };
  await assert.rejects(verifier.verify(token), signatureRefused);
  assert.equal(primalityTests() - before, 1, "the token's key was not tested exactly once");
  // The verdict is memoized by n, for every cache of the process.
  await assert.rejects(verifier.verify(token), signatureRefused);
  await assert.rejects(verifierOver(o.cache(new FakeClock())).verify(token), signatureRefused);
  assert.equal(primalityTests() - before, 1, "a second lookup of the key tested it again");
});

test("a client timeout of 2^31 ms or more is clamped (setTimeout would fire after 1 ms)", async () => {
  const key = new SigningKey("ES256");
  const o = await origin(key);
  // Each answer waits for a 50 ms timer: an unclamped timeout's 1 ms timer fires first.
  const later = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 50));
  o.hold = later();
  const client = new Client({ baseUrl: o.url, timeoutMs: 2 ** 31 });
  const cache = new KeySetCache(client, { logger: new Logs() });
  assert.equal((await cache.key(key.kid)).kid, key.kid);
  // A call's own timeout likewise (the document is answered after 50 ms).
  const d = await discovery(() => ({ issuer: "iss", jwksUri: "http://127.0.0.1:1/jwks" }), 50);
  const other = new Client({ baseUrl: d.url });
  assert.equal((await other.auth.getOpenIDConfiguration({}, { timeoutMs: 2 ** 40 })).issuer, "iss");
});

test("a key set body with a UTF-8 BOM is refused whole", async () => {
  const key = new SigningKey("ES256");
  const o = await new Origin().start();
  o.setBody(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify({ keys: [key.jwk()] }))]));
  await assert.rejects(o.cache(new FakeClock()).key(key.kid), (err: unknown) => {
    assert.ok(err instanceof KeysUnavailableError, String(err));
    assert.match(err.message, /not a JSON/);
    return true;
  });
});

test("members padded, in the standard alphabet or of the wrong length, and use null, skip the key; x5c is not used", async () => {
  const good = new SigningKey("EdDSA");
  const withChar = (alg: "ES256" | "EdDSA" | "RS256", re: RegExp, member: string): Record<string, unknown> => {
    for (;;) {
      const jwk = new SigningKey(alg).jwk();
      if (re.test(String(jwk[member]))) return jwk;
    }
  };
  const ec = new SigningKey("ES256").jwk();
  const ed = new SigningKey("EdDSA").jwk();
  const rsa = new SigningKey("RS256").jwk();
  const std = (text: unknown): string => String(text).replace(/-/g, "+").replace(/_/g, "/");
  const ecDash = withChar("ES256", /[-_]/, "x");
  const edDash = withChar("EdDSA", /[-_]/, "x");
  const rsaDash = withChar("RS256", /[-_]/, "n");
  const zero = (text: unknown): string => Buffer.concat([Buffer.from([0]), Buffer.from(String(text), "base64url")]).toString("base64url");
  const skipped: Record<string, Record<string, unknown>> = {
    "ec-x-padded": { ...ec, x: `${String(ec["x"])}=` },
    "ec-y-padded": { ...ec, y: `${String(ec["y"])}=` },
    "ec-x-standard": { ...ecDash, x: std(ecDash["x"]) },
    "ec-x-33-bytes": { ...ec, x: zero(ec["x"]) },
    "ec-y-33-bytes": { ...ec, y: zero(ec["y"]) },
    "ec-x-31-bytes": { ...ec, x: Buffer.from(String(ec["x"]), "base64url").subarray(1).toString("base64url") },
    "ed-x-padded": { ...ed, x: `${String(ed["x"])}=` },
    "ed-x-standard": { ...edDash, x: std(edDash["x"]) },
    "ed-x-33-bytes": { ...ed, x: zero(ed["x"]) },
    "rsa-n-padded": { ...rsa, n: `${String(rsa["n"])}==` },
    "rsa-n-standard": { ...rsaDash, n: std(rsaDash["n"]) },
    "rsa-e-padded": { ...rsa, e: "AQAB=" },
    "use-null": { ...ec, use: null },
    "use-empty": { ...ec, use: "" },
  };
  const x5c = { ...new SigningKey("ES256").jwk(), kid: "x5c-garbage", x5c: ["garbage"], x5t: "junk" };
  const o = await new Origin().start();
  const members = Object.entries(skipped).map(([kid, member]) => ({ ...member, kid }));
  o.setBody(Buffer.from(JSON.stringify({ keys: [good.jwk(), x5c, ...members] })));
  const cache = o.cache(new FakeClock(), { unknownKidCooldownMs: 3_600_000 });
  await cache.key(good.kid);
  await cache.key("x5c-garbage");
  for (const kid of Object.keys(skipped)) {
    await assert.rejects(cache.key(kid), InvalidTokenError, `key ${kid} was not skipped`);
  }
});

test("deep nesting in the key set is an error of the fetch, never a crash", async () => {
  const key = new SigningKey("ES256");
  const o = await new Origin().start();
  const deep = `${"[".repeat(1_000_000)}${"]".repeat(1_000_000)}`;
  o.setBody(Buffer.from(`{"keys":[${JSON.stringify(key.jwk())}],"x":${deep}}`));
  const cache = o.cache(new FakeClock(), { maxJwksBytes: 4 << 20 });
  // Used (V8 parses it) or refused as not JSON: either way an answer, not a crash.
  await cache.key(key.kid).catch((err: unknown) => assert.ok(err instanceof KeysUnavailableError, String(err)));
});

test("the set's age is measured on a monotonic clock: a wall-clock step leaves it fresh", async () => {
  const key = new SigningKey("ES256");
  const o = await origin(key);
  o.cacheControl = "max-age=60";
  const wall = new FakeClock(); // the wall clock only: ages are on the default monotonic clock
  const cache = new KeySetCache(o.client(), { now: wall.now, logger: new Logs() });
  await cache.key(key.kid);
  const verifier = verifierOver(cache);
  const token = key.sign(claimsFor(wall.now()));
  wall.advance(2 * 3600_000); // the wall clock steps two hours ahead
  await cache.key(key.kid);
  await cache.settled();
  // The verifier's exp check reads the wall clock.
  await assert.rejects(verifier.verify(token), /expired/);
  wall.advance(-4 * 3600_000); // and two hours back
  await cache.key(key.kid);
  assert.equal(o.requests, 1, "a wall-clock step made the set stale");
  await assert.rejects(verifier.verify(token), /not valid yet|future/);
});

/** A local server answering GetOpenIDConfiguration (Connect GET, binary) with `doc()`. */
async function discovery(
  doc: () => { issuer: string; jwksUri: string },
  delayMs = 0,
): Promise<{ url: string; requests: number }> {
  const state = { url: "", requests: 0 };
  const s = createServer((_req, res) => {
    state.requests++;
    const body = toBinary(GetOpenIDConfigurationResponseSchema, create(GetOpenIDConfigurationResponseSchema, doc()));
    setTimeout(() => res.writeHead(200, { "content-type": "application/proto" }).end(Buffer.from(body)), delayMs);
  });
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  after(() => {
    s.closeAllConnections();
    s.close();
  });
  state.url = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  return state;
}

/** A self-signed certificate for 127.0.0.1, made with openssl in a temporary directory. */
function selfSignedCert(name: string): { key: Buffer; cert: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), "sdk-ts-tls-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
    "-subj", `/CN=${name.slice(0, 8).replace(/[^A-Za-z0-9]/g, "x")}`, "-addext", "subjectAltName=IP:127.0.0.1",
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
  ], { stdio: "ignore" });
  return { key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) };
}

/** Node's own fetch, trusting `ca`: an Agent of the class of fetch's global dispatcher. */
async function trustingFetch(ca: Buffer): Promise<typeof globalThis.fetch> {
  await fetch("data:,").catch(() => undefined); // makes fetch set its global dispatcher
  const global = (globalThis as Record<symbol, unknown>)[Symbol.for("undici.globalDispatcher.1")];
  assert.ok(global !== undefined, "no global dispatcher to make an Agent of");
  const Agent = (global as { constructor: new (options: unknown) => unknown }).constructor;
  const dispatcher = new Agent({ connect: { ca } });
  return (input, init) => fetch(input, { ...init, dispatcher } as RequestInit);
}

function modPow(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = 1n;
  let b = base % modulus;
  for (let e = exponent; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * b) % modulus;
    b = (b * b) % modulus;
  }
  return result;
}

function modInverse(a: bigint, m: bigint): bigint {
  let [r0, r1, s0, s1] = [m, a % m, 0n, 1n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1, s0, s1] = [r1, r0 - q * r1, s1, s0 - q * s1];
  }
  return ((s0 % m) + m) % m;
}

function bigToB64(value: bigint, length = 0): string {
  let hex = value.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  return Buffer.from(hex.padStart(length * 2, "0"), "hex").toString("base64url");
}
