package agentrouter

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"connectrpc.com/connect"
)

// DefaultMaxResponseBytes bounds a response, on the wire and decompressed, unless
// [WithMaxResponseBytes] sets another bound.
const DefaultMaxResponseBytes = 4 << 20

// maxRedirects is net/http's own default policy: stop after 10 redirects (the 10th is refused,
// so at most 9 are followed).
const maxRedirects = 10

// sdkHTTPClient is a copy of the user's client (the user's stays untouched) whose redirect
// policy never sends the API key to another origin, and whose transport bounds every response
// body to maxBytes.
func sdkHTTPClient(user *http.Client, maxBytes int64) *http.Client {
	client := *user
	client.CheckRedirect = sameOriginCredentials(user.CheckRedirect)
	base := user.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	client.Transport = &limitedTransport{base: base, maxBytes: maxBytes}
	return &client
}

// sameOriginCredentials wraps a redirect policy (nil: net/http's default, 10 redirects) so that
// a redirect from https to http is refused (a plaintext hop could answer anything, a discovery
// document included), and a redirect to another origin (scheme, host and port, RFC 6454)
// carries no Authorization. net/http itself drops Authorization only when the host name
// changes, so a redirect to the same host on another port would carry it. net/http copies the
// first request's headers into each redirect before calling the policy, so a redirect back to
// the first origin carries it again. A Location holding a backslash, a control character or
// whitespace is refused whatever the policy (ambiguousLocation).
func sameOriginCredentials(policy func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if req.Response != nil && ambiguousLocation(req.Response.Header.Get("Location")) {
			return fmt.Errorf("refused a redirect to %q: a backslash, control character or whitespace in its Location", req.Response.Header.Get("Location"))
		}
		if policy != nil {
			if err := policy(req, via); err != nil {
				return err
			}
		} else if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		if len(via) > 0 && !strings.EqualFold(req.URL.Scheme, "https") && strings.EqualFold(via[len(via)-1].URL.Scheme, "https") {
			return errors.New("refused a redirect from https to http")
		}
		if len(via) > 0 && origin(req.URL) != origin(via[0].URL) {
			req.Header.Del("Authorization")
		}
		return nil
	}
}

// ambiguousLocation is whether a redirect's Location (net/http follows the first one) holds a
// backslash, a control character (C0, DEL, C1) or whitespace (Unicode White_Space): URL parsers
// disagree on what such a URL names (a WHATWG parser ends an http URL's authority at a
// backslash and drops tabs, an RFC 3986 one does neither), so the origin the API key is kept
// for could be another than the one connected to. net/url and net/http refuse some of them
// already (a control byte, a backslash in the userinfo), not all (a backslash or a space in the
// path, a no-break space). Bytes that are not UTF-8 are left to net/url, which escapes them.
func ambiguousLocation(location string) bool {
	for _, r := range location {
		if r == '\\' || unicode.IsControl(r) || unicode.IsSpace(r) {
			return true
		}
	}
	return false
}

// origin is scheme://host:port with the scheme's default port made explicit.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	return scheme + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// limitedTransport bounds response bodies. A 200's body is decoded by connect, whose
// WithReadMaxBytes bounds it on the wire and decompressed; this transport stops the body after
// maxBytes+1 bytes, so connect does not read the rest of an oversized body to the end (it would,
// to reuse the connection). An error's body, which connect reads without its bound, is read
// here: at most maxBytes on the wire and maxBytes decompressed.
type limitedTransport struct {
	base     http.RoundTripper
	maxBytes int64
}

func (t *limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	if resp.StatusCode == http.StatusOK {
		resp.Body = &limitedBody{body: resp.Body, left: t.maxBytes + 1, maxBytes: t.maxBytes}
		return resp, nil
	}
	if err := t.bufferError(resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// bufferError reads an error's body within the bound and gives it back decompressed, or says
// that it is too large.
func (t *limitedTransport) bufferError(resp *http.Response) error {
	defer resp.Body.Close()
	wire, err := io.ReadAll(io.LimitReader(resp.Body, t.maxBytes+1))
	if err != nil {
		return err
	}
	if int64(len(wire)) > t.maxBytes {
		return tooLarge(t.maxBytes)
	}
	body := wire
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		reader, err := gzip.NewReader(bytes.NewReader(wire))
		if err != nil {
			return connect.NewError(connect.CodeInternal, fmt.Errorf("the error's gzip body: %w", err))
		}
		body, err = io.ReadAll(io.LimitReader(reader, t.maxBytes+1))
		if err != nil {
			return connect.NewError(connect.CodeInternal, fmt.Errorf("the error's gzip body: %w", err))
		}
		if int64(len(body)) > t.maxBytes {
			return tooLarge(t.maxBytes)
		}
		resp.Header.Del("Content-Encoding")
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return nil
}

// limitedBody ends a body with a resource_exhausted error once more than maxBytes were read.
type limitedBody struct {
	body     io.ReadCloser
	left     int64
	maxBytes int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, tooLarge(b.maxBytes)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.body.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error {
	return b.body.Close()
}

// tooLarge is the error of a response over the bound: resource_exhausted, as connect's own.
func tooLarge(maxBytes int64) *connect.Error {
	return connect.NewError(connect.CodeResourceExhausted,
		fmt.Errorf("the response is larger than the client's limit of %d bytes (WithMaxResponseBytes)", maxBytes))
}
