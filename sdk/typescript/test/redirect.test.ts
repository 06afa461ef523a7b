// The API key never reaches another origin: a redirect is refused (connect-web's fetch uses
// `redirect: "error"`), whether it leads to the same host on another port, another host name,
// from https to http, or even to the same origin. The peer records where each request went.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client } from "../src/index.js";
import { peerTlsUrl, peerUrl, sentUnder, uniquePrefix } from "./env.js";

const cases: [string, () => string, string][] = [
  ["same host, another port", peerUrl, "port"],
  ["another host name", peerUrl, "host"],
  ["https to http on that host", peerTlsUrl, "plain"],
  ["the same origin", peerUrl, "same"],
];

for (const [name, base, where] of cases) {
  test(`a redirect (${name}) is refused, and the key goes nowhere else`, async () => {
    const prefix = uniquePrefix();
    const client = new Client({ baseUrl: `${base()}${prefix}/redirect/${where}`, apiKey: "k-123.secret" });
    await assert.rejects(client.auth.getJWKS({}));
    const sent = await sentUnder(prefix);
    assert.equal(sent.length, 1, `the peer received ${JSON.stringify(sent)}`);
    assert.equal(sent[0]?.headers["authorization"], "Bearer k-123.secret");
  });
}
