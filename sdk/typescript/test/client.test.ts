// What needs no network: the constructor's checks and the version the SDK names itself by.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { Client, DEFAULT_TIMEOUT_MS, USER_AGENT, VERSION } from "../src/index.js";

test("the constructor refuses a base URL it cannot call, saying why", () => {
  const refused: (string | undefined)[] = [
    undefined,
    "",
    "   ",
    "127.0.0.1:8080",
    "/relative/path",
    "ftp://example.com",
    "file:///etc/passwd",
    "http://",
    "http:///path",
    "http:\\\\example.com",
    " http://example.com",
    "https://example.com/?region=eu",
    "https://example.com/api?",
    "https://example.com/#top",
    "https://user:secret@example.com",
  ];
  for (const baseUrl of refused) {
    assert.throws(
      () => new Client({ baseUrl, apiKey: "k" }),
      (err: unknown) => err instanceof Error && /^baseUrl (is required|must)/.test(err.message),
      `accepted ${JSON.stringify(baseUrl)}`,
    );
  }
});

test("the constructor takes http and https base URLs, with or without a path prefix", () => {
  for (const baseUrl of [
    "http://127.0.0.1:8080",
    "http://127.0.0.1:8080/",
    "https://api.example.com/agentrouter",
    "https://api.example.com/agentrouter/",
    "HTTPS://API.EXAMPLE.COM",
    "http://[::1]:8080/prefix",
  ]) {
    assert.ok(new Client({ baseUrl, apiKey: undefined }).auth, baseUrl);
  }
});

test("the constructor refuses a timeout that is not a positive number of milliseconds", () => {
  for (const timeoutMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(
      () => new Client({ baseUrl: "http://127.0.0.1:1", timeoutMs }),
      /^Error: timeoutMs must be a positive number/,
      String(timeoutMs),
    );
  }
});

test("a call refuses a timeout that is not a positive number, before sending anything", async () => {
  let calls = 0;
  const client = new Client({
    baseUrl: "http://127.0.0.1:1",
    fetch: () => {
      calls += 1;
      return Promise.reject(new Error("not expected"));
    },
  });
  await assert.rejects(client.auth.getJWKS({}, { timeoutMs: -5 }), /timeoutMs must be a positive/);
  assert.equal(calls, 0);
});

test("the SDK names itself by the one version of sdk/VERSION and its package.json", () => {
  const version = readFileSync(new URL("../../VERSION", import.meta.url), "utf8").trim();
  const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  assert.equal(VERSION, version);
  assert.equal(manifest.version, version);
  assert.equal(USER_AGENT, `agentrouter-sdk-typescript/${version}`);
  assert.equal(DEFAULT_TIMEOUT_MS, 10_000);
});
