package agentrouter_test

import (
	"context"
	"slices"
	"testing"
)

func TestServerGetJWKSReturnsTheServedKids(t *testing.T) {
	t.Parallel()
	want := servedKids(t)
	for _, baseURL := range []string{serverURL(t), serverURL(t) + "/"} {
		resp, err := getJWKS(context.Background(), t, baseURL)
		if err != nil {
			t.Fatalf("GetJWKS via %s: %v", baseURL, err)
		}
		var got []string
		for _, key := range resp.GetKeys() {
			got = append(got, key.GetKid())
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("GetJWKS via %s: kids %v, want %v", baseURL, got, want)
		}
	}
}
