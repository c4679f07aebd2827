package audit

import (
	"math/big"
	"strings"
	"testing"

	"github.com/caledger/caledger/domain"
)

// TestStreamIDs: the streams of one subject or certificate are keyed by
// their ids' bytes and named again exactly; no other stream gets such a key,
// so two streams never share one.
func TestStreamIDs(t *testing.T) {
	max := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 159), big.NewInt(1))
	id := "0123456789abcdef0123456789abcdef"
	for _, name := range []string{
		"cert-1", "cert-a", "cert-10", "cert-" + max.Text(16), "cert-" + strings.Repeat("f", 39),
		"subject-" + id, "access-" + id, "vault-" + id, "subject-" + strings.Repeat("0", 32),
	} {
		k, ok := parseStreamID(name)
		if !ok {
			t.Errorf("%s: no streamID", name)
			continue
		}
		if got := k.name(); got != name {
			t.Errorf("%s: named again %s", name, got)
		}
	}
	seen := map[streamID]string{}
	for _, s := range []string{"1", "10", "100", "a", "a0", "1f", "f1"} {
		k, _ := parseStreamID("cert-" + s)
		if other, dup := seen[k]; dup {
			t.Errorf("cert-%s and %s share a key", s, other)
		}
		seen[k] = "cert-" + s
		if got := keyOfSerial(domain.Serial(s)).serial(); got != domain.Serial(s) {
			t.Errorf("serial %s comes back as %s", s, got)
		}
	}
	k1, _ := parseStreamID("subject-" + id)
	k2, _ := parseStreamID("access-" + id)
	if k1 == k2 {
		t.Error("a subject's stream and its access stream share a key")
	}
	for _, name := range []string{
		"cert-", "cert-0", "cert-01", "cert-A", "cert-" + new(big.Int).Lsh(big.NewInt(1), 159).Text(16),
		"subject-" + id[:31], "subject-" + strings.ToUpper(id), "access-" + id + "0", "vault.epochs", "vault.kek",
		"ca-issuing", "cert", "subject", "sha256:" + strings.Repeat("ab", 32), "other-" + id, "",
	} {
		if k, ok := parseStreamID(name); ok {
			t.Errorf("%q: keyed as %s, want its name kept", name, k.name())
		}
	}
}
