// The key cache against the hostile peer (tests/interop/peer.py): garbage, 100 MiB answers, a
// gzip bomb, an error of 100 MiB, hostile error text, a body that drips, redirects. Each is
// "keys unavailable", never a crash, and never quotes the peer's bytes; the API key never
// follows a redirect. `pytest tests/interop/test_sdk_typescript.py` runs this file on its own
// too, measuring the process's peak RSS.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, KeySetCache, KeysUnavailableError, type ClientOptions } from "../src/index.js";
import { METHOD_PATH, onlySentUnder, peerUrl, sentUnder, uniquePrefix } from "./env.js";
import { Logs } from "./origin.js";

const PEER_KID = "peer-key";

function peerCache(path: string, options: Partial<ClientOptions> = {}, maxJwksBytes?: number): KeySetCache {
  const client = new Client({ baseUrl: `${peerUrl()}${path}`, ...options });
  return new KeySetCache(client, { logger: new Logs(), maxJwksBytes });
}

const hostileCases: [string, string, RegExp, number | undefined][] = [
  ["garbage (binary, not JSON)", "/big/1", /not a JSON/, 2 << 20],
  ["a set with no usable key", "/slow/0", /usable/, undefined],
  ["100 MiB with a Content-Length", "/big/100", /larger than the limit/, undefined],
  ["100 MiB chunked", "/chunked/100", /larger than the limit/, undefined],
  ["a gzip bomb of 300 MiB", "/bomb/300", /larger than the limit/, undefined],
  ["an error of 100 MiB", "/bigerror/100", /HTTP 503/, undefined],
  ["hostile error text", "/hostile/unavailable", /HTTP 503/, undefined],
];

for (const [name, path, want, maxJwksBytes] of hostileCases) {
  test(`hostile peer: ${name} is keys unavailable`, { timeout: 30_000 }, async () => {
    const cache = peerCache(`${uniquePrefix()}${path}`, {}, maxJwksBytes);
    await assert.rejects(cache.key(PEER_KID), (err: unknown) => {
      assert.ok(err instanceof KeysUnavailableError, String(err));
      assert.match(err.message, want);
      assert.doesNotMatch(err.message, /[\x1b\r\n\u202e]|AAAA|evil/, "the error repeats the peer's bytes");
      return true;
    });
  });
}

test("hostile peer: a body that drips ends at the client's deadline", { timeout: 30_000 }, async () => {
  // The peer sends the headers at once, then one byte every 200 ms (over a minute in all).
  const started = Date.now();
  const cache = peerCache(`${uniquePrefix()}/drip/200`, { timeoutMs: 1000 });
  await assert.rejects(cache.key(PEER_KID), (err: unknown) => {
    assert.ok(err instanceof KeysUnavailableError, String(err));
    assert.match(err.message, /within 1000 ms/);
    return true;
  });
  assert.ok(Date.now() - started < 20_000, "the deadline did not end the body");
});

for (const where of ["port", "host", "same"]) {
  test(`hostile peer: a redirect (${where}) is refused, and the API key goes nowhere else`, async () => {
    const prefix = uniquePrefix();
    const cache = peerCache(`${prefix}/redirect/${where}`, { apiKey: "k-123.secret" });
    await assert.rejects(cache.key(PEER_KID), KeysUnavailableError);
    const sent = await sentUnder(prefix);
    assert.equal(sent.length, 1, `the peer received ${JSON.stringify(sent)}`);
    assert.equal(sent[0]?.headers["authorization"], "Bearer k-123.secret");
    assert.equal(sent[0]?.headers["if-none-match"], undefined);
  });
}

test("the cache's GET: a Connect GET of JSON, with the API key and the user agent", async () => {
  const prefix = uniquePrefix();
  const cache = peerCache(prefix, { apiKey: "k-123.secret" });
  await assert.rejects(cache.key(PEER_KID), /usable/); // the peer's key is not a real one
  const sent = await onlySentUnder(prefix);
  assert.equal(sent.method, "GET");
  assert.equal(sent.path, `${prefix}${METHOD_PATH}`);
  assert.equal(sent.query, "connect=v1&encoding=json&message=%7B%7D");
  assert.equal(sent.headers["authorization"], "Bearer k-123.secret");
  assert.match(sent.headers["user-agent"] ?? "", /^agentrouter-sdk-typescript\//);
});

test("a jwks_uri of another origin gets no API key", async () => {
  const prefix = uniquePrefix();
  const client = new Client({ baseUrl: peerUrl(), apiKey: "k-123.secret" });
  const other = `${peerUrl().replace("127.0.0.1", "localhost")}${prefix}${METHOD_PATH}`;
  const cache = new KeySetCache(client, { jwksUri: other, logger: new Logs() });
  await assert.rejects(cache.key(PEER_KID));
  const sent = await onlySentUnder(prefix);
  assert.equal(sent.headers["authorization"], undefined, `Authorization sent to ${sent.origin}`);
});
