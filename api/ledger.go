package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/caledger/caledger/domain"
)

// Ledger is what auditors read: the events, and the RFC 6962 Merkle log over
// their canonical encodings (leaf i is the event at position i+1). Errors for
// indexes or sizes outside the log are *domain.Error of KindInvalid, so they
// answer 400.
type Ledger interface {
	// Events returns up to limit events from position from (at least 1) on.
	Events(ctx context.Context, from uint64, limit int) ([]domain.Event, error)
	// Checkpoint returns a C2SP tlog-checkpoint of the log as it now stands,
	// signed with the key VerifierKey names.
	Checkpoint(ctx context.Context) ([]byte, error)
	// WitnessedCheckpoint returns the latest checkpoint that the node's
	// witnesses cosigned (C2SP tlog-witness): the log's signed note followed
	// by their cosignature lines. It fails with a *domain.Error of
	// KindNotFound when the node has no witnesses, and of KindUnavailable
	// while none is witnessed yet.
	WitnessedCheckpoint(ctx context.Context) ([]byte, error)
	// InclusionProof proves leaf index in the log of size leaves.
	InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error)
	// ConsistencyProof proves the log of size1 leaves a prefix of that of size2.
	ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error)
	// VerifierKey is the note verifier key checkpoints are signed for.
	VerifierKey() string
	// Prove returns evidence for each event of type eventType in stream, in
	// version order, all against one signed checkpoint that covers them (one
	// the witnesses cosigned, when the node has witnesses and they cosign in
	// time); none when the stream has no such event. It waits briefly for the tree to
	// cover them and fails with a *domain.Error of KindUnavailable when it
	// does not.
	Prove(ctx context.Context, stream, eventType string) ([]Evidence, error)
}

// Evidence proves to anyone who holds the ledger's verifier key that an event
// is in the ledger: its canonical encoding, and an RFC 9162 inclusion proof of
// it (leaf Position-1) in the log a signed checkpoint names.
type Evidence struct {
	Position   uint64   `json:"position" doc:"The event's position in the ledger; its leaf index is position-1."`
	Canonical  []byte   `json:"canonical" doc:"The event's canonical encoding (base64); its leaf hash is SHA-256(0x00 || canonical)."`
	Checkpoint string   `json:"checkpoint" doc:"A C2SP tlog-checkpoint (signed note) of a log that includes the event."`
	Inclusion  [][]byte `json:"inclusion" doc:"The inclusion proof's hashes (base64), from the leaf up to the checkpoint's root."`
}

// LedgerEvent is an event as auditors see it: the envelope and the public
// facts, and the canonical encoding the Merkle log hashes. The sealed part
// stays sealed: only its subject pseudonym and key group are shown; its
// ciphertext is inside canonical.
type LedgerEvent struct {
	Position  uint64          `json:"position"`
	Stream    string          `json:"stream"`
	Version   uint64          `json:"version"`
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Schema    uint16          `json:"schema"`
	Time      time.Time       `json:"time"`
	ActorID   string          `json:"actor_id"`
	ActorRole string          `json:"actor_role"`
	Public    json.RawMessage `json:"public"`
	SealedFor *LedgerSealed   `json:"sealed,omitempty"`
	Canonical []byte          `json:"canonical" doc:"The canonical encoding (base64): its Merkle leaf hash is SHA-256(0x00 || canonical)."`
}

// LedgerSealed names the key a sealed part is under, without opening it.
type LedgerSealed struct {
	SubjectID domain.SubjectID `json:"subject_id"`
	KeyGroup  string           `json:"key_group"`
}

// Proof is an RFC 9162 inclusion or consistency proof: the hashes in order.
type Proof struct {
	Hashes [][]byte `json:"hashes" doc:"The proof's hashes, base64, in the order RFC 9162 verifies them."`
}

func (s *server) registerLedger(hapi huma.API) {
	auditor := []map[string][]string{{mtlsScheme: {}}}

	huma.Register(hapi, huma.Operation{
		OperationID: "ledger-checkpoint", Method: http.MethodGet, Path: "/v1/ledger/checkpoint",
		Summary: "A signed checkpoint of the ledger", Tags: []string{"ledger"}, Security: auditor,
		Description: "The ledger's Merkle log as it now stands, as a C2SP tlog-checkpoint (a signed note: origin, size, RFC 6962 root hash, " +
			"signature). Verify it with the verifier key (GET /v1/ledger/key, or data/ca/checkpoint.vkey on the server). Role: auditor.",
		Responses: textOK("The checkpoint."),
	}, s.auditorText(s.cfg.Ledger.Checkpoint))

	huma.Register(hapi, huma.Operation{
		OperationID: "ledger-checkpoint-witnessed", Method: http.MethodGet, Path: "/v1/ledger/checkpoint/witnessed",
		Summary: "The latest witnessed checkpoint", Tags: []string{"ledger"}, Security: auditor,
		Description: "The latest checkpoint that the node's witnesses cosigned (C2SP tlog-witness): the signed checkpoint followed by " +
			"each witness's cosignature line (C2SP tlog-cosignature). A witness cosigns only a checkpoint that extends every one of this " +
			"log it cosigned before, so a checkpoint cosigned by witnesses you trust is on the one history they saw. It may lag the " +
			"ledger by the witnessing interval. 404 when the node has no witnesses, 503 while none is witnessed yet. Role: auditor.",
		Responses: textOK("The cosigned checkpoint."),
	}, s.auditorText(s.cfg.Ledger.WitnessedCheckpoint))

	huma.Register(hapi, huma.Operation{
		OperationID: "ledger-key", Method: http.MethodGet, Path: "/v1/ledger/key",
		Summary: "The checkpoints' verifier key", Tags: []string{"ledger"}, Security: auditor,
		Description: "The note verifier key checkpoints are signed for. Compare it once with one obtained out of band (the server's " +
			"data/ca/checkpoint.vkey): a key fetched over the connection it is to check proves nothing. Role: auditor.",
		Responses: textOK("The verifier key."),
	}, s.auditorText(func(context.Context) ([]byte, error) { return []byte(s.cfg.Ledger.VerifierKey() + "\n"), nil }))

	huma.Register(hapi, huma.Operation{
		OperationID: "ledger-events", Method: http.MethodGet, Path: "/v1/ledger/events",
		Summary: "Read the ledger", Tags: []string{"ledger"}, Security: auditor,
		Description: "Events in position order from position from on: envelopes, public facts and canonical encodings, never personal " +
			"data (sealed parts stay encrypted). Page with from=<last position + 1>. Role: auditor.",
	}, func(ctx context.Context, in *struct {
		From  uint64 `query:"from" minimum:"1" default:"1" doc:"The first position."`
		Limit int    `query:"limit" minimum:"1" maximum:"1000" default:"100" doc:"At most this many events."`
	}) (*struct{ Body []LedgerEvent }, error) {
		if _, err := require(ctx, RoleAuditor); err != nil {
			return nil, err
		}
		events, err := s.cfg.Ledger.Events(ctx, in.From, in.Limit)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		out := make([]LedgerEvent, 0, len(events))
		for i := range events {
			le, err := LedgerEventOf(&events[i])
			if err != nil {
				return nil, s.problem(ctx, err)
			}
			out = append(out, le)
		}
		return &struct{ Body []LedgerEvent }{Body: out}, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "ledger-inclusion-proof", Method: http.MethodGet, Path: "/v1/ledger/proofs/inclusion",
		Summary: "Prove an event is in the ledger", Tags: []string{"ledger"}, Security: auditor,
		Description: "An RFC 9162 inclusion proof of the event at position index+1 (leaf index) in the log of size leaves, " +
			"e.g. the size of a checkpoint. Role: auditor.",
	}, func(ctx context.Context, in *struct {
		Index uint64 `query:"index" required:"true" doc:"The leaf index: the event's position - 1."`
		Size  uint64 `query:"size" required:"true" minimum:"1" doc:"The log size the proof is for."`
	}) (*struct{ Body Proof }, error) {
		if _, err := require(ctx, RoleAuditor); err != nil {
			return nil, err
		}
		hashes, err := s.cfg.Ledger.InclusionProof(ctx, in.Index, in.Size)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		return &struct{ Body Proof }{Body: Proof{Hashes: nonNil(hashes)}}, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "ledger-consistency-proof", Method: http.MethodGet, Path: "/v1/ledger/proofs/consistency",
		Summary: "Prove the ledger only grew", Tags: []string{"ledger"}, Security: auditor,
		Description: "An RFC 9162 consistency proof that the log of size1 leaves is a prefix of the log of size2 leaves: " +
			"nothing recorded before was changed or removed. Role: auditor.",
	}, func(ctx context.Context, in *struct {
		Size1 uint64 `query:"size1" required:"true" minimum:"1" doc:"The older size, e.g. of a checkpoint kept earlier."`
		Size2 uint64 `query:"size2" required:"true" minimum:"1" doc:"The newer size."`
	}) (*struct{ Body Proof }, error) {
		if _, err := require(ctx, RoleAuditor); err != nil {
			return nil, err
		}
		hashes, err := s.cfg.Ledger.ConsistencyProof(ctx, in.Size1, in.Size2)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		return &struct{ Body Proof }{Body: Proof{Hashes: nonNil(hashes)}}, nil
	})
}

// nonNil makes an empty proof encode as [] rather than null.
func nonNil(h [][]byte) [][]byte {
	if h == nil {
		return [][]byte{}
	}
	return h
}

// LedgerEventOf is e as auditors see it.
func LedgerEventOf(e *domain.Event) (LedgerEvent, error) {
	canonical, err := domain.Encode(e)
	if err != nil {
		return LedgerEvent{}, err
	}
	le := LedgerEvent{Position: e.Position, Stream: e.Stream, Version: e.Version, ID: e.ID.String(), Type: e.Type,
		Schema: e.Schema, Time: e.Time, ActorID: e.Actor.ID, ActorRole: e.Actor.Role, Public: json.RawMessage(e.Public),
		Canonical: canonical}
	if e.Sealed != nil {
		le.SealedFor = &LedgerSealed{SubjectID: e.Sealed.SubjectID, KeyGroup: e.Sealed.KeyGroup}
	}
	return le, nil
}

// textOK documents a 200 answer of plain text.
func textOK(description string) map[string]*huma.Response {
	return map[string]*huma.Response{"200": {Description: description, Content: map[string]*huma.MediaType{
		"text/plain": {Schema: &huma.Schema{Type: "string"}},
	}}}
}

// auditorText answers an auditor with the text get returns.
func (s *server) auditorText(get func(context.Context) ([]byte, error)) func(context.Context, *struct{}) (*rawOutput, error) {
	return func(ctx context.Context, _ *struct{}) (*rawOutput, error) {
		if _, err := require(ctx, RoleAuditor); err != nil {
			return nil, err
		}
		b, err := get(ctx)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		return &rawOutput{Status: http.StatusOK, ContentType: "text/plain; charset=utf-8", Body: b}, nil
	}
}
