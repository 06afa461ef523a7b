// Reads a JSON array of Cache-Control values (one field line each) from the file named by its
// argument and prints, as JSON, one [maxAge, staleWhileRevalidate, staleIfError] in seconds per
// value, as the TypeScript SDK's key cache reads them. Driven by
// tests/interop/test_cache_control_agreement.py, run from sdk/typescript with tsx.
import { readFileSync } from "node:fs";

import { parseCacheControl } from "../../../sdk/typescript/src/keyset.js";

const path = process.argv[2];
if (path === undefined) {
  console.error("usage: parse.mts CORPUS.json");
  process.exit(2);
}
const values = JSON.parse(readFileSync(path, "utf8")) as string[];
const read = values.map((value) => {
  const fresh = parseCacheControl(value);
  return [fresh.maxAge / 1000, fresh.staleWhileRevalidate / 1000, fresh.staleIfError / 1000];
});
console.log(JSON.stringify(read));
