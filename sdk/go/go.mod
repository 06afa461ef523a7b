module github.com/tetrateio/agentrouter-go

go 1.26.0

require (
	connectrpc.com/connect v1.19.1
	github.com/go-jose/go-jose/v4 v4.1.9
	google.golang.org/genproto/googleapis/api v0.0.0-20261110000943-09e21b237f2c
	google.golang.org/protobuf v1.36.12
)
