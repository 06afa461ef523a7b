// The verifier's checks: each algorithm of the allow-list verifies; every refusal of the list
// (alg none, HMAC, HS256 with the public key as the secret, an algorithm the key does not
// declare, jwk/jku/x5u/x5c/x5t/crit headers, no kid, not 3 parts, JWE) is a test; the leeway,
// the audience and the required options. Keys and clock are the test's; the set is served by a
// local origin.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";

import {
  InvalidTokenError,
  KeysUnavailableError,
  TokenVerifier,
  type TokenVerifierOptions,
} from "../src/index.js";
import {
  b64,
  claimsFor,
  FakeClock,
  ISSUER,
  origin,
  rawToken,
  SigningKey,
  verifierOver,
} from "./origin.js";

for (const alg of ["ES256", "RS256", "EdDSA"] as const) {
  test(`a token signed with ${alg} verifies, and returns its claims`, async () => {
    const key = new SigningKey(alg);
    const o = await origin(key);
    const clock = new FakeClock();
    const verifier = verifierOver(o.cache(clock));
    const claims = await verifier.verify(key.sign({ ...claimsFor(clock.now()), scope: ["a"] }));
    assert.deepEqual(claims, { ...claimsFor(clock.now()), scope: ["a"] });
  });
}

async function setup(): Promise<{ key: SigningKey; rsa: SigningKey; verifier: TokenVerifier; clock: FakeClock }> {
  const key = new SigningKey("ES256");
  const rsa = new SigningKey("RS256");
  const o = await origin(key, rsa);
  const clock = new FakeClock();
  const verifier = verifierOver(o.cache(clock, { unknownKidCooldownMs: 3_600_000 }));
  // Warm: the set is cached, so every refusal below is the verifier's own.
  await verifier.verify(key.sign(claimsFor(clock.now())));
  return { key, rsa, verifier, clock };
}

async function refused(verifier: TokenVerifier, token: string, reason: RegExp, what = ""): Promise<void> {
  await assert.rejects(verifier.verify(token), (err: unknown) => {
    assert.ok(err instanceof InvalidTokenError, `not an InvalidTokenError: ${String(err)} ${what}`);
    assert.ok(!(err instanceof KeysUnavailableError));
    assert.match(err.message, reason, what);
    for (const part of token.split(".")) {
      if (part.length >= 8) assert.ok(!err.message.includes(part), "the error quotes the token");
    }
    return true;
  }, `accepted: ${what}`);
}

test("refused: alg none, with or without a signature", async () => {
  const { key, verifier, clock } = await setup();
  const claims = claimsFor(clock.now());
  await refused(verifier, rawToken({ alg: "none", kid: key.kid }, claims, new Uint8Array()), /not one of/);
  await refused(verifier, rawToken({ alg: "none", kid: key.kid }, claims, new Uint8Array([1])), /not one of/);
  await refused(verifier, rawToken({ alg: "None", kid: key.kid }, claims, new Uint8Array()), /not one of/);
});

test("refused: HMAC, and an HS256 token signed with the public key as the secret", async () => {
  const { key, rsa, verifier, clock } = await setup();
  for (const signer of [key, rsa]) {
    for (const secret of [
      JSON.stringify(signer.jwk()),
      signer.publicKey.export({ type: "spki", format: "pem" }).toString(),
    ]) {
      for (const alg of ["HS256", "HS384", "HS512"]) {
        const input = `${b64({ alg, kid: signer.kid })}.${b64(claimsFor(clock.now()))}`;
        const mac = createHmac(`sha${alg.slice(2)}`, secret).update(input).digest("base64url");
        await refused(verifier, `${input}.${mac}`, /not one of/);
      }
    }
  }
});

test("refused: an algorithm the key does not declare (RS256 header on the ES256 key, and back)", async () => {
  const { key, rsa, verifier, clock } = await setup();
  // Signed by the RSA key, but naming the EC key's kid.
  await refused(verifier, rsa.sign(claimsFor(clock.now()), { kid: key.kid }), /not the algorithm its key declares/);
  // The EC key's signature, with the header claiming EdDSA.
  await refused(verifier, key.sign(claimsFor(clock.now()), { alg: "EdDSA" }), /not the algorithm its key declares/);
  // Another allowed alg the server does not use for that key: ES384 is not in the allow-list.
  await refused(verifier, key.sign(claimsFor(clock.now()), { alg: "ES384" }), /not one of/);
});

for (const member of ["jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64"]) {
  test(`refused: a header with ${member}, even validly signed`, async () => {
    const { key, verifier, clock } = await setup();
    const values: Record<string, unknown> = {
      jwk: key.jwk(),
      jku: "https://attacker.example/jwks.json",
      x5u: "https://attacker.example/cert.pem",
      x5c: ["MIIB"],
      x5t: "abc",
      "x5t#S256": "abc",
      crit: ["exp"],
      b64: false,
    };
    await refused(verifier, key.sign(claimsFor(clock.now()), { [member]: values[member] }), /refused/);
  });
}

test("refused: a token without kid, or with an empty or non-string kid", async () => {
  const { key, verifier, clock } = await setup();
  for (const kid of [undefined, "", 7, null]) {
    await refused(verifier, key.sign(claimsFor(clock.now()), { kid }), /no kid/);
  }
});

test("refused: more or fewer than 3 parts, JWE, garbage", async () => {
  const { key, verifier, clock } = await setup();
  const token = key.sign(claimsFor(clock.now()));
  const [h = "", p = "", s = ""] = token.split(".");
  await refused(verifier, `${h}.${p}`, /3 parts, this has 2/);
  await refused(verifier, `${token}.${s}`, /3 parts, this has 4/);
  await refused(verifier, "", /3 parts, this has 1/);
  // A JWE in compact form: 5 parts; and a JWE's header on 3 parts.
  const jwe = `${b64({ alg: "RSA-OAEP", enc: "A256GCM", kid: key.kid })}.AAAA.AAAA.AAAA.AAAA`;
  await refused(verifier, jwe, /3 parts, this has 5/);
  await refused(verifier, `${b64({ alg: "ES256", enc: "A256GCM", kid: key.kid })}.${p}.${s}`, /"enc"/);
  await refused(verifier, `!!!.${p}.${s}`, /not base64url/);
  await refused(verifier, `${b64([1])}.${p}.${s}`, /not a JSON object/);
  await refused(verifier, `${"A".repeat(70_000)}.${p}.${s}`, /longer than/);
});

test("refused: a bad signature, a changed payload, a payload that is not a JSON object", async () => {
  const { key, verifier, clock } = await setup();
  const token = key.sign(claimsFor(clock.now()));
  const [h = "", , s = ""] = token.split(".");
  await refused(verifier, `${h}.${b64({ ...claimsFor(clock.now()), sub: "admin" })}.${s}`, /signature/);
  await refused(verifier, `${token.slice(0, -4)}AAAA`, /signature/);
  await refused(verifier, key.sign([1, 2] as unknown as Record<string, unknown>), /not a JSON object/);
});

test("exp is required; exp, nbf and iat are checked with the leeway; a future iat is refused", async () => {
  const { key, verifier, clock } = await setup();
  const now = Math.floor(clock.now() / 1000);
  const base = { iss: ISSUER, aud: "api" };
  await refused(verifier, key.sign({ ...base }), /no exp/);
  await refused(verifier, key.sign({ ...base, exp: "soon" }), /exp claim is not a date/);
  await refused(verifier, key.sign({ ...base, exp: now - 61 }), /expired/);
  await verifier.verify(key.sign({ ...base, exp: now - 59 })); // within the 60 s leeway
  await refused(verifier, key.sign({ ...base, exp: now + 60, nbf: now + 61 }), /not valid yet/);
  await verifier.verify(key.sign({ ...base, exp: now + 60, nbf: now + 59 }));
  await refused(verifier, key.sign({ ...base, exp: now + 600, iat: now + 61 }), /issued in the future/);
  await verifier.verify(key.sign({ ...base, exp: now + 600, iat: now + 59 }));
  await refused(verifier, key.sign({ ...base, exp: now + 60, iat: "x" }), /iat claim is not a date/);
});

test("the leeway is configurable", async () => {
  const key = new SigningKey("EdDSA");
  const o = await origin(key);
  const clock = new FakeClock();
  const cache = o.cache(clock);
  const strict = new TokenVerifier(cache, { issuer: ISSUER, audience: "api", leewayMs: 0 });
  const now = Math.floor(clock.now() / 1000);
  await refused(strict, key.sign({ iss: ISSUER, aud: "api", exp: now }), /expired/);
  await strict.verify(key.sign({ iss: ISSUER, aud: "api", exp: now + 1 }));
  const loose = new TokenVerifier(cache, { issuer: ISSUER, audience: "api", leewayMs: 600_000 });
  await loose.verify(key.sign({ iss: ISSUER, aud: "api", exp: now - 500 }));
});

test("iss must be exact and aud must hold the audience, unless waived", async () => {
  const { key, verifier, clock } = await setup();
  const claims = claimsFor(clock.now());
  await refused(verifier, key.sign({ ...claims, iss: `${ISSUER}/` }), /iss/);
  await refused(verifier, key.sign({ ...claims, iss: undefined }), /iss/);
  await refused(verifier, key.sign({ ...claims, aud: "other" }), /aud/);
  await refused(verifier, key.sign({ ...claims, aud: undefined }), /aud/);
  await verifier.verify(key.sign({ ...claims, aud: ["other", "api"] }));
  await refused(verifier, key.sign({ ...claims, aud: ["other"] }), /aud/);
  const anyone = new TokenVerifier(verifier.cache, { skipIssuerCheck: true, skipAudienceCheck: true });
  await anyone.verify(key.sign({ ...claims, iss: "elsewhere", aud: "other" }));
  await anyone.verify(key.sign({ exp: claims["exp"] }));
});

test("a verifier needs an issuer and an audience, or their explicit waivers", async () => {
  const o = await origin(new SigningKey("ES256"));
  const cache = o.cache(new FakeClock());
  const refusedOptions: TokenVerifierOptions[] = [
    {},
    { issuer: ISSUER },
    { audience: "api" },
    { issuer: "", audience: "api" },
    { issuer: ISSUER, audience: "" },
    { skipIssuerCheck: true },
    { skipAudienceCheck: true, audience: "api" },
    { issuer: ISSUER, audience: "api", leewayMs: -1 },
  ];
  for (const options of refusedOptions) {
    assert.throws(() => new TokenVerifier(cache, options), Error, JSON.stringify(options));
  }
  new TokenVerifier(cache, { issuer: ISSUER, skipAudienceCheck: true });
  new TokenVerifier(cache, { skipIssuerCheck: true, audience: "api" });
  assert.equal(o.requests, 0, "constructing makes no request");
});

test("a warm cache verifies without a request", async () => {
  const key = new SigningKey("RS256");
  const o = await origin(key);
  const clock = new FakeClock();
  const verifier = verifierOver(o.cache(clock));
  for (let i = 0; i < 200; i++) {
    await verifier.verify(key.sign(claimsFor(clock.now())));
  }
  assert.equal(o.requests, 1);
});

test("refused: a part that is not canonical unpadded base64url (whitespace, padding, other bytes, unused bits set)", async () => {
  const { key, verifier, clock } = await setup();
  const token = key.sign(claimsFor(clock.now()));
  const [h = "", p = "", s = ""] = token.split(".");
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  /** The part with the lowest unused bit of its last character set (it decodes to the same bytes). */
  const lowBit = (part: string): string => {
    const last = alphabet.indexOf(part.at(-1) ?? "A");
    return part.slice(0, -1) + alphabet[last ^ 1];
  };
  assert.notEqual(s.length % 4, 0, "the ES256 signature has unused bits to set");
  const mid = (part: string, insert: string): string =>
    part.slice(0, part.length >> 1) + insert + part.slice(part.length >> 1);
  const forms: Record<string, string> = {
    "a newline in the payload": `${h}.${mid(p, "\n")}.${s}`,
    "CR LF in the signature": `${h}.${p}.${mid(s, "\r\n")}`,
    "a trailing newline": `${token}\n`,
    "a space in the header": `${mid(h, " ")}.${p}.${s}`,
    "padding on the signature": `${token}${"=".repeat((4 - (s.length % 4)) % 4 || 2)}`,
    "padding on the header": `${h}=.${p}.${s}`,
    "unused bits set in the signature": `${h}.${p}.${lowBit(s)}`,
    "a non-ASCII character in the payload": `${h}.é.${s}`,
    "a non-ASCII character in the signature": `${h}.${p}.${mid(s, "é")}`,
    "base64 (not url) characters": `${h}.${p}.${s.replace(/-/g, "+").replace(/_/g, "/")}${s.includes("-") || s.includes("_") ? "" : "+"}`,
  };
  if (h.length % 4 !== 0) forms["unused bits set in the header"] = `${lowBit(h)}.${p}.${s}`;
  if (p.length % 4 !== 0) forms["unused bits set in the payload"] = `${h}.${lowBit(p)}.${s}`;
  for (const [name, form] of Object.entries(forms)) {
    await assert.rejects(verifier.verify(form), (err: unknown) => {
      assert.ok(err instanceof InvalidTokenError, `${name}: not an InvalidTokenError: ${String(err)}`);
      return true;
    }, `${name}: verified`);
  }
  // The token itself still verifies: each form differs from it only in its encoding.
  await verifier.verify(token);
});

test("refused: a header or payload part that is not exactly one JSON object in strict UTF-8 (BOM, trailing bytes, invalid UTF-8, UTF-16)", async () => {
  const { key, verifier, clock } = await setup();
  const header = JSON.stringify({ alg: key.alg, kid: key.kid });
  const claims = JSON.stringify(claimsFor(clock.now()));
  const bom = Buffer.from([0xef, 0xbb, 0xbf]);
  const forms: [string, (json: string) => Buffer][] = [
    ["a UTF-8 BOM", (json) => Buffer.concat([bom, Buffer.from(json)])],
    ["a trailing }", (json) => Buffer.from(`${json}}`)],
    ["a trailing ]", (json) => Buffer.from(`${json}]`)],
    ["a second object", (json) => Buffer.from(`${json}{}`)],
    ["invalid UTF-8", (json) => Buffer.from(json.replace(/}$/, ',"z":"u\xff"}'), "latin1")],
    ["UTF-16LE", (json) => Buffer.from(json, "utf16le")],
  ];
  // The well-formed token verifies: each refusal below is the form's.
  await verifier.verify(key.signBytes(Buffer.from(header), Buffer.from(claims)));
  for (const [name, form] of forms) {
    await refused(verifier, key.signBytes(form(header), Buffer.from(claims)), /header/, `header with ${name}`);
    await refused(verifier, key.signBytes(Buffer.from(header), form(claims)), /payload/, `payload with ${name}`);
  }
});
