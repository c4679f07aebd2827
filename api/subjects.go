package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/caledger/caledger/domain"
	"github.com/danielgtaylor/huma/v2"
)

// reasonHeader carries the reason for reading personal data on GET requests.
// It is a header, not a query parameter: query strings end up in proxy logs,
// and people write names into reasons.
const reasonHeader = "Caledger-Reason"

// searchAppends bounds the access records one search appends at a time.
const searchAppends = 16

// recordSearchAccesses records the access of a search to each of rows, and
// returns each record's outcome. Every access is recorded before anything is
// returned, and a subject erased meanwhile is left out of the answer. The
// appends run side by side, so the ledger commits them in a few group commits
// rather than one by one. After the first failure (other than gone or
// missing) no more appends start, and the search answers with that failure;
// the records already made stay, so the log may show accesses of a search
// that returned nothing, never the reverse. failure is that first failure (or
// the end of ctx): appends it cancelled report context.Canceled in their own
// row, which may come before the failing row.
func (s *server) recordSearchAccesses(ctx context.Context, actor domain.Actor, rows []SubjectRow, reason string) (recorded []error, failure error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	recorded = make([]error, len(rows))
	var wg sync.WaitGroup
	slots := make(chan struct{}, searchAppends)
	for i, row := range rows {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			recorded[i] = context.Cause(ctx)
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			// Outside the handler's goroutine recoverPanics cannot catch a panic,
			// which would end the whole server.
			defer func() {
				if v := recover(); v != nil {
					logPanic(ctx, s.logger, v, "RecordAccess")
					recorded[i] = fmt.Errorf("record access: panic %T", v)
					cancel(recorded[i])
				}
			}()
			err := s.cfg.Commands.RecordAccess(ctx, actor, row.ID, "search", reason)
			recorded[i] = err
			if err != nil && !isGoneOrMissing(err) {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		failure = context.Cause(ctx)
	}
	return recorded, failure
}

// SubjectCreate is the body of POST /v1/subjects.
type SubjectCreate struct {
	Attributes map[string]string `json:"attributes" minProperties:"1" doc:"Attribute names (common_name, given_name, surname, email, organization, organizational_unit, country, locality, serial_number, dns_names, ip_addresses) and values. Values are personal data: they are sealed under the subject's key."`
}

// SubjectRef names a subject.
type SubjectRef struct {
	ID domain.SubjectID `json:"id" doc:"The subject's pseudonym: 32 hex digits."`
}

// Subject is a subject's personal data, returned only after the read is recorded.
type Subject struct {
	ID         domain.SubjectID  `json:"id"`
	Attributes map[string]string `json:"attributes"`
}

// SubjectSearch is the body of POST /v1/subjects/search.
type SubjectSearch struct {
	Match  map[string]string `json:"match" minProperties:"1" doc:"Attribute values that must all match, case-insensitively; a value ending in * matches as a prefix."`
	Reason string            `json:"reason" minLength:"1" maxLength:"1024" doc:"Why the data is read; recorded (sealed) in the access log for every subject found."`
	Limit  int               `json:"limit,omitempty" minimum:"0" maximum:"100" doc:"At most this many subjects (default 20)."`
}

// SubjectPatch is the body of PATCH /v1/subjects/{id}.
type SubjectPatch struct {
	Attributes map[string]string `json:"attributes" minProperties:"1" doc:"Corrected values; an empty value removes the attribute."`
	KeyGroup   string            `json:"key_group,omitempty" enum:"identity,national-id" doc:"Key group the values are sealed under (default identity)."`
	Reissue    bool              `json:"reissue,omitempty" doc:"Also reissue the subject's valid certificates with the corrected data, for the same public keys, and revoke the old ones (reason superseded)."`
}

// Correction is the outcome of PATCH /v1/subjects/{id}.
type Correction struct {
	ID       domain.SubjectID `json:"id"`
	Reissued []Reissue        `json:"reissued" doc:"Certificates replaced because of reissue."`
}

// Reissue pairs a superseded certificate with its replacement.
type Reissue struct {
	Old   domain.Serial `json:"old_serial"`
	New   domain.Serial `json:"new_serial"`
	Chain string        `json:"chain" doc:"PEM chain of the replacement: leaf first, then the issuing CA."`
}

// SubjectPath is the {id} path parameter of subject operations.
type SubjectPath struct {
	ID string `path:"id" pattern:"^[0-9a-f]{32}$" doc:"Subject pseudonym."`
}

func (s *server) registerSubjects(hapi huma.API) {
	officerOnly := []map[string][]string{{mtlsScheme: {}}}
	huma.Register(hapi, huma.Operation{
		OperationID: "create-subject", Method: http.MethodPost, Path: "/v1/subjects",
		Summary: "Register a subject", Tags: []string{"subjects"}, Security: officerOnly,
		DefaultStatus: http.StatusCreated,
		Description:   "Registers a data subject. Its attributes are sealed under a new per-subject key; the response holds only the pseudonym. Role: officer.",
	}, func(ctx context.Context, in *struct{ Body SubjectCreate }) (*struct{ Body SubjectRef }, error) {
		actor, err := require(ctx, RoleOfficer)
		if err != nil {
			return nil, err
		}
		id, err := s.cfg.Commands.RegisterSubject(ctx, actor, in.Body.Attributes)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		// Like every mutating operation: a search right after finds it.
		s.waitForHead(ctx)
		return &struct{ Body SubjectRef }{Body: SubjectRef{ID: id}}, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "get-subject", Method: http.MethodGet, Path: "/v1/subjects/{id}",
		Summary: "Read a subject's personal data", Tags: []string{"subjects"}, Security: officerOnly,
		Description: "Returns the subject's attributes after recording who read them and why (the " + reasonHeader + " header). Role: officer.",
	}, func(ctx context.Context, in *struct {
		SubjectPath
		Reason string `header:"Caledger-Reason" required:"true" minLength:"1" maxLength:"1024" doc:"Why the data is read; recorded, sealed, in the access log."`
	}) (*struct{ Body Subject }, error) {
		actor, err := require(ctx, RoleOfficer)
		if err != nil {
			return nil, err
		}
		attrs, err := s.cfg.Commands.ReadSubject(ctx, actor, domain.SubjectID(in.ID), "read", in.Reason)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		return &struct{ Body Subject }{Body: Subject{ID: domain.SubjectID(in.ID), Attributes: attrs}}, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "search-subjects", Method: http.MethodPost, Path: "/v1/subjects/search",
		Summary: "Search subjects", Tags: []string{"subjects"}, Security: officerOnly,
		Description: "Finds subjects by attribute values. The query is a POST body because personal data never travels in a URL. Every subject returned is recorded in the access log with the reason. Role: officer.",
	}, func(ctx context.Context, in *struct{ Body SubjectSearch }) (*struct{ Body []Subject }, error) {
		actor, err := require(ctx, RoleOfficer)
		if err != nil {
			return nil, err
		}
		for name := range in.Body.Match {
			if !domain.KnownAttribute(name) {
				return nil, invalid("unknown-attribute", "unknown attribute name in match")
			}
		}
		limit := in.Body.Limit
		if limit == 0 {
			limit = 20
		}
		rows, err := s.cfg.Views.SearchSubjects(ctx, in.Body.Match, limit)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		recorded, failure := s.recordSearchAccesses(ctx, actor, rows, in.Body.Reason)
		if failure != nil {
			return nil, s.problem(ctx, failure)
		}
		out := make([]Subject, 0, len(rows))
		for i, row := range rows {
			if recorded[i] != nil { // gone or missing: every other failure is the failure
				continue
			}
			out = append(out, Subject{ID: row.ID, Attributes: row.Attributes})
		}
		return &struct{ Body []Subject }{Body: out}, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "correct-subject", Method: http.MethodPatch, Path: "/v1/subjects/{id}",
		Summary: "Correct a subject", Tags: []string{"subjects"}, Security: officerOnly,
		Description: "Records corrected attributes (GDPR art. 16). With reissue, also reissues the subject's valid certificates for the same public keys with the corrected data and revokes the old ones as superseded, in one command. Role: officer.",
	}, func(ctx context.Context, in *struct {
		SubjectPath
		Body SubjectPatch
	}) (*struct{ Body Correction }, error) {
		actor, err := require(ctx, RoleOfficer)
		if err != nil {
			return nil, err
		}
		group := in.Body.KeyGroup
		if group == "" {
			group = domain.GroupIdentity
		}
		id := domain.SubjectID(in.ID)
		out := Correction{ID: id, Reissued: []Reissue{}}
		if !in.Body.Reissue {
			if err := s.cfg.Commands.CorrectSubject(ctx, actor, id, in.Body.Attributes, group); err != nil {
				return nil, s.problem(ctx, err)
			}
			s.waitForHead(ctx) // a search right after finds the corrected data
			return &struct{ Body Correction }{Body: out}, nil
		}
		// A reissue replaces client credentials too, which are the
		// administrators' to issue and withdraw.
		allow := func(profile string) error {
			_, err := s.credentialGuard(ctx, actor, profile)
			return err
		}
		reissued, cerr := s.cfg.Commands.CorrectAndReissue(ctx, actor, id, in.Body.Attributes, group, allow)
		for _, r := range reissued {
			chain, err := s.chainPEM(r.New.CAID, r.New.Certificate)
			if err != nil {
				return nil, s.problem(ctx, err)
			}
			out.Reissued = append(out.Reissued, Reissue{Old: r.Old, New: r.New.Serial, Chain: chain})
		}
		// The revocations of the old certificates come after the new ones.
		s.waitForHead(ctx)
		if cerr != nil {
			// The replacements that were issued exist nowhere else: they go
			// out with the problem.
			err := s.problem(ctx, cerr)
			var p *problem
			if errors.As(err, &p) && len(out.Reissued) > 0 {
				cp := *p
				cp.Reissued = out.Reissued
				return nil, &cp
			}
			return nil, err
		}
		return &struct{ Body Correction }{Body: out}, nil
	})
}

func isGoneOrMissing(err error) bool {
	var de *domain.Error
	return errors.As(err, &de) && (de.Kind == domain.KindGone || de.Kind == domain.KindNotFound)
}
