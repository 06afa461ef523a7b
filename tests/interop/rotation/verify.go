// Command verify reads one token per line on stdin and verifies each with the Go SDK's
// Verifier over a KeySetCache of the client's GetJWKS, printing one JSON line per token: its
// subject, or the error. Driven by tests/interop/test_sdk_rotation.py, which builds it against
// sdk/go.
//
// Usage: verify BASE_URL ISSUER AUDIENCE
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	agentrouter "github.com/tetrateio/agentrouter-go"
)

type outcome struct {
	Sub   string `json:"sub,omitempty"`
	Error string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: verify BASE_URL ISSUER AUDIENCE")
		os.Exit(2)
	}
	ctx := context.Background()
	client, err := agentrouter.New(ctx, agentrouter.WithBaseURL(os.Args[1]))
	if err != nil {
		fmt.Fprintln(os.Stderr, "verify:", err)
		os.Exit(1)
	}
	cache, err := agentrouter.NewKeySetCache(client)
	if err != nil {
		fmt.Fprintln(os.Stderr, "verify:", err)
		os.Exit(1)
	}
	verifier, err := agentrouter.NewVerifier(cache, agentrouter.WithIssuer(os.Args[2]), agentrouter.WithAudience(os.Args[3]))
	if err != nil {
		fmt.Fprintln(os.Stderr, "verify:", err)
		os.Exit(1)
	}
	out := json.NewEncoder(os.Stdout)
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		result := outcome{}
		if claims, err := verifier.Verify(ctx, strings.TrimSpace(lines.Text())); err != nil {
			result.Error = err.Error()
		} else {
			result.Sub = fmt.Sprint(claims["sub"])
		}
		if err := out.Encode(result); err != nil {
			os.Exit(1)
		}
	}
}
