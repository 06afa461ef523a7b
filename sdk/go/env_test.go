package agentrouter_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// runThrough is what a test that needs the real server or the peer says when run on its own.
const runThrough = "run these tests through `pytest tests/interop/test_sdk_go.py`, " +
	"which starts the real server and the error-forcing peer and sets the environment"

// env returns the environment variable name, and fails the test when it is not set.
func env(t *testing.T, name string) string {
	t.Helper()
	value := os.Getenv(name)
	if value == "" {
		t.Fatalf("%s is not set: %s", name, runThrough)
	}
	return value
}

// serverURL is the base URL of the real server.
func serverURL(t *testing.T) string {
	return env(t, "AGENTROUTER_TEST_SERVER_URL")
}

// servedKids are the kids of the keys the real server publishes.
func servedKids(t *testing.T) []string {
	return strings.Split(env(t, "AGENTROUTER_TEST_KIDS"), ",")
}

// peerURL is the base URL of tests/interop/peer.py.
func peerURL(t *testing.T) string {
	return strings.TrimRight(env(t, "AGENTROUTER_TEST_PEER_URL"), "/")
}

// peerTLSURL is the base URL of the peer's HTTPS listener, whose CA is in peerCAFile.
func peerTLSURL(t *testing.T) string {
	return strings.TrimRight(env(t, "AGENTROUTER_TEST_PEER_TLS_URL"), "/")
}

// peerCAFile is the PEM file of the CA that signed the peer's HTTPS certificate.
func peerCAFile(t *testing.T) string {
	return env(t, "AGENTROUTER_TEST_PEER_CA")
}

// recorded is one request the peer received, as its GET /_requests reports it.
type recorded struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Query   string            `json:"query"`
	Headers map[string]string `json:"headers"`
	Origin  string            `json:"origin"`
}

var notInPath = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// prefixOf is a path prefix of the test's own, so that the tests share one peer and each
// reads back only what it sent. Its last two segments tell the peer nothing ("go", the name).
func prefixOf(t *testing.T) string {
	return "/go/" + notInPath.ReplaceAllString(t.Name(), "-")
}

// sentUnder returns the requests the peer received under prefix, oldest first.
func sentUnder(t *testing.T, prefix string) []recorded {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, peerURL(t)+"/_requests", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("reading the peer's requests: %v", err)
	}
	defer resp.Body.Close()
	var all []recorded
	if err := json.NewDecoder(resp.Body).Decode(&all); err != nil {
		t.Fatalf("decoding the peer's requests: %v", err)
	}
	var mine []recorded
	for _, r := range all {
		if strings.HasPrefix(r.Path, prefix+"/") {
			mine = append(mine, r)
		}
	}
	return mine
}

// onlySentUnder returns the one request the peer received under prefix.
func onlySentUnder(t *testing.T, prefix string) recorded {
	t.Helper()
	sent := sentUnder(t, prefix)
	if len(sent) != 1 {
		t.Fatalf("the peer received %d requests under %s, want 1: %+v", len(sent), prefix, sent)
	}
	return sent[0]
}
