package projections

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caledger/caledger/domain"
)

// wantStatus fails t unless CertificateStatus says issued and revoked (with
// reason) of serial under CA "issuing".
func wantStatus(t *testing.T, v *Views, serial domain.Serial, issued, revoked bool, reason domain.RevocationReason, when string) {
	t.Helper()
	st, err := v.CertificateStatus(context.Background(), "issuing", serial)
	if err != nil || st.Issued != issued || st.Revoked != revoked || st.Reason != reason || st.RevokedAt.IsZero() == revoked {
		t.Errorf("%s: CertificateStatus = %+v, %v; want issued %v, revoked %v, reason %d", when, st, err, issued, revoked, reason)
	}
}

// issuedViews returns running views (and the function that stops them) of a
// ledger in which one subject holds n certificates of CA "issuing", all
// applied.
func issuedViews(t *testing.T, n int) (*rig, *Views, []domain.Issued, func() error) {
	t.Helper()
	r := newRig(t)
	v := r.open(t, r.viewsPath())
	stop := run(t, v, r.store)
	id := r.register(t, survivor)
	certs := make([]domain.Issued, n)
	for i := range certs {
		certs[i] = r.issue(t, id, "issuing")
	}
	r.sync(t, v)
	return r, v, certs, stop
}

// TestStatusCacheFollowsCommits: once WaitFor has returned for an issuance, a
// revocation or a deletion, CertificateStatus says so, though the serial's
// earlier answer was cached; a Rebuild empties the cache with the views.
func TestStatusCacheFollowsCommits(t *testing.T) {
	ctx := context.Background()
	r, v, certs, stop := issuedViews(t, 2)
	c, other := certs[0], certs[1]

	wantStatus(t, v, c.Serial, true, false, 0, "issued")
	wantStatus(t, v, other.Serial, true, false, 0, "another, issued")
	if _, _, ok := v.status.get("issuing", c.Serial); !ok {
		t.Fatal("the answer was not cached: this test would prove nothing")
	}

	must(t, r.h.RevokeCertificate(ctx, officer, c.Serial, domain.ReasonKeyCompromise))
	r.sync(t, v)
	wantStatus(t, v, c.Serial, true, true, domain.ReasonKeyCompromise, "revoked")
	if _, _, ok := v.status.get("issuing", other.Serial); !ok {
		t.Error("a commit dropped the answer of a serial it did not change")
	}

	must(t, r.h.DeleteCertificate(ctx, officer, c.Serial, false))
	r.sync(t, v)
	wantStatus(t, v, c.Serial, true, true, domain.ReasonKeyCompromise, "revoked and deleted")
	must(t, stop())

	// Rebuild empties the views before it replays: no answer cached before it
	// may outlive the reset, also of a serial the replay never touches (views
	// rebuilt after the ledger was restored from an older backup). Cache such
	// an answer as if an earlier ledger had issued it.
	gone := domain.Serial("7e57ab1e")
	v.status.put("issuing", gone, CertificateStatus{Issued: true}, v.status.gen)
	must(t, v.Rebuild(ctx, r.store, nil))
	wantStatus(t, v, gone, false, false, 0, "a serial the rebuilt ledger does not hold")
	wantStatus(t, v, c.Serial, true, true, domain.ReasonKeyCompromise, "after Rebuild")
}

// TestStatusCacheRefusesStaleRead: a CertificateStatus that read SQLite before
// a revocation's commit, and stores its answer after the commit dropped the
// serial, must not leave that answer in the cache.
func TestStatusCacheRefusesStaleRead(t *testing.T) {
	ctx := context.Background()
	r, v, certs, stop := issuedViews(t, 1)
	c := certs[0]

	var once sync.Once
	v.onStatusRead = func() {
		once.Do(func() {
			must(t, r.h.RevokeCertificate(ctx, officer, c.Serial, domain.ReasonSuperseded))
			r.sync(t, v)
		})
	}
	// This read started before the revocation, so "good" is its right answer.
	wantStatus(t, v, c.Serial, true, false, 0, "read before the revocation")
	v.onStatusRead = nil
	wantStatus(t, v, c.Serial, true, true, domain.ReasonSuperseded, "after WaitFor for the revocation")
	must(t, stop())
}

// TestStatusCacheUnderLoad: readers asking about the same certificates
// throughout never see a revoked certificate as good after WaitFor has
// returned for its revocation.
func TestStatusCacheUnderLoad(t *testing.T) {
	ctx := context.Background()
	r, v, certs, stop := issuedViews(t, 12)

	var revoked atomic.Int64 // certs[:revoked] are revoked and synced
	var wrong atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				n := int(revoked.Load())
				k := i % len(certs)
				st, err := v.CertificateStatus(ctx, "issuing", certs[k].Serial)
				if err != nil || !st.Issued || (k < n && !st.Revoked) {
					wrong.Add(1)
				}
			}
		})
	}
	for i, c := range certs {
		must(t, r.h.RevokeCertificate(ctx, officer, c.Serial, domain.ReasonCessationOfOperation))
		r.sync(t, v)
		revoked.Store(int64(i + 1))
	}
	close(done)
	wg.Wait()
	if n := wrong.Load(); n > 0 {
		t.Errorf("%d answers were wrong or older than a revocation WaitFor had returned for", n)
	}
	must(t, stop())
}

func TestStatusCacheBounds(t *testing.T) {
	if newStatusCache(-1) != nil {
		t.Error("a negative size must turn the cache off")
	}
	// Size 0 is the default: half of it fits before the first turn, and no
	// more than all of it is ever held.
	def := newStatusCache(0)
	for i := range DefaultStatusCacheEntries/2 - 1 {
		def.put("ca", domain.Serial(fmt.Sprintf("%x", i+1)), CertificateStatus{}, def.gen)
	}
	if n := def.m.Len(); n != DefaultStatusCacheEntries/2-1 {
		t.Errorf("size 0 holds %d answers before its first turn, want the default's %d", n, DefaultStatusCacheEntries/2-1)
	}
	for i := range 2 * DefaultStatusCacheEntries {
		def.put("ca", domain.Serial(fmt.Sprintf("%x", i+1)), CertificateStatus{}, def.gen)
	}
	if n := def.m.Len(); n > DefaultStatusCacheEntries {
		t.Errorf("size 0 holds %d answers, more than the default's %d", n, DefaultStatusCacheEntries)
	}
	c := newStatusCache(8)
	for i := range 100 {
		c.put("ca", domain.Serial(fmt.Sprintf("%x", i+1)), CertificateStatus{Issued: true}, c.gen)
		if n := c.m.Len(); n > 8 {
			t.Fatalf("after %d answers the cache holds %d, more than 8", i+1, n)
		}
	}
	// The last answers are kept; one found in the old generation moves forward
	// and survives the next turn.
	last := domain.Serial(fmt.Sprintf("%x", 100))
	if _, _, ok := c.get("ca", last); !ok {
		t.Fatal("the last answer is not kept")
	}
	// After 100 answers in halves of 4, the old generation holds 97 to 100
	// (hex 61 to 64), and the get above moved 100 forward.
	oldest := domain.Serial(fmt.Sprintf("%x", 97))
	if _, _, ok := c.get("ca", oldest); !ok {
		t.Fatal("an answer of the old generation is not found")
	}
	for i := range 4 {
		c.put("ca", domain.Serial(fmt.Sprintf("f%x", i)), CertificateStatus{}, c.gen)
	}
	if _, _, ok := c.get("ca", oldest); !ok {
		t.Error("an answer that moved forward was dropped at the next turn")
	}
	if _, _, ok := c.get("other-ca", last); ok {
		t.Error("an answer for one CA was given for another")
	}
	gen := c.gen
	c.drop([]domain.Serial{last})
	if _, _, ok := c.get("ca", last); ok {
		t.Error("a dropped answer is still found")
	}
	c.put("ca", last, CertificateStatus{}, gen)
	if _, _, ok := c.get("ca", last); ok {
		t.Error("put stored an answer read before a drop")
	}
}
