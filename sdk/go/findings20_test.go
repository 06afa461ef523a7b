package agentrouter

import (
	"encoding/base64"
	"testing"
)

// A JWK Set's member names are matched exactly: "KEYS" is not "keys" (RFC 7517 §5; JSON
// member names are case-sensitive), so such a document is not a set.
func TestKeySetMemberNamesAreExact(t *testing.T) {
	body := []byte(`{"KEYS":[{"kty":"OKP","crv":"Ed25519","kid":"k","use":"sig","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`)
	if keys, err := parseKeySet(body); err == nil {
		t.Fatalf(`{"KEYS":[...]} read as a set of %d keys, want an error`, len(keys))
	}
}

// Every token part is canonical unpadded base64url: a newline, padding or nonzero unused bits
// in the last character make the token invalid (Go's decoder alone skips \r and \n).
func TestTokenPartsAreCanonicalBase64url(t *testing.T) {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"ES256","kid":"k","typ":"JWT"}`))
	body := enc.EncodeToString([]byte(`{"sub":"s"}`))
	sig := enc.EncodeToString(make([]byte, 64)) // 86 characters, the last holding 4 unused bits
	if _, err := readHeader(head + "." + body + "." + sig); err != nil {
		t.Fatalf("the canonical token: %v", err)
	}
	for name, token := range map[string]string{
		"newline in header":   head[:4] + "\n" + head[4:] + "." + body + "." + sig,
		"crlf in payload":     head + "." + body[:3] + "\r\n" + body[3:] + "." + sig,
		"trailing newline":    head + "." + body + "." + sig + "\n",
		"padded signature":    head + "." + body + "." + sig + "==",
		"nonzero unused bits": head + "." + body + "." + sig[:len(sig)-1] + "B",
		"non-ASCII payload":   head + "." + body + "é." + sig,
	} {
		if _, err := readHeader(token); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
