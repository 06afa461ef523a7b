// The code generators `make generate` runs as buf local plugins, pinned by this module's
// go.sum. Nothing imports this module: it only records the tools' versions.
module github.com/tetrateio/agentrouter-auth/tools/go

go 1.26

tool (
	connectrpc.com/connect/cmd/protoc-gen-connect-go
	google.golang.org/protobuf/cmd/protoc-gen-go
)

require (
	connectrpc.com/connect v1.19.1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
