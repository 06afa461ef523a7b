package agentrouter

import "testing"

// A JWK Set's member names are matched exactly: "KEYS" is not "keys" (RFC 7517 §5; JSON
// member names are case-sensitive), so such a document is not a set.
func TestKeySetMemberNamesAreExact(t *testing.T) {
	body := []byte(`{"KEYS":[{"kty":"OKP","crv":"Ed25519","kid":"k","use":"sig","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`)
	if keys, err := parseKeySet(body); err == nil {
		t.Fatalf(`{"KEYS":[...]} read as a set of %d keys, want an error`, len(keys))
	}
}
