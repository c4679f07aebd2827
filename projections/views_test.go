package projections

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

// world is what scenario recorded.
type world struct {
	ada, bob, eve          domain.SubjectID
	adaCert, bobCert       domain.Issued
	bobOtherCA, eveCert    domain.Issued
	adaAccess, bobAccess   uint64 // positions of the access events
	revisionIssuing        uint64 // position of the last revocation by CA "issuing"
	unknownType, newSchema uint64
}

// scenario produces a history with every event type, calling step after each
// command: a correction under another key group, a group erasure that makes an
// attribute fall back to an earlier value, a whole erasure, revocations, a
// deletion, reads, and two events the views do not know.
func scenario(t *testing.T, r *rig, step func()) world {
	t.Helper()
	ctx := context.Background()
	var w world
	w.ada = r.register(t, map[string]string{"common_name": "Ada Lovelace", "email": "ada@example.org", "country": "GB"})
	step()
	w.bob = r.register(t, map[string]string{"common_name": "Bob Builder", "email": "bob@example.org"})
	step()
	w.eve = r.register(t, map[string]string{"common_name": "Eve Erasmus", "email": "eve@example.org"})
	step()
	must(t, r.h.CorrectSubject(ctx, officer, w.ada, map[string]string{"email": "ada.l@example.org", "country": ""}, domain.GroupIdentity))
	step()
	must(t, r.h.CorrectSubject(ctx, officer, w.ada, map[string]string{"serial_number": "19151210-0001", "common_name": "Augusta Ada King"}, domain.GroupNationalID))
	step()
	w.adaCert = r.issue(t, w.ada, "issuing")
	step()
	// bob's is a soft token's certificate: caledger generated its key.
	bobCert, err := r.h.IssueCertificate(ctx, officer,
		domain.IssueRequest{SubjectID: w.bob, CAID: "issuing", Profile: "tls-client", CSR: newCSR(t), KeyGenerated: true})
	must(t, err)
	w.bobCert = bobCert
	step()
	w.bobOtherCA = r.issue(t, w.bob, "other-ca")
	step()
	w.eveCert = r.issue(t, w.eve, "issuing")
	step()
	must(t, r.h.RevokeCertificate(ctx, officer, w.adaCert.Serial, domain.ReasonKeyCompromise))
	w.revisionIssuing = r.head(t)
	step()
	must(t, r.h.DeleteCertificate(ctx, officer, w.adaCert.Serial, false))
	step()
	must(t, r.h.RevokeCertificate(ctx, officer, w.bobOtherCA.Serial, domain.ReasonSuperseded))
	step()
	must(t, r.h.RecordAccess(ctx, officer, w.ada, "read", "ticket 1: Ada Lovelace called"))
	w.adaAccess = r.head(t)
	step()
	must(t, r.h.RecordAccess(ctx, compliance, w.bob, "report", "access request"))
	w.bobAccess = r.head(t)
	step()
	must(t, r.h.EraseSubject(ctx, compliance, w.ada, []string{domain.GroupNationalID}, domain.BasisConsentWithdrawn))
	step()
	must(t, r.h.EraseSubject(ctx, compliance, w.eve, nil, domain.BasisErasureRequest))
	step()
	w.unknownType = appendRaw(t, r, "ca-issuing", "ca.key-rotated", 1, `{"ca_id":"issuing"}`)
	step()
	w.newSchema = appendRaw(t, r, "cert-"+string(w.bobCert.Serial), domain.TypeCertificateRevoked, 9, `{"future":true}`)
	step()
	return w
}

// appendRaw appends an event the handlers would not write and returns its position.
func appendRaw(t *testing.T, r *rig, stream, typ string, schema uint16, public string) uint64 {
	t.Helper()
	id, err := domain.NewEventID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.store.Append(context.Background(), stream, domain.Any, domain.Event{
		Stream: stream, ID: id, Type: typ, Schema: schema, Time: r.clock.Now(), Actor: officer, Public: []byte(public)})
	if err != nil {
		t.Fatal(err)
	}
	return a.LastPosition
}

// checkWorld checks the views against what scenario did.
func checkWorld(t *testing.T, v *Views, w world, now time.Time) {
	t.Helper()
	ctx := context.Background()
	got, err := v.SearchSubjects(ctx, map[string]string{"email": "*"}, 0)
	if !errors.Is(err, ErrInvalidQuery) {
		t.Errorf("search for '*' alone: %v, want ErrInvalidQuery", err)
	}
	got, err = v.SearchSubjects(ctx, map[string]string{"common_name": "a*"}, 0)
	must(t, err)
	if len(got) != 1 || got[0].ID != w.ada {
		t.Fatalf("search common_name a*: %+v", got)
	}
	// The national-id group's common_name was erased: the identity value is back.
	want := map[string]string{"common_name": "Ada Lovelace", "email": "ada.l@example.org"}
	if !maps.Equal(got[0].Attributes, want) {
		t.Errorf("ada's attributes: %v, want %v", got[0].Attributes, want)
	}
	for _, q := range []map[string]string{
		{"serial_number": "19151210-0001"},
		{"common_name": "Eve*"},
		{"email": "eve@example.org"},
		{"common_name": "Augusta*"},
	} {
		if got, err := v.SearchSubjects(ctx, q, 0); err != nil || len(got) != 0 {
			t.Errorf("search %v: %+v, %v; want nothing", q, got, err)
		}
	}

	c, err := v.Certificate(ctx, w.adaCert.Serial)
	must(t, err)
	if c.Status != StatusDeleted || c.Reason != domain.ReasonKeyCompromise || c.RevokedAt.IsZero() ||
		c.SubjectID != w.ada || c.CAID != "issuing" || c.IssuedPosition != w.adaCert.Position {
		t.Errorf("ada's certificate: %+v", c)
	}
	if _, err := v.Certificate(ctx, "123"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Certificate(123): %v, want ErrNotFound", err)
	}
	// The schema-9 revocation of bob's certificate was skipped.
	if c, err := v.Certificate(ctx, w.bobCert.Serial); err != nil || c.Status != StatusValid || !c.KeyGenerated {
		t.Errorf("bob's certificate: %+v, %v; want valid, key generated", c, err)
	}
	if st, err := v.CertificateStatus(ctx, "issuing", w.bobCert.Serial); err != nil || st.Revoked || !st.Issued {
		t.Errorf("bob's certificate: %+v, %v; want issued, not revoked", st, err)
	}
	var serials []domain.Serial
	for r, err := range v.Revoked(ctx, "issuing", now) {
		must(t, err)
		serials = append(serials, r.Serial)
	}
	if !slices.Equal(serials, []domain.Serial{w.adaCert.Serial}) {
		t.Errorf("Revoked(issuing) = %v, want the deleted, unexpired %v", serials, w.adaCert.Serial)
	}
	if rev, err := v.RevocationRevision(ctx, "issuing"); err != nil || rev != w.revisionIssuing {
		t.Errorf("RevocationRevision(issuing) = %d, %v; want %d", rev, err, w.revisionIssuing)
	}
	log, err := v.AccessLog(ctx, w.ada, 0, 0)
	must(t, err)
	if len(log) != 1 || log[0].Position != w.adaAccess || log[0].ActorID != officer.ID || log[0].Operation != "read" {
		t.Errorf("ada's access log: %+v", log)
	}
	certs, err := v.SubjectCertificates(ctx, w.eve)
	must(t, err)
	if len(certs) != 1 || certs[0].Serial != w.eveCert.Serial || certs[0].KeyGenerated {
		t.Errorf("eve's certificates (public facts stay after erasure): %+v", certs)
	}
}

// TestRunEqualsRebuild: views built live, event by event, hold exactly what a
// rebuild (in place, or into a new file, by Rebuild or by Run) produces later,
// when the erased keys no longer open.
func TestRunEqualsRebuild(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.open(t, r.viewsPath())
	stop := run(t, v, r.store)
	w := scenario(t, r, func() { r.sync(t, v) })
	must(t, stop())
	checkWorld(t, v, w, r.clock.Now())
	live := dump(t, v)
	for _, l := range live {
		if strings.Contains(l, "19151210-0001") || strings.Contains(l, "Eve Erasmus") {
			t.Errorf("erased data left in the views: %s", l)
		}
	}

	var calls []uint64
	must(t, v.Rebuild(ctx, r.store, func(done, total uint64) {
		if total != r.head(t) || done > total {
			t.Errorf("progress(%d, %d) with head %d", done, total, r.head(t))
		}
		calls = append(calls, done)
	}))
	if len(calls) < 2 || calls[0] != 0 || calls[len(calls)-1] != r.head(t) {
		t.Errorf("progress calls: %v", calls)
	}
	diffDumps(t, "live vs rebuilt in place", live, dump(t, v))

	fresh := r.open(t, filepath.Join(r.dir, "fresh", "views.db"))
	must(t, fresh.Rebuild(ctx, r.store, nil))
	diffDumps(t, "live vs rebuilt in a new file", live, dump(t, fresh))
	checkWorld(t, fresh, w, r.clock.Now())

	byRun := r.open(t, filepath.Join(r.dir, "by-run", "views.db"))
	stop = run(t, byRun, r.store)
	r.sync(t, byRun)
	must(t, stop())
	diffDumps(t, "live vs replayed by Run", live, dump(t, byRun))
}

// TestCheckpointsPersist: a reopened view resumes from its checkpoints and
// applies nothing twice.
func TestCheckpointsPersist(t *testing.T) {
	r := newRig(t)
	path := r.viewsPath()
	v := r.open(t, path)
	stop := run(t, v, r.store)
	scenario(t, r, func() {})
	r.sync(t, v)
	must(t, stop())
	before := dump(t, v)
	must(t, v.Close())

	v = r.open(t, path)
	head := r.head(t)
	for name, cp := range v.Checkpoints() {
		if cp != head {
			t.Errorf("checkpoint %s = %d after reopening, want %d", name, cp, head)
		}
	}
	var applied atomic.Int64
	v.onApply = func(string, uint64) { applied.Add(1) }
	opens := r.sealer.opens.Load()
	stop = run(t, v, r.store)
	r.sync(t, v)
	if n := applied.Load(); n != 0 {
		t.Errorf("%d events applied again after reopening", n)
	}
	if n := r.sealer.opens.Load() - opens; n != 0 {
		t.Errorf("%d sealed parts opened again after reopening", n)
	}
	diffDumps(t, "before and after reopening", before, dump(t, v))

	r.register(t, map[string]string{"common_name": "Carol"})
	r.sync(t, v)
	if n := applied.Load(); n != numProjections {
		t.Errorf("one new event applied %d times, want once per projection (%d)", n, numProjections)
	}
	if n := r.sealer.opens.Load() - opens; n != 1 {
		t.Errorf("one new registration opened %d sealed parts", n)
	}
	must(t, stop())
}

// TestProjectionCatchesUpAlone: a projection whose layout changed is emptied on
// Open and replayed from position 1 by itself; the others apply nothing again.
func TestProjectionCatchesUpAlone(t *testing.T) {
	r := newRig(t)
	path := r.viewsPath()
	v := r.open(t, path)
	stop := run(t, v, r.store)
	scenario(t, r, func() {})
	r.sync(t, v)
	must(t, stop())
	before := dump(t, v)
	must(t, v.Close())

	db := rawDB(t, path)
	if _, err := db.Exec(`UPDATE checkpoints SET version = 0 WHERE name = 'subjects'`); err != nil {
		t.Fatal(err)
	}
	must(t, db.Close())

	v = r.open(t, path)
	head := r.head(t)
	cps := v.Checkpoints()
	if cps["subjects"] != 0 || cps["certificates"] != head || cps["revocations"] != head || cps["access-log"] != head {
		t.Fatalf("checkpoints after a layout change of subjects: %v (head %d)", cps, head)
	}
	var mu sync.Mutex
	applied := map[string][]uint64{}
	v.onApply = func(name string, p uint64) {
		mu.Lock()
		applied[name] = append(applied[name], p)
		mu.Unlock()
	}
	stop = run(t, v, r.store)
	r.sync(t, v)
	must(t, stop())
	mu.Lock()
	defer mu.Unlock()
	if len(applied) != 1 || len(applied["subjects"]) != int(head) {
		t.Errorf("applied after the reset: %d projections, subjects %d events; want only subjects, %d events",
			len(applied), len(applied["subjects"]), head)
	}
	for i, p := range applied["subjects"] {
		if p != uint64(i+1) {
			t.Fatalf("subjects applied position %d as its %dth event", p, i+1)
		}
	}
	diffDumps(t, "before and after the subjects projection caught up", before, dump(t, v))
}

// leaks returns where a piece of secret is found in files: the whole value, or
// any 8-byte window of it that does not also occur in one of others (values of
// subjects that remain).
func leaks(files map[string][]byte, secret string, others []string) []string {
	var where []string
	if f := foundIn(files, secret); len(f) > 0 {
		where = append(where, secret+" in "+strings.Join(f, ","))
	}
	for i := 0; i+8 <= len(secret); i++ {
		w := secret[i : i+8]
		if slices.ContainsFunc(others, func(o string) bool { return strings.Contains(o, w) }) {
			continue
		}
		if f := foundIn(files, w); len(f) > 0 {
			where = append(where, w+" in "+strings.Join(f, ","))
		}
	}
	return where
}

var (
	victim = map[string]string{"common_name": "Quirinus Vexillarius", "email": "q.vexillarius@victim.example",
		"locality": "Xylophonburg"}
	victimOld = "quirinus.zeta@victim.example" // a value corrected away before the erasure
	survivor  = map[string]string{"common_name": "Sybilla Survivor", "email": "sybilla@survivor.example"}
)

// secrets returns every form of the victim's values the views could have
// written: as given and folded.
func secrets() []string {
	var s []string
	for _, val := range append(slices.Collect(maps.Values(victim)), victimOld) {
		s = append(s, val, fold(val))
	}
	return s
}

// wantErased fails t when files hold a piece of any of the victim's values
// (secrets), or lack one of others, the values of subjects that remain: a scan
// that finds no survivor is blind.
func wantErased(t *testing.T, files map[string][]byte, others []string) {
	t.Helper()
	for _, s := range secrets() {
		if where := leaks(files, s, others); len(where) > 0 {
			t.Errorf("erased value left in the views' files: %v", where)
		}
	}
	for _, s := range others {
		if len(foundIn(files, s)) == 0 {
			t.Errorf("surviving value %q not found in the views' files: the scan is blind", s)
		}
	}
}

func fillers(n int) []map[string]string {
	out := make([]map[string]string, n)
	for i := range out {
		out[i] = map[string]string{"common_name": "Filler Person " + strings.Repeat("x", i%17),
			"email": "filler@example.org", "organization": "Filler Org"}
	}
	return out
}

// registerMany registers subjects from 4 goroutines (group commit keeps it quick).
func registerMany(t *testing.T, r *rig, attrs []map[string]string) {
	t.Helper()
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(attrs)); i = next.Add(1) - 1 {
				if _, err := r.h.RegisterSubject(context.Background(), officer, attrs[i]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestErasureRemovesPersonalData is the test the subjects view's file settings
// exist for: after an erasure is applied, no piece of the erased values is left
// in views.db, -wal or -shm, while a surviving subject's values are found (which
// proves the scan would have seen them).
func TestErasureRemovesPersonalData(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.open(t, r.viewsPath())
	stop := run(t, v, r.store)

	id := r.register(t, map[string]string{"common_name": victim["common_name"], "email": victimOld, "locality": victim["locality"]})
	must(t, r.h.CorrectSubject(ctx, officer, id, map[string]string{"email": victim["email"]}, domain.GroupIdentity))
	r.register(t, survivor)
	// Enough rows after the victim's for page splits to move them around.
	registerMany(t, r, fillers(400))
	r.sync(t, v)

	dir := filepath.Dir(r.viewsPath())
	others := slices.Collect(maps.Values(survivor))
	others = append(others, "filler@example.org", "Filler Org")
	if where := leaks(filesIn(t, dir), victim["common_name"], others); len(where) == 0 {
		t.Fatal("the victim's name is not in the views' files before the erasure: the scan sees nothing")
	}
	if got, err := v.SearchSubjects(ctx, map[string]string{"locality": "xylophonburg"}, 0); err != nil || len(got) != 1 {
		t.Fatalf("search before the erasure: %+v, %v", got, err)
	}

	must(t, r.h.EraseSubject(ctx, compliance, id, nil, domain.BasisErasureRequest))
	r.sync(t, v) // WaitFor returns after the WAL is truncated

	wantErased(t, filesIn(t, dir), others)
	if got, err := v.SearchSubjects(ctx, map[string]string{"locality": "xylophonburg"}, 0); err != nil || len(got) != 0 {
		t.Errorf("search after the erasure: %+v, %v", got, err)
	}
	var n int
	must(t, v.rdb.QueryRow(`SELECT count(*) FROM subject_attributes WHERE subject_id = ?`, id).Scan(&n))
	if n != 0 {
		t.Errorf("%d attribute rows left for the erased subject", n)
	}
	must(t, stop())
}

// TestRebuildAfterErasure: an erasure recorded while the views were stopped; a
// rebuild (which drops the old rows, then finds the keys destroyed) leaves no
// piece of the subject's data in the files.
func TestRebuildAfterErasure(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	path := r.viewsPath()
	v := r.open(t, path)
	stop := run(t, v, r.store)
	id := r.register(t, victim)
	r.register(t, survivor)
	registerMany(t, r, fillers(100))
	r.sync(t, v)
	must(t, stop())
	must(t, v.Close())

	must(t, r.h.EraseSubject(ctx, compliance, id, nil, domain.BasisErasureRequest))
	opens := r.sealer.opens.Load()
	v = r.open(t, path)
	must(t, v.Rebuild(ctx, r.store, nil))
	if n := r.sealer.opens.Load() - opens; n != 102 {
		t.Errorf("rebuild opened %d sealed parts, want 102 (the erased one fails)", n)
	}
	files := filesIn(t, filepath.Dir(path))
	others := append(slices.Collect(maps.Values(survivor)), "filler@example.org", "Filler Org")
	for _, s := range secrets()[:6] { // the victim's values, not victimOld, never registered here
		if where := leaks(files, s, others); len(where) > 0 {
			t.Errorf("erased value left in the views' files after a rebuild: %v", where)
		}
	}
	if len(foundIn(files, survivor["email"])) == 0 {
		t.Error("surviving value not found: the scan is blind")
	}
	got, err := v.SearchSubjects(ctx, map[string]string{"common_name": "Quirinus*"}, 0)
	if err != nil || len(got) != 0 {
		t.Errorf("search after the rebuild: %+v, %v", got, err)
	}
}

// TestGroupErasure: erasing one key group removes the attributes that group set,
// and only those.
func TestGroupErasure(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.open(t, r.viewsPath())
	stop := run(t, v, r.store)
	id := r.register(t, survivor)
	const nid = "NID-7731-QZ"
	must(t, r.h.CorrectSubject(ctx, officer, id, map[string]string{"serial_number": nid}, domain.GroupNationalID))
	r.sync(t, v)
	got, err := v.SearchSubjects(ctx, map[string]string{"serial_number": strings.ToLower(nid)}, 0)
	if err != nil || len(got) != 1 || got[0].Attributes["serial_number"] != nid {
		t.Fatalf("search by national id: %+v, %v", got, err)
	}

	must(t, r.h.EraseSubject(ctx, compliance, id, []string{domain.GroupNationalID}, domain.BasisConsentWithdrawn))
	r.sync(t, v)
	if got, err := v.SearchSubjects(ctx, map[string]string{"serial_number": nid}, 0); err != nil || len(got) != 0 {
		t.Errorf("search by the erased national id: %+v, %v", got, err)
	}
	got, err = v.SearchSubjects(ctx, map[string]string{"email": survivor["email"]}, 0)
	if err != nil || len(got) != 1 || !maps.Equal(got[0].Attributes, survivor) {
		t.Errorf("the identity group after erasing national-id: %+v, %v", got, err)
	}
	files := filesIn(t, filepath.Dir(r.viewsPath()))
	for _, s := range []string{nid, fold(nid)} {
		if where := foundIn(files, s); len(where) > 0 {
			t.Errorf("erased national id left in %v", where)
		}
	}
	if len(foundIn(files, survivor["email"])) == 0 {
		t.Error("surviving value not found: the scan is blind")
	}
	must(t, stop())
}

// TestRevocations: a revoked certificate stays on the CRL after its deletion
// until it expires; revisions move with revocations only.
func TestRevocations(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.open(t, r.viewsPath())
	stop := run(t, v, r.store)
	id := r.register(t, survivor)

	// Issued 40 days ago with 30 days of validity: expired now.
	r.clock.Set(start.AddDate(0, 0, -40))
	old := r.issue(t, id, "issuing")
	must(t, r.h.RevokeCertificate(ctx, officer, old.Serial, domain.ReasonSuperseded))
	r.clock.Set(start)
	revokedDeleted := r.issue(t, id, "issuing")
	revoked := r.issue(t, id, "issuing")
	valid := r.issue(t, id, "issuing")
	other := r.issue(t, id, "other-ca")
	must(t, r.h.RevokeCertificate(ctx, officer, revokedDeleted.Serial, domain.ReasonKeyCompromise))
	must(t, r.h.RevokeCertificate(ctx, officer, revoked.Serial, domain.ReasonAffiliationChanged))
	rev := r.head(t)
	must(t, r.h.DeleteCertificate(ctx, officer, revokedDeleted.Serial, false))
	must(t, r.h.DeleteCertificate(ctx, officer, old.Serial, false))
	r.sync(t, v)

	crl := func(now time.Time) []domain.Serial {
		var s []domain.Serial
		for row, err := range v.Revoked(ctx, "issuing", now) {
			must(t, err)
			s = append(s, row.Serial)
		}
		return s
	}
	want := []domain.Serial{revokedDeleted.Serial, revoked.Serial}
	slices.Sort(want)
	if got := crl(start); !slices.Equal(got, want) {
		t.Errorf("CRL now: %v, want %v (revoked, and revoked+deleted+unexpired)", got, want)
	}
	if got := crl(start.AddDate(0, 0, 31)); len(got) != 0 {
		t.Errorf("CRL after every certificate expired: %v", got)
	}
	for _, c := range []struct {
		serial  domain.Serial
		issued  bool
		revoked bool
		reason  domain.RevocationReason
	}{
		{old.Serial, true, true, domain.ReasonSuperseded},
		{revokedDeleted.Serial, true, true, domain.ReasonKeyCompromise},
		{revoked.Serial, true, true, domain.ReasonAffiliationChanged},
		{valid.Serial, true, false, 0},
		{"abc", false, false, 0},
	} {
		st, err := v.CertificateStatus(ctx, "issuing", c.serial)
		if err != nil || st.Issued != c.issued || st.Revoked != c.revoked || st.Reason != c.reason || st.RevokedAt.IsZero() == c.revoked {
			t.Errorf("CertificateStatus(%s) = %+v, %v; want issued %v revoked %v reason %d", c.serial, st, err, c.issued, c.revoked, c.reason)
		}
	}
	cert, err := v.Certificate(ctx, revoked.Serial)
	must(t, err)
	found := false
	for row, err := range v.Revoked(ctx, "issuing", start) {
		must(t, err)
		if row.Serial != revoked.Serial {
			continue
		}
		found = true
		if !row.NotAfter.Equal(cert.NotAfter) || cert.NotAfter.IsZero() {
			t.Errorf("revocation row's notAfter %v differs from the certificate's %v", row.NotAfter, cert.NotAfter)
		}
	}
	if !found {
		t.Errorf("no revocation row for %s", revoked.Serial)
	}
	if st, err := v.CertificateStatus(ctx, "other-ca", revoked.Serial); err != nil || st.Revoked || st.Issued {
		t.Errorf("under another CA: %+v, %v; want neither issued nor revoked", st, err)
	}
	// A revocations view behind the certificates view (its own checkpoint is
	// older) must not turn a revoked certificate good.
	if _, err := v.wdb.ExecContext(ctx, `DELETE FROM revocations WHERE serial = ?`, revoked.Serial); err != nil {
		t.Fatal(err)
	}
	v.status.clear() // the edit went around the apply loop, which drops cached answers
	if st, err := v.CertificateStatus(ctx, "issuing", revoked.Serial); err != nil || !st.Revoked || st.Reason != domain.ReasonAffiliationChanged {
		t.Errorf("with the revocations view behind: %+v, %v; want revoked (affiliationChanged) from the certificates view", st, err)
	}
	if got, err := v.RevocationRevision(ctx, "issuing"); err != nil || got != rev {
		t.Errorf("revision of issuing: %d, %v; want %d (deletions do not move it)", got, err, rev)
	}
	if got, err := v.RevocationRevision(ctx, "other-ca"); err != nil || got != 0 {
		t.Errorf("revision of a CA with no revocation: %d, %v", got, err)
	}
	if c, _ := v.Certificate(ctx, other.Serial); c.Status != StatusValid {
		t.Errorf("other CA's certificate: %+v", c)
	}
	must(t, stop())
}

// TestLedgerReplaced: views built from one ledger, then run against another (a
// ledger restored from an older backup, shorter than the checkpoints, or a
// different one, longer) rebuild themselves instead of skipping its events.
func TestLedgerReplaced(t *testing.T) {
	for _, c := range []struct {
		name   string
		events int // registrations in the second ledger; the first has 5
	}{
		{"shorter", 2},
		{"longer", 8},
	} {
		t.Run(c.name, func(t *testing.T) {
			first := newRig(t)
			path := filepath.Join(t.TempDir(), "views.db")
			v := first.open(t, path)
			stop := run(t, v, first.store)
			registerMany(t, first, fillers(5))
			first.sync(t, v)
			must(t, stop())
			must(t, v.Close())

			second := newRig(t)
			for range c.events {
				second.register(t, survivor)
			}
			v, err := Open(context.Background(), path, Options{Sealer: second.sealer})
			must(t, err)
			t.Cleanup(func() { v.Close() })
			stop = run(t, v, second.store)
			second.sync(t, v)
			must(t, stop())

			fresh := second.open(t, filepath.Join(t.TempDir(), "views.db"))
			must(t, fresh.Rebuild(context.Background(), second.store, nil))
			diffDumps(t, "views moved to another ledger vs built from it", dump(t, fresh), dump(t, v))
		})
	}
}

// TestOpenTruncatesTheWAL: a process killed between an erasure's commit and
// the WAL's truncation leaves the erased values in the WAL (here a reader's
// snapshot makes the truncation fail, and the files are copied as a kill would
// leave them); opening the views truncates it before anything else.
func TestOpenTruncatesTheWAL(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.open(t, r.viewsPath())
	stop := run(t, v, r.store)
	id := r.register(t, victim)
	r.register(t, survivor)
	r.sync(t, v)

	tx, err := rawDB(t, r.viewsPath()).BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	must(t, tx.QueryRow(`SELECT count(*) FROM checkpoints`).Scan(&n))
	must(t, r.h.EraseSubject(ctx, compliance, id, nil, domain.BasisErasureRequest))
	r.sync(t, v) // the truncation waits for the reader, then gives up

	crash := t.TempDir()
	for name, b := range filesIn(t, filepath.Dir(r.viewsPath())) {
		must(t, os.WriteFile(filepath.Join(crash, name), b, 0o600))
	}
	others := slices.Collect(maps.Values(survivor))
	if len(leaks(filesIn(t, crash), victim["common_name"], others)) == 0 {
		t.Fatal("the crash image holds none of the erased values: the test proves nothing")
	}
	must(t, tx.Rollback())
	must(t, stop())

	r.open(t, filepath.Join(crash, "views.db"))
	wantErased(t, filesIn(t, crash), others)
}
