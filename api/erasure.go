package api

import (
	"context"
	"net/http"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/danielgtaylor/huma/v2"
)

// ErasureRequest is the body of POST /v1/subjects/{id}/erasure.
type ErasureRequest struct {
	Basis     string   `json:"basis" enum:"gdpr-art17,consent-withdrawn,retention-expired,court-order" doc:"The legal ground, recorded publicly."`
	KeyGroups []string `json:"key_groups,omitempty" doc:"Erase only these key groups (identity, national-id); empty erases the whole subject."`
}

// ErasureReceipt is the outcome of an erasure, and its state.
type ErasureReceipt struct {
	SubjectID domain.SubjectID `json:"subject_id"`
	KeyGroups []string         `json:"key_groups,omitempty"`
	Basis     string           `json:"basis,omitempty"`
	// Status says how far the erasure has gone, honestly:
	//   - "keys-destroyed": the embedded vault removed the data keys from its
	//     file (secure_delete, WAL truncated); nothing this node holds can open
	//     the sealed parts, and the ledger has no key material;
	//   - "recorded": the shared vault recorded the tombstone and every node
	//     refuses the keys, but wrapped copies remain in the ledger, its replicas
	//     and backups until the KEK epochs in pending_epochs are destroyed;
	//   - "complete": those epochs are destroyed (complete_at);
	//   - "shred-pending": the erasure is recorded but the vault has not yet
	//     destroyed its keys (the destruction failed, or the embedded vault
	//     still owes the WAL checkpoint that removes their bytes): repeat the
	//     erasure.
	Status        string     `json:"status" enum:"keys-destroyed,recorded,complete,shred-pending"`
	CompleteAt    *time.Time `json:"complete_at,omitempty"`
	PendingEpochs []uint32   `json:"pending_epochs,omitempty"`
	// Evidence proves, for each subject.erased event of the subject, that the
	// ledger records it: anyone with the ledger's verifier key can check it
	// offline ("caledger verify-erasure"). It proves the record of the
	// erasure, not the destruction of the keys, which Status reports. It is
	// absent when the ledger's Merkle tree did not cover the erasure in time:
	// ask again.
	Evidence []Evidence `json:"evidence,omitempty" doc:"Per subject.erased event: its canonical bytes and an inclusion proof in a signed checkpoint. Absent while the ledger's Merkle tree does not cover the erasure yet."`
	// Directory says whether the LDAP directory certificates are published
	// to has caught up with the erasure: "removed" once the subject's entry
	// is deleted (or, for key groups, holds none of their values), "pending"
	// while the directory is unreachable or behind. Absent when no directory
	// is configured.
	Directory string `json:"directory,omitempty" enum:"removed,pending" doc:"removed: the LDAP directory holds nothing the erasure covers; pending: the directory has not caught up yet (unreachable or behind). Absent without a directory."`
}

// DirectoryErasure reports whether the directory publisher has published the
// ledger up to position at (a subject's latest erasure), waiting up to wait
// for it.
type DirectoryErasure func(ctx context.Context, at uint64, wait time.Duration) (removed bool, err error)

// directoryWait bounds how long an erasure's answer waits for the directory.
const directoryWait = 2 * time.Second

// ErasureState says how far the erasure of a subject has gone (Status and the
// fields after it in ErasureReceipt), given what the ledger records as erased:
// the whole subject (all), and the key groups erased one by one.
type ErasureState func(ctx context.Context, id domain.SubjectID, all bool, groups []string) (status string, completeAt time.Time, pending []uint32, err error)

// Eraser erases subjects; domain.Handlers implements it.
type Eraser interface {
	EraseSubject(ctx context.Context, actor domain.Actor, id domain.SubjectID, groups []string, basis string) error
	Erased(ctx context.Context, id domain.SubjectID) (domain.Erased, error)
}

func (s *server) registerErasure(hapi huma.API) {
	huma.Register(hapi, huma.Operation{
		OperationID: "erase-subject", Method: http.MethodPost, Path: "/v1/subjects/{id}/erasure",
		Summary: "Erase a subject (crypto-shredding)", Tags: []string{"compliance"},
		Security: []map[string][]string{{mtlsScheme: {}}},
		Description: "Records the erasure (subject.erased, with its legal basis) and then destroys the subject's data keys, so every sealed " +
			"part under them becomes unreadable while the ledger stays complete. Erasing again is allowed: it destroys the keys again, which " +
			"completes an erasure whose key destruction failed (503 shred-pending), and answers 409 already-erased. The receipt's status says honestly " +
			"how far the erasure has gone: with the shared key vault of a cluster it is complete only once the KEK epochs that wrapped the keys are destroyed. " +
			"With an LDAP directory configured, the answer waits up to 2 s for the directory to catch up, and its directory field says removed or pending. Role: compliance.",
	}, func(ctx context.Context, in *struct {
		SubjectPath
		Body ErasureRequest
	}) (*struct{ Body ErasureReceipt }, error) {
		actor, err := require(ctx, RoleCompliance)
		if err != nil {
			return nil, err
		}
		id := domain.SubjectID(in.ID)
		if err := s.cfg.Eraser.EraseSubject(ctx, actor, id, in.Body.KeyGroups, in.Body.Basis); err != nil {
			return nil, s.problem(ctx, err)
		}
		s.waitForHead(ctx)
		receipt, err := s.erasureState(ctx, id, directoryWait)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		receipt.Basis = in.Body.Basis
		return &struct{ Body ErasureReceipt }{Body: receipt}, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "get-erasure", Method: http.MethodGet, Path: "/v1/subjects/{id}/erasure",
		Summary: "How far a subject's erasure has gone", Tags: []string{"compliance"},
		Security: []map[string][]string{{mtlsScheme: {}}},
		Description: "The erasure's status, as the key vault reports it: keys-destroyed (embedded vault), recorded (shared vault, KEK epochs pending), complete, or shred-pending (the keys are not yet destroyed: repeat the erasure). " +
			"With an LDAP directory configured, directory says whether it has caught up with the erasure (removed) or not yet (pending); this does not wait. Role: compliance.",
	}, func(ctx context.Context, in *SubjectPath) (*struct{ Body ErasureReceipt }, error) {
		if _, err := require(ctx, RoleCompliance); err != nil {
			return nil, err
		}
		receipt, err := s.erasureState(ctx, domain.SubjectID(in.ID), 0)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		return &struct{ Body ErasureReceipt }{Body: receipt}, nil
	})
}

// erasureState returns the receipt of subject id's erasure, waiting up to
// wait for the directory to catch up.
func (s *server) erasureState(ctx context.Context, id domain.SubjectID, wait time.Duration) (ErasureReceipt, error) {
	r := ErasureReceipt{SubjectID: id}
	erased, err := s.cfg.Eraser.Erased(ctx, id)
	if err != nil {
		return r, err
	}
	all, groups := erased.All, erased.Groups
	if !all && len(groups) == 0 {
		return r, &domain.Error{Kind: domain.KindNotFound, Code: "not-erased", Detail: "no erasure of this subject is recorded"}
	}
	if !all {
		r.KeyGroups = groups
	}
	status, at, pending, err := s.cfg.ErasureState(ctx, id, all, groups)
	if err != nil {
		return r, err
	}
	r.Status, r.PendingEpochs = status, pending
	if !at.IsZero() {
		r.CompleteAt = &at
	}
	// The directory's wait and the evidence's wait run side by side, so that
	// they take the longer of the two (about 2 s), not their sum.
	directory := make(chan string, 1)
	if s.cfg.DirectoryErasure != nil {
		go func(at uint64) {
			// Off the handler's goroutine, a panic would escape the
			// server's recovery and stop the process.
			defer func() {
				if v := recover(); v != nil {
					logPanic(ctx, s.logger, v, "the erasure receipt's directory state")
					directory <- "pending"
				}
			}()
			directory <- s.directoryState(ctx, at, wait)
		}(erased.At)
	} else {
		directory <- ""
	}
	if s.cfg.Ledger != nil {
		// The evidence is worth waiting for, but the erasure stands without
		// it: a tree that lags or stopped leaves it out, and says so in the
		// log.
		ev, err := s.cfg.Ledger.Prove(ctx, domain.SubjectStream(id), domain.TypeSubjectErased)
		if err != nil {
			s.logger.WarnContext(ctx, "erasure receipt without ledger evidence", "err", err)
		} else {
			for i := range ev {
				ev[i].Inclusion = nonNil(ev[i].Inclusion)
			}
			r.Evidence = ev
		}
	}
	r.Directory = <-directory
	return r, nil
}

// directoryState says whether the directory has caught up with the erasure
// at ledger position at, "removed" or "pending", waiting up to wait for it.
// The erasure stands whatever the directory's state: a failure to learn it
// says "pending", and the log says why.
func (s *server) directoryState(ctx context.Context, at uint64, wait time.Duration) string {
	removed, err := s.cfg.DirectoryErasure(ctx, at, wait)
	if err != nil {
		s.logger.WarnContext(ctx, "erasure receipt: the directory's state is unknown", "err", err)
		return "pending"
	}
	if !removed {
		return "pending"
	}
	return "removed"
}
