package agentrouter_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	agentrouter "github.com/tetrateio/agentrouter-go"
)

// rawRedirector is a server whose every answer is a 302 whose Location header is written as it
// is, byte for byte (net/http's server would rewrite some bytes); it counts its requests.
func rawRedirector(t *testing.T, location func(r *http.Request) string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(buf, "HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", location(r))
		_ = buf.Flush()
	}))
	t.Cleanup(server.Close)
	return server, &hits
}

// The client follows no redirect whose Location holds a backslash, a control character or
// whitespace (Unicode White_Space included): URL parsers disagree on what such a URL names
// (WHATWG parsers end an http URL's authority at a backslash, RFC 3986 ones take it as
// userinfo), so the origin the API key is kept for could be another than the one connected to.
// Some of these net/http or net/url refuse already (a control byte in a header, a tab, a
// backslash in the authority): each is checked. Only the first request is ever made.
func TestClientRefusesARedirectWhoseLocationHasABackslashControlOrWhitespace(t *testing.T) {
	t.Parallel()
	// Each case's other server; OTHER in a Location is its host:port, HOST the first server's.
	otherServer := func(t *testing.T) (*httptest.Server, *atomic.Int64) {
		var hits atomic.Int64
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			w.Header().Set("Content-Type", "application/proto")
		}))
		t.Cleanup(other.Close)
		return other, &hits
	}
	const otherHost = "OTHER"
	for _, tc := range []struct{ name, location string }{
		{"backslash before @ in the authority", "http://" + otherHost + `\@HOST/x`},
		{"backslash in another origin's path", "http://" + otherHost + `/a\b`},
		{"backslash in a relative path", `/a\b`},
		{"backslashes for slashes", `http:\\` + otherHost + `/x`},
		{"tab in the authority", "http://" + otherHost + "\t/x"},
		{"space in the path", "http://" + otherHost + "/a b"},
		{"space in a relative path", "/a b"},
		{"space after the port", "http://" + otherHost + " /x"},
		{"no-break space (UTF-8)", "http://" + otherHost + "/a\u00a0b"},
		{"ideographic space (UTF-8)", "http://" + otherHost + "/a\u3000b"},
		{"next line, a C1 control (UTF-8)", "http://" + otherHost + "/a\u0085b"},
		{"line separator (UTF-8)", "http://" + otherHost + "/a\u2028b"},
		{"a C0 control byte", "http://" + otherHost + "/a\x01b"},
		{"DEL", "http://" + otherHost + "/a\x7fb"},
		{"vertical tab", "http://" + otherHost + "/a\vb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			other, otherHits := otherServer(t)
			location := strings.ReplaceAll(tc.location, otherHost, strings.TrimPrefix(other.URL, "http://"))
			first, hits := rawRedirector(t, func(r *http.Request) string {
				return strings.ReplaceAll(location, "HOST", r.Host)
			})
			_, err := getJWKS(context.Background(), t, first.URL, agentrouter.WithAPIKey("k-123.secret"))
			if err == nil {
				t.Errorf("a redirect to %q was followed", tc.location)
			}
			t.Logf("%q: %v", tc.location, err)
			if n := hits.Load(); n != 1 {
				t.Errorf("a redirect to %q: the first server was asked %d times, want once", tc.location, n)
			}
			if n := otherHits.Load(); n != 0 {
				t.Errorf("a redirect to %q: the other server was asked %d times, want never", tc.location, n)
			}
		})
	}
	// The control: a well-formed Location to the other server is followed.
	other, otherHits := otherServer(t)
	first, _ := rawRedirector(t, func(*http.Request) string { return other.URL + "/x" })
	if _, err := getJWKS(context.Background(), t, first.URL, agentrouter.WithAPIKey("k-123.secret")); err != nil {
		t.Errorf("a redirect to %s/x: %v", other.URL, err)
	}
	if n := otherHits.Load(); n != 1 {
		t.Errorf("a redirect to %s/x: the other server was asked %d times, want once", other.URL, n)
	}
}

// The client follows at most 9 redirects, as net/http's default policy: a chain of 9 ends in the
// answer, a chain of 10 is an error after 10 requests (the 11th is never made).
func TestClientFollowsAtMostNineRedirects(t *testing.T) {
	t.Parallel()
	for _, chain := range []int{9, 10} {
		var hits atomic.Int64
		server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			hop, _ := strconv.Atoi(r.URL.Query().Get("hop"))
			if hop < chain {
				q := r.URL.Query()
				q.Set("hop", strconv.Itoa(hop+1))
				http.Redirect(w, r, r.URL.Path+"?"+q.Encode(), http.StatusFound)
				return
			}
			w.Header().Set("Content-Type", "application/proto")
		}))
		t.Cleanup(server.Close)
		_, err := getJWKS(context.Background(), t, server.URL)
		switch {
		case chain == 9 && err != nil:
			t.Errorf("a chain of 9 redirects: %v", err)
		case chain == 10 && (err == nil || !strings.Contains(err.Error(), "stopped after 10 redirects")):
			t.Errorf("a chain of 10 redirects: error %v, want stopped after 10 redirects", err)
		}
		if n := hits.Load(); n != int64(min(chain, 9)+1) {
			t.Errorf("a chain of %d redirects: %d requests, want %d", chain, n, min(chain, 9)+1)
		}
	}
}
