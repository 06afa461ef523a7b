package agentrouter

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/big"
	"testing"
)

// Keys that would let a forged token verify are refused at load: an Ed25519 x of small order
// (the eight points of order 1, 2, 4 or 8 and their non-canonical sign bits), an RSA key with
// e < 3 or an even e, or a modulus below 2048 bits. A sound key of each kind is kept, so the
// test fails if the checks refused everything.
func TestWeakKeysAreRefusedAtLoad(t *testing.T) {
	b64 := base64.RawURLEncoding.EncodeToString
	okp := func(x []byte) string {
		return fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","kid":"k","x":%q}`, b64(x))
	}
	rsaJWK := func(n *big.Int, e int64) string {
		return fmt.Sprintf(`{"kty":"RSA","alg":"RS256","kid":"k","n":%q,"e":%q}`, b64(n.Bytes()), b64(big.NewInt(e).Bytes()))
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	strong, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	short, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := parseKey([]byte(okp(edPub))); !ok {
		t.Fatal("a generated Ed25519 key was refused")
	}
	if _, ok := parseKey([]byte(rsaJWK(strong.N, 65537))); !ok {
		t.Fatal("a 2048-bit RSA key with e=65537 was refused")
	}
	weak := map[string]string{
		"RSA e=1":          rsaJWK(strong.N, 1),
		"RSA e=2":          rsaJWK(strong.N, 2),
		"RSA e=65536":      rsaJWK(strong.N, 65536),
		"RSA 1024 bits":    rsaJWK(short.N, 65537),
		"EC off the curve": `{"kty":"EC","crv":"P-256","alg":"ES256","kid":"k","x":"AQ","y":"AQ"}`,
	}
	for _, point := range []string{
		"0100000000000000000000000000000000000000000000000000000000000000",
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0000000000000000000000000000000000000000000000000000000000000080",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
		"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
		"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
		"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
		"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
		"0100000000000000000000000000000000000000000000000000000000000080",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	} {
		x, err := hex.DecodeString(point)
		if err != nil {
			t.Fatal(err)
		}
		weak["Ed25519 "+point] = okp(x)
	}
	for name, jwk := range weak {
		if _, ok := parseKey([]byte(jwk)); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}
