package audit

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

// richLedger keeps most rules and breaks some: certificates issued, expired,
// revoked and deleted, accesses, group and full erasures, events that raced
// an erasure (excused only while the ledger has not moved on), a stream and
// a key group named in none of the ledger's forms (as a faulty server could
// name them), and three findings.
func richLedger(t testing.TB) *ledger {
	l := newLedger(t)
	subject := s1
	l.add(domain.SubjectStream(subject), domain.SubjectRegistered{SubjectID: subject, Attributes: []string{"common_name"}}, subject, domain.GroupIdentity)
	l.add(foreignName, domain.SubjectCorrected{SubjectID: s9}, "", "")
	l.add(domain.SubjectStream(s9), domain.SubjectErased{SubjectID: s9, KeyGroups: []string{foreignName}, Basis: domain.BasisConsentWithdrawn}, "", "")
	for _, c := range []struct {
		serial   domain.Serial
		validity time.Duration
	}{{"a1", time.Hour}, {"b2", -time.Hour}, {"c3", time.Hour}} {
		l.add(domain.SubjectStream(subject), domain.SubjectCertificateLinked{SubjectID: subject, Serial: c.serial}, "", "")
		l.add(domain.CertificateStream(c.serial), domain.CertificateIssued{Serial: c.serial, SubjectID: subject,
			NotAfter: l.now.Add(c.validity), KeyGenerated: c.serial == "c3"}, subject, domain.GroupIdentity)
	}
	l.add(domain.CertificateStream("a1"), domain.CertificateRevoked{Serial: "a1", Reason: domain.ReasonSuperseded}, "", "")
	l.add(domain.CertificateStream("a1"), domain.CertificateDeleted{Serial: "a1"}, "", "")
	l.add(domain.CertificateStream("b2"), domain.CertificateDeleted{Serial: "b2"}, "", "")
	l.add(domain.AccessStream(subject), domain.PersonalDataAccessed{SubjectID: subject, Operation: "read"}, subject, domain.GroupIdentity)
	l.add(domain.SubjectStream(subject), domain.SubjectErased{SubjectID: subject, KeyGroups: []string{domain.GroupNationalID}, Basis: domain.BasisConsentWithdrawn}, "", "")
	l.add(domain.SubjectStream(subject), domain.SubjectErased{SubjectID: subject, Basis: domain.BasisErasureRequest}, "", "")
	erasedAt := l.now
	// Sealed with a key a node still held a few seconds after the erasure:
	// excused. The next one lands once the ledger moved past the window.
	l.add(domain.AccessStream(subject), domain.PersonalDataAccessed{SubjectID: subject, Operation: "read"}, subject, domain.GroupIdentity)
	l.now = erasedAt.Add(2 * RaceWindow)
	l.add(domain.SubjectStream(s9), domain.SubjectRegistered{SubjectID: s9}, s9, domain.GroupIdentity)
	l.now = erasedAt
	l.add(domain.AccessStream(subject), domain.PersonalDataAccessed{SubjectID: subject, Operation: "read"}, subject, domain.GroupIdentity)
	l.add(domain.CertificateStream("a1"), domain.CertificateRevoked{Serial: "a1"}, "", "") // after its deletion
	l.add(domain.CertificateStream("c3"), domain.CertificateRevoked{Serial: "c3", Reason: domain.ReasonKeyCompromise}, "", "")
	l.add(foreignName, domain.SubjectCorrected{SubjectID: s9}, "", "")
	l.add(domain.SubjectStream(s9), domain.SubjectCorrected{SubjectID: s9}, s9, foreignName) // after the group's erasure
	return l
}

// foreignName is a stream and key group name in none of the ledger's forms.
const foreignName = "ada.lovelace@example.org"

// TestResumeMatchesFullReplay cuts ledgers at every position, resumes the
// replay of the first part from its state and adds the rest: the result must
// be the full replay's, down to the encoded state (findings, counts,
// erasures, certificates, versions and range).
func TestResumeMatchesFullReplay(t *testing.T) {
	ledgers := map[string][][]byte{"rich": richLedger(t).events}
	for _, tc := range ruleCases() {
		l := newLedger(t)
		tc.build(l)
		l.add(domain.SubjectStream(s9), domain.SubjectRegistered{SubjectID: s9}, s9, domain.GroupIdentity)
		ledgers[tc.name] = l.events
	}
	for name, events := range ledgers {
		t.Run(name, func(t *testing.T) {
			full := replay(t, events)
			want, err := full.MarshalState()
			if err != nil {
				t.Fatal(err)
			}
			if name == "rich" {
				if _, total := full.Findings(); total != 3 {
					t.Fatalf("the rich ledger gives %d findings, want 3:\n%s", total, findings(full))
				}
				if bytes.Contains(want, []byte("ada.")) {
					t.Fatalf("the state holds a name the server chose:\n%s", want)
				}
			}
			for cut := range len(events) + 1 {
				b, err := replay(t, events[:cut]).MarshalState()
				if err != nil {
					t.Fatal(err)
				}
				r, err := Resume(b)
				if err != nil {
					t.Fatalf("cut at %d: %v", cut, err)
				}
				if r.Size() != uint64(cut) {
					t.Fatalf("cut at %d: resumed at size %d", cut, r.Size())
				}
				for _, e := range events[cut:] {
					r.Add(e) // findings are compared below
				}
				got, err := r.MarshalState()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("cut at %d: the resumed replay ends as\n%s\nthe full replay as\n%s", cut, got, want)
				}
				// And as the full replay reports it, not only as it encodes.
				gf, gt := r.Findings()
				wf, wt := full.Findings()
				if gt != wt || !reflect.DeepEqual(gf, wf) {
					t.Fatalf("cut at %d: findings %v (%d), want %v (%d)", cut, gf, gt, wf, wt)
				}
				gs, ws := r.Stats(), full.Stats()
				if !gs.First.Equal(ws.First) || !gs.Last.Equal(ws.Last) {
					t.Fatalf("cut at %d: events from %s to %s, want %s to %s", cut, gs.First, gs.Last, ws.First, ws.Last)
				}
				gs.First, gs.Last, ws.First, ws.Last = time.Time{}, time.Time{}, time.Time{}, time.Time{}
				if !reflect.DeepEqual(gs, ws) {
					t.Fatalf("cut at %d: stats %+v, want %+v", cut, gs, ws)
				}
				if root, _ := r.Root(); !bytes.Equal(root, mth(events)) {
					t.Fatalf("cut at %d: root %x, want %x", cut, root, mth(events))
				}
			}
		})
	}
}

// TestResumeRefuses checks that a state that is not one, or that does not
// hold together, is refused with a reason.
func TestResumeRefuses(t *testing.T) {
	good, err := replay(t, richLedger(t).events).MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	edit := func(change func(s map[string]any)) []byte {
		var s map[string]any
		if err := json.Unmarshal(good, &s); err != nil {
			t.Fatal(err)
		}
		change(s)
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	stats := func(s map[string]any) map[string]any { return s["stats"].(map[string]any) }
	for _, tc := range []struct {
		name  string
		state []byte
		want  string
	}{
		{"not JSON", []byte("size 12"), "does not parse"},
		{"another format", edit(func(s map[string]any) { s["format"] = "caledger-audit-replay/0" }), "has format"},
		{"a range of another size", edit(func(s map[string]any) { s["size"] = 4 }), "does not fit 4 leaves"},
		{"a short hash", edit(func(s map[string]any) { s["range"].([]any)[0] = "AAAA" }), "has 3 bytes"},
		{"other rules", edit(func(s map[string]any) { s["rules"] = RulesVersion + 1 }), "made under rules version"},
		{"a log too large", edit(func(s map[string]any) { s["size"] = uint64(1 << 63) }), "a log of"},
		{"a stream by its name", edit(func(s map[string]any) { s["versions"].(map[string]any)[foreignName] = 1 }), "neither in one of the ledger's forms nor a digest"},
		{"a key group by its name", edit(func(s map[string]any) {
			s["erased"].(map[string]any)[string(s1)].(map[string]any)["groups"] = map[string]any{foreignName: map[string]any{"pos": 1, "time": time.Now()}}
		}), "neither one of the ledger's nor a digest"},
		{"a subject that is no pseudonym", edit(func(s map[string]any) { s["erased"].(map[string]any)[foreignName] = map[string]any{} }), "not a pseudonym"},
		{"a serial that is none", edit(func(s map[string]any) { s["certs"].(map[string]any)[foreignName] = map[string]any{} }), "not a serial number"},
		{"the last event before the first", edit(func(s map[string]any) { stats(s)["last"] = "2000-01-01T00:00:00Z" }), "events from"},
		{"an erasure outside the log", edit(func(s map[string]any) {
			s["erased"].(map[string]any)[string(s1)].(map[string]any)["all"] = map[string]any{"pos": 99, "time": time.Now()}
		}), "erased at position 99"},
		{"an erasure of nothing", edit(func(s map[string]any) { s["erased"].(map[string]any)[string(s9)] = map[string]any{} }), "with no erasure"},
		{"a revocation outside the log", edit(func(s map[string]any) {
			s["certs"].(map[string]any)["a1"].(map[string]any)["r"] = 0x7fffffff
		}), "revoked or deleted outside the log"},
		{"more events than leaves", edit(func(s map[string]any) { stats(s)["events"] = 1000 }), "do not fit"},
		{"counts by type that do not add up", edit(func(s map[string]any) { stats(s)["by_type"].(map[string]any)["x.y"] = 1 }), "counted by type"},
		{"counts by role that overflow", edit(func(s map[string]any) {
			stats(s)["by_actor_role"].(map[string]any)["x"] = uint64(1<<64 - 1)
		}), "counted by actor role"},
		{"a type in no printed form", edit(func(s map[string]any) {
			by := stats(s)["by_type"].(map[string]any)
			by[foreignName], by[domain.TypeCertificateIssued] = 1, by[domain.TypeCertificateIssued].(float64)-1
		}), "counted by a type of"},
		{"a type's length form that lies", edit(func(s map[string]any) {
			by := stats(s)["by_type"].(map[string]any)
			by["(a type of 7 bytes in none of the ledger's forms) "+foreignName], by[domain.TypeCertificateIssued] = 1, by[domain.TypeCertificateIssued].(float64)-1
		}), "counted by a type of"},
		{"a role in no printed form", edit(func(s map[string]any) {
			by := stats(s)["by_actor_role"].(map[string]any)
			by[foreignName], by["officer"] = 1, by["officer"].(float64)-1
		}), "counted by an actor role of"},
		{"a finding under no rule", edit(func(s map[string]any) { s["findings"].([]any)[0].(map[string]any)["Rule"] = foreignName }), "none of the audit's"},
		{"a finding outside the log", edit(func(s map[string]any) { s["findings"].([]any)[0].(map[string]any)["Position"] = 0 }), "finding at position 0"},
		{"more findings kept than counted", edit(func(s map[string]any) { s["findings_total"] = 1 }), "3 findings kept of 1 counted"},
		{"fewer findings kept than counted", edit(func(s map[string]any) { s["findings_total"] = 4 }), "3 findings kept of 4 counted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := Resume(tc.state); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Resume: %v, %v; want an error with %q", r, err, tc.want)
			}
		})
	}
	if _, err := Resume(good); err != nil {
		t.Fatalf("the unedited state: %v", err)
	}
	printedForms := edit(func(s map[string]any) {
		by := stats(s)["by_type"].(map[string]any)
		by[TypeName(foreignName)], by[domain.TypeCertificateIssued] = 1, by[domain.TypeCertificateIssued].(float64)-1
		roles := stats(s)["by_actor_role"].(map[string]any)
		roles[RoleName(foreignName)], roles["officer"] = 1, roles["officer"].(float64)-1
	})
	if _, err := Resume(printedForms); err != nil {
		t.Fatalf("a state with a type and a role in their length forms: %v", err)
	}
}

// BenchmarkState is the encoding of a replay's state and its resumption,
// for a ledger of 10,000 issuances (10,000 streams and certificates), beside
// the replay of the same events.
//
//	go test -run '^$' -bench State ./projections/audit/
func BenchmarkState(b *testing.B) {
	events := issuances(b, 10000)
	r := New()
	for _, e := range events {
		if _, err := r.Add(e); err != nil {
			b.Fatal(err)
		}
	}
	var size int
	b.Run("marshal+resume", func(b *testing.B) {
		for b.Loop() {
			st, err := r.MarshalState()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Resume(st); err != nil {
				b.Fatal(err)
			}
			size = len(st)
		}
		b.ReportMetric(float64(size)/float64(len(events)), "bytes/event")
		b.ReportMetric(float64(b.N*len(events))/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("replay", func(b *testing.B) {
		for b.Loop() {
			r := New()
			for _, e := range events {
				r.Add(e)
			}
		}
		b.ReportMetric(float64(b.N*len(events))/b.Elapsed().Seconds(), "events/s")
	})
}
