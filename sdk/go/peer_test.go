package agentrouter_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentrouter "github.com/tetrateio/agentrouter-go"
	authv1 "github.com/tetrateio/agentrouter-go/genapi/api/tars/auth/v1"
	"github.com/tetrateio/agentrouter-go/genapi/api/tars/auth/v1/authv1connect"
)

// The peer's answer when nothing is forced: one key with this kid.
const peerKid = "peer-key"

// getJWKS makes a client for baseURL with opts and calls GetJWKS with ctx.
func getJWKS(ctx context.Context, t *testing.T, baseURL string, opts ...agentrouter.Option) (*authv1.GetJWKSResponse, error) {
	t.Helper()
	client, err := agentrouter.New(ctx, append([]agentrouter.Option{agentrouter.WithBaseURL(baseURL)}, opts...)...)
	if err != nil {
		t.Fatalf("New(%q): %v", baseURL, err)
	}
	return client.Auth().GetJWKS(ctx, &authv1.GetJWKSRequest{})
}

// mustGetJWKS is getJWKS that fails the test on an error, and checks the peer's answer.
func mustGetJWKS(ctx context.Context, t *testing.T, baseURL string, opts ...agentrouter.Option) {
	t.Helper()
	resp, err := getJWKS(ctx, t, baseURL, opts...)
	if err != nil {
		t.Fatalf("GetJWKS via %s: %v", baseURL, err)
	}
	if len(resp.GetKeys()) != 1 || resp.GetKeys()[0].GetKid() != peerKid {
		t.Fatalf("GetJWKS via %s: got %v, want the peer's one key %q", baseURL, resp, peerKid)
	}
}

func TestPeerGetJWKSIsAConnectGETInBinaryProtobuf(t *testing.T) {
	t.Parallel()
	prefix := prefixOf(t)
	mustGetJWKS(context.Background(), t, peerURL(t)+prefix)
	sent := onlySentUnder(t, prefix)
	if sent.Method != http.MethodGet {
		t.Errorf("method %s, want GET (so HTTP caches can serve it)", sent.Method)
	}
	query, err := url.ParseQuery(sent.Query)
	if err != nil {
		t.Fatalf("query %q: %v", sent.Query, err)
	}
	if query.Get("connect") != "v1" || query.Get("encoding") != "proto" || !query.Has("message") {
		t.Errorf("query %q, want a Connect GET: connect=v1, encoding=proto and a message", sent.Query)
	}
	if query.Has("compression") {
		t.Errorf("query %q: a compressed GET has no stable URL for caches", sent.Query)
	}
}

func TestPeerBaseURLPathPrefix(t *testing.T) {
	t.Parallel()
	for _, slash := range []string{"", "/"} {
		prefix := prefixOf(t) + "/slash" + strconv.Itoa(len(slash)) + "/under/a/prefix"
		mustGetJWKS(context.Background(), t, peerURL(t)+prefix+slash)
		if got, want := onlySentUnder(t, prefix).Path, prefix+authv1connect.AuthServiceGetJWKSProcedure; got != want {
			t.Errorf("base URL %q: path %q, want %q", prefix+slash, got, want)
		}
	}
}

func TestPeerAPIKeyIsABearerToken(t *testing.T) {
	t.Parallel()
	prefix := prefixOf(t)
	mustGetJWKS(context.Background(), t, peerURL(t)+prefix, agentrouter.WithAPIKey("k-123.secret"))
	if got, want := onlySentUnder(t, prefix).Headers["authorization"], "Bearer k-123.secret"; got != want {
		t.Errorf("Authorization %q, want %q", got, want)
	}
}

func TestPeerNoAPIKeyNoAuthorizationHeader(t *testing.T) {
	t.Parallel()
	for _, opts := range [][]agentrouter.Option{nil, {agentrouter.WithAPIKey("")}} {
		prefix := prefixOf(t) + "/options" + strconv.Itoa(len(opts))
		mustGetJWKS(context.Background(), t, peerURL(t)+prefix, opts...)
		if value, sent := onlySentUnder(t, prefix).Headers["authorization"]; sent {
			t.Errorf("%d options: Authorization %q sent without an API key", len(opts), value)
		}
	}
}

func TestPeerUserAgentNamesTheSDK(t *testing.T) {
	t.Parallel()
	prefix := prefixOf(t)
	mustGetJWKS(context.Background(), t, peerURL(t)+prefix)
	got := onlySentUnder(t, prefix).Headers["user-agent"]
	if want := "agentrouter-sdk-go/" + agentrouter.Version; got != want && !strings.HasPrefix(got, want+" ") {
		t.Errorf("User-Agent %q, want it to start with %q", got, want)
	}
}

// The deadline a call sends as connect-timeout-ms, in milliseconds.
func sentTimeoutMs(t *testing.T, prefix string) int {
	t.Helper()
	header := onlySentUnder(t, prefix).Headers["connect-timeout-ms"]
	ms, err := strconv.Atoi(header)
	if err != nil {
		t.Fatalf("connect-timeout-ms %q: %v", header, err)
	}
	return ms
}

func TestPeerTimeoutSent(t *testing.T) {
	t.Parallel()
	type bounds struct{ above, atMost int } // what connect-timeout-ms may be, in ms
	for name, tc := range map[string]struct {
		opts    []agentrouter.Option
		ctx     time.Duration // 0: a ctx without a deadline
		timeout bounds
	}{
		"default":                 {timeout: bounds{5_000, 10_000}},
		"WithTimeout":             {opts: []agentrouter.Option{agentrouter.WithTimeout(3 * time.Second)}, timeout: bounds{1_500, 3_000}},
		"ctx shorter":             {ctx: 2 * time.Second, timeout: bounds{1_000, 2_000}},
		"ctx longer than default": {ctx: time.Minute, timeout: bounds{30_000, 60_000}},
		"ctx over WithTimeout": {
			opts: []agentrouter.Option{agentrouter.WithTimeout(time.Second)}, ctx: 5 * time.Second,
			timeout: bounds{2_500, 5_000},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			if tc.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctx)
				defer cancel()
			}
			prefix := prefixOf(t)
			mustGetJWKS(ctx, t, peerURL(t)+prefix, tc.opts...)
			if ms := sentTimeoutMs(t, prefix); ms <= tc.timeout.above || ms > tc.timeout.atMost {
				t.Errorf("connect-timeout-ms %d, want in (%d, %d]", ms, tc.timeout.above, tc.timeout.atMost)
			}
		})
	}
}

// wantConnectError checks that err is a *connect.Error with code and message.
func wantConnectError(t *testing.T, err error, code connect.Code, message string) {
	t.Helper()
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error %v (%T), want a *connect.Error", err, err)
	}
	if cerr.Code() != code || cerr.Message() != message {
		t.Errorf("error code %v, message %q; want %v, %q", cerr.Code(), cerr.Message(), code, message)
	}
}

func TestPeerSlowCallExceedsTheTimeout(t *testing.T) {
	t.Parallel()
	for name, call := range map[string]func(baseURL string) error{
		"WithTimeout": func(baseURL string) error {
			_, err := getJWKS(context.Background(), t, baseURL, agentrouter.WithTimeout(300*time.Millisecond))
			return err
		},
		"ctx deadline": func(baseURL string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err := getJWKS(ctx, t, baseURL)
			return err
		},
	} {
		err := call(peerURL(t) + prefixOf(t) + "/slow/3000")
		var cerr *connect.Error
		if !errors.As(err, &cerr) || cerr.Code() != connect.CodeDeadlineExceeded {
			t.Errorf("%s: a call the peer answers after 3 s, with 300 ms to go: got %v (%T), "+
				"want a *connect.Error with code deadline_exceeded", name, err, err)
		}
	}
}

func TestPeerCtxDeadlineOutlivesTheDefaultTimeout(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The client's default is 200 ms, the peer answers after 1 s: the ctx's deadline governs.
	mustGetJWKS(ctx, t, peerURL(t)+prefixOf(t)+"/slow/1000", agentrouter.WithTimeout(200*time.Millisecond))
}

func TestPeerErrorsCarryTheConnectCodeAndMessage(t *testing.T) {
	t.Parallel()
	for name, code := range map[string]connect.Code{
		"unavailable":       connect.CodeUnavailable,
		"not_found":         connect.CodeNotFound,
		"permission_denied": connect.CodePermissionDenied,
		"unauthenticated":   connect.CodeUnauthenticated,
	} {
		_, err := getJWKS(context.Background(), t, peerURL(t)+prefixOf(t)+"/fail/"+name, agentrouter.WithAPIKey("k"))
		if err == nil {
			t.Fatalf("/fail/%s/: no error", name)
		}
		wantConnectError(t, err, code, "forced "+name)
		if connect.CodeOf(err) != code {
			t.Errorf("connect.CodeOf: %v, want %v", connect.CodeOf(err), code)
		}
	}
}
