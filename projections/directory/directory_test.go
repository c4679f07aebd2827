package directory_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/crypto/keyvault/vaulttest"
	"github.com/caledger/caledger/crypto/revocation"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/caledger/caledger/projections/directory"
	"github.com/caledger/caledger/projections/directory/slapdtest"
)

// The publisher runs against the real parts: the SQLite ledger, the key vault,
// the issuer with zlint, and slapd.

type rig struct {
	h     *domain.Handlers
	ca    *x509.Certificate // the issuing CA, self-signed
	caKey *ecdsa.PrivateKey
	store *sqlite.Store
	now   atomic.Pointer[time.Time]
	logs  *syncBuffer
}

var (
	officer    = domain.Actor{ID: "cert:0a", Role: "officer"}
	compliance = domain.Actor{ID: "cert:0b", Role: "compliance"}
	ada        = map[string]string{"common_name": "Ada Lovelace", "email": "ada@example.org", "surname": "Lovelace",
		"organization": "Analytical Engines", "country": "GB"}
)

func newRig(t testing.TB) *rig {
	t.Helper()
	ctx := context.Background()
	_, store, vault := vaulttest.Open(t)
	now := time.Now()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca, err := issuer.NewRoot(ctx, key, pkix.Name{CommonName: "directory test CA"}, 10*365*24*time.Hour, big.NewInt(1), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New([]issuer.CA{{ID: "issuing", Certificate: ca, Key: key}}, issuer.DefaultProfiles(), issuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{store: store, logs: &syncBuffer{}, ca: ca, caKey: key}
	r.now.Store(&now)
	r.h = &domain.Handlers{Events: store, Vault: vault, Signer: iss, Now: func() time.Time { return *r.now.Load() }, Rand: rand.Reader}
	return r
}

func (r *rig) register(t testing.TB, attrs map[string]string) domain.SubjectID {
	t.Helper()
	id, err := r.h.RegisterSubject(context.Background(), officer, attrs)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (r *rig) issue(t testing.TB, id domain.SubjectID, profile string) domain.Issued {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := r.h.IssueCertificate(context.Background(), officer, domain.IssueRequest{SubjectID: id, CAID: "issuing", Profile: profile, CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	return issued
}

func (r *rig) head(t testing.TB) uint64 {
	t.Helper()
	h, err := r.store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// memCheckpoints keeps the checkpoint in memory.
type memCheckpoints struct {
	mu    sync.Mutex
	cp    directory.Checkpoint
	saves int
}

func (m *memCheckpoints) Load(context.Context) (directory.Checkpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cp, nil
}

func (m *memCheckpoints) Save(_ context.Context, c directory.Checkpoint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cp = c
	m.saves++
	return nil
}

func (m *memCheckpoints) get() directory.Checkpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cp
}

// syncBuffer is a bytes.Buffer safe for the publisher's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (r *rig) options(srv *slapdtest.Server, cps directory.CheckpointStore) directory.Options {
	return directory.Options{URL: srv.URL, BindDN: slapdtest.RootDN, Password: slapdtest.Password, BaseDN: slapdtest.People,
		Checkpoints: cps, SweepInterval: -1, Timeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
}

// newPublisher returns directory.New(opts, subjects), closed when the test
// ends.
func newPublisher(t testing.TB, opts directory.Options, subjects directory.Subjects) *directory.Publisher {
	t.Helper()
	p, err := directory.New(opts, subjects)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// run starts p.Run until the test ends (or stop is called) and returns a
// function that waits for the ledger's head to be published.
func (r *rig) run(t *testing.T, p *directory.Publisher) (caughtUp, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, r.store) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
			p.Close()
		})
	}
	t.Cleanup(stop)
	return func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.WaitFor(ctx, r.head(t)); err != nil {
			t.Fatalf("the publisher did not reach the head %d (at %d): %v\nlogs:\n%s", r.head(t), p.Applied(), err, r.logs.String())
		}
	}, stop
}

// entry returns subject id's entry, or nil.
func entry(t testing.TB, srv *slapdtest.Server, id domain.SubjectID) *ldap.Entry {
	t.Helper()
	es := srv.Entries(context.Background(), "(uid="+string(id)+")")
	switch len(es) {
	case 0:
		return nil
	case 1:
		return es[0]
	}
	t.Fatalf("%d entries for %s", len(es), id)
	return nil
}

func certs(e *ldap.Entry) [][]byte { return e.GetRawAttributeValues("userCertificate;binary") }

func wantCerts(t *testing.T, e *ldap.Entry, want ...domain.Issued) {
	t.Helper()
	if e == nil {
		t.Fatalf("no entry, want %d certificates", len(want))
	}
	got := certs(e)
	if len(got) != len(want) {
		t.Fatalf("entry has %d certificates, want %d", len(got), len(want))
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g []byte) bool { return bytes.Equal(g, w.Certificate) }) {
			t.Fatalf("certificate %s is not in the entry", w.Serial)
		}
	}
}

func TestPublisherFollowsTheLedger(t *testing.T) {
	srv := slapdtest.Start(t, slapdtest.Options{})
	r := newRig(t)
	cps := &memCheckpoints{}
	p := newPublisher(t, r.options(srv, cps), r.h)
	adaID := r.register(t, ada)
	bob := r.register(t, map[string]string{"common_name": "Bob Example", "email": "bob@example.org"})
	first := r.issue(t, adaID, "email-protection")
	r.issue(t, bob, "tls-client") // not a published profile
	caughtUp, stop := r.run(t, p)
	caughtUp()

	e := entry(t, srv, adaID)
	wantCerts(t, e, first)
	if !slices.Equal(e.GetAttributeValues("objectClass"), []string{"top", "person", "organizationalPerson", "inetOrgPerson"}) ||
		e.DN != "uid="+string(adaID)+","+slapdtest.People ||
		e.GetAttributeValue("cn") != "Ada Lovelace" || e.GetAttributeValue("mail") != "ada@example.org" ||
		e.GetAttributeValue("sn") != "Ada Lovelace" {
		t.Fatalf("entry %s: %v", e.DN, e.Attributes)
	}
	// Only the published attributes: not the organization, not the surname.
	for _, a := range e.Attributes {
		if !slices.Contains([]string{"objectClass", "uid", "cn", "sn", "mail", "userCertificate;binary"}, a.Name) {
			t.Fatalf("entry has attribute %s, which is not published", a.Name)
		}
	}
	if entry(t, srv, bob) != nil {
		t.Fatal("a subject with only a tls-client certificate has an entry")
	}

	// A correction replaces the published value.
	if err := r.h.CorrectSubject(context.Background(), officer, adaID, map[string]string{"email": "ada.lovelace@example.org"}, domain.GroupIdentity); err != nil {
		t.Fatal(err)
	}
	second := r.issue(t, adaID, "email-protection")
	caughtUp()
	e = entry(t, srv, adaID)
	wantCerts(t, e, first, second)
	if e.GetAttributeValue("mail") != "ada.lovelace@example.org" {
		t.Fatalf("mail = %q after the correction", e.GetAttributeValue("mail"))
	}

	// ldapsearch, as a mail client would, finds the certificate by address.
	out, err := exec.Command("ldapsearch", "-LLL", "-x", "-H", srv.URL, "-b", slapdtest.People,
		"(mail=ada.lovelace@example.org)", "userCertificate;binary").CombinedOutput()
	if err != nil {
		t.Fatalf("ldapsearch: %v\n%s", err, out)
	}
	if !strings.Contains(strings.ReplaceAll(string(out), "\n ", ""), base64.StdEncoding.EncodeToString(second.Certificate)) {
		t.Fatalf("ldapsearch did not return the second certificate:\n%s", out)
	}

	// Revocation removes a certificate, and the entry goes with the last one.
	if err := r.h.RevokeCertificate(context.Background(), officer, first.Serial, domain.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	caughtUp()
	wantCerts(t, entry(t, srv, adaID), second)
	if err := r.h.RevokeCertificate(context.Background(), officer, second.Serial, domain.ReasonSuperseded); err != nil {
		t.Fatal(err)
	}
	caughtUp()
	if entry(t, srv, adaID) != nil {
		t.Fatal("the entry outlived its last certificate")
	}

	// An erasure removes the entry at once.
	third := r.issue(t, adaID, "email-protection")
	caughtUp()
	wantCerts(t, entry(t, srv, adaID), third)
	if err := r.h.EraseSubject(context.Background(), compliance, adaID, nil, domain.BasisErasureRequest); err != nil {
		t.Fatal(err)
	}
	caughtUp()
	if entry(t, srv, adaID) != nil {
		t.Fatal("the entry outlived the subject's erasure")
	}

	stop() // saves the checkpoint
	if cp := cps.get(); cp.Position != r.head(t) || cp.EventID == (domain.EventID{}) || cp.Target == "" {
		t.Fatalf("checkpoint %+v, head %d", cp, r.head(t))
	}
	if p.Failures() != 0 {
		t.Fatalf("%d failures:\n%s", p.Failures(), r.logs.String())
	}
	noPersonalData(t, r.logs.String())
}

// noPersonalData fails if the logs hold a value of the test subjects.
func noPersonalData(t *testing.T, logs string) {
	t.Helper()
	for _, v := range []string{"Ada", "Lovelace", "ada@", "ada.lovelace", "Bob", "bob@", "Analytical", "Grace", "grace@"} {
		if strings.Contains(logs, v) {
			t.Fatalf("the logs hold %q:\n%s", v, logs)
		}
	}
}

// TestPublisherOutlivesAnOutage: while the directory is down the publisher
// retries, and the checkpoint does not pass an event whose entry did not match;
// a revocation made during the outage reaches the directory once it is back.
func TestPublisherOutlivesAnOutage(t *testing.T) {
	srv := slapdtest.Start(t, slapdtest.Options{})
	r := newRig(t)
	cps := &memCheckpoints{}
	p := newPublisher(t, r.options(srv, cps), r.h)
	id := r.register(t, ada)
	issued := r.issue(t, id, "email-protection")
	caughtUp, _ := r.run(t, p)
	caughtUp()
	wantCerts(t, entry(t, srv, id), issued)

	srv.Stop()
	if err := r.h.RevokeCertificate(context.Background(), officer, issued.Serial, domain.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	revokedAt := r.head(t)
	// Wait for failed attempts, then check the publisher is still short of
	// the revocation.
	deadline := time.Now().Add(20 * time.Second)
	for p.Failures() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no failed attempt while the directory is down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p.Applied() >= revokedAt || cps.get().Position >= revokedAt {
		t.Fatalf("applied %d, checkpoint %d: the revocation at %d passed while the directory was down", p.Applied(), cps.get().Position, revokedAt)
	}
	srv.Restart()
	caughtUp()
	if entry(t, srv, id) != nil {
		t.Fatal("the revoked certificate is still published")
	}
	if !strings.Contains(r.logs.String(), "publishing failed; retrying") {
		t.Fatalf("the failures were not logged:\n%s", r.logs.String())
	}
	noPersonalData(t, r.logs.String())
}

// TestSweep: entries changed or added behind the CA's back are made to match,
// an entry that matches is not written again, expired certificates are
// removed, and entries not named by a subject id are left alone.
func TestSweep(t *testing.T) {
	srv := slapdtest.Start(t, slapdtest.Options{})
	r := newRig(t)
	p := newPublisher(t, r.options(srv, &memCheckpoints{}), r.h)
	id := r.register(t, ada)
	issued := r.issue(t, id, "email-protection")
	if err := p.Reconcile(context.Background(), id); err != nil {
		t.Fatal(err)
	}

	conn := srv.Admin()
	defer conn.Close()
	mod := ldap.NewModifyRequest("uid="+string(id)+","+slapdtest.People, nil)
	mod.Replace("mail", []string{"forged@example.org"})
	// A certificate the subject does not hold (another subject's).
	other := r.issue(t, r.register(t, map[string]string{"common_name": "Grace Hopper"}), "tls-client")
	mod.Add("userCertificate;binary", []string{string(other.Certificate)})
	if err := conn.Modify(mod); err != nil {
		t.Fatal(err)
	}
	unknown := domain.SubjectID("00112233445566778899aabbccddeeff")
	for _, u := range []string{string(unknown), "operator"} {
		add := ldap.NewAddRequest("uid="+u+","+slapdtest.People, nil)
		add.Attribute("objectClass", []string{"inetOrgPerson"})
		add.Attribute("cn", []string{"someone"})
		add.Attribute("sn", []string{"someone"})
		if err := conn.Add(add); err != nil {
			t.Fatal(err)
		}
	}

	n, err := p.Sweep(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want the 2 entries named by subject ids", n, err)
	}
	e := entry(t, srv, id)
	wantCerts(t, e, issued)
	if e.GetAttributeValue("mail") != "ada@example.org" {
		t.Fatalf("mail = %q after the sweep", e.GetAttributeValue("mail"))
	}
	if entry(t, srv, unknown) != nil {
		t.Fatal("the sweep kept an entry of a subject the ledger does not know")
	}
	if len(srv.Entries(context.Background(), "(uid=operator)")) != 1 {
		t.Fatal("the sweep touched an entry not named by a subject id")
	}

	// An entry that matches is read, not written again.
	dn := "uid=" + string(id) + "," + slapdtest.People
	before := entryCSN(t, conn, dn)
	if n, err := p.Sweep(context.Background()); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want the 1 entry named by a subject id", n, err)
	}
	if after := entryCSN(t, conn, dn); after != before {
		t.Fatalf("the sweep rewrote an entry that matched (entryCSN %s, then %s)", before, after)
	}
	// A managed attribute added behind the CA's back, everything else
	// matching, is a difference.
	extra := ldap.NewModifyRequest(dn, nil)
	extra.Add("l", []string{"Somewhere"})
	if err := conn.Modify(extra); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l := entry(t, srv, id).GetAttributeValue("l"); l != "" {
		t.Fatalf("the sweep kept l = %q, which the subject does not have", l)
	}

	// Expiry is not an event: the sweep finds it.
	cert, err := x509.ParseCertificate(issued.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	r.now.Store(&cert.NotAfter)
	if _, err := p.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if entry(t, srv, id) != nil {
		t.Fatal("the sweep kept an expired certificate")
	}
}

// TestSweepPages: a sweep whose listing spans pages (two entries a page here)
// checks every entry, rewrites the ones that drifted whichever page they are
// on, and writes none that match.
func TestSweepPages(t *testing.T) {
	srv := slapdtest.Start(t, slapdtest.Options{})
	r := newRig(t)
	p := newPublisher(t, r.options(srv, &memCheckpoints{}), r.h)
	directory.SetPageSize(p, 2)
	ctx := context.Background()
	var ids []domain.SubjectID
	for i := range 5 {
		id := r.register(t, map[string]string{"common_name": fmt.Sprintf("Subject %d", i), "email": fmt.Sprintf("s%d@example.org", i)})
		r.issue(t, id, "email-protection")
		if err := p.Reconcile(ctx, id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	conn := srv.Admin()
	defer conn.Close()
	dn := func(id domain.SubjectID) string { return "uid=" + string(id) + "," + slapdtest.People }

	csn := map[domain.SubjectID]string{}
	for _, id := range ids {
		csn[id] = entryCSN(t, conn, dn(id))
	}
	if n, err := p.Sweep(ctx); err != nil || n != len(ids) {
		t.Fatalf("Sweep = %d, %v; want %d entries", n, err, len(ids))
	}
	for _, id := range ids {
		if after := entryCSN(t, conn, dn(id)); after != csn[id] {
			t.Fatalf("the sweep rewrote %s, which matched", id)
		}
	}

	for _, id := range ids {
		mod := ldap.NewModifyRequest(dn(id), nil)
		mod.Replace("mail", []string{"forged@example.org"})
		if err := conn.Modify(mod); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := p.Sweep(ctx); err != nil || n != len(ids) {
		t.Fatalf("Sweep = %d, %v; want %d entries", n, err, len(ids))
	}
	for i, id := range ids {
		if mail := entry(t, srv, id).GetAttributeValue("mail"); mail != fmt.Sprintf("s%d@example.org", i) {
			t.Errorf("mail of %s = %q after the sweep", id, mail)
		}
	}
}

// entryCSN returns the change sequence number slapd keeps for the entry dn:
// every write to the entry changes it.
func entryCSN(t *testing.T, conn *ldap.Conn, dn string) string {
	t.Helper()
	res, err := conn.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
		"(objectClass=*)", []string{"entryCSN"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("read the entryCSN of %s: %v", dn, err)
	}
	csn := res.Entries[0].GetAttributeValue("entryCSN")
	if csn == "" {
		t.Fatalf("%s has no entryCSN", dn)
	}
	return csn
}

// TestRefusedEntry: a value the directory refuses (here a constraint on mail)
// does not stop publication; the subject's entry is written without it rather
// than left with values the subject no longer has, and the next subject is
// published.
func TestRefusedEntry(t *testing.T) {
	srv := slapdtest.Start(t, slapdtest.Options{Modules: []string{"constraint"},
		Config: "overlay constraint\nconstraint_attribute mail regex \"^[a-z.]+@example[.]org$\"\n"})
	r := newRig(t)
	p := newPublisher(t, r.options(srv, &memCheckpoints{}), r.h)
	adaID := r.register(t, ada)
	adaCert := r.issue(t, adaID, "email-protection")
	caughtUp, _ := r.run(t, p)
	caughtUp()
	if entry(t, srv, adaID) == nil {
		t.Fatal("no entry")
	}
	if err := r.h.CorrectSubject(context.Background(), officer, adaID, map[string]string{"email": "ada@elsewhere.example"}, domain.GroupIdentity); err != nil {
		t.Fatal(err)
	}
	grace := r.register(t, map[string]string{"common_name": "Grace Hopper", "email": "grace@example.org"})
	graceCert := r.issue(t, grace, "email-protection")
	caughtUp()
	// The modify and a fresh add are refused; the entry is written with cn,
	// sn and the certificate only: the old address is gone.
	e := entry(t, srv, adaID)
	wantCerts(t, e, adaCert)
	if e.GetAttributeValue("mail") != "" || e.GetAttributeValue("cn") != "Ada Lovelace" {
		t.Fatalf("the entry after the refusal: %v", e.Attributes)
	}
	wantCerts(t, entry(t, srv, grace), graceCert)
	if p.Failures() != 2 || !strings.Contains(r.logs.String(), "Constraint Violation") {
		t.Fatalf("%d failures; logs:\n%s", p.Failures(), r.logs.String())
	}
	noPersonalData(t, r.logs.String())
}

// TestCheckpoint: a publisher resumes after its checkpoint, and starts over
// from position 1 when the checkpoint is of another directory or names an
// event the ledger does not hold.
func TestCheckpoint(t *testing.T) {
	srv := slapdtest.Start(t, slapdtest.Options{})
	r := newRig(t)
	id := r.register(t, ada)
	issued := r.issue(t, id, "email-protection")
	cps := &memCheckpoints{}
	p := newPublisher(t, r.options(srv, cps), r.h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, r.store) }()
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if err := p.WaitFor(wctx, r.head(t)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	p.Close()
	saved := cps.get()
	if saved.Position != r.head(t) {
		t.Fatalf("checkpoint %d, head %d", saved.Position, r.head(t))
	}

	// The entry is removed by hand: a publisher resuming after the checkpoint
	// does not republish it (no sweep), one starting over does.
	conn := srv.Admin()
	defer conn.Close()
	if err := conn.Del(ldap.NewDelRequest("uid="+string(id)+","+slapdtest.People, nil)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		cp         directory.Checkpoint
		republish  bool
		appliedNow uint64 // Applied before Run
	}{
		{"resume", saved, false, saved.Position},
		{"other target", directory.Checkpoint{Target: "ldap://elsewhere " + slapdtest.People, Position: saved.Position, EventID: saved.EventID}, true, 0},
		{"other event", directory.Checkpoint{Target: saved.Target, Position: saved.Position, EventID: domain.EventID{1}}, true, 0},
		{"past the head", directory.Checkpoint{Target: saved.Target, Position: saved.Position + 5, EventID: saved.EventID}, true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := conn.Del(ldap.NewDelRequest("uid="+string(id)+","+slapdtest.People, nil)); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
				t.Fatal(err)
			}
			cps := &memCheckpoints{cp: c.cp}
			p := newPublisher(t, r.options(srv, cps), r.h)
			wait, stop := r.run(t, p)
			if !c.republish && p.Applied() != 0 && p.Applied() != c.appliedNow {
				t.Fatalf("applied %d at start, want the checkpoint's %d", p.Applied(), c.appliedNow)
			}
			wait()
			if got := entry(t, srv, id) != nil; got != c.republish {
				t.Fatalf("entry republished: %v, want %v", got, c.republish)
			}
			if c.republish {
				wantCerts(t, entry(t, srv, id), issued)
			}
			stop()
			if cp := cps.get(); cp.Position != r.head(t) || cp.Target != saved.Target {
				t.Fatalf("checkpoint after the run: %+v", cp)
			}
		})
	}
}

// TestHungDirectory: a directory that accepts connections and never answers
// does not hold Run past its context.
func TestHungDirectory(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// asked is closed once the publisher has sent its first request (the
	// bind), which is never answered.
	asked := make(chan struct{})
	go func() {
		var once sync.Once
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			go func() {
				if _, err := c.Read(make([]byte, 1)); err == nil {
					once.Do(func() { close(asked) })
				}
			}()
		}
	}()
	r := newRig(t)
	id := r.register(t, ada)
	r.issue(t, id, "email-protection")
	opts := directory.Options{URL: "ldap://" + ln.Addr().String(), BindDN: slapdtest.RootDN, Password: slapdtest.Password,
		BaseDN: slapdtest.People, Checkpoints: &memCheckpoints{}, SweepInterval: -1, Timeout: time.Minute}
	p := newPublisher(t, opts, r.h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, r.store) }()
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the publisher sent the directory nothing")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if p.Applied() >= r.head(t) {
		t.Fatalf("applied %d (the head) with no answer from the directory", p.Applied())
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	r := newRig(t)
	good := directory.Options{URL: "ldap://127.0.0.1:389", BaseDN: slapdtest.People, Checkpoints: &memCheckpoints{}}
	for name, mod := range map[string]func(*directory.Options){
		"no URL":            func(o *directory.Options) { o.URL = "" },
		"http URL":          func(o *directory.Options) { o.URL = "http://127.0.0.1" },
		"StartTLS ldaps":    func(o *directory.Options) { o.URL, o.StartTLS = "ldaps://127.0.0.1", true },
		"bad base DN":       func(o *directory.Options) { o.BaseDN = "not a DN" },
		"empty base DN":     func(o *directory.Options) { o.BaseDN = "" },
		"no checkpoints":    func(o *directory.Options) { o.Checkpoints = nil },
		"national id":       func(o *directory.Options) { o.Attributes = []string{"serial_number"} },
		"unknown attribute": func(o *directory.Options) { o.Attributes = []string{"common_name", "shoe_size"} },
	} {
		o := good
		mod(&o)
		if _, err := directory.New(o, r.h); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := directory.New(good, r.h); err != nil {
		t.Fatal(err)
	}
}

// TestTLS: the publisher reaches the directory over ldaps:// and over StartTLS,
// and does not publish to a server whose certificate it cannot verify.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)

	srv := slapdtest.Start(t, slapdtest.Options{CertFile: certFile, KeyFile: keyFile})
	r := newRig(t)
	id := r.register(t, ada)
	issued := r.issue(t, id, "email-protection")
	for _, c := range []struct {
		name     string
		url      string
		startTLS bool
	}{
		{"ldaps", srv.TLSURL, false},
		{"StartTLS", srv.URL, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := r.options(srv, &memCheckpoints{})
			opts.URL, opts.StartTLS = c.url, c.startTLS
			opts.TLS = &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
			untrusting, err := directory.New(opts, r.h)
			if err != nil {
				t.Fatal(err)
			}
			if err := untrusting.Reconcile(context.Background(), id); err == nil {
				t.Fatal("published to a directory whose certificate does not verify")
			}
			untrusting.Close()
			if entry(t, srv, id) != nil {
				t.Fatal("an entry was written")
			}

			opts.TLS = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
			p := newPublisher(t, opts, r.h)
			if err := p.Reconcile(context.Background(), id); err != nil {
				t.Fatal(err)
			}
			wantCerts(t, entry(t, srv, id), issued)
			admin := srv.Admin()
			defer admin.Close()
			if err := admin.Del(ldap.NewDelRequest("uid="+string(id)+","+slapdtest.People, nil)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestIdentityErasureAndFallbacks: with only email published, cn and sn fall
// back to the address; a deletion is followed; and an erasure of the identity
// key group alone removes the entry, since every certificate carries it.
func TestIdentityErasureAndFallbacks(t *testing.T) {
	srv := slapdtest.Start(t, slapdtest.Options{})
	r := newRig(t)
	opts := r.options(srv, &memCheckpoints{})
	opts.Attributes = []string{"email"}
	p := newPublisher(t, opts, r.h)
	id := r.register(t, map[string]string{"common_name": "Grace Hopper", "email": "grace@example.org"})
	old, kept := r.issue(t, id, "email-protection"), r.issue(t, id, "email-protection")
	caughtUp, _ := r.run(t, p)
	caughtUp()
	e := entry(t, srv, id)
	wantCerts(t, e, old, kept)
	if e.GetAttributeValue("cn") != "grace@example.org" || e.GetAttributeValue("sn") != "grace@example.org" || e.GetAttributeValue("mail") != "grace@example.org" {
		t.Fatalf("entry: %v", e.Attributes)
	}
	if err := r.h.RevokeCertificate(context.Background(), officer, old.Serial, domain.ReasonSuperseded); err != nil {
		t.Fatal(err)
	}
	if err := r.h.DeleteCertificate(context.Background(), officer, old.Serial, false); err != nil {
		t.Fatal(err)
	}
	caughtUp()
	wantCerts(t, entry(t, srv, id), kept)

	if err := r.h.EraseSubject(context.Background(), compliance, id, []string{domain.GroupIdentity}, domain.BasisErasureRequest); err != nil {
		t.Fatal(err)
	}
	caughtUp()
	if e := entry(t, srv, id); e != nil {
		t.Fatalf("the entry outlived the erasure of the identity group: %v", e.Attributes)
	}
	if p.Failures() != 0 {
		t.Fatalf("%d failures:\n%s", p.Failures(), r.logs.String())
	}
}

// failingSubjects fails Publication while fail is set, as a key vault that is
// down would.
type failingSubjects struct {
	directory.Subjects
	fail atomic.Bool
}

func (f *failingSubjects) Publication(ctx context.Context, id domain.SubjectID, publish func(string) bool) (domain.Publication, error) {
	if f.fail.Load() {
		return domain.Publication{}, errors.New("key vault unavailable")
	}
	return f.Subjects.Publication(ctx, id, publish)
}

// TestUnreadablePublication: when what may be published of a subject cannot
// be read, its entry is removed after maxAttempts tries and publication goes
// on; once it can be read again, the sweep publishes the entry again.
func TestUnreadablePublication(t *testing.T) {
	srv := slapdtest.Start(t, slapdtest.Options{})
	r := newRig(t)
	subjects := &failingSubjects{Subjects: r.h}
	p := newPublisher(t, r.options(srv, &memCheckpoints{}), subjects)
	id := r.register(t, ada)
	issued := r.issue(t, id, "email-protection")
	caughtUp, _ := r.run(t, p)
	caughtUp()
	wantCerts(t, entry(t, srv, id), issued)

	subjects.fail.Store(true)
	if err := r.h.CorrectSubject(context.Background(), officer, id, map[string]string{"email": "ada.lovelace@example.org"}, domain.GroupIdentity); err != nil {
		t.Fatal(err)
	}
	caughtUp() // the checkpoint passes the correction once the entry is removed
	if e := entry(t, srv, id); e != nil {
		t.Fatalf("the entry kept values that could not be checked: %v", e.Attributes)
	}
	if p.Failures() < 5 {
		t.Fatalf("%d failures, want at least the 5 attempts", p.Failures())
	}

	subjects.fail.Store(false)
	deadline := time.Now().Add(30 * time.Second)
	for entry(t, srv, id) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the entry was not published again once readable; logs:\n%s", r.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	e := entry(t, srv, id)
	wantCerts(t, e, issued)
	if e.GetAttributeValue("mail") != "ada.lovelace@example.org" {
		t.Fatalf("mail = %q", e.GetAttributeValue("mail"))
	}
	noPersonalData(t, r.logs.String())
}

// countingSubjects counts Publication calls per subject. Until release is
// closed, each call waits for it.
type countingSubjects struct {
	directory.Subjects
	release chan struct{}
	mu      sync.Mutex
	calls   map[domain.SubjectID]int
}

func (c *countingSubjects) Publication(ctx context.Context, id domain.SubjectID, publish func(string) bool) (domain.Publication, error) {
	c.mu.Lock()
	c.calls[id]++
	c.mu.Unlock()
	select {
	case <-c.release:
	case <-ctx.Done():
		return domain.Publication{}, ctx.Err()
	}
	return c.Subjects.Publication(ctx, id, publish)
}

// readSource is the store, counting the events its Follow has handed over:
// the body of the range loop over Follow ran for them.
type readSource struct {
	*sqlite.Store
	handed atomic.Uint64
	moved  chan struct{}
}

func (s *readSource) Follow(ctx context.Context, from uint64) iter.Seq2[domain.Event, error] {
	return func(yield func(domain.Event, error) bool) {
		for e, err := range s.Store.Follow(ctx, from) {
			if !yield(e, err) {
				return
			}
			s.handed.Add(1)
			select {
			case s.moved <- struct{}{}:
			default:
			}
		}
	}
}

// TestCatchUpReconcilesOncePerSubject: on catch-up the publisher writes a
// subject's entry once for all the events it has read ahead, not once per
// event. The first reconcile is held until the reader has handed over the
// whole ledger, so everything after the first turn's events is in the second
// turn: the subject is read at most twice by Run, and once more if the
// start's sweep lists its entry; reconciling once per event would read it
// seven times. (A publisher that reads no further than it reconciles never
// hands the ledger over, and fails on the reader's deadline.)
func TestCatchUpReconcilesOncePerSubject(t *testing.T) {
	srv := slapdtest.Start(t, slapdtest.Options{})
	r := newRig(t)
	ctx := context.Background()
	id := r.register(t, ada)
	var kept []domain.Issued
	for i := range 4 {
		issued := r.issue(t, id, "email-protection")
		if i%2 == 0 {
			if err := r.h.RevokeCertificate(ctx, officer, issued.Serial, domain.ReasonKeyCompromise); err != nil {
				t.Fatal(err)
			}
		} else {
			kept = append(kept, issued)
		}
	}
	if err := r.h.CorrectSubject(ctx, officer, id, map[string]string{"email": "ada.lovelace@example.org"}, domain.GroupIdentity); err != nil {
		t.Fatal(err)
	}
	head := r.head(t)

	subjects := &countingSubjects{Subjects: r.h, release: make(chan struct{}), calls: map[domain.SubjectID]int{}}
	src := &readSource{Store: r.store, moved: make(chan struct{}, 1)}
	p := newPublisher(t, r.options(srv, &memCheckpoints{}), subjects)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx, src) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
		p.Close()
	}()
	deadline := time.After(30 * time.Second)
	for src.handed.Load() < head {
		select {
		case <-src.moved:
		case <-deadline:
			t.Fatalf("the reader handed over %d of %d events", src.handed.Load(), head)
		}
	}
	close(subjects.release)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := p.WaitFor(wctx, head); err != nil {
		t.Fatalf("the publisher did not reach the head %d (at %d): %v\nlogs:\n%s", head, p.Applied(), err, r.logs.String())
	}
	e := entry(t, srv, id)
	wantCerts(t, e, kept...)
	if got := e.GetAttributeValue("mail"); got != "ada.lovelace@example.org" {
		t.Fatalf("mail = %q, want the corrected address", got)
	}
	subjects.mu.Lock()
	calls := subjects.calls[id]
	subjects.mu.Unlock()
	if calls > 3 {
		t.Fatalf("the subject was read %d times for its 7 events, want at most 3", calls)
	}
}

// crlSource builds real CRLs of the rig's CA, listing the serials revoke was
// told of; a counter numbers them.
type crlSource struct {
	r       *rig
	mu      sync.Mutex
	number  int64
	revoked []domain.Serial
}

func (c *crlSource) revoke(s domain.Serial) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.revoked = append(c.revoked, s)
}

func (c *crlSource) CRL(ctx context.Context) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.number++
	var entries []revocation.Entry
	for _, s := range c.revoked {
		n, _ := new(big.Int).SetString(string(s), 16)
		entries = append(entries, revocation.Entry{Serial: n, RevokedAt: time.Now(), Reason: 1})
	}
	now := time.Now()
	return revocation.BuildCRL(ctx, c.r.ca, c.r.caKey, revocation.CRL{Number: big.NewInt(c.number), ThisUpdate: now, NextUpdate: now.Add(time.Hour), Entries: entries})
}

// caEntry returns the directory's entry of CA id with its certificate and
// CRL attributes, or nil.
func caEntry(t *testing.T, srv *slapdtest.Server, id string) *ldap.Entry {
	t.Helper()
	conn := srv.Admin()
	defer conn.Close()
	res, err := conn.Search(ldap.NewSearchRequest("cn="+id+","+slapdtest.People, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
		"(objectClass=pkiCA)", []string{"cACertificate;binary", "certificateRevocationList;binary"}, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return nil
	}
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("read the CA entry: %v", err)
	}
	return res.Entries[0]
}

// TestCAPublication: the CA's certificate and CRL are published at start, a
// revocation brings a CRL that lists it into the directory, an entry deleted
// behind the CA's back is added again, and the subjects' entries go on.
func TestCAPublication(t *testing.T) {
	srv := slapdtest.Start(t, slapdtest.Options{})
	r := newRig(t)
	crls := &crlSource{r: r}
	opts := r.options(srv, &memCheckpoints{})
	opts.CAs = []directory.CA{{ID: "issuing", Certificate: r.ca.Raw, CRL: crls.CRL}}
	p := newPublisher(t, opts, r.h)
	id := r.register(t, ada)
	issued := r.issue(t, id, "email-protection")
	caughtUp, _ := r.run(t, p)
	caughtUp()
	wantCerts(t, entry(t, srv, id), issued)

	// crl waits until the CA's entry holds a CRL that test accepts.
	crl := func(what string, test func(*x509.RevocationList) bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			if e := caEntry(t, srv, "issuing"); e != nil {
				if !bytes.Equal(e.GetRawAttributeValue("cACertificate;binary"), r.ca.Raw) {
					t.Fatal("the CA entry does not hold the CA's certificate")
				}
				l, err := x509.ParseRevocationList(e.GetRawAttributeValue("certificateRevocationList;binary"))
				if err != nil {
					t.Fatalf("the CA entry's CRL: %v", err)
				}
				if err := l.CheckSignatureFrom(r.ca); err != nil {
					t.Fatalf("the CA entry's CRL: %v", err)
				}
				if test(l) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the directory's CRL never showed %s; logs:\n%s", what, r.logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	crl("the CA at start", func(l *x509.RevocationList) bool { return len(l.RevokedCertificateEntries) == 0 })

	crls.revoke(issued.Serial)
	if err := r.h.RevokeCertificate(context.Background(), officer, issued.Serial, domain.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	crl("the revocation", func(l *x509.RevocationList) bool {
		return len(l.RevokedCertificateEntries) == 1 && l.RevokedCertificateEntries[0].SerialNumber.Text(16) == string(issued.Serial)
	})
	caughtUp()
	if entry(t, srv, id) != nil {
		t.Fatal("the revoked certificate's subject is still published")
	}

	// The subjects' sweep leaves the CA entry alone.
	if _, err := p.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if caEntry(t, srv, "issuing") == nil {
		t.Fatal("the subjects' sweep deleted the CA entry")
	}
	// An entry deleted behind the CA's back comes back with the next
	// publication, and so does one someone else made at its name.
	conn := srv.Admin()
	defer conn.Close()
	dn := "cn=issuing," + slapdtest.People
	if err := conn.Del(ldap.NewDelRequest(dn, nil)); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishCAs(context.Background()); err != nil {
		t.Fatal(err)
	}
	crl("the entry again", func(l *x509.RevocationList) bool { return len(l.RevokedCertificateEntries) == 1 })
	if err := conn.Del(ldap.NewDelRequest(dn, nil)); err != nil {
		t.Fatal(err)
	}
	foreign := ldap.NewAddRequest(dn, nil)
	foreign.Attribute("objectClass", []string{"device"})
	foreign.Attribute("cn", []string{"issuing"})
	if err := conn.Add(foreign); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishCAs(context.Background()); err != nil {
		t.Fatal(err)
	}
	crl("the entry replaced", func(l *x509.RevocationList) bool { return len(l.RevokedCertificateEntries) == 1 })
	if p.Failures() != 0 {
		t.Fatalf("%d failures:\n%s", p.Failures(), r.logs.String())
	}
}

// TestCAPublicationSkipsUnchangedCRL: after a revocation only the CAs whose
// CRL changed are written again. The CA entry is deleted behind the
// publisher's back, so a write would bring it back: a revocation that leaves
// its CRL as it was does not, and one that changes it does.
func TestCAPublicationSkipsUnchangedCRL(t *testing.T) {
	srv := slapdtest.Start(t, slapdtest.Options{})
	r := newRig(t)
	crls := &crlSource{r: r}
	var (
		mu      sync.Mutex
		listed  = -1 // the revocations the kept CRL lists
		kept    []byte
		checked atomic.Int64 // calls of the second CA's CRL
	)
	// The first CA's CRL is built again only when its revocations change,
	// as authority.CRL keeps its CRL while a revocation under another CA
	// kicks the publication of every CA.
	first := func(ctx context.Context) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		crls.mu.Lock()
		n := len(crls.revoked)
		crls.mu.Unlock()
		if n != listed {
			b, err := crls.CRL(ctx)
			if err != nil {
				return nil, err
			}
			kept, listed = b, n
		}
		return kept, nil
	}
	// The CAs are published in order, so once the second CA's CRL is asked
	// for, the first CA's entry is written or skipped.
	second := func(ctx context.Context) ([]byte, error) {
		checked.Add(1)
		return crls.CRL(ctx)
	}
	opts := r.options(srv, &memCheckpoints{})
	opts.CAs = []directory.CA{{ID: "issuing", Certificate: r.ca.Raw, CRL: first}, {ID: "second", Certificate: r.ca.Raw, CRL: second}}
	p := newPublisher(t, opts, r.h)
	id := r.register(t, ada)
	one := r.issue(t, id, "email-protection")
	two := r.issue(t, id, "email-protection")
	caughtUp, _ := r.run(t, p)
	caughtUp()
	for deadline := time.Now().Add(15 * time.Second); caEntry(t, srv, "issuing") == nil || caEntry(t, srv, "second") == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the CA entries were not published at start; logs:\n%s", r.logs.String())
		}
	}
	conn := srv.Admin()
	defer conn.Close()
	if err := conn.Del(ldap.NewDelRequest("cn=issuing,"+slapdtest.People, nil)); err != nil {
		t.Fatal(err)
	}

	// revoke revokes s through the ledger and waits until the publication
	// that follows has passed the first CA.
	revoke := func(s domain.Serial) {
		t.Helper()
		before := checked.Load()
		if err := r.h.RevokeCertificate(context.Background(), officer, s, domain.ReasonKeyCompromise); err != nil {
			t.Fatal(err)
		}
		caughtUp()
		for deadline := time.Now().Add(15 * time.Second); checked.Load() == before; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no publication of the CAs after the revocation; logs:\n%s", r.logs.String())
			}
		}
	}
	// The CRL source is not told of this revocation: the first CA's CRL
	// stays the same bytes.
	revoke(one.Serial)
	if e := caEntry(t, srv, "issuing"); e != nil {
		t.Fatal("a CA entry whose CRL did not change was written again")
	}
	crls.revoke(two.Serial)
	revoke(two.Serial)
	e := caEntry(t, srv, "issuing")
	if e == nil {
		t.Fatal("a CA entry whose CRL changed was not written")
	}
	l, err := x509.ParseRevocationList(e.GetRawAttributeValue("certificateRevocationList;binary"))
	if err != nil || len(l.RevokedCertificateEntries) != 1 || l.RevokedCertificateEntries[0].SerialNumber.Text(16) != string(two.Serial) {
		t.Fatalf("the CA entry's CRL: %v, %v; want one listing %s", l, err, two.Serial)
	}
	if p.Failures() != 0 {
		t.Fatalf("%d failures:\n%s", p.Failures(), r.logs.String())
	}
}

// TestCAPublicationFailure: a CA whose CRL cannot be had is logged, counted
// and retried, and holds up neither the subjects' entries nor an erasure.
func TestCAPublicationFailure(t *testing.T) {
	srv := slapdtest.Start(t, slapdtest.Options{})
	r := newRig(t)
	opts := r.options(srv, &memCheckpoints{})
	opts.CAs = []directory.CA{{ID: "issuing", Certificate: r.ca.Raw,
		CRL: func(context.Context) ([]byte, error) { return nil, errors.New("views behind") }}}
	p := newPublisher(t, opts, r.h)
	id := r.register(t, ada)
	issued := r.issue(t, id, "email-protection")
	caughtUp, _ := r.run(t, p)
	caughtUp()
	wantCerts(t, entry(t, srv, id), issued)
	if err := r.h.EraseSubject(context.Background(), compliance, id, nil, domain.BasisErasureRequest); err != nil {
		t.Fatal(err)
	}
	caughtUp()
	if entry(t, srv, id) != nil {
		t.Fatal("the erased subject's entry is still there")
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(r.logs.String(), "CA issuing: views behind"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the CA's failure was not logged:\n%s", r.logs.String())
		}
	}
	// Retried: a second failure follows the first (after firstRetry).
	for deadline := time.Now().Add(10 * time.Second); p.Failures() < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d failures after 10 s: the CA was not retried", p.Failures())
		}
	}
	if caEntry(t, srv, "issuing") != nil {
		t.Fatalf("the CA entry: %v", caEntry(t, srv, "issuing"))
	}
}
