package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

// Subject pseudonyms of the tests.
const (
	s1 domain.SubjectID = "11111111111111111111111111111111"
	s9 domain.SubjectID = "99999999999999999999999999999999"
)

// ledger builds canonical encodings as a store would: positions and stream
// versions assigned in order.
type ledger struct {
	t        testing.TB
	versions map[string]uint64
	events   [][]byte
	now      time.Time
}

func newLedger(t testing.TB) *ledger {
	return &ledger{t: t, versions: map[string]uint64{}, now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
}

// add appends an event of payload p to stream, sealed under (subject, group)
// when subject is not empty, and returns its canonical bytes.
func (l *ledger) add(stream string, p domain.Payload, subject domain.SubjectID, group string) []byte {
	l.t.Helper()
	public, err := json.Marshal(p)
	if err != nil {
		l.t.Fatal(err)
	}
	l.versions[stream]++
	l.now = l.now.Add(time.Second)
	e := domain.Event{Position: uint64(len(l.events) + 1), Stream: stream, Version: l.versions[stream],
		ID: domain.EventID{byte(len(l.events)), 1}, Type: p.EventType(), Schema: p.SchemaVersion(), Time: l.now,
		Actor: domain.Actor{ID: "cert:01", Role: "officer"}, Public: public}
	if subject != "" {
		e.Sealed = &domain.Sealed{SubjectID: subject, KeyGroup: group, KeyID: 1, Ciphertext: []byte("ciphertext")}
	}
	b, err := domain.Encode(&e)
	if err != nil {
		l.t.Fatal(err)
	}
	l.events = append(l.events, b)
	return b
}

// mth is RFC 6962's Merkle Tree Hash, written from section 2.1.
func mth(leaves [][]byte) []byte {
	switch n := len(leaves); n {
	case 0:
		h := sha256.Sum256(nil)
		return h[:]
	case 1:
		h := sha256.Sum256(append([]byte{0}, leaves[0]...))
		return h[:]
	default:
		k := 1
		for k*2 < n {
			k *= 2
		}
		h := sha256.Sum256(append(append([]byte{1}, mth(leaves[:k])...), mth(leaves[k:])...))
		return h[:]
	}
}

func replay(t *testing.T, events [][]byte) *Replay {
	t.Helper()
	r := New()
	for _, b := range events {
		r.Add(b) // a malformed event is a finding, checked by the caller
	}
	return r
}

func findings(r *Replay) string {
	f, _ := r.Findings()
	var s []string
	for _, x := range f {
		s = append(s, x.String())
	}
	return strings.Join(s, "\n")
}

// TestRootAndLifecycle replays a ledger that keeps every rule and checks the
// root against RFC 6962's definition at every size.
func TestRootAndLifecycle(t *testing.T) {
	l := newLedger(t)
	r := New()
	check := func() {
		t.Helper()
		root, err := r.Root()
		if err != nil || !bytes.Equal(root, mth(l.events[:r.Size()])) {
			t.Fatalf("size %d: root %x, want %x (%v)", r.Size(), root, mth(l.events[:r.Size()]), err)
		}
	}
	check()
	subject := s1
	add := func(stream string, p domain.Payload, sealed domain.SubjectID, group string) {
		t.Helper()
		b := l.add(stream, p, sealed, group)
		e, err := r.Add(b)
		if err != nil || e.Type != p.EventType() || e.Position != r.Size() {
			t.Fatalf("Add: %+v, %v", e, err)
		}
		check()
	}
	add(domain.SubjectStream(subject), domain.SubjectRegistered{SubjectID: subject, Attributes: []string{"common_name"}}, subject, domain.GroupIdentity)
	// 0b was issued already expired, as a backdated certificate could be.
	for serial, validity := range map[domain.Serial]time.Duration{"a1": time.Hour, "b2": -time.Hour, "c3": time.Hour} {
		add(domain.SubjectStream(subject), domain.SubjectCertificateLinked{SubjectID: subject, Serial: serial}, "", "")
		add(domain.CertificateStream(serial), domain.CertificateIssued{Serial: serial, SubjectID: subject,
			NotAfter: l.now.Add(validity), KeyGenerated: serial == "c3"}, subject, domain.GroupIdentity)
	}
	add(domain.CertificateStream("a1"), domain.CertificateRevoked{Serial: "a1", Reason: domain.ReasonSuperseded}, "", "")
	add(domain.CertificateStream("a1"), domain.CertificateDeleted{Serial: "a1"}, "", "")
	add(domain.CertificateStream("b2"), domain.CertificateDeleted{Serial: "b2"}, "", "")
	add(domain.AccessStream(subject), domain.PersonalDataAccessed{SubjectID: subject, Operation: "read"}, subject, domain.GroupIdentity)
	add(domain.SubjectStream(subject), domain.SubjectErased{SubjectID: subject, KeyGroups: []string{domain.GroupNationalID}, Basis: domain.BasisConsentWithdrawn}, "", "")
	// Another group than the erased one may still be sealed under.
	add(domain.AccessStream(subject), domain.PersonalDataAccessed{SubjectID: subject, Operation: "read"}, subject, domain.GroupIdentity)
	add(domain.SubjectStream(subject), domain.SubjectErased{SubjectID: subject, Basis: domain.BasisErasureRequest}, "", "")

	if f := findings(r); f != "" {
		t.Fatalf("findings in a ledger that keeps the rules:\n%s", f)
	}
	s := r.Stats()
	if s.Events != 14 || s.ByType[domain.TypeCertificateIssued] != 3 || s.ByActorRole["officer"] != 14 || s.Sealed != 6 ||
		s.Streams != 5 || !s.First.Before(s.Last) || s.KeyGenerated != 1 {
		t.Fatalf("stats: %+v", s)
	}
}

// TestRules breaks each rule once and checks that the replay names it at the
// right position, goes on, and still hashes every leaf.
func TestRules(t *testing.T) {
	for _, tc := range ruleCases() {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t)
			tc.build(l)
			// One good event after the bad one: the replay goes on.
			l.add(domain.SubjectStream(s9), domain.SubjectRegistered{SubjectID: s9}, s9, domain.GroupIdentity)
			r := replay(t, l.events)
			f, total := r.Findings()
			if total != 1 || len(f) != 1 || !strings.HasPrefix(f[0].String(), tc.want+": ") {
				t.Fatalf("findings (%d):\n%s\nwant one %q", total, findings(r), tc.want)
			}
			if strings.Contains(findings(r), "ada@") {
				t.Fatalf("a finding repeats the value the server put there:\n%s", findings(r))
			}
			if root, _ := r.Root(); r.Size() != uint64(len(l.events)) || !bytes.Equal(root, mth(l.events)) {
				t.Fatalf("size %d root %x, want %d %x", r.Size(), root, len(l.events), mth(l.events))
			}
		})
	}
}

// ruleCase is a ledger that breaks one rule once.
type ruleCase struct {
	name  string
	build func(l *ledger)
	want  string // "position N: rule" of the single finding
}

func ruleCases() []ruleCase {
	subject := s1
	issued := func(serial domain.Serial, notAfter time.Time) domain.CertificateIssued {
		return domain.CertificateIssued{Serial: serial, SubjectID: subject, NotAfter: notAfter}
	}
	return []ruleCase{
		{"version gap", func(l *ledger) {
			l.add(domain.SubjectStream(s1), domain.SubjectRegistered{SubjectID: subject}, "", "")
			l.versions[domain.SubjectStream(s1)]++ // an event of the stream went missing
			l.add(domain.SubjectStream(subject), domain.SubjectCorrected{SubjectID: subject}, "", "")
		}, "position 2: stream-version"},
		{"version repeat", func(l *ledger) {
			l.add(domain.SubjectStream(s1), domain.SubjectRegistered{SubjectID: subject}, "", "")
			l.versions[domain.SubjectStream(s1)]--
			l.add(domain.SubjectStream(subject), domain.SubjectCorrected{SubjectID: subject}, "", "")
		}, "position 2: stream-version"},
		{"sealed after full erasure", func(l *ledger) {
			l.add(domain.SubjectStream(subject), domain.SubjectErased{SubjectID: subject, Basis: domain.BasisErasureRequest}, "", "")
			l.now = l.now.Add(2 * RaceWindow)
			l.add(domain.AccessStream(subject), domain.PersonalDataAccessed{SubjectID: subject, Operation: "read"}, subject, domain.GroupIdentity)
		}, "position 2: sealed-after-erasure"},
		{"sealed after group erasure", func(l *ledger) {
			l.add(domain.SubjectStream(subject), domain.SubjectErased{SubjectID: subject, KeyGroups: []string{domain.GroupNationalID}, Basis: domain.BasisCourtOrder}, "", "")
			l.now = l.now.Add(2 * RaceWindow)
			l.add(domain.SubjectStream(subject), domain.SubjectCorrected{SubjectID: subject, KeyGroup: domain.GroupNationalID}, subject, domain.GroupNationalID)
		}, "position 2: sealed-after-erasure"},
		{"revoked, never issued", func(l *ledger) {
			l.add("cert-a1", domain.CertificateRevoked{Serial: "a1"}, "", "")
		}, "position 1: certificate"},
		{"revoked twice", func(l *ledger) {
			l.add("cert-a1", issued("a1", l.now.Add(time.Hour)), "", "")
			l.add("cert-a1", domain.CertificateRevoked{Serial: "a1"}, "", "")
			l.add("cert-a1", domain.CertificateRevoked{Serial: "a1"}, "", "")
		}, "position 3: certificate"},
		{"deleted while valid", func(l *ledger) {
			l.add("cert-a1", issued("a1", l.now.Add(time.Hour)), "", "")
			l.add("cert-a1", domain.CertificateDeleted{Serial: "a1"}, "", "")
		}, "position 2: certificate"},
		{"deleted twice", func(l *ledger) {
			l.add("cert-a1", issued("a1", l.now), "", "")
			l.add("cert-a1", domain.CertificateDeleted{Serial: "a1"}, "", "")
			l.add("cert-a1", domain.CertificateDeleted{Serial: "a1"}, "", "")
		}, "position 3: certificate"},
		{"deleted, never issued", func(l *ledger) {
			l.add("cert-a1", domain.CertificateDeleted{Serial: "a1"}, "", "")
		}, "position 1: certificate"},
		{"revoked after deletion", func(l *ledger) {
			l.add("cert-a1", issued("a1", l.now), "", "")
			l.add("cert-a1", domain.CertificateDeleted{Serial: "a1"}, "", "")
			l.add("cert-a1", domain.CertificateRevoked{Serial: "a1"}, "", "")
		}, "position 3: certificate"},
		{"a serial that is not one", func(l *ledger) {
			l.add("cert-a1", domain.CertificateRevoked{Serial: "a1\nOK: all verified ada@example.org"}, "", "")
		}, "position 1: malformed"},
		{"a subject id that is not one", func(l *ledger) {
			l.add(domain.SubjectStream(subject), domain.SubjectErased{SubjectID: "ada@example.org", Basis: domain.BasisErasureRequest}, "", "")
		}, "position 1: malformed"},
		{"sealed after the race window", func(l *ledger) {
			l.add(domain.SubjectStream(subject), domain.SubjectErased{SubjectID: subject, Basis: domain.BasisErasureRequest}, "", "")
			l.now = l.now.Add(-RaceWindow - 2*time.Second) // add moves it one second on
			l.add(domain.AccessStream(subject), domain.PersonalDataAccessed{SubjectID: subject, Operation: "read"}, subject, domain.GroupIdentity)
		}, "position 2: sealed-after-erasure"},
		{"issued twice", func(l *ledger) {
			l.add("cert-a1", issued("a1", l.now), "", "")
			l.add("cert-a1", issued("a1", l.now), "", "")
		}, "position 2: certificate"},
		{"an erasure in another subject's stream", func(l *ledger) {
			l.add(domain.SubjectStream(s9), domain.SubjectErased{SubjectID: subject, Basis: domain.BasisErasureRequest}, "", "")
		}, "position 1: stream"},
		{"a revocation in another certificate's stream", func(l *ledger) {
			l.add("cert-a1", issued("a1", l.now.Add(time.Hour)), "", "")
			l.add("cert-b2", domain.CertificateRevoked{Serial: "a1"}, "", "")
		}, "position 2: stream"},
		{"wrong position", func(l *ledger) {
			l.add(domain.SubjectStream(s1), domain.SubjectRegistered{SubjectID: subject}, "", "")
			b := l.add(domain.SubjectStream(subject), domain.SubjectCorrected{SubjectID: subject}, "", "")
			domain.SetPlacement(b, 7, 2)
		}, "position 2: position"},
		{"undecodable", func(l *ledger) {
			l.add(domain.SubjectStream(s1), domain.SubjectRegistered{SubjectID: subject}, "", "")
			l.events = append(l.events, []byte("not an event"))
		}, "position 2: malformed"},
		{"public part does not parse", func(l *ledger) {
			b := l.add("cert-a1", domain.CertificateRevoked{Serial: "a1"}, "", "")
			e, _ := domain.Decode(b)
			e.Public = []byte(`{"serial":1}`)
			l.events[0], _ = domain.Encode(&e)
		}, "position 1: malformed"},
	}
}

// TestErasureRace checks the events the domain lets land after an erasure:
// sealed before it, appended after it (an issuance whose link preceded the
// erasure, an access that checked the subject just before), and that erasing
// again, or some groups and then all, breaks no rule.
func TestErasureRace(t *testing.T) {
	l := newLedger(t)
	subject := s1
	l.add(domain.SubjectStream(subject), domain.SubjectRegistered{SubjectID: subject}, subject, domain.GroupIdentity)
	l.add(domain.SubjectStream(subject), domain.SubjectCertificateLinked{SubjectID: subject, Serial: "a1"}, "", "")
	prepared := l.now // the issuance and an access were sealed now
	l.add(domain.SubjectStream(subject), domain.SubjectErased{SubjectID: subject, KeyGroups: []string{domain.GroupNationalID}, Basis: domain.BasisConsentWithdrawn}, "", "")
	l.add(domain.SubjectStream(subject), domain.SubjectErased{SubjectID: subject, Basis: domain.BasisErasureRequest}, "", "")
	l.add(domain.SubjectStream(subject), domain.SubjectErased{SubjectID: subject, Basis: domain.BasisErasureRequest}, "", "")
	after := l.now
	l.now = prepared.Add(-time.Second) // add moves it one second on
	l.add(domain.CertificateStream("a1"), domain.CertificateIssued{Serial: "a1", SubjectID: subject, NotAfter: after}, subject, domain.GroupIdentity)
	l.now = prepared.Add(-time.Second)
	l.add(domain.AccessStream(subject), domain.PersonalDataAccessed{SubjectID: subject, Operation: "read"}, subject, domain.GroupIdentity)
	if f := findings(replay(t, l.events)); f != "" {
		t.Fatalf("findings for events the domain allows:\n%s", f)
	}
	// Sealed with a key a node still held a few seconds after the erasure.
	l.now = after
	l.add(domain.AccessStream(subject), domain.PersonalDataAccessed{SubjectID: subject, Operation: "read"}, subject, domain.GroupIdentity)
	if f := findings(replay(t, l.events)); f != "" {
		t.Fatalf("findings for an access sealed just after the erasure:\n%s", f)
	}
	good, versions := len(l.events), maps.Clone(l.versions)

	// Sealed long after the erasure: found.
	l.now = after.Add(2 * RaceWindow)
	l.add(domain.AccessStream(subject), domain.PersonalDataAccessed{SubjectID: subject, Operation: "read"}, subject, domain.GroupIdentity)
	if f, total := replay(t, l.events).Findings(); total != 1 || f[0].Rule != RuleSealedAfterErasure || f[0].Position != uint64(len(l.events)) {
		t.Fatalf("an access sealed long after the erasure: %v", f)
	}
	// Timed just before the erasure, but landing once the ledger moved on
	// past the race window: found too.
	l.events, l.versions = l.events[:good], versions
	l.now = after.Add(2 * RaceWindow)
	l.add(domain.SubjectStream(s9), domain.SubjectRegistered{SubjectID: s9}, "", "")
	l.now = prepared
	l.add(domain.AccessStream(subject), domain.PersonalDataAccessed{SubjectID: subject, Operation: "read"}, subject, domain.GroupIdentity)
	if f, total := replay(t, l.events).Findings(); total != 1 || f[0].Rule != RuleSealedAfterErasure || f[0].Position != uint64(len(l.events)) {
		t.Fatalf("an access landing long after the erasure: %v", f)
	}
}

// TestFindingsBounded checks that findings beyond MaxFindings are counted,
// not kept.
func TestFindingsBounded(t *testing.T) {
	l := newLedger(t)
	for i := range MaxFindings + 5 {
		l.add(fmt.Sprintf("cert-%x", i+1), domain.CertificateRevoked{Serial: domain.Serial(fmt.Sprintf("%x", i+1))}, "", "")
	}
	f, total := replay(t, l.events).Findings()
	if len(f) != MaxFindings || total != MaxFindings+5 {
		t.Fatalf("kept %d, counted %d", len(f), total)
	}
}

// TestAddDoesNotAlias checks that the returned event survives the caller's
// reuse of its buffer.
func TestAddDoesNotAlias(t *testing.T) {
	l := newLedger(t)
	b := l.add(domain.AccessStream(s1), domain.PersonalDataAccessed{SubjectID: s1, Operation: "read"}, s1, domain.GroupIdentity)
	e, err := New().Add(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if !bytes.Contains(e.Public, []byte(`"operation":"read"`)) || string(e.Sealed.Ciphertext) != "ciphertext" {
		t.Fatalf("the event aliases the buffer: %s %q", e.Public, e.Sealed.Ciphertext)
	}
}

// BenchmarkReplay is the replay of issuance-shaped events (a sealed part of
// 1.5 KiB, as a certificate's DER and CSR make), beside hashing the same
// bytes as leaves alone:
//
//	go test -run '^$' -bench . ./projections/audit/
func BenchmarkReplay(b *testing.B) {
	const n = 10000
	events := issuances(b, n)
	b.Run("hash-leaves", func(b *testing.B) {
		for b.Loop() {
			for _, e := range events {
				sha256.Sum256(append([]byte{0}, e...))
			}
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("replay", func(b *testing.B) {
		for b.Loop() {
			r := New()
			for _, e := range events {
				if _, err := r.Add(e); err != nil {
					b.Fatal(err)
				}
			}
			if _, total := r.Findings(); total != 0 {
				b.Fatal(findings(r))
			}
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkReplayMemory reports the heap a Replay holds for each certificate
// once it has replayed n issuances, each in a stream of its own:
//
//	go test -run '^$' -bench ReplayMemory -benchtime 3x ./projections/audit/
func BenchmarkReplayMemory(b *testing.B) {
	const n = 100000
	events := issuances(b, n)
	var held int64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := New()
		for _, e := range events {
			if _, err := r.Add(e); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		held = int64(after.HeapAlloc) - int64(before.HeapAlloc)
		runtime.KeepAlive(r)
	}
	b.ReportMetric(float64(held)/n, "B/certificate")
}

// issuances returns n issuance-shaped events: certificate.issued, each in a
// stream of its own, with a sealed part of 1.5 KiB, for 1,000 subjects.
func issuances(b testing.TB, n int) [][]byte {
	l := newLedger(b)
	for i := range n {
		serial := domain.Serial(fmt.Sprintf("a%031x", i+1))
		subject := domain.SubjectID(fmt.Sprintf("%032x", i%1000+1))
		public, _ := json.Marshal(domain.CertificateIssued{Serial: serial, CAID: "issuing", SubjectID: subject, Profile: "tls-client",
			NotBefore: l.now, NotAfter: l.now.Add(24 * time.Hour), SPKISHA256: strings.Repeat("ab", 32)})
		e := domain.Event{Position: uint64(i + 1), Stream: domain.CertificateStream(serial), Version: 1, ID: domain.EventID{byte(i), byte(i >> 8)},
			Type: domain.TypeCertificateIssued, Schema: 1, Time: l.now, Actor: domain.Actor{ID: "cert:" + strings.Repeat("c", 32), Role: "officer"},
			Public: public, Sealed: &domain.Sealed{SubjectID: subject, KeyGroup: domain.GroupIdentity, KeyID: 1, Ciphertext: make([]byte, 1536)}}
		enc, err := domain.Encode(&e)
		if err != nil {
			b.Fatal(err)
		}
		l.events = append(l.events, enc)
	}
	return l.events
}

// TestStreamName: a stream in one of the ledger's forms is printed; any other
// only by its length.
func TestStreamName(t *testing.T) {
	id := strings.Repeat("ab", 16)
	for _, s := range []string{"subject-" + id, "access-" + id, "vault-" + id, "cert-1f", "ca-issuing-1", "vault.epochs", "vault.kek"} {
		if got := StreamName(s); got != s {
			t.Errorf("StreamName(%q) = %q", s, got)
		}
	}
	for _, s := range []string{"subject-ada.lovelace@example.org", "cert-Ada", "ca-Ada Lovelace", "ada", "access-" + id + "x"} {
		if got := StreamName(s); strings.Contains(got, s) || !strings.Contains(got, fmt.Sprint(len(s))) {
			t.Errorf("StreamName(%q) = %q, want only its length", s, got)
		}
	}
}

// TestTypeName: an event type in the ledger's form is printed; any other only
// by its length.
func TestTypeName(t *testing.T) {
	for _, typ := range []string{domain.TypeSubjectRegistered, domain.TypeCertificateIssued, domain.TypePersonalDataAccessed, "vault.kek-rotation-started", "vault.epoch-started"} {
		if got := TypeName(typ); got != typ {
			t.Errorf("TypeName(%q) = %q", typ, got)
		}
	}
	for _, typ := range []string{"Ada Lovelace", "ada@example.org", "subject.Registered", "subject.", ".x", "subject", "subject." + strings.Repeat("a", 64)} {
		if got := TypeName(typ); strings.Contains(got, typ) || !strings.Contains(got, fmt.Sprint(len(typ))) {
			t.Errorf("TypeName(%q) = %q, want only its length", typ, got)
		}
	}
}

// TestRoleName: an actor role in the ledger's form is printed; any other only
// by its length.
func TestRoleName(t *testing.T) {
	for _, role := range []string{"officer", "compliance", "system", "kek-rotation"} {
		if got := RoleName(role); got != role {
			t.Errorf("RoleName(%q) = %q", role, got)
		}
	}
	for _, role := range []string{"Ada Lovelace", "ada@example.org", "Officer", "", "-x", strings.Repeat("a", 33)} {
		if got := RoleName(role); (role != "" && strings.Contains(got, role)) || !strings.Contains(got, fmt.Sprint(len(role))) {
			t.Errorf("RoleName(%q) = %q, want only its length", role, got)
		}
	}
}

// TestActorName: actor ids in the ledger's forms are printed; any other only
// by its length.
func TestActorName(t *testing.T) {
	for _, id := range []string{"cert:1a2b", "caledger", "caledger-init", "caledger-kek-rotate", "caledger-vault"} {
		if got := ActorName(id); got != id {
			t.Errorf("ActorName(%q) = %q", id, got)
		}
	}
	for _, id := range []string{"Ada Lovelace", "ada@example.org", "cert:Ada Lovelace", "cert:", "", strings.Repeat("a", 33)} {
		if got := ActorName(id); (id != "" && strings.Contains(got, id)) || !strings.Contains(got, fmt.Sprint(len(id))) {
			t.Errorf("ActorName(%q) = %q, want only its length", id, got)
		}
	}
}
