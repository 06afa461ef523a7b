// The behaviour table of the key cache, one test per row, against a local origin whose answers
// say: max-age=10, stale-while-revalidate=20, stale-if-error=100 (unless a test says otherwise).

import assert from "node:assert/strict";
import { test } from "node:test";

import { InvalidTokenError, KeysUnavailableError, KeySetCache } from "../src/index.js";
import { parseCacheControl } from "../src/keyset.js";
import {
  claimsFor,
  FakeClock,
  Logs,
  origin,
  Origin,
  SigningKey,
  verifierOver,
  waitFor,
} from "./origin.js";

async function mustKey(cache: KeySetCache, kid: string): Promise<void> {
  const key = await cache.key(kid);
  assert.equal(key.kid, kid);
}

/** A gate the origin's answers wait on until the test opens it. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open = (): void => {};
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

test("fresh: a set within max-age is used without a request", async () => {
  const key = new SigningKey("ES256");
  const o = await origin(key);
  const clock = new FakeClock();
  const cache = o.cache(clock);
  const verifier = verifierOver(cache);
  await mustKey(cache, key.kid);
  for (let i = 0; i < 100; i++) {
    clock.advance(90); // 9 s in all: within max-age=10
    await verifier.verify(key.sign(claimsFor(clock.now())));
  }
  assert.equal(o.requests, 1, "a fresh set is used without a request");
});

test("revalidate: past max-age, If-None-Match; a 304 keeps the set and restarts its age", async () => {
  const key = new SigningKey("ES256");
  const o = await origin(key);
  o.cacheControl = "max-age=10"; // no stale-while-revalidate: the caller waits
  const clock = new FakeClock();
  const cache = o.cache(clock);
  await mustKey(cache, key.kid);
  clock.advance(11_000);
  await mustKey(cache, key.kid);
  assert.deepEqual([o.conditional, o.notModified], [1, 1], "one conditional request, a 304");
  clock.advance(9_000); // 20 s after the first answer, 9 s after the 304
  await mustKey(cache, key.kid);
  assert.equal(o.requests, 2, "a 304 restarts the set's age");
  // A 304 that carries Cache-Control sets the freshness that follows it.
  o.cacheControl = "max-age=1";
  clock.advance(11_000);
  await mustKey(cache, key.kid);
  clock.advance(2_000);
  await mustKey(cache, key.kid);
  assert.equal(o.notModified, 3, "the 304's own max-age=1 applies after it");
});

test("stale-while-revalidate: answers at once and refreshes once in the background", { timeout: 20_000 }, async () => {
  const key = new SigningKey("ES256");
  const o = await origin(key);
  const clock = new FakeClock();
  const cache = o.cache(clock);
  await mustKey(cache, key.kid);
  const held = gate();
  o.hold = held.wait; // the refresh waits until the test lets it go
  clock.advance(15_000); // past max-age=10, within stale-while-revalidate=20
  // Answered while the refresh hangs.
  await Promise.all(Array.from({ length: 20 }, () => mustKey(cache, key.kid)));
  await waitFor("the background refresh reaches the origin", () => o.requests === 2);
  held.open();
  await waitFor("the background refresh is answered", () => o.notModified === 1);
  clock.advance(5_000); // 5 s after the 304: fresh again
  await mustKey(cache, key.kid);
  assert.equal(o.requests, 2, "one background refresh for 20 callers, then fresh");
});

test("stale-if-error: a failed refresh keeps the set, logs once, backs off; beyond it, keys unavailable", async () => {
  const key = new SigningKey("ES256");
  const o = await origin(key);
  o.cacheControl = "max-age=10, stale-if-error=100";
  const clock = new FakeClock();
  const logs = new Logs();
  const cache = o.cache(clock, {}, logs);
  await mustKey(cache, key.kid);
  o.status = 503;
  o.body = Buffer.from("\x1b[2Jdown\r\nfor good");
  clock.advance(20_000);
  await mustKey(cache, key.kid); // the refresh fails: the cached set, within stale-if-error
  assert.equal(o.requests, 2);
  // Retries back off: 1 s, then 2, 4, 8 s after each failure; calls between reach nobody.
  const at: number[] = [];
  for (let second = 1; second <= 20; second++) {
    clock.advance(1_000);
    const before: number = o.requests;
    await mustKey(cache, key.kid);
    await cache.settled(); // within stale-if-error, the retry runs in the background
    if (o.requests !== before) at.push(second);
  }
  assert.deepEqual(at, [1, 3, 7, 15], "retries after 1 s, doubling");
  assert.equal(logs.warnings.length, 1, `one warning per streak: ${logs.warnings.join("\n")}`);
  assert.match(logs.warnings[0] ?? "", /HTTP 503/);
  assert.doesNotMatch(logs.warnings.join(""), /\x1b|\r|for good/, "the log repeats the server's bytes");
  // Beyond stale-if-error (max-age 10 + 100 s after the answer): keys unavailable.
  clock.advance(71_000);
  await assert.rejects(cache.key(key.kid), (err: unknown) => {
    assert.ok(err instanceof KeysUnavailableError, String(err));
    assert.ok(!(err instanceof InvalidTokenError));
    assert.doesNotMatch(err.message, /for good/);
    return true;
  });
  // Back: the set is fetched again, and the end of the streak is reported.
  o.status = 200;
  o.publish(key);
  clock.advance(60_000);
  await mustKey(cache, key.kid);
  assert.equal(logs.infos.length, 1);
});

test("beyond stale-while-revalidate: one shared refresh before answering", async () => {
  const old = new SigningKey("ES256");
  const next = new SigningKey("EdDSA");
  const o = await origin(old);
  const clock = new FakeClock();
  const cache = o.cache(clock);
  await mustKey(cache, old.kid);
  o.publish(next); // old removed: a new ETag
  clock.advance(31_000);
  // All 20 see the new set: they waited for the one refresh.
  await Promise.all(Array.from({ length: 20 }, () => mustKey(cache, next.kid)));
  assert.equal(o.requests, 2, "one request for 20 concurrent callers past stale-while-revalidate");
  await assert.rejects(cache.key(old.kid), InvalidTokenError);
});

test("no set and the first fetch fails: keys unavailable, and no request within the backoff", async () => {
  const o = await new Origin().start();
  o.status = 500;
  o.body = Buffer.from("oops");
  const cache = o.cache(new FakeClock());
  await assert.rejects(cache.key("any"), (err: unknown) => {
    assert.ok(err instanceof KeysUnavailableError, String(err));
    assert.match(err.message, /HTTP 500/);
    return true;
  });
  await assert.rejects(cache.key("any"), KeysUnavailableError);
  assert.equal(o.requests, 1, "within the backoff, no request");
});

test("unknown kid: one refresh shared by concurrent callers, at most one per cooldown", { timeout: 20_000 }, async () => {
  const key = new SigningKey("ES256");
  const added = new SigningKey("EdDSA");
  const o = await origin(key);
  const clock = new FakeClock();
  const cache = o.cache(clock, { unknownKidCooldownMs: 5_000 });
  await mustKey(cache, key.kid);
  o.publish(key, added);
  const held = gate();
  o.hold = held.wait;
  const calls = Array.from({ length: 50 }, (_, i) =>
    i % 2 === 0 ? cache.key(added.kid) : cache.key(`random-${i}`).catch((err: unknown) => err),
  );
  await waitFor("the unknown kids' refresh reaches the origin", () => o.requests === 2);
  held.open();
  o.hold = undefined;
  const results = await Promise.all(calls);
  results.forEach((result, i) => {
    if (i % 2 === 0) assert.equal((result as { kid: string }).kid, added.kid);
    else assert.ok(result instanceof InvalidTokenError, String(result));
  });
  assert.equal(o.requests, 2, "one shared refresh for 50 concurrent unknown kids");
  // Within the cooldown an unknown kid is invalid at once, without a request.
  for (let i = 0; i < 1000; i++) {
    clock.advance(4);
    await assert.rejects(cache.key(`flood-${i}`), InvalidTokenError);
  }
  assert.equal(o.requests, 2, "no request within the cooldown");
  clock.advance(1_000); // the cooldown is over
  await assert.rejects(cache.key("after-cooldown"), InvalidTokenError);
  assert.equal(o.requests, 3, "one refresh once the cooldown is over");
});

const manyKeys = Array.from(
  { length: 257 },
  (_, i) =>
    `{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","kid":"k${i}","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`,
).join(",");

const boundedCases: [string, Buffer, RegExp][] = [
  ["over the byte limit", Buffer.from(`{"keys":[],"pad":"${"A".repeat(1 << 20)}"}`), /larger than the limit/],
  ["more than 256 keys", Buffer.from(`{"keys":[${manyKeys}]}`), /more than 256/],
  ["not JSON", Buffer.from("\x00\x01<html>garbage"), /not a JSON/],
  ["not UTF-8", Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), /not a JSON/],
  ["JSON without keys", Buffer.from('{"kes":[]}'), /without a "keys" array/],
  ["keys not an array", Buffer.from('{"keys":{"kid":"x"}}'), /without a "keys" array/],
  ["no usable key", Buffer.from('{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h","alg":"HS256"}]}'), /usable/],
  ["JSON null", Buffer.from("null"), /without a "keys" array/],
  ["truncated JSON", Buffer.from('{"keys":[{"kty":"EC"'), /not a JSON/],
];

for (const [name, body, want] of boundedCases) {
  test(`bounded: ${name} is an error, never a crash, and never replaces a good set`, async () => {
    const key = new SigningKey("ES256");
    // No set yet: keys unavailable.
    const empty = await new Origin().start();
    empty.setBody(body);
    await assert.rejects(empty.cache(new FakeClock()).key(key.kid), (err: unknown) => {
      assert.ok(err instanceof KeysUnavailableError, String(err));
      assert.match(err.message, want);
      assert.doesNotMatch(err.message, /garbage|AAAA/, "the error quotes the answer");
      return true;
    });
    // A good set cached: the bad answer does not replace it.
    const o = await origin(key);
    o.cacheControl = "max-age=10, stale-if-error=100";
    const clock = new FakeClock();
    const cache = o.cache(clock);
    await mustKey(cache, key.kid);
    o.setBody(body);
    clock.advance(11_000);
    await mustKey(cache, key.kid);
    assert.equal(o.requests, 2);
  });
}

test("a smaller maxJwksBytes bounds the answer", async () => {
  const key = new SigningKey("RS256");
  const o = await origin(key);
  await assert.rejects(o.cache(new FakeClock(), { maxJwksBytes: 100 }).key(key.kid), (err: unknown) => {
    assert.ok(err instanceof KeysUnavailableError);
    assert.match(err.message, /larger than the limit of 100 bytes/);
    return true;
  });
  await mustKey(o.cache(new FakeClock(), { maxJwksBytes: 4096 }), key.kid);
});

test("unusable keys are skipped, not fatal", async () => {
  const good = new SigningKey("EdDSA");
  const ec = new SigningKey("ES256");
  const rsa1024 = (): Record<string, unknown> => {
    const small = new SigningKey("RS256");
    const jwk = small.jwk();
    // A 1024-bit modulus: the first 128 bytes of the key's own.
    jwk["n"] = Buffer.from(String(jwk["n"]), "base64url").subarray(0, 128).toString("base64url");
    return { ...jwk, kid: "rsa-1024" };
  };
  const jwk = (change: (member: Record<string, unknown>) => void): Record<string, unknown> => {
    const member = ec.jwk();
    change(member);
    return member;
  };
  const unusable: Record<string, unknown> = {
    "no-kid": jwk((m) => delete m["kid"]),
    private: jwk((m) => Object.assign(m, { kid: "private", d: "AAAA" })),
    "use-enc": jwk((m) => Object.assign(m, { kid: "use-enc", use: "enc" })),
    "alg-ES384": jwk((m) => Object.assign(m, { kid: "alg-ES384", alg: "ES384" })),
    "no-alg": jwk((m) => Object.assign(m, { kid: "no-alg", alg: undefined })),
    "alg-RS256": jwk((m) => Object.assign(m, { kid: "alg-RS256", alg: "RS256" })), // not RSA
    "alg-none": jwk((m) => Object.assign(m, { kid: "alg-none", alg: "none" })),
    oct: { kty: "oct", k: "c2VjcmV0", kid: "oct", alg: "HS256" },
    "kid-number": jwk((m) => Object.assign(m, { kid: 7 })),
    "off-curve": jwk((m) => Object.assign(m, { kid: "off-curve", y: m["x"] })),
    "rsa-1024": rsa1024(),
    "not-object": [1],
  };
  const o = await new Origin().start();
  o.setBody(Buffer.from(JSON.stringify({ keys: [good.jwk(), ...Object.values(unusable)] })));
  const cache = o.cache(new FakeClock(), { unknownKidCooldownMs: 3_600_000 });
  await mustKey(cache, good.kid);
  for (const kid of Object.keys(unusable)) {
    await assert.rejects(cache.key(kid), InvalidTokenError, `key ${kid} was not skipped`);
  }
  // The same key made usable is used: the test's keys differ only in what is checked.
  const usable = await origin(ec);
  await mustKey(usable.cache(new FakeClock()), ec.kid);
});

const cacheControlCases: [string, number][] = [
  ["max-age=10", 10_000],
  ["", 300_000],
  ["public", 300_000],
  ["max-age=ten", 300_000],
  ["max-age=-5", 300_000],
  ["max-age=604800", 24 * 3600_000],
  ["max-age=10, no-cache", 0],
  ["no-store, max-age=10", 0],
  ['MAX-AGE="20"', 20_000],
  ["max-age=0000000000000060", 60_000],
  [`max-age=${"9".repeat(400)}`, 24 * 3600_000],
  ['ext="a, max-age=86400", max-age=5', 5_000],
  ['ext="a,\\" max-age=86400", max-age=5', 5_000],
];

for (const [header, fresh] of cacheControlCases) {
  test(`Cache-Control ${JSON.stringify(header)}: fresh for ${fresh / 1000} s`, async () => {
    const key = new SigningKey("ES256");
    const o = await origin(key);
    o.cacheControl = header;
    const clock = new FakeClock();
    const cache = o.cache(clock);
    await mustKey(cache, key.kid);
    if (fresh > 0) {
      clock.advance(fresh - 1_000);
      await mustKey(cache, key.kid);
      assert.equal(o.requests, 1, "a request within the freshness");
      clock.advance(1_000);
    }
    await mustKey(cache, key.kid);
    assert.equal(o.requests, 2, "a revalidation once the freshness is over");
  });
}

test("the API key goes only to the client's origin", async () => {
  const key = new SigningKey("ES256");
  const home = await origin(key);
  const other = await origin(key);
  const client = home.client("k-123.secret");
  const cases: [Origin, string | undefined, string][] = [
    [home, undefined, "Bearer k-123.secret"],
    [home, `${home.url}/.well-known/jwks.json`, "Bearer k-123.secret"],
    [other, `${other.url}/.well-known/jwks.json`, ""],
  ];
  for (const [where, jwksUri, want] of cases) {
    const cache = new KeySetCache(client, { jwksUri, logger: new Logs() });
    await mustKey(cache, key.kid);
    assert.equal(where.auth.at(-1), want, `jwks_uri ${jwksUri}`);
  }
});

test("unusable options are refused at construction", async () => {
  const o = await new Origin().start();
  const client = o.client();
  for (const options of [
    { unknownKidCooldownMs: -1 },
    { maxJwksBytes: 0 },
    { maxJwksBytes: 1.5 },
    { jwksUri: "ftp://example.com/jwks" },
    { jwksUri: "/relative" },
    { jwksUri: "https://user:pass@example.com/jwks" },
  ]) {
    assert.throws(() => new KeySetCache(client, options), Error, JSON.stringify(options));
  }
  assert.equal(o.requests, 0, "constructing makes no request");
});

// B: one Cache-Control grammar in the three SDKs: this table is the same in each (value →
// max-age, stale-while-revalidate, stale-if-error in seconds; "d" = the 300 s default).
const D = 300;
const cacheControlTable: [string | null, number, number, number][] = [
  ["max-age=60", 60, 0, 0],
  ['max-age="60"', 60, 0, 0],
  ['max-age="60"x', D, 0, 0],
  ['a"b, max-age=86400, c"d, max-age=5', 86400, 0, 0],
  ["max-age=60, max-age=5", 60, 0, 0],
  ["max-age=60, stale-while-revalidate=600, stale-while-revalidate=5", 60, 600, 0],
  ["max-age=60, stale-if-error=600, stale-if-error=x", 60, 0, 600],
  ["max-age=60, must-revalidate, stale-if-error=600, stale-while-revalidate=30", 60, 0, 0],
  ["no-store, stale-while-revalidate=86400", 0, 0, 0],
  ["no-cache, stale-if-error=86400", 0, 0, 0],
  ["MAX-AGE=60, Stale-If-Error=10", 60, 0, 10],
  ["max-age=x, max-age=60", 300, 0, 0],
  ["max-age = 60", 60, 0, 0],
  ["max-age=-1", D, 0, 0],
  ["max-age=99999999999999999999999", 86400, 0, 0],
  ['ext="a, max-age=86400", max-age=5', 5, 0, 0],
  ["max-age=60, stale-if-error=99999999999", 60, 0, 31536000],
  [null, D, 0, 0],
];

test("the Cache-Control table shared by the three SDKs", () => {
  const wrong: string[] = [];
  for (const [header, maxAge, swr, sie] of cacheControlTable) {
    const got = parseCacheControl(header);
    const seconds = [got.maxAge / 1000, got.staleWhileRevalidate / 1000, got.staleIfError / 1000];
    if (seconds.join() !== [maxAge, swr, sie].join()) {
      wrong.push(`${JSON.stringify(header)}: got ${seconds.join()}, want ${[maxAge, swr, sie].join()}`);
    }
  }
  assert.deepEqual(wrong, []);
});

test("beyond the shared table: proxy-revalidate allows no stale use; no-cache with a field list; whitespace around a directive", () => {
  const cases: [string, number, number, number][] = [
    ["max-age=60, proxy-revalidate, stale-if-error=600, stale-while-revalidate=30", 60, 0, 0],
    ['no-cache="set-cookie", max-age=60, stale-if-error=600', 0, 0, 0],
    ["  max-age=60 ,\tstale-if-error=10  ", 60, 0, 10],
    ['max-age="60', D, 0, 0],
    ["max-age=x, max-age=60", D, 0, 0],
  ];
  for (const [header, maxAge, swr, sie] of cases) {
    const got = parseCacheControl(header);
    assert.deepEqual(
      [got.maxAge / 1000, got.staleWhileRevalidate / 1000, got.staleIfError / 1000],
      [maxAge, swr, sie],
      header,
    );
  }
});

// S: THE GRAMMAR of Cache-Control shared by the three SDKs, at its edges: BWS around "=" before a
// quoted value too; a quoted string opens only as the first non-blank after the first "=" and,
// unterminated, runs to the end of the line; a malformed element (no-cache and no-store
// included) is skipped as if absent; only spaces and tabs are trimmed; each line alone.
test("the Cache-Control grammar at its edges (malformed elements, quoted strings, whitespace, lines)", () => {
  const cases: [string | string[], number, number, number][] = [
    ['max-age= "60"', 60, 0, 0],
    ['max-age =\t"60" \t, stale-if-error=5', 60, 0, 5],
    ['no-cache= "x", max-age=60', 0, 0, 0],
    ['no-store=", max-age=5', D, 0, 0],
    ["no-cache=, max-age=60", 60, 0, 0],
    ["no-store =, max-age=60", 60, 0, 0],
    ["max-age =,,max-age=0060", 60, 0, 0],
    ["must-revalidate =6 0, stale-if-error= 60", D, 0, 60],
    ["max-age=60\u00a0", D, 0, 0],
    ["\u00a0max-age=60", D, 0, 0],
    ["max-age=60\v", D, 0, 0],
    ["max-age=\u0661, max-age=60", 60, 0, 0],
    ['max-age="\u0661", max-age=60', D, 0, 0],
    ["max-age, max-age=60", D, 0, 0],
    ['max-age="6\\0"', 60, 0, 0],
    ['max-age="60" x, max-age=5', 5, 0, 0],
    ['max-age="60" \t', 60, 0, 0],
    ["max-age=a=b, max-age=60", 60, 0, 0],
    ['max-age=6"0", max-age=7', 7, 0, 0],
    ['ext=x "y, max-age=7', 7, 0, 0],
    ['ext="a\\", max-age=7', D, 0, 0],
    ['"max-age=60"', D, 0, 0],
    ["max-age = 60 ; x", D, 0, 0],
    ['private=", ,no-cache', D, 0, 0],
    ['ext="a', D, 0, 0],
    [['ext="a', "max-age=60"], 60, 0, 0],
    [["max-age=5", "max-age=60, no-cache"], 0, 0, 0],
    [["max-age=5, stale-if-error=7", "max-age=60, stale-if-error=9"], 5, 0, 7],
  ];
  const wrong: string[] = [];
  for (const [header, maxAge, swr, sie] of cases) {
    const got = parseCacheControl(header);
    const seconds = [got.maxAge / 1000, got.staleWhileRevalidate / 1000, got.staleIfError / 1000];
    if (seconds.join() !== [maxAge, swr, sie].join()) {
      wrong.push(`${JSON.stringify(header)}: got ${seconds.join()}, want ${[maxAge, swr, sie].join()}`);
    }
  }
  assert.deepEqual(wrong, []);
});
