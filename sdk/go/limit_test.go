package agentrouter_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	agentrouter "github.com/tetrateio/agentrouter-go"
)

func TestPeerResponseLimitIsConfigurable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		path     string
		maxBytes int
		fits     bool
	}{
		{"/big/6", 7 << 20, true},
		{"/bomb/6", 7 << 20, true},
		{"/big/2", 1 << 20, false},
		{"/bomb/2", 1 << 20, false},
	} {
		_, err := getJWKS(context.Background(), t, peerURL(t)+prefixOf(t)+tc.path, agentrouter.WithMaxResponseBytes(tc.maxBytes))
		if tc.fits && err != nil {
			t.Errorf("%s within a limit of %d: %v", tc.path, tc.maxBytes, err)
		}
		if code := connect.CodeOf(err); !tc.fits && code != connect.CodeResourceExhausted {
			t.Errorf("%s over a limit of %d: got %v (code %v), want resource_exhausted", tc.path, tc.maxBytes, err, code)
		}
	}
}
