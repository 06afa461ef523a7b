// Package agentrouter is the Go client SDK of AgentRouter.
//
// A [Client] talks to one AgentRouter endpoint over the Connect protocol (binary Protobuf),
// with one client per service: [Client.Auth] returns the [AuthClient] of AuthService, whose
// [AuthClient.GetJWKS] fetches the public keys that verify AgentRouter's tokens. The messages
// are in the package github.com/tetrateio/agentrouter-go/genapi/api/tars/auth/v1 (authv1).
//
//	client, err := agentrouter.New(ctx,
//		agentrouter.WithBaseURL("https://agentrouter.example.com"),
//		agentrouter.WithAPIKey(os.Getenv("AGENTROUTER_API_KEY")),
//	)
//	if err != nil {
//		log.Fatalf("client: %v", err)
//	}
//	resp, err := client.Auth().GetJWKS(ctx, &authv1.GetJWKSRequest{})
//	if err != nil {
//		log.Fatalf("call: %v", err)
//	}
//	for _, key := range resp.GetKeys() {
//		fmt.Println(key.GetKid())
//	}
//
// Every call sends the API key as "Authorization: Bearer <key>" (no Authorization header when
// the key is empty) and a User-Agent starting with "agentrouter-sdk-go/" and [Version]. A call
// whose ctx has no deadline gets the client's default timeout ([DefaultTimeout], or the one
// given to [WithTimeout]); a ctx that has a deadline keeps it. The deadline travels to the
// server as the Connect timeout.
//
// A [KeySetCache] keeps the key set as the server's HTTP caching says (max-age, If-None-Match,
// stale-while-revalidate, stale-if-error), and a [Verifier] checks tokens with it:
//
//	keys, err := agentrouter.NewKeySetCache(client)
//	verifier, err := agentrouter.NewVerifier(keys,
//		agentrouter.WithIssuer("https://auth.example.com"), agentrouter.WithAudience("api"))
//	claims, err := verifier.Verify(ctx, token) // ErrInvalidToken or ErrKeysUnavailable
//
// A failed call returns a *connect.Error carrying the Connect code and the server's message:
//
//	var cerr *connect.Error
//	if errors.As(err, &cerr) && cerr.Code() == connect.CodeUnavailable {
//		// retry later
//	}
package agentrouter
