package domain_test

import (
	"math/big"
	"testing"

	"github.com/caledger/caledger/domain"
)

// TestSerial: a serial is valid exactly when it is the lower-case hex, without
// leading zeros, of a positive number that DER encodes in at most 20 octets,
// and Int returns that number.
func TestSerial(t *testing.T) {
	max := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 159), big.NewInt(1)) // 159 bits: 20 octets
	for _, tc := range []struct {
		s    domain.Serial
		want *big.Int
	}{
		{"1", big.NewInt(1)},
		{"7a", big.NewInt(0x7a)},
		{domain.Serial(max.Text(16)), max},
		{"", nil},
		{"0", nil},
		{"07a", nil},  // a leading zero
		{"7A", nil},   // upper case
		{"-7a", nil},  // negative
		{"0x7a", nil}, // a prefix
		{"7a ", nil},
		{domain.Serial("8" + max.Text(16)[1:]), nil},                        // 160 bits: 21 octets
		{domain.Serial(new(big.Int).Lsh(big.NewInt(1), 160).Text(16)), nil}, // 41 digits
	} {
		n, ok := tc.s.Int()
		if ok != tc.s.Valid() {
			t.Errorf("%q: Int says %v, Valid %v", tc.s, ok, tc.s.Valid())
		}
		switch {
		case tc.want == nil && ok:
			t.Errorf("%q: Int = %v, want refused", tc.s, n)
		case tc.want != nil && (!ok || n.Cmp(tc.want) != 0):
			t.Errorf("%q: Int = %v, %v, want %v", tc.s, n, ok, tc.want)
		}
	}
}
