// What the key cache refuses and how it bounds a failing server (issue 20): no redirect is
// followed; a 304 with another ETag is a failed refresh; stale-if-error bounds every stale use
// after a failed refresh; callers with a usable set never wait for a hung server; weak keys
// (small-order Ed25519 points, RSA with e < 3 or even) are skipped; no URL query in a log line.

import assert from "node:assert/strict";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, test } from "node:test";

import { Client, InvalidTokenError, KeysUnavailableError, KeySetCache } from "../src/index.js";
import { claimsFor, FakeClock, Logs, origin, Origin, SigningKey, verifierOver, waitFor } from "./origin.js";

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
  const cache = new KeySetCache(new Client({ baseUrl: s.url, timeoutMs: 5000 }), { now: clock.now, logger: logs });
  await cache.key(a.kid);
  clock.advance(11_000);
  await cache.key(a.kid); // the set is kept, within stale-if-error
  await cache.settled();
  assert.equal(logs.warnings.length, 1, "the 304 with another ETag was not counted as an error");
  clock.advance(2_000); // past the backoff
  await cache.key(a.kid);
  await cache.settled();
  assert.deepEqual(s.inm, ["", '"a"', '"a"'], "the other ETag was adopted");
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
    const cache = new KeySetCache(new Client({ baseUrl: s.url, timeoutMs: 5000 }), { now: clock.now, logger: logs });
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
