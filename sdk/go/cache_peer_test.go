package agentrouter_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	agentrouter "github.com/tetrateio/agentrouter-go"
)

// The key cache against the hostile peer (tests/interop/peer.py): every bad answer is
// ErrKeysUnavailable, in bounded time and memory, and the API key stays with its origin.

// peerCache is a cache over the peer's GetJWKS under path, with the client's opts.
func peerCache(t *testing.T, path string, clientOpts []agentrouter.Option, opts ...agentrouter.CacheOption) *agentrouter.KeySetCache {
	t.Helper()
	client, err := agentrouter.New(context.Background(), append([]agentrouter.Option{agentrouter.WithBaseURL(peerURL(t) + path)}, clientOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := agentrouter.NewKeySetCache(client, append([]agentrouter.CacheOption{quiet}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return cache
}

func TestPeerCacheHostileAnswersAreKeysUnavailable(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		path string
		opts []agentrouter.CacheOption
		want string
	}{
		"garbage (binary, not JSON)":    {"/big/1", []agentrouter.CacheOption{agentrouter.WithJWKSMaxBytes(2 << 20)}, "not a JSON"},
		"a set with no usable key":      {"/slow/0", nil, "usable"},
		"100 MiB with a Content-Length": {"/big/100", nil, "larger than the limit"},
		"100 MiB chunked":               {"/chunked/100", nil, "larger than the limit"},
		"a gzip bomb of 300 MiB":        {"/bomb/300", nil, "larger than the limit"},
		"an error of 100 MiB":           {"/bigerror/100", nil, ""},
		"hostile error text":            {"/hostile/unavailable", nil, "HTTP 503"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			started := time.Now()
			_, err := peerCache(t, prefixOf(t)+tc.path, nil, tc.opts...).Key(context.Background(), peerKid)
			if !errors.Is(err, agentrouter.ErrKeysUnavailable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrKeysUnavailable saying %q", err, tc.want)
			}
			if strings.ContainsAny(err.Error(), "\x1b\r\n\u202e") || strings.Contains(err.Error(), "AAAA") {
				t.Errorf("the error repeats the peer's bytes: %q", err)
			}
			if elapsed := time.Since(started); elapsed > 30*time.Second {
				t.Errorf("took %v", elapsed)
			}
		})
	}
}

func TestPeerCacheSlowDripEndsAtTheDeadline(t *testing.T) {
	t.Parallel()
	// The peer sends the headers at once, then one byte every 200 ms (over a minute in all).
	cache := peerCache(t, prefixOf(t)+"/drip/200", []agentrouter.Option{agentrouter.WithTimeout(time.Second)})
	done := make(chan error, 1)
	go func() {
		_, err := cache.Key(context.Background(), peerKid)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, agentrouter.ErrKeysUnavailable) {
			t.Fatalf("a dripping answer: %v, want ErrKeysUnavailable", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("still reading a dripping answer after 30 s, with a timeout of 1 s")
	}
}

// The key cache follows no redirect, to another origin or its own (so the API key never
// follows one): the redirect is a failed fetch, and its target is never asked.
func TestPeerCacheAPIKeyNeverFollowsARedirectToAnotherOrigin(t *testing.T) {
	t.Parallel()
	for _, where := range []string{"port", "host", "same"} {
		t.Run(where, func(t *testing.T) {
			t.Parallel()
			prefix := prefixOf(t)
			cache := peerCache(t, prefix+"/redirect/"+where, []agentrouter.Option{agentrouter.WithAPIKey("k-123.secret")})
			_, err := cache.Key(context.Background(), peerKid)
			if !errors.Is(err, agentrouter.ErrKeysUnavailable) || !strings.Contains(err.Error(), "HTTP 3") {
				t.Errorf("a redirect to %s: got %v, want ErrKeysUnavailable naming the 3xx status", where, err)
			}
			sent := sentUnder(t, prefix)
			if len(sent) != 1 {
				t.Fatalf("the peer received %d requests under %s, want the fetch alone: %+v", len(sent), prefix, sent)
			}
			if got := sent[0].Headers["authorization"]; got != "Bearer k-123.secret" {
				t.Errorf("the fetch: Authorization %q, want the key", got)
			}
		})
	}
}

func TestPeerCacheJWKSURIOfAnotherOriginGetsNoAPIKey(t *testing.T) {
	t.Parallel()
	prefix := prefixOf(t)
	client, err := agentrouter.New(context.Background(), agentrouter.WithBaseURL(peerURL(t)), agentrouter.WithAPIKey("k-123.secret"))
	if err != nil {
		t.Fatal(err)
	}
	other := strings.Replace(peerURL(t), "127.0.0.1", "localhost", 1) + prefix + "/agentrouter.auth.v1.AuthService/GetJWKS"
	cache, err := agentrouter.NewKeySetCache(client, agentrouter.WithJWKSURI(other), quiet)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = cache.Key(context.Background(), peerKid)
	sent := onlySentUnder(t, prefix)
	if value, ok := sent.Headers["authorization"]; ok {
		t.Errorf("a jwks_uri of %s: Authorization %q sent to it", sent.Origin, value)
	}
}
