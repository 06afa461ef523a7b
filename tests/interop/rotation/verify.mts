// Reads one token per line on stdin and verifies each with the TypeScript SDK's TokenVerifier
// over a KeySetCache of the client's GetJWKS, printing one JSON line per token: its subject,
// or the error. Driven by tests/interop/test_sdk_rotation.py, run from sdk/typescript with tsx.
//
// Usage: node --import tsx verify.mts BASE_URL ISSUER AUDIENCE
import { createInterface } from "node:readline";

import { Client, KeySetCache, TokenVerifier } from "../../../sdk/typescript/src/index.js";

const [baseUrl, issuer, audience] = process.argv.slice(2);
if (baseUrl === undefined || issuer === undefined || audience === undefined) {
  console.error("usage: verify.mts BASE_URL ISSUER AUDIENCE");
  process.exit(2);
}
const verifier = new TokenVerifier(new KeySetCache(new Client({ baseUrl })), { issuer, audience });
for await (const line of createInterface({ input: process.stdin })) {
  try {
    const claims = await verifier.verify(line.trim());
    console.log(JSON.stringify({ sub: String(claims["sub"]) }));
  } catch (err) {
    console.log(JSON.stringify({ error: String(err) }));
  }
}
