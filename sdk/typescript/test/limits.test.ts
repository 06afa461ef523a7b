// What a hostile answer cannot do: make the client hold more than its response limit (an
// oversized body, with or without a Content-Length, a gzip bomb, an oversized error, both), or
// outlive the call's deadline by sending its body a byte at a time. Run apart by
// tests/interop/test_sdk_typescript.py too, which measures the process's peak memory.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, Code, ConnectError } from "../src/index.js";
import { peerUrl, uniquePrefix } from "./env.js";

function hasCode(code: Code): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof ConnectError, `not a ConnectError: ${String(err).slice(0, 200)}`);
    assert.equal(Code[err.code], Code[code], err.rawMessage.slice(0, 200));
    return true;
  };
}

const oversized: [string, string][] = [
  ["100 MiB with a Content-Length", "big/100"],
  ["100 MiB chunked", "chunked/100"],
  ["a gzip bomb of 300 MiB", "bomb/300"],
  ["an error of 100 MiB", "bigerror/100"],
  ["a gzip bomb of 300 MiB as an error", "errorbomb/300"],
];

for (const [name, path] of oversized) {
  test(`${name} rejects with ResourceExhausted`, { timeout: 60_000 }, async () => {
    const client = new Client({ baseUrl: `${peerUrl()}${uniquePrefix()}/${path}`, timeoutMs: 30_000 });
    await assert.rejects(client.auth.getJWKS({}), hasCode(Code.ResourceExhausted));
  });
}

/**
 * Runs `body` while the garbage collector runs every 50 ms (node --expose-gc): the Response
 * object of a call whose body is being read is garbage by then, and Node.js's fetch aborts a
 * body only while its Response is alive.
 */
async function collectingGarbage(body: () => Promise<void>): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  assert.ok(gc, "run with node --expose-gc (tests/interop/test_sdk_typescript.py does)");
  const timer = setInterval(gc, 50);
  try {
    await body();
  } finally {
    clearInterval(timer);
  }
}

test("the deadline covers a body that drips", { timeout: 20_000 }, () =>
  collectingGarbage(async () => {
    // The peer sends the headers at once, then a byte every 200 ms (a minute in all).
    const client = new Client({ baseUrl: `${peerUrl()}${uniquePrefix()}/drip/200`, timeoutMs: 1000 });
    await assert.rejects(client.auth.getJWKS({}), hasCode(Code.DeadlineExceeded));
    const own = new Client({ baseUrl: `${peerUrl()}${uniquePrefix()}/drip/200` });
    await assert.rejects(own.auth.getJWKS({}, { timeoutMs: 1000 }), hasCode(Code.DeadlineExceeded));
  }),
);

test("a call's signal aborts a body that drips", { timeout: 20_000 }, () =>
  collectingGarbage(async () => {
    const client = new Client({ baseUrl: `${peerUrl()}${uniquePrefix()}/drip/200` });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 500);
    await assert.rejects(client.auth.getJWKS({}, { signal: controller.signal }), hasCode(Code.Canceled));
  }),
);
