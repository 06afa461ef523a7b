// @tetrate/agentrouter-sdk: the AgentRouter client for Node.js 20+ and browsers.
//
//     import { Client } from "@tetrate/agentrouter-sdk";
//     const client = new Client({ baseUrl: "https://api.example.com", apiKey: "..." });
//     const jwks = await client.auth.getJWKS({});

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
export {
  GetJWKSRequestSchema,
  GetJWKSResponseSchema,
  JWKSchema,
  type GetJWKSRequest,
  type GetJWKSResponse,
  type JWK,
} from "./gen/tars/auth/v1/auth_pb.js";
export { VERSION } from "./version.js";
