package checkpoint_test

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/caledger/caledger/crypto/checkpoint"
)

// cosigner is a test witness: a cosignature/v1 signer and its verifier key
// (published as a plain Ed25519 key, which ParseWitnesses reads too).
type cosigner struct {
	signer note.Signer
	vkey   string
}

func newCosigner(t testing.TB, name string) cosigner {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	return cosigner{signer: s, vkey: vkey}
}

// newMLDSACosigner is a test witness with an ML-DSA-44 cosignature/v1 key.
func newMLDSACosigner(t testing.TB, name string) cosigner {
	t.Helper()
	skey, vkey, err := fnote.GenerateMLDSAKey(name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	return cosigner{signer: s, vkey: vkey}
}

// answer is what the witness returns to add-checkpoint: its signature lines.
func (c cosigner) answer(t testing.TB, signed []byte) []byte {
	t.Helper()
	text, _, _ := bytes.Cut(signed, []byte("\n\n"))
	out, err := note.Sign(&note.Note{Text: string(text) + "\n"}, c.signer)
	if err != nil {
		t.Fatal(err)
	}
	_, sigs, _ := bytes.Cut(out, []byte("\n\n"))
	return sigs
}

// forge returns answer with the base64 character back bytes before its end
// changed, which lies in the signature when back is small enough.
func forge(answer []byte, back int) []byte {
	forged := bytes.Clone(answer)
	if i := len(forged) - back; forged[i] == 'A' {
		forged[i] = 'B'
	} else {
		forged[i] = 'A'
	}
	return forged
}

func newLog(t testing.TB) (*checkpoint.Signer, note.Verifier, []byte) {
	t.Helper()
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
	signed, err := s.Sign(7, bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s, v, signed
}

func TestWitnessQuorum(t *testing.T) {
	logS, logV, signed := newLog(t)
	a, b, c := newCosigner(t, "witness.test/a"), newCosigner(t, "witness.test/b"), newCosigner(t, "witness.test/c")

	cosigned := bytes.Clone(signed)
	for _, w := range []cosigner{a, b} {
		v, err := checkpoint.NewWitnessVerifier(w.vkey)
		if err != nil {
			t.Fatal(err)
		}
		line, cs, err := checkpoint.CheckCosignature(signed, w.answer(t, signed), v)
		if err != nil {
			t.Fatal(err)
		}
		if cs.Witness != v.Name() || cs.Time.IsZero() {
			t.Fatalf("cosignature %+v", cs)
		}
		cosigned = append(cosigned, line...)
	}

	all, err := checkpoint.ParseWitnesses([]string{a.vkey, b.vkey, c.vkey}, 0, logS.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	if all.Quorum() != 3 {
		t.Fatalf("quorum %d, want all 3", all.Quorum())
	}
	if _, got, err := all.Verify(cosigned, logV); err == nil || !strings.Contains(err.Error(), "2 of the 3") || !strings.Contains(err.Error(), "witness.test/c") || len(got) != 2 {
		t.Fatalf("two of three cosignatures against a quorum of all: %v, %v", got, err)
	}
	two, err := checkpoint.ParseWitnesses([]string{a.vkey, b.vkey, c.vkey}, 2, logS.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	cp, got, err := two.Verify(cosigned, logV)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 7 || len(got) != 2 || got[0].Witness != "witness.test/a" || got[1].Witness != "witness.test/b" {
		t.Fatalf("checkpoint %+v, cosignatures %+v", cp, got)
	}
	// The log's own signature alone meets no quorum.
	if _, _, err := two.Verify(signed, logV); err == nil {
		t.Fatal("a checkpoint with no cosignature met a quorum of 2")
	}
	// Cosignatures moved onto another checkpoint the log signed fail it.
	other, err := logS.Sign(8, bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	_, lines, _ := bytes.Cut(cosigned, []byte("\n\n"))
	_, lines, _ = bytes.Cut(lines, []byte("\n")) // the log's own line
	if _, _, err := two.Verify(append(other, lines...), logV); err == nil || !strings.Contains(err.Error(), "invalid signature for key witness.test/") {
		t.Fatalf("cosignatures of size 7 on a checkpoint of size 8: %v", err)
	}
}

// TestWitnessMLDSA: a witness with an ML-DSA-44 key cosigns beside an
// Ed25519 one; its cosignature is checked, dated and counted, and a forged
// or misplaced one is refused.
func TestWitnessMLDSA(t *testing.T) {
	logS, logV, signed := newLog(t)
	a, m := newCosigner(t, "witness.test/a"), newMLDSACosigner(t, "witness.test/pq")
	if !strings.Contains(m.vkey, "+") || len(m.vkey) < 1000 {
		t.Fatalf("%q is not an ML-DSA-44 verifier key", m.vkey)
	}
	before := time.Now().Add(-time.Second)
	cosigned := bytes.Clone(signed)
	for _, w := range []cosigner{a, m} {
		v, err := checkpoint.NewWitnessVerifier(w.vkey)
		if err != nil {
			t.Fatal(err)
		}
		line, cs, err := checkpoint.CheckCosignature(signed, w.answer(t, signed), v)
		if err != nil {
			t.Fatalf("%s: %v", v.Name(), err)
		}
		if cs.Witness != v.Name() || cs.Time.Before(before.Truncate(time.Second)) || cs.Time.After(time.Now()) {
			t.Fatalf("cosignature %+v", cs)
		}
		cosigned = append(cosigned, line...)
	}
	all, err := checkpoint.ParseWitnesses([]string{a.vkey, m.vkey}, 0, logS.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	cp, got, err := all.Verify(cosigned, logV)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 7 || len(got) != 2 || got[1].Witness != "witness.test/pq" {
		t.Fatalf("checkpoint %+v, cosignatures %+v", cp, got)
	}

	vm, err := checkpoint.NewWitnessVerifier(m.vkey)
	if err != nil {
		t.Fatal(err)
	}
	// A byte of the ML-DSA signature changed; the cosignature of another
	// checkpoint of the log.
	if _, _, err := checkpoint.CheckCosignature(signed, forge(m.answer(t, signed), 20), vm); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("a forged ML-DSA cosignature: %v", err)
	}
	other, err := logS.Sign(8, bytes.Repeat([]byte{2}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := checkpoint.CheckCosignature(signed, m.answer(t, other), vm); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("an ML-DSA cosignature of another checkpoint: %v", err)
	}
	// One ML-DSA key under two names counts once.
	renamed := strings.Replace(m.vkey, "witness.test/pq+", "witness.test/pq2+", 1)
	if _, err := checkpoint.ParseWitnesses([]string{m.vkey, renamed}, 0, logS.VerifierKey()); err == nil || !strings.Contains(err.Error(), "share a key") {
		t.Fatalf("one ML-DSA key under two names: %v", err)
	}
}

func TestCheckCosignatureRefuses(t *testing.T) {
	logS, _, signed := newLog(t)
	a, b := newCosigner(t, "witness.test/a"), newCosigner(t, "witness.test/b")
	va, err := checkpoint.NewWitnessVerifier(a.vkey)
	if err != nil {
		t.Fatal(err)
	}
	// Another witness's answer, an empty one, one that is not lines, and a
	// forged signature are all refused.
	// A character near the end of the base64 lies in the Ed25519 signature
	// (after the key hash and the timestamp).
	forged := forge(a.answer(t, signed), 8)
	for name, c := range map[string]struct {
		answer []byte
		want   string
	}{
		"another witness's": {b.answer(t, signed), "holds no cosignature of witness.test/a"},
		"empty":             {nil, "not signature lines"},
		"not lines":         {[]byte("— witness.test/a AAAA"), "not signature lines"},
		"a bad line":        {[]byte("— witness.test/a AAAA\n"), "holds no cosignature of witness.test/a"},
		"forged":            {forged, "does not verify"},
	} {
		if _, _, err := checkpoint.CheckCosignature(signed, c.answer, va); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s answer: want an error with %q, got %v", name, c.want, err)
		}
	}
	// A witness given twice, one key under two names, the log's own key as
	// a witness's, and quorums that cannot be met are refused.
	logVKey := logS.VerifierKey()
	renamed := strings.Replace(a.vkey, "witness.test/a+", "witness.test/z+", 1)
	sameName := strings.Replace(b.vkey, "witness.test/b+", "witness.test/a+", 1)
	for name, c := range map[string]struct {
		keys []string
		want string
	}{
		"twice":                {[]string{a.vkey, a.vkey}, "named twice"},
		"one name, two keys":   {[]string{a.vkey, sameName}, "named twice"},
		"one key, two names":   {[]string{a.vkey, renamed}, "share a key"},
		"the log's key":        {[]string{a.vkey, logVKey}, "the log's own key"},
		"the log's key, named": {[]string{strings.Replace(logVKey, logS.Origin()+"+", "witness.test/log+", 1)}, "the log's own key"},
	} {
		if _, err := checkpoint.ParseWitnesses(c.keys, 1, logVKey); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want an error with %q, got %v", name, c.want, err)
		}
	}
	for _, q := range []int{-1, 2} {
		if _, err := checkpoint.ParseWitnesses([]string{a.vkey}, q, logVKey); err == nil {
			t.Errorf("a quorum of %d of one witness was accepted", q)
		}
	}
	if _, err := checkpoint.ParseWitnesses(nil, 0, logVKey); err == nil {
		t.Error("no witness keys were accepted")
	}
}

// TestCheckAge checks the bound on the cosignatures' age: the quorum must
// be fresh, a cosignature from the future counts as fresh, and the error
// says how old the newest is.
func TestCheckAge(t *testing.T) {
	logS, _, _ := newLog(t)
	a, b := newCosigner(t, "witness.test/a"), newCosigner(t, "witness.test/b")
	ws, err := checkpoint.ParseWitnesses([]string{a.vkey, b.vkey}, 2, logS.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	one, err := checkpoint.ParseWitnesses([]string{a.vkey, b.vkey}, 1, logS.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	// at gives witnesses a and b cosignatures of the ages given.
	at := func(ages ...time.Duration) []checkpoint.Cosignature {
		var cs []checkpoint.Cosignature
		for i, age := range ages {
			cs = append(cs, checkpoint.Cosignature{Witness: []string{"witness.test/a", "witness.test/b"}[i], Time: now.Add(-age)})
		}
		return cs
	}
	for _, tc := range []struct {
		name string
		ws   *checkpoint.Witnesses
		cs   []checkpoint.Cosignature
		want string // "" for no error
	}{
		{"both fresh", ws, at(time.Minute, time.Hour), ""},
		{"one at the bound", ws, at(0, time.Hour), ""},
		{"one from the near future", ws, at(-time.Minute, time.Minute), ""},
		{"one too old", ws, at(time.Minute, time.Hour+time.Second), "1 of the 2 cosignatures required are at most 1h0m0s old; the newest is from 2026-11-23T11:59:00Z, 1m0s before"},
		{"both too old", ws, at(3*time.Hour, 2*time.Hour), "0 of the 2 cosignatures required are at most 1h0m0s old; the newest is from 2026-11-23T10:00:00Z, 2h0m0s before"},
		{"one from far ahead", ws, at(time.Minute, -2*time.Hour), "1 of the 2 cosignatures required are at most 1h0m0s old; witness.test/b cosigned more than that ahead"},
		{"none", ws, nil, "no cosignature, and 2 are required"},
		{"a quorum of one, one fresh", one, at(2*time.Hour, time.Minute), ""},
		{"a quorum of one, none fresh", one, at(2*time.Hour, 3*time.Hour), "0 of the 1 cosignatures required"},
		{"one witness twice", ws, append(at(time.Minute), at(time.Minute)...), "1 of the 2 cosignatures required"},
	} {
		err := tc.ws.CheckAge(tc.cs, now, time.Hour)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
