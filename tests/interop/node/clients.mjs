// Calls GetJWKS with @connectrpc/connect-node over every protocol it speaks and prints the
// responses as proto3 JSON, keyed by protocol. The schema comes from a `buf build` image, so
// no code is generated for Node.
//
//   node clients.mjs IMAGE HTTP_BASE_URL GRPC_BASE_URL
import { readFileSync } from "node:fs";
import { createFileRegistry, fromBinary, toJson } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";

const [image, httpBaseUrl, grpcBaseUrl] = process.argv.slice(2);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(image)));
const service = registry.getService("agentrouter.auth.v1.AuthService");

const transports = {
  "connect-json": createConnectTransport({ baseUrl: httpBaseUrl, httpVersion: "1.1" }),
  "connect-binary": createConnectTransport({
    baseUrl: httpBaseUrl,
    httpVersion: "1.1",
    useBinaryFormat: true,
  }),
  "connect-get": createConnectTransport({
    baseUrl: httpBaseUrl,
    httpVersion: "1.1",
    useHttpGet: true,
  }),
  "grpc-web": createGrpcWebTransport({ baseUrl: httpBaseUrl, httpVersion: "1.1" }),
  "grpc-h2c": createGrpcTransport({ baseUrl: grpcBaseUrl }),
};

const results = {};
for (const [name, transport] of Object.entries(transports)) {
  const client = createClient(service, transport);
  const response = await client.getJWKS(
    {},
    { headers: { authorization: "Bearer any-api-key" }, timeoutMs: 10000 },
  );
  results[name] = toJson(service.method.getJWKS.output, response);
}
console.log(JSON.stringify(results));
