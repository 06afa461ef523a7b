// Verifies JWTs with jose's createRemoteJWKSet pointed at the JWKS URL, as a Node service
// would, and prints each token's protected header and subject.
//
//   node verify.mjs JWKS_URL TOKEN [TOKEN ...]
import { createRemoteJWKSet, jwtVerify } from "jose";

const [url, ...tokens] = process.argv.slice(2);
const jwks = createRemoteJWKSet(new URL(url));
const verified = [];
for (const token of tokens) {
  const { payload, protectedHeader } = await jwtVerify(token, jwks);
  verified.push({ alg: protectedHeader.alg, kid: protectedHeader.kid, sub: payload.sub });
}
console.log(JSON.stringify(verified));
