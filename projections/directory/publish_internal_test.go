package directory

import (
	"testing"

	"github.com/caledger/caledger/domain"
)

// TestSetUnpublishedKicksOnce: a subject left unpublished brings the next
// sweep forward once; the same subject failing again in that sweep does not,
// so the sweep loop's backoff holds.
func TestSetUnpublishedKicksOnce(t *testing.T) {
	p := &Publisher{unpublished: map[domain.SubjectID]bool{}, kick: make(chan struct{}, 1)}
	kicked := func() bool {
		select {
		case <-p.kick:
			return true
		default:
			return false
		}
	}
	const a, b = domain.SubjectID("0123456789abcdef0123456789abcdef"), domain.SubjectID("fedcba9876543210fedcba9876543210")
	p.setUnpublished(a, true)
	if !kicked() {
		t.Fatal("a newly unpublished subject did not bring the sweep forward")
	}
	p.setUnpublished(a, true)
	if kicked() {
		t.Error("the same subject, still unreadable, brought the sweep forward again")
	}
	p.setUnpublished(b, true)
	if !kicked() {
		t.Error("a second subject did not bring the sweep forward")
	}
	p.setUnpublished(a, false)
	p.setUnpublished(a, true)
	if !kicked() {
		t.Error("a subject unpublished again after it was published did not bring the sweep forward")
	}
}

// TestDigest: the digest of an entry's managed attributes ignores the order
// of an attribute's values, and tells apart values split or moved
// differently.
func TestDigest(t *testing.T) {
	of := func(m map[string][]string) [32]byte { return digest(func(name string) []string { return m[name] }) }
	base := of(map[string][]string{"cn": {"a", "b"}, "sn": {"c"}})
	if of(map[string][]string{"cn": {"b", "a"}, "sn": {"c"}}) != base {
		t.Error("the order of an attribute's values changed the digest")
	}
	for name, m := range map[string]map[string][]string{
		"values joined":             {"cn": {"ab"}, "sn": {"c"}},
		"a value moved to the next": {"cn": {"a"}, "sn": {"b", "c"}},
		"a value repeated":          {"cn": {"a", "b", "b"}, "sn": {"c"}},
		"an attribute added":        {"cn": {"a", "b"}, "sn": {"c"}, "mail": {""}},
		"an unmanaged attribute":    {"cn": {"a", "b"}, "sn": {"c"}, "description": {"x"}},
	} {
		if got := of(m) == base; got != (name == "an unmanaged attribute") {
			t.Errorf("%s: same digest = %v", name, got)
		}
	}
}

// TestWrittenSinceListing: an entry written or removed while a sweep runs is
// not judged by the digest that sweep listed; outside a sweep nothing is
// recorded.
func TestWrittenSinceListing(t *testing.T) {
	p := &Publisher{}
	const id = domain.SubjectID("0123456789abcdef0123456789abcdef")
	p.writing(id)
	if p.writtenSinceListing(id) {
		t.Fatal("a write outside a sweep was recorded")
	}
	p.sinceListing = map[domain.SubjectID]bool{}
	if p.writtenSinceListing(id) {
		t.Fatal("a subject not written since the listing counts as written")
	}
	p.writing(id)
	if !p.writtenSinceListing(id) {
		t.Fatal("a write during the sweep was not recorded")
	}
}
