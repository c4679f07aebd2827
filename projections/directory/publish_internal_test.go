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
