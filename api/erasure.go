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

// ErasureReceipt is the outcome of an erasure.
type ErasureReceipt struct {
	SubjectID domain.SubjectID `json:"subject_id"`
	KeyGroups []string         `json:"key_groups,omitempty"`
	Basis     string           `json:"basis"`
	// Status is "keys-destroyed" once the data keys are gone from this node's
	// vault; with a shared vault the erasure is complete only when the KEK
	// epoch that wrapped them is destroyed (docs/distributed.md).
	Status     string    `json:"status" enum:"keys-destroyed"`
	RecordedAt time.Time `json:"recorded_at"`
}

// Eraser erases subjects; domain.Handlers implements it.
type Eraser interface {
	EraseSubject(ctx context.Context, actor domain.Actor, id domain.SubjectID, groups []string, basis string) error
}

func (s *server) registerErasure(hapi huma.API) {
	huma.Register(hapi, huma.Operation{
		OperationID: "erase-subject", Method: http.MethodPost, Path: "/v1/subjects/{id}/erasure",
		Summary: "Erase a subject (crypto-shredding)", Tags: []string{"compliance"},
		Security: []map[string][]string{{mtlsScheme: {}}},
		Description: "Records the erasure (subject.erased, with its legal basis) and then destroys the subject's data keys, so every sealed " +
			"part under them becomes unreadable while the ledger stays complete. Erasing again is allowed: it destroys the keys again, which " +
			"completes an erasure whose key destruction failed (503 shred-pending). Role: compliance.",
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
		return &struct{ Body ErasureReceipt }{Body: ErasureReceipt{SubjectID: id, KeyGroups: in.Body.KeyGroups,
			Basis: in.Body.Basis, Status: "keys-destroyed", RecordedAt: time.Now().UTC()}}, nil
	})
}
