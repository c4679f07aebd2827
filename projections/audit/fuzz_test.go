package audit

import (
	"bytes"
	"testing"

	"github.com/caledger/caledger/domain"
)

// FuzzAdd feeds the replay canonical bytes as a server could serve them: any
// bytes at all. Add must not panic, must add exactly one leaf whatever the
// bytes, and must report a malformed event exactly when domain.Decode does.
func FuzzAdd(f *testing.F) {
	l := newLedger(f)
	l.add(domain.SubjectStream(s1), domain.SubjectRegistered{SubjectID: s1, Attributes: []string{"email"}}, s1, domain.GroupIdentity)
	l.add(domain.SubjectStream(s1), domain.SubjectErased{SubjectID: s1, Basis: domain.BasisErasureRequest}, "", "")
	l.add("cert-a1", domain.CertificateIssued{Serial: "a1", SubjectID: s1, NotAfter: l.now}, s1, domain.GroupIdentity)
	l.add("cert-a1", domain.CertificateDeleted{Serial: "a1"}, "", "")
	for _, e := range l.events {
		f.Add(e, e)
	}
	f.Add([]byte{}, []byte("x"))
	f.Fuzz(func(t *testing.T, first, second []byte) {
		r := New()
		for i, b := range [][]byte{first, second} {
			kept := bytes.Clone(b)
			e, err := r.Add(b)
			if r.Size() != uint64(i+1) {
				t.Fatalf("size %d after %d adds", r.Size(), i+1)
			}
			if _, derr := domain.Decode(kept); (derr == nil) != (err == nil) {
				t.Fatalf("Add error %v, Decode error %v", err, derr)
			}
			if err == nil && e.Stream == "" {
				t.Fatal("a decoded event without a stream")
			}
			if !bytes.Equal(b, kept) {
				t.Fatal("Add changed its input")
			}
		}
		if root, err := r.Root(); err != nil || len(root) != 32 {
			t.Fatalf("root %x, %v", root, err)
		}
		f, total := r.Findings()
		if uint64(len(f)) > total {
			t.Fatalf("%d findings kept, %d counted", len(f), total)
		}
	})
}

// FuzzResume feeds Resume any bytes, as a damaged state file could hold.
// Resume must not panic; a state it accepts must encode again to a state
// that resumes to the same bytes, and must take the next event.
func FuzzResume(f *testing.F) {
	l := richLedger(f)
	for _, cut := range []int{0, 1, 5, len(l.events)} {
		r := New()
		for _, e := range l.events[:cut] {
			r.Add(e)
		}
		b, err := r.MarshalState()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"format":"caledger-audit-replay/1","size":1,"range":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Resume(b)
		if err != nil {
			return
		}
		again, err := r.MarshalState()
		if err != nil {
			t.Fatal(err)
		}
		r2, err := Resume(again)
		if err != nil {
			t.Fatalf("a state MarshalState wrote does not resume: %v\n%s", err, again)
		}
		if twice, _ := r2.MarshalState(); !bytes.Equal(twice, again) {
			t.Fatalf("the state changed on a round trip:\n%s\n%s", again, twice)
		}
		size := r.Size()
		r.Add(l.events[0])
		if r.Size() != size+1 {
			t.Fatalf("size %d after one add to %d", r.Size(), size)
		}
		if root, err := r.Root(); err != nil || len(root) != 32 {
			t.Fatalf("root %x, %v", root, err)
		}
	})
}
