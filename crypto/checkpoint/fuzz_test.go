package checkpoint_test

import (
	"bytes"
	"testing"

	"github.com/caledger/caledger/crypto/checkpoint"
)

// FuzzCosigned feeds what a witness or a server sends: a witness's answer to
// add-checkpoint, and a cosigned checkpoint that a reader checks. Neither may
// panic, and an answer is accepted only with a line that verifies under the
// witness's key over the checkpoint sent.
func FuzzCosigned(f *testing.F) {
	logS, logV, signed := newLog(f)
	w := newCosigner(f, "witness.test/a")
	v, err := checkpoint.NewWitnessVerifier(w.vkey)
	if err != nil {
		f.Fatal(err)
	}
	ws, err := checkpoint.ParseWitnesses([]string{w.vkey}, 1, logS.VerifierKey())
	if err != nil {
		f.Fatal(err)
	}
	answer := w.answer(f, signed)
	f.Add(answer, append(bytes.Clone(signed), answer...))
	f.Add([]byte("— witness.test/a AAAA\n"), signed)
	f.Add([]byte("\n\n"), []byte("caledger.ledger/0123456789abcdef\n7\n\n\n— x y\n"))
	f.Fuzz(func(t *testing.T, answer, cosigned []byte) {
		if line, _, err := checkpoint.CheckCosignature(signed, answer, v); err == nil {
			if !bytes.Contains(answer, line) {
				t.Fatalf("the line %q is not in the answer", line)
			}
			if _, _, err := ws.Verify(append(bytes.Clone(signed), line...), logV); err != nil {
				t.Fatalf("an accepted cosignature does not verify: %v", err)
			}
		}
		if cp, got, err := ws.Verify(cosigned, logV); err == nil && (len(got) != 1 || cp.Origin != logV.Name()) {
			t.Fatalf("accepted %+v with cosignatures %+v", cp, got)
		}
	})
}
