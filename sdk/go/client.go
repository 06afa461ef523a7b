package agentrouter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"time"

	"connectrpc.com/connect"

	authv1 "github.com/tetrateio/agentrouter-go/genapi/api/tars/auth/v1"
	"github.com/tetrateio/agentrouter-go/genapi/api/tars/auth/v1/authv1connect"
)

// DefaultTimeout bounds a call whose ctx has no deadline, unless [WithTimeout] sets another.
const DefaultTimeout = 10 * time.Second

// userAgent names the SDK and its version on every call, then connect's own.
var userAgent = fmt.Sprintf("agentrouter-sdk-go/%s connect-go/%s (%s)", Version, connect.Version, runtime.Version())

// config is what the options set; [New] checks it.
type config struct {
	baseURL    string
	apiKey     string
	httpClient *http.Client
	timeout    time.Duration
	maxBytes   int
}

// Option configures a [Client]; pass options to [New].
type Option func(*config)

// WithBaseURL sets the endpoint: an absolute http:// or https:// URL with a host, and no
// query or fragment. It may carry a path prefix, with or without a trailing slash
// ("https://h/prefix" calls "https://h/prefix/agentrouter.auth.v1.AuthService/GetJWKS").
// It is required.
func WithBaseURL(baseURL string) Option {
	return func(c *config) { c.baseURL = baseURL }
}

// WithAPIKey sets the API key, sent as "Authorization: Bearer <key>" on every call. An empty
// key (the default) sends no Authorization header.
func WithAPIKey(apiKey string) Option {
	return func(c *config) { c.apiKey = apiKey }
}

// WithHTTPClient sets the HTTP client the calls go through (for a proxy, TLS settings or
// instrumentation). The default is [http.DefaultClient]. Its own Timeout, if any, applies on
// top of the call's deadline. The SDK calls through a copy of it, whose redirect policy (the
// client's own, then the SDK's) never follows a redirect from https to http and never sends
// the API key to another origin (scheme, host and port), and whose transport bounds each
// response (see [WithMaxResponseBytes]).
func WithHTTPClient(httpClient *http.Client) Option {
	return func(c *config) { c.httpClient = httpClient }
}

// WithTimeout sets the default timeout of a call whose ctx has no deadline; it must be
// positive. A ctx that has a deadline keeps it. The default is [DefaultTimeout].
func WithTimeout(timeout time.Duration) Option {
	return func(c *config) { c.timeout = timeout }
}

// WithMaxResponseBytes bounds the size of a response, both as received and decompressed; it
// must be positive. A call whose response is larger fails with connect.CodeResourceExhausted
// without reading the rest. The default is [DefaultMaxResponseBytes] (4 MiB).
func WithMaxResponseBytes(maxBytes int) Option {
	return func(c *config) { c.maxBytes = maxBytes }
}

// Client is an AgentRouter endpoint, with one client per service. It is safe for concurrent
// use; make one and reuse it.
type Client struct {
	auth *AuthClient
	// What a [KeySetCache] over this client needs to send its own GETs: the SDK's HTTP client
	// (redirect rule and response bound), the base URL, the API key and the default timeout.
	baseURL string
	apiKey  string
	http    *http.Client
	timeout time.Duration
}

// New returns a client for the endpoint set by [WithBaseURL]. It makes no network call, and
// returns an error (never panics) when an option is missing or invalid. ctx is not retained.
func New(ctx context.Context, opts ...Option) (*Client, error) {
	cfg := config{httpClient: http.DefaultClient, timeout: DefaultTimeout, maxBytes: DefaultMaxResponseBytes}
	for _, opt := range opts {
		if opt != nil {
			opt(&cfg)
		}
	}
	baseURL, err := checkBaseURL(cfg.baseURL)
	if err != nil {
		return nil, err
	}
	if cfg.httpClient == nil {
		return nil, errors.New("agentrouter: WithHTTPClient: the HTTP client is nil")
	}
	if cfg.timeout <= 0 {
		return nil, fmt.Errorf("agentrouter: WithTimeout: the timeout must be positive, got %v", cfg.timeout)
	}
	if cfg.maxBytes <= 0 {
		return nil, fmt.Errorf("agentrouter: WithMaxResponseBytes: the limit must be positive, got %d", cfg.maxBytes)
	}
	httpClient := sdkHTTPClient(cfg.httpClient, int64(cfg.maxBytes))
	options := []connect.ClientOption{
		connect.WithInterceptors(headerInterceptor(cfg.apiKey)),
		// HTTP GET (the method has no side effects), so HTTP caches can serve it; the binary
		// Protobuf codec is connect's default.
		connect.WithHTTPGet(),
		// connect's own bound of a message, on the wire and decompressed: resource_exhausted.
		connect.WithReadMaxBytes(cfg.maxBytes),
	}
	return &Client{
		auth: &AuthClient{
			client:  authv1connect.NewAuthServiceClient(httpClient, baseURL, options...),
			timeout: cfg.timeout,
		},
		baseURL: baseURL,
		apiKey:  cfg.apiKey,
		http:    httpClient,
		timeout: cfg.timeout,
	}, nil
}

// Auth returns the client of AuthService.
func (c *Client) Auth() *AuthClient {
	return c.auth
}

// AuthClient calls AuthService: the public key set that verifies AgentRouter's tokens.
// Get one from [Client.Auth].
type AuthClient struct {
	client  authv1connect.AuthServiceClient
	timeout time.Duration
}

// GetJWKS returns the JSON Web Key Set that verifies AgentRouter's tokens (RFC 7517). It is
// sent as a Connect GET, so HTTP caches can serve it. A nil req is sent as an empty request.
// When ctx has no deadline, the client's default timeout applies. A failed call returns a
// *connect.Error with the Connect code and the server's message.
func (x *AuthClient) GetJWKS(ctx context.Context, req *authv1.GetJWKSRequest) (*authv1.GetJWKSResponse, error) {
	if req == nil {
		req = &authv1.GetJWKSRequest{}
	}
	ctx, cancel := x.withTimeout(ctx)
	defer cancel()
	resp, err := x.client.GetJWKS(ctx, connect.NewRequest(req))
	if err != nil {
		// An error from the SDK's transport (a response over the limit) reaches here inside
		// net/http's *url.Error: return the *connect.Error itself, as for any other failure.
		var cerr *connect.Error
		if errors.As(err, &cerr) {
			return nil, cerr
		}
		return nil, err
	}
	return resp.Msg, nil
}

// GetOpenIDConfiguration returns the issuer's OpenID Connect Discovery document: its issuer
// and where its key set is (jwks_uri). It is sent as a Connect GET. A nil req is sent as an
// empty request. A server with no issuer configured answers connect.CodeNotFound.
func (x *AuthClient) GetOpenIDConfiguration(ctx context.Context, req *authv1.GetOpenIDConfigurationRequest) (*authv1.GetOpenIDConfigurationResponse, error) {
	if req == nil {
		req = &authv1.GetOpenIDConfigurationRequest{}
	}
	ctx, cancel := x.withTimeout(ctx)
	defer cancel()
	resp, err := x.client.GetOpenIDConfiguration(ctx, connect.NewRequest(req))
	if err != nil {
		var cerr *connect.Error
		if errors.As(err, &cerr) {
			return nil, cerr
		}
		return nil, err
	}
	return resp.Msg, nil
}

// withTimeout gives ctx the client's default timeout unless it already has a deadline.
func (x *AuthClient) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx == nil {
		ctx = context.Background()
	}
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, x.timeout)
}

// headerInterceptor sets the User-Agent, and the API key as a bearer token, on every call.
func headerInterceptor(apiKey string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("User-Agent", userAgent)
			if apiKey != "" {
				req.Header().Set("Authorization", "Bearer "+apiKey)
			}
			return next(ctx, req)
		}
	}
}

// checkBaseURL returns the base URL as the generated client wants it, or why it is unusable.
func checkBaseURL(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("agentrouter: no base URL: WithBaseURL must give the endpoint's http:// or https:// URL")
	}
	bad := func(why string) error {
		return fmt.Errorf("agentrouter: base URL %q: %s", raw, why)
	}
	parsed, err := url.Parse(raw)
	if err != nil {
		return "", bad("not a URL")
	}
	if parsed.Scheme != "http" && parsed.Scheme != "https" {
		return "", bad("must be an absolute http:// or https:// URL")
	}
	if parsed.Opaque != "" || parsed.Host == "" || parsed.Hostname() == "" {
		return "", bad("has no host")
	}
	if parsed.User != nil {
		// Not echoed: the message would repeat the credential.
		return "", fmt.Errorf("agentrouter: base URL must not carry credentials in user:password@ (use WithAPIKey)")
	}
	if parsed.RawQuery != "" || parsed.ForceQuery {
		return "", bad("must not have a query")
	}
	if parsed.Fragment != "" || strings.Contains(raw, "#") {
		return "", bad("must not have a fragment")
	}
	return strings.TrimRight(raw, "/"), nil
}
