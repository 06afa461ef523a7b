// Command calls makes GetJWKS calls with the Go SDK, one after another on one client, and
// prints one JSON line per call: the key ids answered, or the error. Driven by
// tests/integration/test_connect_caching.py, which builds it against sdk/go.
//
// Usage: calls BASE_URL COUNT
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	agentrouter "github.com/tetrateio/agentrouter-go"
	authv1 "github.com/tetrateio/agentrouter-go/genapi/api/tars/auth/v1"
)

type outcome struct {
	Kids  []string `json:"kids"`
	Error string   `json:"error,omitempty"`
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: calls BASE_URL COUNT")
		os.Exit(2)
	}
	count, err := strconv.Atoi(os.Args[2])
	if err != nil || count < 1 {
		fmt.Fprintln(os.Stderr, "calls: COUNT must be a positive number")
		os.Exit(2)
	}
	ctx := context.Background()
	client, err := agentrouter.New(ctx,
		agentrouter.WithBaseURL(os.Args[1]),
		agentrouter.WithAPIKey("sk-cache-test"),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "calls:", err)
		os.Exit(1)
	}
	out := json.NewEncoder(os.Stdout)
	for range count {
		result := outcome{Kids: []string{}}
		resp, err := client.Auth().GetJWKS(ctx, &authv1.GetJWKSRequest{})
		if err != nil {
			result.Error = err.Error()
		} else {
			for _, key := range resp.GetKeys() {
				result.Kids = append(result.Kids, key.GetKid())
			}
		}
		if err := out.Encode(result); err != nil {
			os.Exit(1)
		}
	}
}
