package datakey_test

import (
	"testing"

	"github.com/caledger/caledger/crypto/datakey"
)

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		tombs, groups []string
		want          bool
	}{
		{nil, nil, false},
		{[]string{"identity"}, nil, false},
		{[]string{"*"}, nil, true},
		{[]string{"*"}, []string{"identity"}, true},
		{[]string{"identity"}, []string{"identity"}, true},
		{[]string{"identity"}, []string{"identity", "national-id"}, false},
		{[]string{"national-id", "identity"}, []string{"identity", "national-id"}, true},
		{nil, []string{"identity"}, false},
	} {
		if got := datakey.Covers(tc.tombs, tc.groups...); got != tc.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tc.tombs, tc.groups, got, tc.want)
		}
	}
}
