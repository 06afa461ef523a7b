// The response limit is the client's to set: `maxResponseBytes` (bytes, received and decompressed).

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, Code, ConnectError } from "../src/index.js";
import { peerUrl, uniquePrefix } from "./env.js";

test("maxResponseBytes sets the limit, received and decompressed", async () => {
  const cases: [string, number, boolean][] = [
    ["big/6", 7 << 20, true],
    ["bomb/6", 7 << 20, true],
    ["big/2", 1 << 20, false],
    ["bomb/2", 1 << 20, false],
    ["bigerror/2", 1 << 20, false],
  ];
  for (const [path, maxResponseBytes, fits] of cases) {
    const client = new Client({ baseUrl: `${peerUrl()}${uniquePrefix()}/${path}`, maxResponseBytes });
    const call = client.auth.getJWKS({});
    if (fits) {
      assert.deepEqual((await call).keys.map((key) => key.kid), ["peer-key"], path);
      continue;
    }
    await assert.rejects(call, (err: unknown) => {
      assert.ok(err instanceof ConnectError, String(err).slice(0, 200));
      assert.equal(Code[err.code], Code[Code.ResourceExhausted], `${path}: ${err.rawMessage.slice(0, 200)}`);
      assert.match(err.rawMessage, new RegExp(`${maxResponseBytes}`));
      return true;
    });
  }
});

test("a limit that is not a positive number of bytes is refused", () => {
  for (const maxResponseBytes of [0, -1, Number.NaN, 1.5]) {
    assert.throws(
      () => new Client({ baseUrl: "http://127.0.0.1:1", maxResponseBytes }),
      /maxResponseBytes/,
      String(maxResponseBytes),
    );
  }
});
