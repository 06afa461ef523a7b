package agentrouter_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	agentrouter "github.com/tetrateio/agentrouter-go"
)

// newClient calls New, turning a panic into a test failure that names the input.
func newClient(t *testing.T, opts ...agentrouter.Option) (client *agentrouter.Client, err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("New panicked: %v", p)
		}
	}()
	return agentrouter.New(context.Background(), opts...)
}

func TestNewRejectsBadBaseURLs(t *testing.T) {
	for _, baseURL := range []string{
		"",
		"127.0.0.1:8080",
		"localhost:8080/prefix",
		"/relative/path",
		"ftp://example.com",
		"ws://example.com",
		"http://",
		"https://",
		"http:///path",
		"http://:8080",
		"http:example.com",
		"http://example.com?x=1",
		"http://example.com/?",
		"http://example.com/prefix#frag",
		"http://example.com#",
		"http://[::1",
		"http://example.com:port",
		" http://example.com",
		"http://exa mple.com",
		"mailto:keys@example.com",
	} {
		t.Run(baseURL, func(t *testing.T) {
			client, err := newClient(t, agentrouter.WithBaseURL(baseURL))
			if err == nil {
				t.Fatalf("New accepted the base URL %q", baseURL)
			}
			if client != nil {
				t.Errorf("New returned a client along with the error %v", err)
			}
			if !strings.HasPrefix(err.Error(), "agentrouter: ") || strings.Contains(err.Error(), "\n") {
				t.Errorf("the error is not one line naming the SDK: %q", err)
			}
		})
	}
}

func TestNewRejectsCredentialsInTheBaseURLWithoutEchoingThem(t *testing.T) {
	for _, baseURL := range []string{"http://user:secret@example.com", "https://secret@example.com/prefix"} {
		_, err := newClient(t, agentrouter.WithBaseURL(baseURL))
		if err == nil {
			t.Fatalf("New accepted the base URL %q", baseURL)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("the error repeats the credential: %q", err)
		}
	}
}

func TestNewRequiresABaseURL(t *testing.T) {
	_, err := newClient(t, agentrouter.WithAPIKey("key"))
	if err == nil || !strings.Contains(err.Error(), "WithBaseURL") {
		t.Fatalf("New without a base URL: got %v, want an error naming WithBaseURL", err)
	}
}

func TestNewAcceptsGoodBaseURLs(t *testing.T) {
	for _, baseURL := range []string{
		"http://127.0.0.1:8080",
		"http://127.0.0.1:8080/",
		"https://example.com",
		"https://example.com/prefix",
		"https://example.com/prefix/",
		"http://[::1]:8080/a/b/",
	} {
		t.Run(baseURL, func(t *testing.T) {
			client, err := newClient(t, agentrouter.WithBaseURL(baseURL))
			if err != nil {
				t.Fatalf("New(%q): %v", baseURL, err)
			}
			if client.Auth() == nil {
				t.Fatal("Auth() is nil")
			}
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	base := agentrouter.WithBaseURL("http://127.0.0.1:8080")
	for name, opt := range map[string]agentrouter.Option{
		"zero timeout":     agentrouter.WithTimeout(0),
		"negative timeout": agentrouter.WithTimeout(-time.Second),
		"nil HTTP client":  agentrouter.WithHTTPClient(nil),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := newClient(t, base, opt); err == nil {
				t.Fatalf("New accepted %s", name)
			}
		})
	}
	if _, err := newClient(t, base, nil, agentrouter.WithHTTPClient(&http.Client{})); err != nil {
		t.Fatalf("New with a nil option and an HTTP client: %v", err)
	}
}
