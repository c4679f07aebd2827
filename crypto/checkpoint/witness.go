package checkpoint

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// A witness (C2SP tlog-witness) cosigns a checkpoint only after checking that
// it extends every checkpoint of the same log it cosigned before, so a log
// cannot show one history to some readers and another to others (a split
// view) without the witness refusing or being caught. Its cosignature is a
// signed-note signature line of type cosignature/v1 (C2SP tlog-cosignature):
// an Ed25519 signature over "cosignature/v1", the time, and the checkpoint's
// text.

// Witnesses is a set of witness keys, and how many of them must have cosigned
// a checkpoint for a reader to accept it.
type Witnesses struct {
	verifiers []note.Verifier
	quorum    int
}

// ParseWitnesses reads witness verifier keys: note verifier keys of type
// cosignature/v1 (Ed25519 or ML-DSA-44), or plain Ed25519 note keys, read as
// cosignature/v1 keys, as witnesses publish them. quorum is how many of them
// must cosign; 0 means all. logVKey is the verifier key of the log the
// checkpoints are of: a witness key of its name or with its public key is
// refused, since the log could then cosign its own checkpoints.
func ParseWitnesses(vkeys []string, quorum int, logVKey string) (*Witnesses, error) {
	if len(vkeys) == 0 {
		return nil, errors.New("checkpoint: no witness keys")
	}
	logName, logKey, err := splitVKey(logVKey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: the log's verifier key: %w", err)
	}
	w := &Witnesses{quorum: quorum}
	names, keys := map[string]bool{}, map[string]bool{string(logKey): true}
	for _, k := range vkeys {
		v, err := NewWitnessVerifier(k)
		if err != nil {
			return nil, err
		}
		_, key, err := splitVKey(k)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: witness key %q: %w", k, err)
		}
		switch {
		case v.Name() == logName || bytes.Equal(key, logKey):
			return nil, fmt.Errorf("checkpoint: witness key %q is the log's own key: a witness must be someone else", k)
		case names[v.Name()]:
			// Two keys of one name would let one witness count twice.
			return nil, fmt.Errorf("checkpoint: witness %q is named twice", v.Name())
		case keys[string(key)]:
			// The cosignature/v1 message holds no name, so one key under
			// two names would count twice too.
			return nil, fmt.Errorf("checkpoint: witnesses %q share a key with another", v.Name())
		}
		names[v.Name()], keys[string(key)] = true, true
		w.verifiers = append(w.verifiers, v)
	}
	switch {
	case quorum == 0:
		w.quorum = len(w.verifiers)
	case quorum < 0 || quorum > len(w.verifiers):
		return nil, fmt.Errorf("checkpoint: a quorum of %d witnesses out of %d", quorum, len(w.verifiers))
	}
	return w, nil
}

// splitVKey returns a note verifier key's name and public key (without the
// algorithm byte).
func splitVKey(vkey string) (string, []byte, error) {
	name, rest, _ := strings.Cut(strings.TrimSpace(vkey), "+")
	_, key64, _ := strings.Cut(rest, "+")
	key, err := base64.StdEncoding.DecodeString(key64)
	if err != nil || len(key) < 2 {
		return "", nil, errors.New("not a note verifier key")
	}
	return name, key[1:], nil
}

// NewWitnessVerifier reads one witness's verifier key.
func NewWitnessVerifier(vkey string) (note.Verifier, error) {
	v, err := fnote.NewVerifierForCosignatureV1(strings.TrimSpace(vkey))
	if err != nil {
		return nil, fmt.Errorf("checkpoint: witness key %q: %w", vkey, err)
	}
	return v, nil
}

// Quorum is how many witnesses must cosign.
func (w *Witnesses) Quorum() int { return w.quorum }

// Verifiers are the witnesses' verifiers, in the order their keys were given.
func (w *Witnesses) Verifiers() []note.Verifier { return w.verifiers }

// Cosignature is one witness's cosignature of a checkpoint.
type Cosignature struct {
	Witness string
	// Time is when the witness says it cosigned.
	Time time.Time
}

// Verify checks that signed is a checkpoint of the log whose key logVerifier
// is, and that at least the quorum of the witnesses cosigned it. It returns the
// checkpoint and the cosignatures that verified, in the order of the keys. A
// signature line of a known key that does not verify fails the whole
// checkpoint; lines of unknown keys are ignored.
func (w *Witnesses) Verify(signed []byte, logVerifier note.Verifier) (log.Checkpoint, []Cosignature, error) {
	cp, _, n, err := log.ParseCheckpoint(signed, logVerifier.Name(), logVerifier, w.verifiers...)
	if err != nil {
		return log.Checkpoint{}, nil, fmt.Errorf("checkpoint: %w", err)
	}
	var got []Cosignature
	var missing []string
	for _, v := range w.verifiers {
		c, ok := cosignatureOf(n, v)
		if !ok {
			missing = append(missing, v.Name())
			continue
		}
		got = append(got, c)
	}
	if len(got) < w.quorum {
		return log.Checkpoint{}, got, fmt.Errorf("checkpoint: cosigned by %d of the %d witnesses required; no cosignature of %s",
			len(got), w.quorum, strings.Join(missing, ", "))
	}
	return *cp, got, nil
}

// CheckAge checks that at least the quorum of the cosignatures cs (as Verify
// returns them) are at most maxAge old at now. A witness cosigns with the
// time it saw the checkpoint, so this bounds how old a view of the log a
// reader accepts: a node could otherwise keep serving an old witnessed
// checkpoint and hide what it appended since. A log that has not grown must
// have its checkpoint cosigned again (projections/witness, Refresh) to pass.
// A cosignature dated after now (the witness's clock is ahead) counts as
// fresh up to maxAge ahead, and not beyond: a witness whose clock runs far
// ahead would otherwise keep a checkpoint fresh for as long. Each witness
// counts once.
func (w *Witnesses) CheckAge(cs []Cosignature, now time.Time, maxAge time.Duration) error {
	fresh := map[string]bool{}
	var newest time.Time
	var ahead []string
	for _, c := range cs {
		switch age := now.Sub(c.Time); {
		case age < -maxAge:
			ahead = append(ahead, c.Witness)
		case age <= maxAge:
			fresh[c.Witness] = true
		}
		if c.Time.After(newest) {
			newest = c.Time
		}
	}
	if len(fresh) >= w.quorum {
		return nil
	}
	if len(ahead) > 0 {
		return fmt.Errorf("checkpoint: %d of the %d cosignatures required are at most %s old; %s cosigned more than that ahead of the time checked (a clock ahead?)",
			len(fresh), w.quorum, maxAge, strings.Join(ahead, ", "))
	}
	if len(cs) == 0 {
		return fmt.Errorf("checkpoint: no cosignature, and %d are required at most %s old", w.quorum, maxAge)
	}
	return fmt.Errorf("checkpoint: %d of the %d cosignatures required are at most %s old; the newest is from %s, %s before the time checked",
		len(fresh), w.quorum, maxAge, newest.UTC().Format(time.RFC3339), now.Sub(newest).Round(time.Second))
}

// cosignatureOf finds v's verified signature in n.
func cosignatureOf(n *note.Note, v note.Verifier) (Cosignature, bool) {
	for _, s := range n.Sigs {
		if s.Name == v.Name() && s.Hash == v.KeyHash() {
			t, err := fnote.CoSigV1Timestamp(s)
			if err != nil {
				return Cosignature{}, false
			}
			return Cosignature{Witness: s.Name, Time: t.UTC()}, true
		}
	}
	return Cosignature{}, false
}

// CheckCosignature checks a witness's answer to add-checkpoint (C2SP
// tlog-witness): signature lines for the checkpoint signed. It returns the
// line of the witness's key, which verifies over the checkpoint; lines of other
// keys (a witness may sign with several) are dropped.
func CheckCosignature(signed, answer []byte, witness note.Verifier) ([]byte, Cosignature, error) {
	if len(answer) == 0 || answer[len(answer)-1] != '\n' {
		return nil, Cosignature{}, errors.New("checkpoint: the witness's answer is not signature lines")
	}
	for line := range bytes.Lines(answer) {
		if !bytes.HasPrefix(line, []byte("— "+witness.Name()+" ")) {
			continue
		}
		n, err := note.Open(append(bytes.Clone(signed), line...), note.VerifierList(witness))
		if err != nil {
			var bad *note.InvalidSignatureError
			if errors.As(err, &bad) {
				return nil, Cosignature{}, fmt.Errorf("checkpoint: the cosignature of %s does not verify", witness.Name())
			}
			// Another key of the same name: keep looking.
			continue
		}
		if c, ok := cosignatureOf(n, witness); ok {
			return line, c, nil
		}
	}
	return nil, Cosignature{}, fmt.Errorf("checkpoint: the answer holds no cosignature of %s with the configured key", witness.Name())
}
