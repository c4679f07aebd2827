// Package audit replays the ledger as an outside auditor does: from the
// events' canonical encodings alone, in position order, with no key and no
// access to the server's files.
//
// A Replay recomputes the RFC 6962 Merkle root that signed checkpoints commit
// to (leaf i is the event at position i+1, hashed as
// rfc6962.DefaultHasher.HashLeaf(canonical)), and checks the rules that public
// facts let anyone check:
//
//   - every event decodes, and sits at the position its leaf index gives;
//   - each stream's versions run 1, 2, 3, ... with no gap or repeat, so no
//     event of a stream was removed or replayed;
//   - nothing is sealed under a subject's key group after that group's
//     erasure (subject.erased), so no personal data was kept or collected
//     under a key the ledger says was destroyed. An event is sealed when it
//     is prepared, which sets its time, and appended after; and the keys are
//     destroyed only after the erasure is recorded (a node of a cluster may
//     seal with a cached key a few seconds longer). So an event sealed
//     around the erasure may land just after it: an issuance whose link
//     preceded the erasure, an access that checked the subject just before.
//     Such an event is excused when its time is within RaceWindow of the
//     erasure's and the ledger has not moved on further than RaceWindow past
//     the erasure (by the latest event time seen); the rule trusts event
//     times, and the nodes' clocks, that far;
//   - a certificate is issued once; it is revoked, or deleted, only after
//     it was issued and before it was deleted; it is revoked once; and it is
//     deleted once, and only once revoked or expired.
//
// A broken rule is a Finding; the replay goes on, so one run reports every
// finding (the first MaxFindings in detail). Findings name positions, streams,
// serials and subject pseudonyms only: never personal data, which the replay
// cannot read anyway.
//
// Memory grows with the number of streams, certificates and erased subjects
// (a map entry each), not with the number of events. A stream or key group
// name in none of the ledger's forms is kept as its SHA-256 only, so that
// neither memory nor a kept state (MarshalState) holds what a faulty server
// put there.
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/caledger/caledger/domain"
)

// RulesVersion names the rules this package checks. It changes with every
// rule, and with every change to what the replay remembers or how: a replay
// kept under other rules (MarshalState) is not resumed, since the events it
// covered were never checked under these.
//
// Version 2: a serial of 160 bits (21 octets in DER, with its sign) is
// malformed, as RFC 5280 allows at most 20; version 1 took it.
const RulesVersion = 2

// MaxFindings bounds the findings a Replay keeps in detail; it counts them
// all.
const MaxFindings = 100

// RaceWindow bounds how far apart in time an event sealed under an erased key
// and the erasure may be, for the event to be excused as one that raced the
// erasure (see the package doc): far longer than an issuance or an access
// takes from sealing to append, or a shared vault's key cache lives.
const RaceWindow = time.Minute

// Rules, the Rule of a Finding.
const (
	RuleMalformed          = "malformed"            // the canonical bytes do not decode
	RulePosition           = "position"             // the event claims another position than its leaf's
	RuleStreamVersion      = "stream-version"       // a stream's versions skip or repeat
	RuleSealedAfterErasure = "sealed-after-erasure" // personal data sealed under an erased key group
	RuleCertificate        = "certificate"          // a revocation or deletion that breaks the lifecycle
	RuleStream             = "stream"               // an erasure or certificate event in another stream than its own
)

// knownRule reports whether r is one of the rules above (Resume refuses a
// state whose findings name another).
func knownRule(r string) bool {
	switch r {
	case RuleMalformed, RulePosition, RuleStreamVersion, RuleSealedAfterErasure, RuleCertificate, RuleStream:
		return true
	}
	return false
}

// Finding is a broken rule at one event.
type Finding struct {
	Position uint64 // the event's position (leaf index + 1)
	Rule     string
	Detail   string // positions, streams, serials and pseudonyms only
}

func (f Finding) String() string {
	return fmt.Sprintf("position %d: %s: %s", f.Position, f.Rule, f.Detail)
}

// Stats summarises what the replay saw: who did what, and when.
// A Replay's state (MarshalState) encodes it with the tags below; Streams is
// derived, and left out.
type Stats struct {
	Events      uint64            `json:"events"`
	ByType      map[string]uint64 `json:"by_type"`       // events per type
	ByActorRole map[string]uint64 `json:"by_actor_role"` // events per actor role
	Streams     int               `json:"-"`
	Sealed      uint64            `json:"sealed"` // events with a sealed part
	// KeyGenerated counts the certificates whose key pair caledger
	// generated (soft tokens): keys that existed outside their holder.
	KeyGenerated uint64    `json:"key_generated"`
	First        time.Time `json:"first"` // the earliest event time
	Last         time.Time `json:"last"`  // the latest event time
}

// Replay checks events appended in position order. The zero Replay is not
// usable; call New.
type Replay struct {
	rng *compact.Range

	versions versions // stream -> last version seen
	erased   map[domain.SubjectID]erasure
	certs    map[serialKey]certificate

	stats    Stats
	findings []Finding
	total    uint64 // findings, counted beyond MaxFindings too
}

// erasure is what was erased of a subject, where and when.
type erasure struct {
	all    erased            // the erasure of every group; zero if none
	groups map[string]erased // group -> its erasure alone
}

// erased is an erasure event: its position (0: none) and time.
type erased struct {
	pos  uint64
	time time.Time
}

// New returns an empty Replay: the log of size 0.
func New() *Replay {
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	return &Replay{
		rng:      rf.NewEmptyRange(0),
		versions: newVersions(),
		erased:   make(map[domain.SubjectID]erasure),
		certs:    make(map[serialKey]certificate),
		stats:    Stats{ByType: make(map[string]uint64), ByActorRole: make(map[string]uint64)},
	}
}

// Size is the number of events added: the size of the log Root is for.
func (r *Replay) Size() uint64 { return r.rng.End() }

// Root is the RFC 6962 root hash of the log of the events added so far.
func (r *Replay) Root() ([]byte, error) {
	if r.rng.End() == 0 {
		return rfc6962.DefaultHasher.EmptyRoot(), nil
	}
	return r.rng.GetRootHash(nil)
}

// Stats returns what the replay has seen so far. The maps are the Replay's:
// do not change them.
func (r *Replay) Stats() Stats {
	s := r.stats
	s.Streams = r.versions.len()
	return s
}

// Findings returns the first MaxFindings findings and the number of all.
func (r *Replay) Findings() ([]Finding, uint64) { return r.findings, r.total }

// Add appends the event whose canonical encoding is canonical as the next leaf
// (position Size()+1) and checks it. It returns the decoded event, or the
// decoding error; either way the leaf is added, since the log is made of the
// bytes, and a bad encoding is a finding. canonical is not retained, and the
// returned event does not alias it.
func (r *Replay) Add(canonical []byte) (domain.Event, error) {
	if err := r.rng.Append(rfc6962.DefaultHasher.HashLeaf(canonical), nil); err != nil {
		return domain.Event{}, fmt.Errorf("audit: %w", err)
	}
	pos := r.rng.End()
	e, err := domain.Decode(canonical)
	if err != nil {
		r.find(pos, RuleMalformed, err.Error())
		return domain.Event{}, err
	}
	e.Public = slices.Clone(e.Public)
	if e.Sealed != nil {
		s := *e.Sealed
		s.Ciphertext = slices.Clone(s.Ciphertext)
		e.Sealed = &s
	}
	if e.Position != pos {
		r.find(pos, RulePosition, fmt.Sprintf("the event is recorded at position %d", e.Position))
	}
	r.count(&e)
	stream := refOf(e.Stream)
	last := r.versions.get(stream)
	if e.Version != last+1 {
		r.find(pos, RuleStreamVersion, fmt.Sprintf("stream %s goes from version %d to %d", StreamName(e.Stream), last, e.Version))
	}
	r.versions.set(stream, max(last, e.Version))
	r.checkSealed(pos, &e)
	r.apply(pos, &e)
	return e, nil
}

func (r *Replay) count(e *domain.Event) {
	s := &r.stats
	s.Events++
	s.ByType[TypeName(e.Type)]++
	s.ByActorRole[RoleName(e.Actor.Role)]++
	if e.Sealed != nil {
		s.Sealed++
	}
	if s.First.IsZero() || e.Time.Before(s.First) {
		s.First = e.Time
	}
	if e.Time.After(s.Last) {
		s.Last = e.Time
	}
}

// checkSealed finds a sealed part under a key group erased earlier.
func (r *Replay) checkSealed(pos uint64, e *domain.Event) {
	if e.Sealed == nil {
		return
	}
	er, ok := r.erased[e.Sealed.SubjectID]
	if !ok {
		return
	}
	// The first erasure that covers the group decides: an event sealed
	// around it may land after it, within RaceWindow.
	at := er.all
	if g, ok := er.groups[groupKey(e.Sealed.KeyGroup)]; ok && (at.pos == 0 || g.pos < at.pos) {
		at = g
	}
	if at.pos == 0 {
		return
	}
	if within(e.Time, at.time) && within(r.stats.Last, at.time) {
		return
	}
	group := fmt.Sprintf("%q", e.Sealed.KeyGroup)
	if !domain.KnownKeyGroup(e.Sealed.KeyGroup) {
		group = fmt.Sprintf("(a name of %d bytes)", len(e.Sealed.KeyGroup))
	}
	r.find(pos, RuleSealedAfterErasure, fmt.Sprintf("%s of %s seals data under key group %s of subject %s, erased at position %d",
		TypeName(e.Type), e.Time.Format(time.RFC3339Nano), group, e.Sealed.SubjectID, at.pos))
}

// within reports whether a and b are at most RaceWindow apart.
func within(a, b time.Time) bool {
	d := a.Sub(b)
	return -RaceWindow <= d && d <= RaceWindow
}

// apply follows the facts the rules need: erasures and certificate lifecycles.
// A public part that does not parse is a malformed event.
func (r *Replay) apply(pos uint64, e *domain.Event) {
	switch e.Type {
	case domain.TypeSubjectErased:
		var p domain.SubjectErased
		if !r.public(pos, e, &p) {
			return
		}
		if !p.SubjectID.Valid() {
			// The value is not printed: where a pseudonym belongs, a
			// faulty server may have put a name.
			r.find(pos, RuleMalformed, fmt.Sprintf("%s names a subject id of %d bytes that is not a pseudonym", TypeName(e.Type), len(p.SubjectID)))
			return
		}
		r.stream(pos, e, domain.SubjectStream(p.SubjectID))
		er := r.erased[p.SubjectID]
		at := erased{pos: pos, time: e.Time}
		if len(p.KeyGroups) == 0 {
			if er.all.pos == 0 {
				er.all = at
			}
		} else {
			if er.groups == nil {
				er.groups = make(map[string]erased)
			}
			for _, g := range p.KeyGroups {
				if _, ok := er.groups[groupKey(g)]; !ok {
					er.groups[groupKey(g)] = at
				}
			}
		}
		r.erased[p.SubjectID] = er
	case domain.TypeCertificateIssued:
		var p domain.CertificateIssued
		if !r.public(pos, e, &p) || !r.serial(pos, e, p.Serial) {
			return
		}
		k := keyOfSerial(p.Serial)
		if _, ok := r.certs[k]; ok {
			r.find(pos, RuleCertificate, fmt.Sprintf("certificate %s is issued a second time", p.Serial))
			return
		}
		r.certs[k] = newCertificate(p.NotAfter)
		if p.KeyGenerated {
			r.stats.KeyGenerated++
		}
	case domain.TypeCertificateRevoked:
		var p domain.CertificateRevoked
		if !r.public(pos, e, &p) || !r.serial(pos, e, p.Serial) {
			return
		}
		k := keyOfSerial(p.Serial)
		c, ok := r.certs[k]
		switch {
		case !ok:
			r.find(pos, RuleCertificate, fmt.Sprintf("certificate %s is revoked but was never issued", p.Serial))
		case c.revoked != 0:
			r.find(pos, RuleCertificate, fmt.Sprintf("certificate %s is revoked again (first at position %d)", p.Serial, c.revoked))
		case c.deleted != 0:
			r.find(pos, RuleCertificate, fmt.Sprintf("certificate %s is revoked after its deletion at position %d", p.Serial, c.deleted))
		default:
			c.revoked = pos
			r.certs[k] = c
		}
	case domain.TypeCertificateDeleted:
		var p domain.CertificateDeleted
		if !r.public(pos, e, &p) || !r.serial(pos, e, p.Serial) {
			return
		}
		k := keyOfSerial(p.Serial)
		c, ok := r.certs[k]
		switch {
		case !ok:
			r.find(pos, RuleCertificate, fmt.Sprintf("certificate %s is deleted but was never issued", p.Serial))
		case c.deleted != 0:
			r.find(pos, RuleCertificate, fmt.Sprintf("certificate %s is deleted again (first at position %d)", p.Serial, c.deleted))
		default:
			if notAfter := c.notAfter(); c.revoked == 0 && e.Time.Before(notAfter) {
				r.find(pos, RuleCertificate, fmt.Sprintf("certificate %s is deleted at %s while neither revoked nor expired (not after %s)",
					p.Serial, e.Time.Format(time.RFC3339), notAfter.Format(time.RFC3339)))
			}
			c.deleted = pos
			r.certs[k] = c
		}
	}
}

// public parses e's public part into p, or records a malformed event.
func (r *Replay) public(pos uint64, e *domain.Event, p any) bool {
	if err := json.Unmarshal(e.Public, p); err != nil {
		r.find(pos, RuleMalformed, fmt.Sprintf("the public part of %s does not parse: %s", TypeName(e.Type), domain.JSONProblem(err)))
		return false
	}
	return true
}

// serial checks that a certificate event names a serial (lower-case hex), so
// that findings print nothing else the server put there; a bad one is not
// printed either.
func (r *Replay) serial(pos uint64, e *domain.Event, s domain.Serial) bool {
	if !s.Valid() {
		r.find(pos, RuleMalformed, fmt.Sprintf("%s names a serial of %d bytes that is not a serial number", TypeName(e.Type), len(s)))
		return false
	}
	r.stream(pos, e, domain.CertificateStream(s))
	return true
}

// stream finds an event recorded in another stream than want, its own.
func (r *Replay) stream(pos uint64, e *domain.Event, want string) {
	if e.Stream != want {
		r.find(pos, RuleStream, fmt.Sprintf("%s is recorded in stream %s, not %s", TypeName(e.Type), StreamName(e.Stream), want))
	}
}

// StreamName is stream as the audit prints it: as it is when it has one of
// the ledger's forms (a pseudonym after subject-, access- or vault-, a serial
// after cert-, a CA id after ca-, vault.epochs, vault.kek), otherwise only its length.
// Where a pseudonym belongs, a faulty server may have put a name.
func StreamName(stream string) string {
	prefix, rest, _ := strings.Cut(stream, "-")
	ok := stream == "vault.epochs" || stream == "vault.kek"
	switch prefix {
	case "subject", "access", "vault":
		ok = domain.SubjectID(rest).Valid()
	case "cert":
		ok = domain.Serial(rest).Valid()
	case "ca":
		ok = domain.ValidSlug(rest)
	}
	if ok {
		return stream
	}
	return fmt.Sprintf("(a name of %d bytes in none of the ledger's forms)", len(stream))
}

// streamKey is the key of stream in the replay's maps: stream itself when it
// has one of the ledger's forms, otherwise its digest (hashedKey).
func streamKey(stream string) string {
	if StreamName(stream) == stream {
		return stream
	}
	return hashedKey(stream)
}

// groupKey is the key of key group g: g when it is one of the ledger's
// groups, otherwise its digest.
func groupKey(g string) string {
	if domain.KnownKeyGroup(g) {
		return g
	}
	return hashedKey(g)
}

// hashedKey stands for a name in none of the ledger's forms: "sha256:" and
// the hex of its SHA-256. No name of the ledger's forms starts so, and a
// name that does is hashed itself.
func hashedKey(name string) string {
	h := sha256.Sum256([]byte(name))
	return "sha256:" + hex.EncodeToString(h[:])
}

// validKey reports whether k is a key streamKey or groupKey (known reports
// the names of the ledger's forms) could have made.
func validKey(k string, known func(string) bool) bool {
	if h, ok := strings.CutPrefix(k, "sha256:"); ok {
		b, err := hex.DecodeString(h)
		return err == nil && len(b) == sha256.Size && h == strings.ToLower(h)
	}
	return known(k)
}

// TypeName is an event type as the audit prints it: as it is when it has the
// ledger's form (dot-separated words of lower-case letters, digits and
// hyphens, such as subject.registered or vault.kek-retired, at most 64
// bytes), otherwise only its length. A faulty server may have put a name or
// an address there; the form keeps out spaces, capitals and "@".
func TypeName(typ string) string {
	words := strings.Split(typ, ".")
	ok := len(typ) <= 64 && len(words) >= 2
	for _, w := range words {
		ok = ok && ledgerWord(w)
	}
	if ok {
		return typ
	}
	return typeOfLength(len(typ))
}

func typeOfLength(n int) string {
	return fmt.Sprintf("(a type of %d bytes in none of the ledger's forms)", n)
}

// RoleName is an actor role as the audit prints it: as it is when it is one
// word of the ledger's form (such as officer or system, at most 32 bytes),
// otherwise only its length, for the reason TypeName gives.
func RoleName(role string) string {
	if len(role) <= 32 && ledgerWord(role) {
		return role
	}
	return roleOfLength(len(role))
}

// ActorName is an actor id as the audit prints it: as it is when it has one
// of the ledger's forms (cert:<serial> for a client certificate, or one word
// such as caledger or caledger-init, at most 32 bytes), otherwise only its
// length, for the reason TypeName gives.
func ActorName(id string) string {
	if serial, ok := strings.CutPrefix(id, "cert:"); ok && domain.Serial(serial).Valid() {
		return id
	}
	if len(id) <= 32 && ledgerWord(id) {
		return id
	}
	return fmt.Sprintf("(an actor id of %d bytes in none of the ledger's forms)", len(id))
}

func roleOfLength(n int) string {
	return fmt.Sprintf("(a role of %d bytes in none of the ledger's forms)", n)
}

// printed reports whether key is a name as the audit prints it: name(key) is
// key itself, or key is the length form that ofLength gives for some length.
func printed(key string, name func(string) string, ofLength func(int) string) bool {
	if name(key) == key {
		return true
	}
	i := strings.IndexFunc(key, func(r rune) bool { return r >= '0' && r <= '9' })
	if i < 0 {
		return false
	}
	digits := key[i:]
	if j := strings.IndexByte(digits, ' '); j >= 0 {
		digits = digits[:j]
	}
	n, err := strconv.Atoi(digits) // digits has no sign: n is not negative
	return err == nil && key == ofLength(n)
}

// ledgerWord reports whether w is a word of the ledger's names: lower-case
// letters, digits and hyphens, starting with a letter.
func ledgerWord(w string) bool {
	return w != "" && strings.Trim(w, "abcdefghijklmnopqrstuvwxyz0123456789-") == "" && w[0] >= 'a' && w[0] <= 'z'
}

func (r *Replay) find(pos uint64, rule, detail string) {
	r.total++
	if len(r.findings) < MaxFindings {
		r.findings = append(r.findings, Finding{Position: pos, Rule: rule, Detail: detail})
	}
}
