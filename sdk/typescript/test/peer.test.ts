// What the SDK sends and how it fails, against the peer that records requests and forces errors
// (tests/interop/peer.py). Each test calls under a path prefix of its own and reads back, from
// the peer, only the requests under it.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, Code, ConnectError, USER_AGENT } from "../src/index.js";
import { METHOD_PATH, onlySentUnder, peerUrl, uniquePrefix } from "./env.js";

const PEER_KID = "peer-key";

function isConnectError(code: Code, message: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof ConnectError, `not a ConnectError: ${String(err)}`);
    assert.equal(Code[err.code], Code[code]);
    assert.equal(err.rawMessage, message);
    return true;
  };
}

test("GetJWKS is a Connect GET of binary protobuf, carrying the API key, user agent and timeout", async () => {
  const prefix = uniquePrefix();
  const client = new Client({ baseUrl: `${peerUrl()}${prefix}`, apiKey: "test-key" });
  const answer = await client.auth.getJWKS({});
  assert.deepEqual(
    answer.keys.map((key) => key.kid),
    [PEER_KID],
  );
  const sent = await onlySentUnder(prefix);
  assert.equal(sent.method, "GET");
  assert.equal(sent.path, `${prefix}${METHOD_PATH}`);
  const query = new URLSearchParams(sent.query);
  assert.equal(query.get("connect"), "v1");
  assert.equal(query.get("encoding"), "proto");
  assert.equal(query.get("compression"), null, "a compressed GET has no stable URL");
  assert.equal(sent.headers["authorization"], "Bearer test-key");
  assert.equal(sent.headers["user-agent"], USER_AGENT);
  assert.equal(sent.headers["x-user-agent"], USER_AGENT);
  assert.equal(sent.headers["connect-timeout-ms"], "10000");
});

test("a base URL with a path prefix works with and without a trailing slash", async () => {
  for (const slash of ["", "/"]) {
    const prefix = uniquePrefix();
    const client = new Client({ baseUrl: `${peerUrl()}${prefix}/api/v2${slash}`, apiKey: "k" });
    const answer = await client.auth.getJWKS({});
    assert.deepEqual(
      answer.keys.map((key) => key.kid),
      [PEER_KID],
    );
    const sent = await onlySentUnder(prefix);
    assert.equal(sent.path, `${prefix}/api/v2${METHOD_PATH}`, `trailing slash: "${slash}"`);
  }
});

test("no Authorization header when the API key is empty or absent", async () => {
  for (const apiKey of [undefined, ""]) {
    const prefix = uniquePrefix();
    const client = new Client({ baseUrl: `${peerUrl()}${prefix}`, apiKey });
    await client.auth.getJWKS({});
    const sent = await onlySentUnder(prefix);
    assert.equal(sent.headers["authorization"], undefined, `apiKey ${JSON.stringify(apiKey)}`);
    assert.equal(sent.headers["x-user-agent"], USER_AGENT);
  }
});

test("the client's timeout and a call's own are sent as connect-timeout-ms", async () => {
  const cases: [number | undefined, number | undefined, string][] = [
    [2500, undefined, "2500"],
    [undefined, 1234, "1234"],
    [2500, 1234, "1234"],
    [undefined, 99.2, "100"],
  ];
  for (const [clientTimeout, callTimeout, header] of cases) {
    const prefix = uniquePrefix();
    const client = new Client({ baseUrl: `${peerUrl()}${prefix}`, timeoutMs: clientTimeout });
    await client.auth.getJWKS({}, { timeoutMs: callTimeout });
    const sent = await onlySentUnder(prefix);
    assert.equal(sent.headers["connect-timeout-ms"], header, `${clientTimeout}, ${callTimeout}`);
  }
});

test("a call slower than the client's timeout rejects with DeadlineExceeded", async () => {
  const client = new Client({ baseUrl: `${peerUrl()}${uniquePrefix()}/slow/2000`, timeoutMs: 200 });
  await assert.rejects(
    client.auth.getJWKS({}),
    isConnectError(Code.DeadlineExceeded, "the operation timed out"),
  );
});

test("a call slower than its own timeout rejects with DeadlineExceeded; within it, it answers", async () => {
  const slow = new Client({ baseUrl: `${peerUrl()}${uniquePrefix()}/slow/2000` });
  await assert.rejects(
    slow.auth.getJWKS({}, { timeoutMs: 200 }),
    isConnectError(Code.DeadlineExceeded, "the operation timed out"),
  );
  const late = new Client({ baseUrl: `${peerUrl()}${uniquePrefix()}/slow/300`, timeoutMs: 200 });
  const answer = await late.auth.getJWKS({}, { timeoutMs: 5000 });
  assert.deepEqual(
    answer.keys.map((key) => key.kid),
    [PEER_KID],
  );
});

test("errors are ConnectErrors carrying the server's code and message", async () => {
  const cases: [string, Code][] = [
    ["unavailable", Code.Unavailable],
    ["not_found", Code.NotFound],
    ["unauthenticated", Code.Unauthenticated],
  ];
  for (const [name, code] of cases) {
    const client = new Client({ baseUrl: `${peerUrl()}${uniquePrefix()}/fail/${name}/`, apiKey: "k" });
    await assert.rejects(client.auth.getJWKS({}), isConnectError(code, `forced ${name}`));
  }
});

test("a call's signal cancels it with Canceled", async () => {
  const client = new Client({ baseUrl: `${peerUrl()}${uniquePrefix()}/slow/2000` });
  const controller = new AbortController();
  const call = client.auth.getJWKS({}, { signal: controller.signal });
  setTimeout(() => controller.abort(), 100);
  await assert.rejects(call, (err: unknown) => {
    assert.ok(err instanceof ConnectError, String(err));
    assert.equal(Code[err.code], Code[Code.Canceled]);
    return true;
  });
});

test("the fetch option replaces globalThis.fetch", async () => {
  const prefix = uniquePrefix();
  const urls: string[] = [];
  const client = new Client({
    baseUrl: `${peerUrl()}${prefix}`,
    fetch: (input, init) => {
      urls.push(String(input));
      return fetch(input, init);
    },
  });
  await client.auth.getJWKS({});
  assert.equal(urls.length, 1);
  assert.ok(urls[0]?.startsWith(`${peerUrl()}${prefix}${METHOD_PATH}?`), urls[0]);
});
