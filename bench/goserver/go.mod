// The Go peer of `make bench` (connect-go + vanguard-go, and bare net/http). It reuses the Go
// SDK's generated code through the replace below; every module is pinned by go.sum.
module github.com/tetrateio/agentrouter-auth/bench/goserver

go 1.26.0

replace github.com/tetrateio/agentrouter-go => ../../sdk/go

require (
	connectrpc.com/connect v1.19.1
	connectrpc.com/vanguard v0.4.0
	github.com/tetrateio/agentrouter-go v0.0.0-00010101000000-000000000000
	google.golang.org/protobuf v1.36.12
)

require (
	google.golang.org/genproto/googleapis/api v0.0.0-20261110000943-09e21b237f2c // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261104224025-d1e00e9f33ab // indirect
)
