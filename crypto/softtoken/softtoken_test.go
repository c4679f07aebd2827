package softtoken_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/crypto/keyvault/vaulttest"
	"github.com/caledger/caledger/crypto/softtoken"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

var (
	officer = domain.Actor{ID: "cert:0a", Role: "officer-proxy"}
	ada     = map[string]string{"common_name": "Ada Lovelace", "email": "ada@example.test", "country": "GB"}
)

const password = "correct horse battery"

// rig is the real issuance stack: the SQLite ledger, the key vault, the
// domain's handlers and crypto/issuer's signer over a two-level test PKI.
type rig struct {
	dir   string // the ledger's and the vault's files
	store *sqlite.Store
	vault *keyvault.Vault
	h     *domain.Handlers
	svc   *softtoken.Service
	root  *x509.Certificate
	inter *x509.Certificate
}

func newRig(t testing.TB) *rig {
	t.Helper()
	ctx := context.Background()
	dir, store, vault := vaulttest.Open(t)
	now := time.Now()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	root, err := issuer.NewRoot(ctx, rootKey, pkix.Name{CommonName: "soft token test root"}, 10*365*24*time.Hour, big.NewInt(1), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootCA := issuer.CA{ID: "root", Certificate: root, Key: rootKey}
	inter, err := issuer.NewIntermediate(ctx, rootCA, interKey.Public(), pkix.Name{CommonName: "soft token test issuing"},
		5*365*24*time.Hour, big.NewInt(2), now.Add(-time.Hour), issuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ps := issuer.DefaultProfiles()
	for i := range ps {
		if ps[i].Name == "email-protection" {
			ps[i].KeyTypes = []string{issuer.KeyP256, issuer.KeyRSA}
		}
	}
	iss, err := issuer.New([]issuer.CA{rootCA, {ID: "issuing", Certificate: inter, Key: interKey, Chain: []*x509.Certificate{root}}}, ps, issuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{dir: dir, store: store, vault: vault, root: root, inter: inter}
	r.h = &domain.Handlers{Events: store, Vault: vault, Signer: iss, Now: time.Now, Rand: rand.Reader}
	r.svc = &softtoken.Service{Commands: r.h, Checker: iss, Iterations: 2048,
		Chain: func(caID string) ([]*x509.Certificate, error) {
			if caID != "issuing" {
				return nil, errors.New("no such CA")
			}
			return []*x509.Certificate{inter}, nil
		}}
	return r
}

// events returns the ledger's event types in order.
func (r *rig) events(t testing.TB) []domain.Event {
	t.Helper()
	var out []domain.Event
	for e, err := range r.store.ReadAll(context.Background(), 1) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// open decodes a token's PKCS#12 file and checks it: the key is the
// certificate's, the certificate chains to the test root through the CA
// certificates in the file, and it is the one the ledger recorded.
func (r *rig) open(t *testing.T, tok softtoken.Token) (crypto.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, leaf, cas, err := pkcs12.DecodeChain(tok.PKCS12, password)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.(crypto.Signer).Public()
	if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Fatal("the token's key is not the certificate's")
	}
	if len(cas) != 1 || !cas[0].Equal(r.inter) {
		t.Fatalf("the token carries %d CA certificates, want the issuing CA", len(cas))
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(r.root)
	inters.AddCert(cas[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatal(err)
	}
	if got := hexSerial(leaf); got != string(tok.Serial) {
		t.Fatalf("certificate serial %s, token says %s", got, tok.Serial)
	}
	if _, _, _, err := pkcs12.DecodeChain(tok.PKCS12, password+"x"); err == nil {
		t.Fatal("the token opens with a wrong password")
	}
	return key, leaf
}

func hexSerial(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

func TestIssueForNewSubject(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	tok, err := r.svc.Issue(ctx, officer, softtoken.Request{Attributes: ada, Profile: "tls-client", CAID: "issuing", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Registered || !tok.SubjectID.Valid() || tok.Position == 0 {
		t.Fatalf("token %+v", tok)
	}
	key, leaf := r.open(t, tok)
	if _, ok := key.(*ecdsa.PrivateKey); !ok || leaf.Subject.CommonName != "Ada Lovelace" {
		t.Fatalf("key %T, subject %q", key, leaf.Subject)
	}
	// The ledger: the subject, its link, the certificate with key_generated,
	// all by the proxy; the private key appears nowhere in it.
	evs := r.events(t)
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
		if e.Actor != officer {
			t.Errorf("%s recorded by %+v", e.Type, e.Actor)
		}
	}
	want := []string{domain.TypeSubjectRegistered, domain.TypeSubjectCertificateLinked, domain.TypeCertificateIssued}
	if strings.Join(types, " ") != strings.Join(want, " ") {
		t.Fatalf("ledger %v, want %v", types, want)
	}
	var p domain.CertificateIssued
	if err := domain.UnmarshalPublic(&evs[2], &p); err != nil || !p.KeyGenerated || p.SubjectID != tok.SubjectID || p.Serial != tok.Serial {
		t.Fatalf("certificate.issued %+v, %v", p, err)
	}
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	scalar := key.(*ecdsa.PrivateKey).D.Bytes()
	holds := func(b []byte) bool { return bytes.Contains(b, pkcs8) || bytes.Contains(b, scalar) }
	// Every sealed part, opened: the JSON and each base64 string in it.
	sealed := 0
	for _, e := range evs {
		if e.Sealed == nil {
			continue
		}
		sealed++
		plain, err := r.vault.Open(ctx, e.Sealed, domain.SealedAD(&e))
		if err != nil {
			t.Fatal(err)
		}
		var fields map[string]any
		if err := json.Unmarshal(plain, &fields); err != nil {
			t.Fatal(err)
		}
		for name, v := range fields {
			str, _ := v.(string)
			raw, _ := base64.StdEncoding.DecodeString(str)
			if holds(plain) || holds(raw) {
				t.Errorf("the sealed %s of %s holds the private key", name, e.Type)
			}
		}
	}
	if sealed != 2 {
		t.Fatalf("opened %d sealed parts, want the subject's and the certificate's", sealed)
	}
	// And the files of the ledger and the vault, as stored.
	err = filepath.WalkDir(r.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if holds(b) {
			t.Errorf("%s holds the private key", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestIssueForRegisteredSubject(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id, err := r.h.RegisterSubject(ctx, officer, ada)
	if err != nil {
		t.Fatal(err)
	}
	for _, kt := range []string{issuer.KeyP384, issuer.KeyEd25519, issuer.KeyRSA} {
		profile := "tls-client"
		if kt == issuer.KeyRSA {
			profile = "email-protection"
		}
		tok, err := r.svc.Issue(ctx, officer, softtoken.Request{SubjectID: id, Profile: profile, CAID: "issuing", KeyType: kt, Password: password})
		if err != nil {
			t.Fatal(kt, err)
		}
		if tok.Registered || tok.SubjectID != id {
			t.Fatalf("token %+v", tok)
		}
		key, _ := r.open(t, tok)
		switch k := key.(type) {
		case *ecdsa.PrivateKey:
			if kt != issuer.KeyP384 || k.Curve != elliptic.P384() {
				t.Errorf("%s: got a P-256 key", kt)
			}
		case ed25519.PrivateKey:
			if kt != issuer.KeyEd25519 {
				t.Errorf("%s: got an Ed25519 key", kt)
			}
		case *rsa.PrivateKey:
			if kt != issuer.KeyRSA || k.N.BitLen() != softtoken.RSABits {
				t.Errorf("%s: got RSA-%d", kt, k.N.BitLen())
			}
		default:
			t.Errorf("%s: got %T", kt, key)
		}
	}
}

// TestRefusals: every request a caller can get wrong is refused with a clear
// code before anything is recorded, and no refusal repeats the password or
// the attributes.
func TestRefusals(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	id, err := r.h.RegisterSubject(ctx, officer, ada)
	if err != nil {
		t.Fatal(err)
	}
	before := len(r.events(t))
	ok := softtoken.Request{Attributes: ada, Profile: "tls-client", CAID: "issuing", Password: password}
	cases := []struct {
		name string
		edit func(*softtoken.Request)
		code string
	}{
		{"short password", func(q *softtoken.Request) { q.Password = "secret1" }, softtoken.CodeBadPassword},
		{"long password", func(q *softtoken.Request) { q.Password = strings.Repeat("p", softtoken.MaxPassword+1) }, softtoken.CodeBadPassword},
		{"control character", func(q *softtoken.Request) { q.Password = "correct\x00horse" }, softtoken.CodeBadPassword},
		{"outside the BMP", func(q *softtoken.Request) { q.Password = "correct horse \U0001F40E" }, softtoken.CodeBadPassword},
		{"not UTF-8", func(q *softtoken.Request) { q.Password = "correct \xff horse" }, softtoken.CodeBadPassword},
		{"unknown key type", func(q *softtoken.Request) { q.KeyType = "DSA" }, issuer.CodeKeyTypeNotAllowed},
		{"key type the profile refuses", func(q *softtoken.Request) { q.Profile, q.KeyType = "email-protection", issuer.KeyEd25519 }, issuer.CodeKeyTypeNotAllowed},
		{"unknown profile", func(q *softtoken.Request) { q.Profile = "nope" }, issuer.CodeUnknownProfile},
		{"unknown CA", func(q *softtoken.Request) { q.CAID = "nope" }, issuer.CodeUnknownCA},
		{"missing attribute", func(q *softtoken.Request) {
			q.Profile = "email-protection"
			q.Attributes = map[string]string{"common_name": "Ada"}
		}, issuer.CodeMissingAttribute},
		{"bad attribute", func(q *softtoken.Request) {
			q.Attributes = map[string]string{"common_name": "Ada", "country": "Britain"}
		}, issuer.CodeBadAttribute},
		{"unknown attribute", func(q *softtoken.Request) {
			q.Attributes = map[string]string{"common_name": "Ada", "shoe_size": "size forty"}
		}, "unknown-attribute"},
		{"no subject", func(q *softtoken.Request) { q.Attributes = nil }, softtoken.CodeNoSubject},
		{"subject and attributes", func(q *softtoken.Request) { q.SubjectID = id }, "subject-and-attributes"},
		{"bad subject id", func(q *softtoken.Request) { q.SubjectID, q.Attributes = "ADA", nil }, "bad-subject-id"},
		{"unknown subject", func(q *softtoken.Request) {
			q.SubjectID, q.Attributes = domain.SubjectID(strings.Repeat("ab", 16)), nil
		}, "no-subject"},
		{"registered subject lacks a required attribute", func(q *softtoken.Request) { q.SubjectID, q.Attributes, q.Profile = id, nil, "tls-server" }, issuer.CodeMissingAttribute},
	}
	// A CA that expires before the certificate would start.
	cases = append(cases, struct {
		name string
		edit func(*softtoken.Request)
		code string
	}{"expired CA", func(*softtoken.Request) {
		r.svc.Now = func() time.Time { return r.inter.NotAfter.Add(time.Hour) }
	}, issuer.CodeCAExpired})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer func() { r.svc.Now = nil }()
			req := ok
			c.edit(&req)
			_, err := r.svc.Issue(ctx, officer, req)
			var de *domain.Error
			if !errors.As(err, &de) || de.Code != c.code {
				t.Fatalf("error %v, want code %s", err, c.code)
			}
			for _, secret := range []string{req.Password, "Ada", "Lovelace", "Britain", "shoe_size", "size forty"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q repeats %q", err, secret)
				}
			}
			if n := len(r.events(t)); n != before {
				t.Errorf("the refusal recorded %d events", n-before)
			}
		})
	}
}

// TestRefusedBeforeKeyGeneration: attributes a registration would refuse are
// refused before a key is generated. The context is cancelled, so a request
// that got as far as the key generation's slot would fail with the context's
// error instead of the refusal.
func TestRefusedBeforeKeyGeneration(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for name, tt := range map[string]struct {
		attrs map[string]string
		code  string
	}{
		"unknown attribute":            {map[string]string{"common_name": "Ada", "shoe_size": "size forty"}, "unknown-attribute"},
		"control character":            {map[string]string{"common_name": "Ada\x07"}, "attribute-control-character"},
		"not permitted by the profile": {map[string]string{"common_name": "Ada", "locality": "L\x00ndon"}, "attribute-control-character"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := r.svc.Issue(ctx, officer, softtoken.Request{Attributes: tt.attrs, Profile: "tls-client", CAID: "issuing", Password: password})
			var de *domain.Error
			if !errors.As(err, &de) || de.Code != tt.code {
				t.Fatalf("error %v, want the refusal %s before the key generation", err, tt.code)
			}
		})
	}
}

// TestOpenSSLReadsToken: OpenSSL, the outside peer, opens the file with the
// password, finds the key and the certificate, and the two match.
func TestOpenSSLReadsToken(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required for this interoperability test: %v", err)
	}
	r := newRig(t)
	r.svc.Iterations = 0 // the production count, as a client meets it
	tok, err := r.svc.Issue(context.Background(), officer, softtoken.Request{Attributes: ada, Profile: "tls-client", CAID: "issuing", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p12 := filepath.Join(dir, "token.p12")
	if err := os.WriteFile(p12, tok.PKCS12, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(openssl, args...)
		cmd.Env = append(os.Environ(), "TOKEN_PASSWORD="+password)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	pemOut := filepath.Join(dir, "token.pem")
	run("pkcs12", "-in", p12, "-passin", "env:TOKEN_PASSWORD", "-noenc", "-out", pemOut)
	b, err := os.ReadFile(pemOut)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(b), "BEGIN CERTIFICATE") != 2 || !strings.Contains(string(b), "BEGIN PRIVATE KEY") {
		t.Fatalf("openssl found:\n%s", b)
	}
	keyPub := run("pkey", "-in", pemOut, "-pubout")
	certPub := run("x509", "-in", pemOut, "-noout", "-pubkey")
	if keyPub != certPub {
		t.Fatalf("key and certificate differ:\n%s\n%s", keyPub, certPub)
	}
	// The wrong password is refused.
	cmd := exec.Command(openssl, "pkcs12", "-in", p12, "-passin", "pass:wrong password", "-noenc", "-out", filepath.Join(dir, "x.pem"))
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("openssl opened the token with a wrong password:\n%s", out)
	}
}

// failingSigner stands for a CA key that stops answering (an HSM gone away).
type failingSigner struct{}

func (failingSigner) SignCertificate(context.Context, domain.SignRequest) (domain.Signed, error) {
	return domain.Signed{}, errors.New("the HSM does not answer")
}

// TestSignerFailureAfterRegistration: the one failure the pre-checks cannot
// foresee leaves the new subject registered, and the token says which, so
// that the caller can retry for it or erase it.
func TestSignerFailureAfterRegistration(t *testing.T) {
	r := newRig(t)
	r.h.Signer = failingSigner{}
	tok, err := r.svc.Issue(context.Background(), officer, softtoken.Request{Attributes: ada, Profile: "tls-client", CAID: "issuing", Password: password})
	if !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("error %v, want unavailable", err)
	}
	if !tok.Registered || !tok.SubjectID.Valid() || tok.PKCS12 != nil {
		t.Fatalf("token %+v", tok)
	}
	evs := r.events(t)
	if len(evs) != 1 || evs[0].Type != domain.TypeSubjectRegistered || evs[0].Stream != domain.SubjectStream(tok.SubjectID) {
		t.Fatalf("ledger %+v", evs)
	}
}
