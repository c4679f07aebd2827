package audit

import (
	"bytes"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"

	"github.com/caledger/caledger/crypto/checkpoint"
	"github.com/caledger/caledger/domain"
)

// evidenceRig is a ledger of five events, its Merkle tree, and the key that
// signs its checkpoints.
type evidenceRig struct {
	l        *ledger
	tree     *testonly.Tree
	signer   *checkpoint.Signer
	verifier note.Verifier
}

func newEvidenceRig(t testing.TB) *evidenceRig {
	t.Helper()
	l := newLedger(t)
	l.add(domain.SubjectStream(s1), domain.SubjectRegistered{SubjectID: s1, Attributes: []string{"email"}}, s1, domain.GroupIdentity)
	l.add("cert-a1", domain.CertificateIssued{Serial: "a1", SubjectID: s1, NotAfter: l.now}, s1, domain.GroupIdentity)
	l.add(domain.SubjectStream(s9), domain.SubjectRegistered{SubjectID: s9, Attributes: []string{"email"}}, s9, domain.GroupIdentity)
	l.add(domain.SubjectStream(s1), domain.SubjectErased{SubjectID: s1, Basis: domain.BasisErasureRequest}, "", "")
	l.add("cert-a1", domain.CertificateDeleted{Serial: "a1"}, "", "")
	tree := testonly.New(rfc6962.DefaultHasher)
	tree.AppendData(l.events...)
	key, err := checkpoint.GenerateKey("caledger.ledger/0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	s, err := checkpoint.New(key)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(s.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	return &evidenceRig{l: l, tree: tree, signer: s, verifier: v}
}

// checkpoint signs the checkpoint of the ledger's first size events.
func (r *evidenceRig) checkpoint(t testing.TB, size uint64) []byte {
	t.Helper()
	b, err := r.signer.Sign(size, r.tree.HashAt(size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// proof is the inclusion proof of the event at position in the tree of size
// events.
func (r *evidenceRig) proof(t testing.TB, position, size uint64) [][]byte {
	t.Helper()
	p, err := r.tree.InclusionProof(position-1, size)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVerifyEvidence: each event of the ledger verifies under checkpoints of
// every size that covers it; evidence that is wrong in any part is refused,
// saying which part.
func TestVerifyEvidence(t *testing.T) {
	r := newEvidenceRig(t)
	n := uint64(len(r.l.events))
	for size := uint64(1); size <= n; size++ {
		cp := r.checkpoint(t, size)
		for pos := uint64(1); pos <= size; pos++ {
			e, got, err := VerifyEvidence(r.verifier, pos, r.l.events[pos-1], cp, r.proof(t, pos, size))
			if err != nil {
				t.Fatalf("position %d in a checkpoint of %d: %v", pos, size, err)
			}
			if e.Position != pos || got.Size != size || !bytes.Equal(got.Hash, r.tree.HashAt(size)) {
				t.Fatalf("position %d in a checkpoint of %d: event at %d, checkpoint %d %x", pos, size, e.Position, got.Size, got.Hash)
			}
		}
	}

	other := newEvidenceRig(t) // the same events, another log key
	cp := r.checkpoint(t, n)
	tampered := bytes.Clone(r.l.events[3])
	tampered[len(tampered)-2] ^= 1 // in the public JSON: it still decodes
	forgedCP := bytes.Clone(cp)
	forgedCP[len(forgedCP)-5] ^= 1
	for name, c := range map[string]struct {
		position  uint64
		canonical []byte
		cp        []byte
		proof     [][]byte
		want      string
	}{
		"another log's checkpoint": {4, r.l.events[3], other.checkpoint(t, n), r.proof(t, 4, n), "checkpoint does not verify"},
		"a forged signature":       {4, r.l.events[3], forgedCP, r.proof(t, 4, n), "checkpoint does not verify"},
		"not an event":             {4, []byte("an event"), cp, r.proof(t, 4, n), "does not decode"},
		"a changed event":          {4, tampered, cp, r.proof(t, 4, n), "does not place the event"},
		"another position":         {3, r.l.events[3], cp, r.proof(t, 3, n), "recorded at position 4, not 3"},
		"position 0":               {0, r.l.events[3], cp, nil, "not 0"},
		"beyond the checkpoint":    {5, r.l.events[4], r.checkpoint(t, 4), r.proof(t, 4, 4), "beyond the checkpoint's 4 events"},
		"another event's proof":    {4, r.l.events[3], cp, r.proof(t, 3, n), "does not place the event"},
		"a proof of another size":  {4, r.l.events[3], cp, r.proof(t, 4, n-1), "does not place the event"},
		"no proof":                 {4, r.l.events[3], cp, nil, "does not place the event"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := VerifyEvidence(r.verifier, c.position, c.canonical, c.cp, c.proof)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error with %q, got %v", c.want, err)
			}
		})
	}
}

// FuzzVerifyEvidence feeds VerifyEvidence any evidence, as a receipt file
// could carry it. It must not panic, and whatever it accepts under the
// rig's key must be an event of the ledger at its own position: without the
// key, no bytes outside the ledger get in.
func FuzzVerifyEvidence(f *testing.F) {
	r := newEvidenceRig(f)
	n := uint64(len(r.l.events))
	join := func(p [][]byte) []byte { return bytes.Join(p, nil) }
	for size := uint64(1); size <= n; size++ {
		cp := r.checkpoint(f, size)
		for pos := uint64(1); pos <= size; pos++ {
			f.Add(pos, r.l.events[pos-1], cp, join(r.proof(f, pos, size)))
		}
	}
	f.Add(uint64(0), []byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, position uint64, canonical, cp, proofBytes []byte) {
		var proof [][]byte
		for p := proofBytes; len(p) > 0; {
			k := min(len(p), 32)
			proof, p = append(proof, p[:k]), p[k:]
		}
		kept := bytes.Clone(canonical)
		e, got, err := VerifyEvidence(r.verifier, position, canonical, cp, proof)
		if !bytes.Equal(canonical, kept) {
			t.Fatal("VerifyEvidence changed the event's bytes")
		}
		if err != nil {
			return
		}
		if position == 0 || position > got.Size || got.Size > n || e.Position != position {
			t.Fatalf("accepted position %d (event at %d) in a checkpoint of %d events", position, e.Position, got.Size)
		}
		if !bytes.Equal(canonical, r.l.events[position-1]) {
			t.Fatalf("accepted bytes that are not the ledger's event at position %d", position)
		}
		if !bytes.Equal(got.Hash, r.tree.HashAt(got.Size)) {
			t.Fatalf("accepted a checkpoint of %d events whose root is not the ledger's", got.Size)
		}
	})
}
