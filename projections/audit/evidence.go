package audit

import (
	"errors"
	"fmt"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/caledger/caledger/domain"
)

// VerifyEvidence checks evidence that an event is in the ledger, as an
// erasure receipt carries it (api.Evidence): the signed checkpoint verifies
// with verifier for the log the verifier key names, canonical decodes to an
// event recorded at position, and the inclusion proof places its leaf at
// index position-1 under the checkpoint's root. It returns the event and the
// checkpoint. Like domain.Decode, the event's Public and ciphertext alias
// canonical.
func VerifyEvidence(verifier note.Verifier, position uint64, canonical, signedCheckpoint []byte, inclusion [][]byte) (domain.Event, log.Checkpoint, error) {
	cp, _, _, err := log.ParseCheckpoint(signedCheckpoint, verifier.Name(), verifier)
	if err != nil {
		return domain.Event{}, log.Checkpoint{}, fmt.Errorf("the checkpoint does not verify: %w", err)
	}
	e, err := domain.Decode(canonical)
	if err != nil {
		return domain.Event{}, log.Checkpoint{}, fmt.Errorf("the event does not decode: %w", err)
	}
	switch {
	case position == 0 || e.Position != position:
		return domain.Event{}, log.Checkpoint{}, fmt.Errorf("the event is recorded at position %d, not %d", e.Position, position)
	case position > cp.Size:
		return domain.Event{}, log.Checkpoint{}, fmt.Errorf("position %d is beyond the checkpoint's %d events", position, cp.Size)
	}
	h := rfc6962.DefaultHasher
	if err := proof.VerifyInclusion(h, position-1, cp.Size, h.HashLeaf(canonical), inclusion, cp.Hash); err != nil {
		// The library's error prints roots as byte lists.
		return domain.Event{}, log.Checkpoint{}, errors.New("the inclusion proof does not place the event under the checkpoint's root")
	}
	return e, *cp, nil
}
