package projections

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

func TestSearchSubjects(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.open(t, r.viewsPath())
	stop := run(t, v, r.store)
	asa := r.register(t, map[string]string{"common_name": "Åsa Öberg", "email": "asa@example.se", "country": "SE"})
	anna := r.register(t, map[string]string{"common_name": "Anna Öberg", "email": "anna@example.se", "country": "SE"})
	olle := r.register(t, map[string]string{"common_name": "Olle Öberg", "email": "olle@example.fi", "country": "FI"})
	star := r.register(t, map[string]string{"common_name": "Öberg*", "country": "SE"})
	r.sync(t, v)

	ids := func(rows []SubjectRow) []domain.SubjectID {
		var out []domain.SubjectID
		for _, row := range rows {
			out = append(out, row.ID)
		}
		return out
	}
	sorted := func(s ...domain.SubjectID) []domain.SubjectID { slices.Sort(s); return s }
	for _, c := range []struct {
		name  string
		match map[string]string
		limit int
		want  []domain.SubjectID
	}{
		{"exact", map[string]string{"common_name": "Åsa Öberg"}, 0, sorted(asa)},
		{"exact ignores case", map[string]string{"common_name": "åSA öBERG"}, 0, sorted(asa)},
		{"exact is not a prefix", map[string]string{"common_name": "Åsa"}, 0, nil},
		{"exact is not a substring", map[string]string{"email": "example.se"}, 0, nil},
		{"prefix", map[string]string{"email": "a*"}, 0, sorted(asa, anna)},
		{"prefix ignores case", map[string]string{"common_name": "ANNA ö*"}, 0, sorted(anna)},
		{"prefix with non-ASCII", map[string]string{"common_name": "å*"}, 0, sorted(asa)},
		{"all must match", map[string]string{"country": "se", "email": "a*"}, 0, sorted(asa, anna)},
		{"all must match, none does", map[string]string{"country": "FI", "email": "a*"}, 0, nil},
		{"three attributes", map[string]string{"country": "fi", "email": "olle@*", "common_name": "olle öberg"}, 0, sorted(olle)},
		{"absent attribute", map[string]string{"country": "SE", "organization": "x*"}, 0, nil},
		{"limit", map[string]string{"country": "SE"}, 2, sorted(asa, anna, star)[:2]},
		{"a trailing star is a prefix, not a literal", map[string]string{"common_name": "öberg*"}, 0, sorted(star)},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := v.SearchSubjects(ctx, c.match, c.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), c.want) {
				t.Errorf("got %v, want %v", ids(got), c.want)
			}
		})
	}
	got, err := v.SearchSubjects(ctx, map[string]string{"common_name": "Åsa Öberg"}, 0)
	must(t, err)
	if len(got) != 1 || got[0].Attributes["email"] != "asa@example.se" || got[0].RegisteredAt.IsZero() {
		t.Errorf("search result: %+v", got)
	}

	for _, bad := range []map[string]string{
		nil,
		{"common_name": ""},
		{"common_name": "*"},
		{"Ada Lovelace": "x"}, // an unknown name, which may itself be personal data
	} {
		_, err := v.SearchSubjects(ctx, bad, 0)
		if !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("SearchSubjects(%v): %v, want ErrInvalidQuery", bad, err)
		} else if strings.Contains(err.Error(), "Ada") {
			t.Errorf("error repeats the query: %v", err)
		}
	}
	must(t, stop())
}

func TestCertificatesQuery(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.open(t, r.viewsPath())
	stop := run(t, v, r.store)
	a := r.register(t, map[string]string{"common_name": "A"})
	b := r.register(t, map[string]string{"common_name": "B"})
	var all, ofA, onIssuing []domain.Serial
	for i := range 7 {
		subject, ca := a, "issuing"
		if i%2 == 1 {
			subject = b
		}
		if i%3 == 2 {
			ca = "other-ca"
		}
		s := r.issue(t, subject, ca).Serial
		all = append(all, s)
		if subject == a {
			ofA = append(ofA, s)
		}
		if ca == "issuing" {
			onIssuing = append(onIssuing, s)
		}
	}
	must(t, r.h.RevokeCertificate(ctx, officer, all[0], domain.ReasonUnspecified))
	must(t, r.h.RevokeCertificate(ctx, officer, all[3], domain.ReasonUnspecified))
	must(t, r.h.DeleteCertificate(ctx, officer, all[3], false))
	r.sync(t, v)
	revoked, deleted := all[0], all[3]
	for _, s := range [][]domain.Serial{all, ofA, onIssuing} {
		slices.Sort(s)
	}

	serials := func(rows []CertificateRow) []domain.Serial {
		var out []domain.Serial
		for _, row := range rows {
			out = append(out, row.Serial)
		}
		return out
	}
	for _, c := range []struct {
		name string
		f    CertificateFilter
		want []domain.Serial
	}{
		{"all", CertificateFilter{}, all},
		{"by subject", CertificateFilter{SubjectID: a}, ofA},
		{"by CA", CertificateFilter{CAID: "issuing"}, onIssuing},
		{"revoked", CertificateFilter{Status: StatusRevoked}, []domain.Serial{revoked}},
		{"deleted", CertificateFilter{Status: StatusDeleted}, []domain.Serial{deleted}},
		{"valid of A", CertificateFilter{SubjectID: a, Status: StatusValid}, without(ofA, revoked, deleted)},
		{"limit", CertificateFilter{Limit: 3}, all[:3]},
		{"after", CertificateFilter{After: all[2], Limit: 3}, all[3:6]},
		{"after the last", CertificateFilter{After: all[6]}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := v.Certificates(ctx, c.f)
			must(t, err)
			if !slices.Equal(serials(got), c.want) {
				t.Errorf("got %v, want %v", serials(got), c.want)
			}
		})
	}
	if _, err := v.Certificates(ctx, CertificateFilter{Status: "expired"}); !errors.Is(err, ErrInvalidQuery) {
		t.Errorf("unknown status: %v", err)
	}
	got, err := v.SubjectCertificates(ctx, a)
	must(t, err)
	if !slices.Equal(serials(got), ofA) {
		t.Errorf("SubjectCertificates: %v, want %v", serials(got), ofA)
	}
	must(t, stop())
}

func TestAccessLog(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.open(t, r.viewsPath())
	stop := run(t, v, r.store)
	a := r.register(t, map[string]string{"common_name": "A"})
	b := r.register(t, map[string]string{"common_name": "B"})
	var positions []uint64
	for i := range 5 {
		must(t, r.h.RecordAccess(ctx, officer, a, "read", "ticket"))
		positions = append(positions, r.head(t))
		if i == 2 {
			must(t, r.h.RecordAccess(ctx, compliance, b, "export", "request"))
		}
	}
	r.sync(t, v)
	page, err := v.AccessLog(ctx, a, 0, 3)
	must(t, err)
	next, err := v.AccessLog(ctx, a, page[len(page)-1].Position, 3)
	must(t, err)
	var got []uint64
	for _, row := range append(page, next...) {
		if row.SubjectID != a || row.ActorID != officer.ID || row.ActorRole != officer.Role || row.Operation != "read" || row.Time.IsZero() {
			t.Errorf("row %+v", row)
		}
		got = append(got, row.Position)
	}
	if !slices.Equal(got, positions) {
		t.Errorf("positions %v, want %v", got, positions)
	}
	rows, err := v.AccessLog(ctx, b, 0, 0)
	must(t, err)
	if len(rows) != 1 || rows[0].Operation != "export" || rows[0].ActorRole != "compliance" {
		t.Errorf("b's log: %+v", rows)
	}
	// The log outlives the subject's erasure: it holds no personal data.
	must(t, r.h.EraseSubject(ctx, compliance, b, nil, domain.BasisErasureRequest))
	r.sync(t, v)
	if rows, err := v.AccessLog(ctx, b, 0, 0); err != nil || len(rows) != 1 {
		t.Errorf("b's log after erasure: %+v, %v", rows, err)
	}
	must(t, stop())
}

func without(s []domain.Serial, drop ...domain.Serial) []domain.Serial {
	return slices.DeleteFunc(slices.Clone(s), func(x domain.Serial) bool { return slices.Contains(drop, x) })
}

// FuzzSearchSubjects checks the search against a plain Go reference over a few
// subjects, for any query: no panic, the same matches, and errors that never
// repeat the query's value.
func FuzzSearchSubjects(f *testing.F) {
	r := newRig(f)
	v := r.open(f, r.viewsPath())
	people := []map[string]string{
		{"common_name": "Åsa Öberg", "email": "asa@example.se"},
		{"common_name": "Anna Öberg", "email": "anna@example.se", "locality": "Malmö"},
		{"common_name": "ΣΊΣΥΦΟΣ", "email": "sisyphus@example.gr"},
		{"common_name": "straße", "email": "kelvin@example.de", "locality": "\u212aöln"}, // Kelvin sign
	}
	ids := map[domain.SubjectID]map[string]string{}
	for _, p := range people {
		ids[r.register(f, p)] = p
	}
	if err := v.Rebuild(context.Background(), r.store, nil); err != nil {
		f.Fatal(err)
	}
	for _, s := range []struct{ name, value string }{
		{"common_name", "åsa öberg"}, {"email", "a*"}, {"common_name", "σίσυφος"}, {"locality", "köln"},
		{"locality", "k*"}, {"common_name", "STRASSE"}, {"email", "\xff*"}, {"common_name", "*"}, {"nope", "x"},
	} {
		f.Add(s.name, s.value)
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		got, err := v.SearchSubjects(context.Background(), map[string]string{name: value}, MaxLimit)
		q, prefix := strings.CutSuffix(value, "*")
		if !domain.KnownAttribute(name) || q == "" {
			if !errors.Is(err, ErrInvalidQuery) {
				t.Fatalf("SearchSubjects(%q: %q): %v, want ErrInvalidQuery", name, value, err)
			}
			if len(value) >= 3 && strings.Contains(err.Error(), value) {
				t.Fatalf("error repeats the value: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var want []domain.SubjectID
		for id, p := range ids {
			a, ok := p[name]
			if ok && (fold(a) == fold(q) || prefix && strings.HasPrefix(fold(a), fold(q))) {
				want = append(want, id)
			}
		}
		slices.Sort(want)
		var gotIDs []domain.SubjectID
		for _, row := range got {
			gotIDs = append(gotIDs, row.ID)
			if !maps.Equal(row.Attributes, ids[row.ID]) {
				t.Errorf("attributes of %s: %v, want %v", row.ID, row.Attributes, ids[row.ID])
			}
		}
		if !slices.Equal(gotIDs, want) {
			t.Fatalf("SearchSubjects(%q: %q) = %v, want %v", name, value, gotIDs, want)
		}
	})
}

func TestTimesBeyond2262(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), // RFC 5280's "no expiry"
		time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC),
		start.Add(123456 * time.Microsecond),
	} {
		if got := fromMicros(micros(tm)); !got.Equal(tm) {
			t.Errorf("%v stored and read back as %v", tm, got)
		}
	}
}
