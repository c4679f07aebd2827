package projections

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/crypto/keyvault/vaulttest"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
)

// The tests run on the real parts: the SQLite ledger, the key vault under a KEK
// file, and a signer built on crypto/x509; events come from domain.Handlers.

var (
	officer    = domain.Actor{ID: "cert:0a", Role: "officer"}
	compliance = domain.Actor{ID: "cert:0b", Role: "compliance"}
	start      = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
)

// clock is the fake clock of the handlers and the views.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// countingSealer counts the sealed parts the views open.
type countingSealer struct {
	domain.Sealer
	opens atomic.Int64
}

func (s *countingSealer) Open(ctx context.Context, sealed *domain.Sealed, ad []byte) ([]byte, error) {
	s.opens.Add(1)
	return s.Sealer.Open(ctx, sealed, ad)
}

type rig struct {
	dir    string
	store  *sqlite.Store
	vault  *keyvault.Vault
	sealer *countingSealer
	h      *domain.Handlers
	clock  *clock
}

func newRig(t testing.TB) *rig {
	t.Helper()
	dir, store, vault := vaulttest.Open(t)
	r := &rig{dir: dir, store: store, vault: vault, sealer: &countingSealer{Sealer: vault}, clock: &clock{now: start}}
	r.h = &domain.Handlers{Events: store, Vault: vault, Signer: newTestSigner(t), Now: r.clock.Now, Rand: rand.Reader}
	return r
}

// viewsPath is where the rig's views live: a directory of their own, so that a
// scan of it sees only the views' files.
func (r *rig) viewsPath() string { return filepath.Join(r.dir, "views", "views.db") }

func (r *rig) open(t testing.TB, path string) *Views {
	t.Helper()
	v, err := Open(context.Background(), path, Options{Sealer: r.sealer, Now: r.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// run starts v.Run in the background; stop cancels it and returns its result.
func run(t testing.TB, v *Views, src Source) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx, src) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return within 10s of its context ending")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// sync waits until v has applied the whole ledger.
func (r *rig) sync(t testing.TB, v *Views) {
	t.Helper()
	head, err := r.store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitFor(ctx, head); err != nil {
		t.Fatalf("WaitFor(%d): %v (checkpoints %v)", head, err, v.Checkpoints())
	}
}

func (r *rig) head(t testing.TB) uint64 {
	t.Helper()
	h, err := r.store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (r *rig) register(t testing.TB, attrs map[string]string) domain.SubjectID {
	t.Helper()
	id, err := r.h.RegisterSubject(context.Background(), officer, attrs)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (r *rig) issue(t testing.TB, id domain.SubjectID, ca string) domain.Issued {
	t.Helper()
	issued, err := r.h.IssueCertificate(context.Background(), officer,
		domain.IssueRequest{SubjectID: id, CAID: ca, Profile: "tls-client", CSR: newCSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	return issued
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testSigner signs with an in-memory CA, 30 days from the request's time.
type testSigner struct {
	ca  *x509.Certificate
	key *ecdsa.PrivateKey
}

func newTestSigner(t testing.TB) *testSigner {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "projections test CA"},
		NotBefore: start.AddDate(-1, 0, 0), NotAfter: start.AddDate(5, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testSigner{ca: ca, key: key}
}

func (s *testSigner) SignCertificate(ctx context.Context, req domain.SignRequest) (domain.Signed, error) {
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil || csr.CheckSignature() != nil {
		return domain.Signed{}, &domain.Error{Kind: domain.KindInvalid, Code: "bad-csr", Detail: "the CSR does not parse or verify"}
	}
	serial, ok := new(big.Int).SetString(string(req.Serial), 16)
	if !ok {
		return domain.Signed{}, fmt.Errorf("serial %q is not hex", req.Serial)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: req.Attributes["common_name"]},
		NotBefore: req.Now, NotAfter: req.Now.Add(30 * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca, csr.PublicKey, s.key)
	if err != nil {
		return domain.Signed{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return domain.Signed{}, err
	}
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return domain.Signed{DER: der, Serial: req.Serial, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		SPKISHA256: hex.EncodeToString(spki[:])}, nil
}

func newCSR(t testing.TB) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// dump returns every row of every projection table, and the checkpoints, as
// sorted lines: two views with equal dumps hold the same data.
func dump(t testing.TB, v *Views) []string {
	t.Helper()
	var lines []string
	tables := []string{"checkpoints"}
	for _, p := range projections {
		tables = append(tables, p.tables...)
	}
	for _, table := range tables {
		rows, err := v.rdb.Query(`SELECT * FROM ` + table)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			b.WriteString(table)
			for i, c := range cols {
				val := vals[i]
				if bs, ok := val.([]byte); ok {
					val = string(bs)
				}
				fmt.Fprintf(&b, " %s=%v", c, val)
			}
			lines = append(lines, b.String())
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
	}
	slices.Sort(lines)
	return lines
}

func diffDumps(t testing.TB, what string, a, b []string) {
	t.Helper()
	if slices.Equal(a, b) {
		return
	}
	for _, l := range a {
		if !slices.Contains(b, l) {
			t.Errorf("%s: only in the first: %s", what, l)
		}
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			t.Errorf("%s: only in the second: %s", what, l)
		}
	}
	if !t.Failed() {
		t.Errorf("%s: dumps differ in the number of equal lines", what)
	}
}

// filesIn reads every file in dir: the database, -wal, -shm and anything else
// SQLite left there.
func filesIn(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

// foundIn returns the files in which s occurs.
func foundIn(files map[string][]byte, s string) []string {
	var where []string
	for name, b := range files {
		if bytes.Contains(b, []byte(s)) {
			where = append(where, name)
		}
	}
	slices.Sort(where)
	return where
}

// rawDB opens a views file directly, for tests that edit it while it is closed.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db := sql.OpenDB(newConnector(path, map[string]string{"_busy_timeout": "5000"}))
	t.Cleanup(func() { db.Close() })
	return db
}
