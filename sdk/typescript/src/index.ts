// @tetrate/agentrouter-sdk: the AgentRouter client for Node.js 20+ and browsers.
//
//     import { Client } from "@tetrate/agentrouter-sdk";
//     const client = new Client({ baseUrl: "https://api.example.com", apiKey: "..." });
//     const jwks = await client.auth.getJWKS({});
//
//     import { KeySetCache, TokenVerifier } from "@tetrate/agentrouter-sdk";
//     const verifier = new TokenVerifier(new KeySetCache(client), { issuer, audience: "api" });
//     const claims = await verifier.verify(token);

export {
  AuthClient,
  Client,
  DEFAULT_MAX_RESPONSE_BYTES,
  DEFAULT_TIMEOUT_MS,
  USER_AGENT,
  type CallOptions,
  type ClientOptions,
} from "./client.js";
export { Code, ConnectError } from "@connectrpc/connect";
export { InvalidTokenError, KeysUnavailableError } from "./errors.js";
export {
  DEFAULT_JWKS_MAX_BYTES,
  DEFAULT_UNKNOWN_KID_COOLDOWN_MS,
  KeySetCache,
  MAX_JWKS_KEYS,
  type KeySetCacheOptions,
  type KeySetLogger,
  type PublicKey,
} from "./keyset.js";
export {
  DEFAULT_LEEWAY_MS,
  TokenVerifier,
  type Claims,
  type FromIssuerOptions,
  type TokenVerifierOptions,
} from "./verifier.js";
export {
  GetJWKSRequestSchema,
  GetJWKSResponseSchema,
  GetOpenIDConfigurationRequestSchema,
  GetOpenIDConfigurationResponseSchema,
  JWKSchema,
  type GetJWKSRequest,
  type GetJWKSResponse,
  type GetOpenIDConfigurationRequest,
  type GetOpenIDConfigurationResponse,
  type JWK,
} from "./gen/tars/auth/v1/auth_pb.js";
export { VERSION } from "./version.js";
