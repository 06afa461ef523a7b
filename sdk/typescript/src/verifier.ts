// Verifies AgentRouter's tokens (JWS compact, RFC 7515/7519) with the keys of a KeySetCache.

import { compactVerify } from "jose";

import type { Client } from "./client.js";
import { InvalidTokenError } from "./errors.js";
import {
  KeySetCache,
  decodeBase64Url,
  encodeBase64Url,
  isAllowedAlg,
  parseJson,
  type KeySetCacheOptions,
} from "./keyset.js";

/** The clock difference tolerated on exp, nbf and iat, unless `leewayMs` says otherwise. */
export const DEFAULT_LEEWAY_MS = 60_000;

/** A token longer than this is invalid without being decoded. */
const MAX_TOKEN_BYTES = 64 * 1024;

/** The JOSE header members a token must not carry: a key or a key's location given by the
 * token itself (never fetched, never trusted), critical extensions (none is understood here)
 * and b64 (RFC 7797: it changes what is signed). enc marks a JWE. */
const REFUSED_HEADERS = ["jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64", "enc", "zip"];

/** What `new TokenVerifier(cache, ...)` takes. */
export interface TokenVerifierOptions {
  /** The `iss` claim must be exactly this. Required, unless `skipIssuerCheck`. */
  issuer?: string | undefined;
  /** The `aud` claim (a string or an array of strings) must hold this. Required, unless
   * `skipAudienceCheck`. */
  audience?: string | undefined;
  /** Accept any issuer (or none). */
  skipIssuerCheck?: boolean | undefined;
  /** Accept any audience (or none). */
  skipAudienceCheck?: boolean | undefined;
  /** The clock difference tolerated on exp, nbf and iat, in milliseconds (default 60 000). */
  leewayMs?: number | undefined;
}

/** What `TokenVerifier.fromIssuer` takes: the verifier's options but the issuer, and the
 * options of the key set cache it builds (except `jwksUri`, which discovery gives). */
export interface FromIssuerOptions extends Omit<TokenVerifierOptions, "issuer" | "skipIssuerCheck"> {
  cache?: Omit<KeySetCacheOptions, "jwksUri"> | undefined;
}

/** A token's claims (JSON numbers as numbers). */
export type Claims = Record<string, unknown>;

/**
 * Verifies tokens with the keys of a `KeySetCache`. The algorithm is the one the matched key
 * declares (ES256, RS256 or EdDSA), and the header's alg must equal it. Make one and share it:
 * with a warm cache, `verify` makes no network call.
 */
export class TokenVerifier {
  /** The key set cache the verifier reads. */
  readonly cache: KeySetCache;
  readonly #issuer: string | undefined;
  readonly #audience: string | undefined;
  readonly #leewayMs: number;

  /** Makes no network call. Throws an `Error` when neither `issuer` nor `skipIssuerCheck`, or
   * neither `audience` nor `skipAudienceCheck`, is given. */
  constructor(cache: KeySetCache, options: TokenVerifierOptions) {
    if (!(cache instanceof KeySetCache)) {
      throw new Error("TokenVerifier needs a KeySetCache");
    }
    if (!options.issuer && options.skipIssuerCheck !== true) {
      throw new Error("TokenVerifier: no issuer: pass issuer, or skipIssuerCheck: true to accept any");
    }
    if (!options.audience && options.skipAudienceCheck !== true) {
      throw new Error(
        "TokenVerifier: no audience: pass audience, or skipAudienceCheck: true to accept any",
      );
    }
    const leeway = options.leewayMs ?? DEFAULT_LEEWAY_MS;
    if (!Number.isFinite(leeway) || leeway < 0) {
      throw new Error(`leewayMs must not be negative, got ${leeway}`);
    }
    this.cache = cache;
    this.#issuer = options.skipIssuerCheck === true ? undefined : options.issuer;
    this.#audience = options.skipAudienceCheck === true ? undefined : options.audience;
    this.#leewayMs = leeway;
  }

  /**
   * Discovers `issuer` through the client's GetOpenIDConfiguration, checks that the document's
   * issuer is exactly `issuer`, and returns a verifier that requires that issuer, over a
   * `KeySetCache` of the document's `jwks_uri`. Rejects with an `Error` when discovery fails
   * (the client follows no redirect), names another issuer, or names a jwks_uri that is not
   * https:// for an https:// issuer or is not a usable URL.
   */
  static async fromIssuer(
    client: Client,
    issuer: string,
    options: FromIssuerOptions,
  ): Promise<TokenVerifier> {
    if (!issuer) {
      throw new Error("TokenVerifier.fromIssuer: the issuer is empty");
    }
    const { cache: cacheOptions, ...verifierOptions } = options;
    let document;
    try {
      document = await client.auth.getOpenIDConfiguration({});
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      throw new Error(
        `TokenVerifier.fromIssuer: discovery failed${typeof code === "number" ? ` (code ${code})` : ""}`,
        { cause: err },
      );
    }
    if (document.issuer !== issuer) {
      throw new Error("TokenVerifier.fromIssuer: the discovery document names another issuer");
    }
    if (/^https:/i.test(issuer) && !/^https:/i.test(document.jwksUri)) {
      // The keys are the trust anchor: they come over TLS when the issuer does.
      throw new Error("TokenVerifier.fromIssuer: the issuer is https://, its jwks_uri is not");
    }
    const cache = new KeySetCache(client, { ...cacheOptions, jwksUri: document.jwksUri });
    return new TokenVerifier(cache, { ...verifierOptions, issuer });
  }

  /**
   * Checks `token` and returns its claims. A header with jwk, jku, x5u, x5c, x5t, crit or b64,
   * a token without kid, anything but a 3-part JWS, a part that is not canonical unpadded
   * base64url, a header or payload that is not one JSON object in strict UTF-8 (no BOM), and
   * an alg other than its key's are refused.
   * exp is required; exp, nbf and iat are checked with the leeway (an iat in the future is
   * refused). Rejects with an `InvalidTokenError` or, when no keys could be had, a
   * `KeysUnavailableError`. Errors never quote the token.
   */
  async verify(token: string): Promise<Claims> {
    const header = readHeader(token);
    const key = await this.cache.key(header.kid);
    if (header.alg !== key.alg) {
      throw new InvalidTokenError("the token's alg is not the algorithm its key declares");
    }
    let payload: Uint8Array;
    try {
      ({ payload } = await compactVerify(token, key.key, { algorithms: [key.alg] }));
    } catch {
      throw new InvalidTokenError("the signature does not verify");
    }
    let claims: unknown;
    try {
      claims = parseJson(payload);
    } catch {
      claims = undefined;
    }
    if (typeof claims !== "object" || claims === null || Array.isArray(claims)) {
      throw new InvalidTokenError("the payload is not a JSON object");
    }
    this.#checkClaims(claims as Claims);
    return claims as Claims;
  }

  /** Checks exp (required), nbf, iat, iss and aud. */
  #checkClaims(claims: Claims): void {
    const now = this.cache.now();
    const leeway = this.#leewayMs;
    const exp = numericDate(claims, "exp");
    if (exp === undefined) throw new InvalidTokenError("no exp claim");
    if (now >= exp + leeway) throw new InvalidTokenError("the token has expired");
    const nbf = numericDate(claims, "nbf");
    if (nbf !== undefined && now + leeway < nbf) {
      throw new InvalidTokenError("the token is not valid yet (nbf)");
    }
    const iat = numericDate(claims, "iat");
    if (iat !== undefined && now + leeway < iat) {
      throw new InvalidTokenError("the token was issued in the future (iat)");
    }
    if (this.#issuer !== undefined && claims["iss"] !== this.#issuer) {
      throw new InvalidTokenError("the iss claim is not the expected issuer");
    }
    if (this.#audience !== undefined && !hasAudience(claims["aud"], this.#audience)) {
      throw new InvalidTokenError("the aud claim does not hold the expected audience");
    }
  }
}

/** What verify reads of the JOSE header before it looks for the key. */
interface Header {
  alg: string;
  kid: string;
}

/** Checks the token's form and header without a key: 3 parts, a JSON object header with a
 * kid, an alg of the allow-list, and none of the refused members. */
function readHeader(token: string): Header {
  if (typeof token !== "string") throw new InvalidTokenError("not a string");
  if (token.length > MAX_TOKEN_BYTES) {
    throw new InvalidTokenError(`longer than ${MAX_TOKEN_BYTES} bytes`);
  }
  const parts = token.split(".");
  if (parts.length !== 3) {
    throw new InvalidTokenError(`a JWS in compact form has 3 parts, this has ${parts.length}`);
  }
  const encoded = parts[0] ?? "";
  if (!isCanonicalBase64Url(encoded)) {
    throw new InvalidTokenError("the header is not base64url (canonical, unpadded)");
  }
  let header: unknown;
  try {
    header = parseJson(decodeBase64Url(encoded));
  } catch {
    header = undefined;
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new InvalidTokenError("the header is not a JSON object");
  }
  const members = header as Record<string, unknown>;
  for (const name of REFUSED_HEADERS) {
    if (Object.hasOwn(members, name)) {
      throw new InvalidTokenError(`the header has "${name}", which is refused`);
    }
  }
  const { alg, kid } = members;
  if (typeof alg !== "string") throw new InvalidTokenError("the header has no alg");
  if (!isAllowedAlg(alg)) {
    throw new InvalidTokenError("the header's alg is not one of ES256, RS256, EdDSA");
  }
  if (typeof kid !== "string" || kid === "") throw new InvalidTokenError("the header has no kid");
  if (!isCanonicalBase64Url(parts[1] ?? "")) {
    throw new InvalidTokenError("the payload is not base64url (canonical, unpadded)");
  }
  if (!isCanonicalBase64Url(parts[2] ?? "")) {
    throw new InvalidTokenError("the signature is not base64url (canonical, unpadded)");
  }
  return { alg, kid };
}

/** Whether `part` is canonical unpadded base64url (RFC 7515 §2): only A-Z a-z 0-9 - _, not
 * empty, no padding or whitespace, and the unused low bits of its last character zero (it
 * re-encodes to itself), so one token has one spelling. */
function isCanonicalBase64Url(part: string): boolean {
  if (!/^[A-Za-z0-9_-]+$/.test(part) || part.length % 4 === 1) return false;
  return encodeBase64Url(decodeBase64Url(part)) === part;
}

/** A NumericDate claim (seconds since the epoch) in milliseconds, if present. */
function numericDate(claims: Claims, name: string): number | undefined {
  if (!Object.hasOwn(claims, name)) return undefined;
  const seconds = claims[name];
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || Math.abs(seconds) > 1e11) {
    throw new InvalidTokenError(`the ${name} claim is not a date`);
  }
  return seconds * 1000;
}

/** Whether aud (a string, or an array of strings) holds audience. */
function hasAudience(aud: unknown, audience: string): boolean {
  if (typeof aud === "string") return aud === audience;
  return Array.isArray(aud) && aud.some((one) => one === audience);
}
