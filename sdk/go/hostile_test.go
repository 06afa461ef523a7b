package agentrouter_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentrouter "github.com/tetrateio/agentrouter-go"
)

// trustingThePeer is an HTTP client that trusts the CA of the peer's HTTPS listener.
func trustingThePeer(t *testing.T) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(peerCAFile(t))
	if err != nil {
		t.Fatalf("the peer's CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("the peer's CA %s holds no certificate", peerCAFile(t))
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

func TestPeerAPIKeyNeverGoesToAnotherOrigin(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		base    func(*testing.T) string
		where   string // the peer's redirect: see tests/interop/peer.py
		client  func(*testing.T) *http.Client
		keep    bool // the landing origin is the first one: the key goes along
		refused bool // the redirect is not followed at all (https to http)
	}{
		"same host, another port":    {base: peerURL, where: "port"},
		"another host name":          {base: peerURL, where: "host"},
		"https to http on that host": {base: peerTLSURL, where: "plain", client: trustingThePeer, refused: true},
		"the same origin":            {base: peerURL, where: "same", keep: true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			prefix := prefixOf(t)
			opts := []agentrouter.Option{agentrouter.WithAPIKey("k-123.secret")}
			if tc.client != nil {
				opts = append(opts, agentrouter.WithHTTPClient(tc.client(t)))
			}
			if tc.refused {
				// A plaintext hop could answer anything: the redirect is an error, and only the
				// first request reaches the peer, with the key (it is the client's origin).
				if _, err := getJWKS(context.Background(), t, tc.base(t)+prefix+"/redirect/"+tc.where, opts...); err == nil {
					t.Fatal("a redirect from https to http was followed")
				}
				sent := sentUnder(t, prefix)
				if len(sent) != 1 || sent[0].Headers["authorization"] != "Bearer k-123.secret" {
					t.Fatalf("the peer received %+v, want only the first request, with the key", sent)
				}
				return
			}
			mustGetJWKS(context.Background(), t, tc.base(t)+prefix+"/redirect/"+tc.where, opts...)
			sent := sentUnder(t, prefix)
			if len(sent) != 2 {
				t.Fatalf("the peer received %d requests under %s, want the call and its redirect: %+v", len(sent), prefix, sent)
			}
			first, landed := sent[0], sent[1]
			if got := first.Headers["authorization"]; got != "Bearer k-123.secret" {
				t.Errorf("first request to %s: Authorization %q, want the key", first.Origin, got)
			}
			if (landed.Origin == first.Origin) != tc.keep {
				t.Fatalf("redirected from %s to %s: not the case this test is about", first.Origin, landed.Origin)
			}
			got, sentKey := landed.Headers["authorization"]
			if tc.keep && got != "Bearer k-123.secret" {
				t.Errorf("redirect within %s: Authorization %q, want the key", first.Origin, got)
			}
			if !tc.keep && sentKey {
				t.Errorf("redirect from %s to %s: Authorization %q sent to another origin", first.Origin, landed.Origin, got)
			}
		})
	}
}

func TestPeerRedirectKeepsTheUsersPolicy(t *testing.T) {
	t.Parallel()
	prefix := prefixOf(t)
	asked := 0
	user := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
		asked++
		return errors.New("no redirects here")
	}}
	_, err := getJWKS(context.Background(), t, peerURL(t)+prefix+"/redirect/port", agentrouter.WithAPIKey("k"), agentrouter.WithHTTPClient(user))
	if err == nil || asked != 1 {
		t.Fatalf("a client whose policy refuses redirects: error %v, policy asked %d times; want an error, asked once", err, asked)
	}
	if sent := sentUnder(t, prefix); len(sent) != 1 {
		t.Errorf("the peer received %d requests, want only the first: %+v", len(sent), sent)
	}
}

func TestPeerResponseLimit(t *testing.T) {
	t.Parallel()
	for name, path := range map[string]string{
		"100 MiB with a Content-Length":      "/big/100",
		"100 MiB chunked":                    "/chunked/100",
		"a gzip bomb of 300 MiB":             "/bomb/300",
		"an error of 100 MiB":                "/bigerror/100",
		"a gzip bomb of 300 MiB as an error": "/errorbomb/300",
	} {
		_, err := getJWKS(context.Background(), t, peerURL(t)+prefixOf(t)+path)
		cerr, ok := err.(*connect.Error) // GetJWKS returns a *connect.Error itself, not wrapped
		if !ok || cerr.Code() != connect.CodeResourceExhausted {
			t.Errorf("%s: got %.200v (%T), want a *connect.Error with code resource_exhausted", name, err, err)
		}
	}
}

func TestPeerDeadlineCoversADrippingBody(t *testing.T) {
	t.Parallel()
	// The peer sends the headers at once, then one byte every 200 ms (over a minute in all).
	for name, opts := range map[string][]agentrouter.Option{
		"WithTimeout":                {agentrouter.WithTimeout(time.Second)},
		"WithTimeout and own client": {agentrouter.WithTimeout(time.Second), agentrouter.WithHTTPClient(&http.Client{})},
	} {
		_, err := getJWKS(context.Background(), t, peerURL(t)+prefixOf(t)+"/drip/200", opts...)
		if code := connect.CodeOf(err); code != connect.CodeDeadlineExceeded {
			t.Errorf("%s: got %v (code %v), want deadline_exceeded", name, err, code)
		}
	}
}
