// The SDK against the real server.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client } from "../src/index.js";
import { servedKids, serverUrl } from "./env.js";

test("getJWKS returns exactly the keys the server serves, with an API key or without", async () => {
  for (const apiKey of ["any-api-key", undefined]) {
    const client = new Client({ baseUrl: serverUrl(), apiKey });
    const answer = await client.auth.getJWKS({});
    assert.deepEqual(
      answer.keys.map((key) => key.kid),
      servedKids(),
    );
    for (const key of answer.keys) {
      assert.ok(key.kty !== "" && key.alg !== "", `key ${key.kid} lacks kty or alg`);
    }
  }
});

test("a trailing slash on the server's base URL changes nothing", async () => {
  const client = new Client({ baseUrl: `${serverUrl()}/`, apiKey: "any-api-key" });
  const answer = await client.auth.getJWKS({}, { timeoutMs: 5000 });
  assert.deepEqual(
    answer.keys.map((key) => key.kid),
    servedKids(),
  );
});
