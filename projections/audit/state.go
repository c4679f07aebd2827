package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/caledger/caledger/domain"
)

// StateFormat names the encoding MarshalState writes and Resume reads.
const StateFormat = "caledger-audit-replay/1"

// state is a Replay as MarshalState writes it: the compact range of the
// leaves (one hash per set bit of the size), and what the rules remember.
// Maps encode with sorted keys, so one Replay always gives the same bytes.
type state struct {
	Format   string                            `json:"format"`
	Rules    int                               `json:"rules"`
	Size     uint64                            `json:"size"`
	Range    [][]byte                          `json:"range"`
	Versions map[string]uint64                 `json:"versions"`
	Erased   map[domain.SubjectID]stateErasure `json:"erased,omitempty"`
	Certs    map[domain.Serial]stateCert       `json:"certs,omitempty"`
	Stats    Stats                             `json:"stats"`
	Findings []Finding                         `json:"findings,omitempty"`
	Total    uint64                            `json:"findings_total,omitempty"`
}

type stateErasure struct {
	All    *stateErased           `json:"all,omitempty"`
	Groups map[string]stateErased `json:"groups,omitempty"`
}

type stateErased struct {
	Pos  uint64    `json:"pos"`
	Time time.Time `json:"time"`
}

// stateCert is a certificate: its not-after, and the positions of its
// revocation and deletion (0: none).
type stateCert struct {
	NotAfter time.Time `json:"na"`
	Revoked  uint64    `json:"r,omitempty"`
	Deleted  uint64    `json:"d,omitempty"`
}

// MarshalState encodes what the replay has checked so far, so that a later
// run can Resume it and replay only the events added since, rather than the
// whole log again. The encoding holds hashes, counts, positions, times,
// stream and key group names of the ledger's forms (others only as digests),
// serials and subject pseudonyms: no personal data, which the replay never
// sees.
//
// A resumed replay is sound only for a log proved to extend this one: the
// caller keeps the state beside a signed checkpoint of Size() events and
// Root(), checks a consistency proof from that checkpoint to the new one
// before it resumes, and replays from the whole log when it cannot.
func (r *Replay) MarshalState() ([]byte, error) {
	s := state{
		Format:   StateFormat,
		Rules:    RulesVersion,
		Size:     r.rng.End(),
		Range:    r.rng.Hashes(),
		Versions: r.versions.names(),
		Erased:   make(map[domain.SubjectID]stateErasure, len(r.erased)),
		Certs:    make(map[domain.Serial]stateCert, len(r.certs)),
		Stats:    r.stats,
		Findings: r.findings,
		Total:    r.total,
	}
	for id, er := range r.erased {
		var e stateErasure
		if er.all.pos != 0 {
			e.All = &stateErased{Pos: er.all.pos, Time: er.all.time}
		}
		if len(er.groups) > 0 {
			e.Groups = make(map[string]stateErased, len(er.groups))
			for g, at := range er.groups {
				e.Groups[g] = stateErased{Pos: at.pos, Time: at.time}
			}
		}
		s.Erased[id] = e
	}
	for k, c := range r.certs {
		s.Certs[k.serial()] = stateCert{NotAfter: c.notAfter(), Revoked: c.revoked, Deleted: c.deleted}
	}
	b, err := json.Marshal(&s)
	if err != nil {
		return nil, fmt.Errorf("audit: encode the replay's state: %w", err)
	}
	return b, nil
}

// Resume returns the Replay whose state MarshalState encoded as b: it goes on
// from b's Size()+1, and its Root, Stats and Findings are those of the whole
// log. It checks that b is consistent in itself (a compact range that fits
// its size, positions within it, counts that add up); it cannot check that b
// is what a replay of the log gave, which is why the caller keeps b where
// only the auditor writes.
func Resume(b []byte) (*Replay, error) {
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("audit: the replay's state does not parse: %s", domain.JSONProblem(err))
	}
	if s.Format != StateFormat {
		return nil, fmt.Errorf("audit: the replay's state has format %q, want %q", s.Format, StateFormat)
	}
	if s.Rules != RulesVersion {
		return nil, fmt.Errorf("audit: the replay's state was made under rules version %d, and this audit checks version %d", s.Rules, RulesVersion)
	}
	r, err := s.replay()
	if err != nil {
		return nil, fmt.Errorf("audit: the replay's state is not consistent: %w", err)
	}
	return r, nil
}

func (s *state) replay() (*Replay, error) {
	for _, h := range s.Range {
		if len(h) != rfc6962.DefaultHasher.Size() {
			return nil, fmt.Errorf("a hash of the range has %d bytes, not %d", len(h), rfc6962.DefaultHasher.Size())
		}
	}
	if s.Size >= 1<<63 {
		return nil, fmt.Errorf("a log of %d events", s.Size)
	}
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	rng, err := rf.NewRange(0, s.Size, s.Range)
	if err != nil {
		return nil, fmt.Errorf("the range does not fit %d leaves: %w", s.Size, err)
	}
	at := func(pos uint64) bool { return pos >= 1 && pos <= s.Size }
	r := New()
	r.rng = rng
	isStream := func(k string) bool { return StreamName(k) == k }
	for stream, v := range s.Versions {
		if !validKey(stream, isStream) {
			return nil, fmt.Errorf("a stream named %s, neither in one of the ledger's forms nor a digest", StreamName(stream))
		}
		ref := streamRef{name: stream} // a digest, or a name whose streamKey is itself
		if k, ok := parseStreamID(stream); ok {
			ref = streamRef{id: k}
		}
		r.versions.set(ref, v)
	}
	for id, e := range s.Erased {
		if !id.Valid() {
			return nil, fmt.Errorf("an erased subject id of %d bytes that is not a pseudonym", len(id))
		}
		var er erasure
		if e.All != nil {
			if !at(e.All.Pos) {
				return nil, fmt.Errorf("subject %s is erased at position %d, outside the log", id, e.All.Pos)
			}
			er.all = erased{pos: e.All.Pos, time: e.All.Time}
		}
		for g, x := range e.Groups {
			if !validKey(g, domain.KnownKeyGroup) {
				return nil, fmt.Errorf("subject %s has a key group erased that is neither one of the ledger's nor a digest", id)
			}
			if !at(x.Pos) {
				return nil, fmt.Errorf("subject %s is erased at position %d, outside the log", id, x.Pos)
			}
			if er.groups == nil {
				er.groups = make(map[string]erased, len(e.Groups))
			}
			er.groups[g] = erased{pos: x.Pos, time: x.Time}
		}
		if er.all.pos == 0 && len(er.groups) == 0 {
			return nil, fmt.Errorf("subject %s is listed as erased with no erasure", id)
		}
		r.erased[id] = er
	}
	for serial, c := range s.Certs {
		if !serial.Valid() {
			return nil, fmt.Errorf("a serial of %d bytes that is not a serial number", len(serial))
		}
		if (c.Revoked != 0 && !at(c.Revoked)) || (c.Deleted != 0 && !at(c.Deleted)) {
			return nil, fmt.Errorf("certificate %s is revoked or deleted outside the log", serial)
		}
		cert := newCertificate(c.NotAfter)
		cert.revoked, cert.deleted = c.Revoked, c.Deleted
		r.certs[keyOfSerial(serial)] = cert
	}
	st := s.Stats
	if st.Events > s.Size || st.Sealed > st.Events || st.KeyGenerated > uint64(len(s.Certs)) {
		return nil, fmt.Errorf("%d events of which %d sealed and %d certificates with generated keys do not fit a log of %d events and %d certificates",
			st.Events, st.Sealed, st.KeyGenerated, s.Size, len(s.Certs))
	}
	if byType, ok := sum(st.ByType); !ok || byType != st.Events {
		return nil, errors.New("the events counted by type do not add up to the events counted")
	}
	if byRole, ok := sum(st.ByActorRole); !ok || byRole != st.Events {
		return nil, errors.New("the events counted by actor role do not add up to the events counted")
	}
	if (st.Events == 0) != (st.First.IsZero() && st.Last.IsZero()) || st.Last.Before(st.First) {
		return nil, fmt.Errorf("%d events from %s to %s", st.Events, st.First.Format(time.RFC3339), st.Last.Format(time.RFC3339))
	}
	for typ := range st.ByType {
		if !printed(typ, TypeName, typeOfLength) {
			return nil, fmt.Errorf("events counted by a type of %d bytes that is not in the form the audit prints", len(typ))
		}
	}
	for role := range st.ByActorRole {
		if !printed(role, RoleName, roleOfLength) {
			return nil, fmt.Errorf("events counted by an actor role of %d bytes that is not in the form the audit prints", len(role))
		}
	}
	if st.ByType == nil {
		st.ByType = make(map[string]uint64)
	}
	if st.ByActorRole == nil {
		st.ByActorRole = make(map[string]uint64)
	}
	st.Streams = 0 // derived from the versions
	r.stats = st
	if uint64(len(s.Findings)) != min(s.Total, MaxFindings) {
		return nil, fmt.Errorf("%d findings kept of %d counted (the first %d are kept)", len(s.Findings), s.Total, MaxFindings)
	}
	for _, f := range s.Findings {
		if !at(f.Position) {
			return nil, fmt.Errorf("a finding at position %d, outside the log", f.Position)
		}
		if !knownRule(f.Rule) {
			return nil, fmt.Errorf("a finding at position %d under a rule of %d bytes that is none of the audit's", f.Position, len(f.Rule))
		}
	}
	r.findings, r.total = s.Findings, s.Total
	return r, nil
}

// sum adds the counts of m; ok is false if the sum overflows.
func sum(m map[string]uint64) (n uint64, ok bool) {
	for _, c := range m {
		if n+c < n {
			return 0, false
		}
		n += c
	}
	return n, true
}
