// Package softtoken hands out soft tokens: a key pair caledger generates,
// certified for a subject and delivered once, in a PKCS#12 file encrypted
// under a password the requester chose.
//
// The private key exists only in memory while the file is made: it is never
// stored, logged or recorded. The ledger records the certificate like any
// other (certificate.issued, with key_generated set), and the file leaves the
// process only once that event is durable. docs/soft-tokens.md describes the
// REST operation built on this package.
package softtoken

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"runtime"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/domain"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// DefaultKeyType is the key type of a request that names none. Key types
// are named as profiles name them (crypto/issuer's Key* constants).
const DefaultKeyType = issuer.KeyP256

// RSABits is the modulus of a generated RSA key, unless the profile asks for
// more.
const RSABits = 3072

// Iterations is the iteration count of the PKCS#12 file's key derivations
// (go-pkcs12's Modern2023 encoding): PBKDF2-HMAC-SHA256 for the encryption of
// the key and the certificates, and PKCS#12's own derivation (RFC 7292
// appendix B, SHA-256) for the MAC. The password is chosen by a person, so the
// count is OWASP's advice for PBKDF2-HMAC-SHA256 rather than OpenSSL's default
// 2048. The MAC is a guesser's cheapest check: 600,000 SHA-256 compressions
// per guess, about half of what 600,000 PBKDF2-HMAC rounds cost. A file costs
// about 0.28 s of CPU here (BENCHMARKS.md), and about as much to open.
const Iterations = 600_000

// Password bounds, in characters.
const (
	MinPassword = 8
	MaxPassword = 256
)

// Error codes of refused requests (domain.Error Code, KindInvalid), besides
// crypto/issuer's.
const (
	CodeBadPassword = "bad-password"
	CodeNoSubject   = "subject-required"
)

// Commands records subjects and issues certificates; domain.Handlers
// implements it.
type Commands interface {
	RegisterSubject(ctx context.Context, actor domain.Actor, attrs map[string]string) (domain.SubjectID, error)
	IssueCertificate(ctx context.Context, actor domain.Actor, req domain.IssueRequest) (domain.Issued, error)
}

// Checker makes the signer's checks before a key is generated or anything is
// recorded; crypto/issuer's Issuer implements it.
type Checker interface {
	CheckGenerated(profile, caID, keyType string, attrs map[string]string, now time.Time) (minRSABits int, err error)
}

// Service issues soft tokens. Use it through a pointer: it holds the bound
// on tokens made at once.
type Service struct {
	Commands Commands
	Checker  Checker
	// Chain returns the CA certificates a token of caID carries after its
	// own: the issuing CA and any intermediates, not the root.
	Chain func(caID string) ([]*x509.Certificate, error)
	// Iterations overrides the package's Iterations when positive. Only
	// tests lower it.
	Iterations int
	// Now is the clock of the pre-checks; nil means time.Now. The domain's
	// own clock times the certificate.
	Now func() time.Time

	// slots bounds the key generations and PKCS#12 files made at once to
	// half the CPUs (at least one): a file costs about 0.3 s of CPU, and a
	// burst must leave cores to OCSP, TLS and the rest of the API. The
	// ledger's appends and the CA's signature are not held under a slot.
	slotsOnce sync.Once
	slots     chan struct{}
}

// Request asks for one soft token.
type Request struct {
	// SubjectID names a registered subject. When empty, Attributes are
	// registered as a new subject first.
	SubjectID  domain.SubjectID
	Attributes map[string]string
	Profile    string
	CAID       string
	// KeyType is P-256 (the default when empty), P-384, Ed25519 or RSA;
	// crypto/issuer refuses other names with key-type-not-allowed.
	KeyType string
	// Password encrypts the PKCS#12 file. It is personal: never logged,
	// recorded or echoed.
	Password string
}

// Token is an issued soft token.
type Token struct {
	// PKCS12 is the DER PKCS#12 file: the private key, the certificate and
	// the CA certificates of Chain.
	PKCS12     []byte
	SubjectID  domain.SubjectID
	Registered bool // SubjectID was registered by this request
	Serial     domain.Serial
	// Position is the ledger position of the certificate.issued event.
	Position uint64
}

// Issue checks req, registers the subject when req names none, generates the
// key pair, has it certified (recorded with key_generated) and returns it in
// a PKCS#12 file. Everything a request can get wrong is checked before
// anything is recorded; an error after a new subject was registered (an
// unavailable signer, a failed lint) leaves that subject registered without
// the certificate, and the returned Token says which (Registered, SubjectID).
func (s *Service) Issue(ctx context.Context, actor domain.Actor, req Request) (Token, error) {
	if err := CheckPassword(req.Password); err != nil {
		return Token{}, err
	}
	if req.KeyType == "" {
		req.KeyType = DefaultKeyType
	}
	attrs := req.Attributes
	switch {
	case req.SubjectID != "" && len(req.Attributes) > 0:
		return Token{}, &domain.Error{Kind: domain.KindInvalid, Code: "subject-and-attributes",
			Detail: "name a registered subject or give the attributes of a new one, not both"}
	case req.SubjectID != "":
		if !req.SubjectID.Valid() {
			return Token{}, &domain.Error{Kind: domain.KindInvalid, Code: "bad-subject-id",
				Detail: "the subject id must be a subject pseudonym: 32 lower-case hex digits"}
		}
		attrs = nil // checked when signed
	case len(req.Attributes) == 0:
		return Token{}, &domain.Error{Kind: domain.KindInvalid, Code: CodeNoSubject,
			Detail: "no subject: name a registered subject or give the attributes of a new one"}
	default:
		// Every attribute the registration would refuse, before a key is
		// generated: the profile's own check covers only what it permits.
		if err := domain.CheckRegistration(req.Attributes); err != nil {
			return Token{}, err
		}
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	minRSA, err := s.Checker.CheckGenerated(req.Profile, req.CAID, req.KeyType, attrs, now())
	if err != nil {
		return Token{}, err
	}
	chain, err := s.Chain(req.CAID)
	if err != nil {
		return Token{}, err
	}
	release, err := s.slot(ctx)
	if err != nil {
		return Token{}, err
	}
	key, err := issuer.GenerateKey(req.KeyType, max(minRSA, RSABits))
	var csr []byte
	if err == nil {
		csr, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	}
	release()
	if err != nil {
		return Token{}, fmt.Errorf("softtoken: a %s key and its CSR: %w", req.KeyType, err)
	}

	out := Token{SubjectID: req.SubjectID}
	if out.SubjectID == "" {
		if out.SubjectID, err = s.Commands.RegisterSubject(ctx, actor, req.Attributes); err != nil {
			return Token{}, err
		}
		out.Registered = true
	}
	issued, err := s.Commands.IssueCertificate(ctx, actor, domain.IssueRequest{
		SubjectID: out.SubjectID, CAID: req.CAID, Profile: req.Profile, CSR: csr, KeyGenerated: true,
	})
	if err != nil {
		return out, err
	}
	out.Serial, out.Position = issued.Serial, issued.Position
	leaf, err := x509.ParseCertificate(issued.Certificate)
	if err != nil {
		return out, fmt.Errorf("softtoken: the issued certificate: %w", err)
	}
	iterations := Iterations
	if s.Iterations > 0 {
		iterations = s.Iterations
	}
	if release, err = s.slot(ctx); err != nil {
		return out, err
	}
	defer release()
	if out.PKCS12, err = pkcs12.Modern2023.WithIterations(iterations).Encode(key, leaf, chain, req.Password); err != nil {
		return out, fmt.Errorf("softtoken: PKCS#12: %w", err)
	}
	return out, nil
}

// slot waits for one of the slots that bound the CPU-heavy steps (key
// generation, the PKCS#12 file) and returns its release.
func (s *Service) slot(ctx context.Context) (release func(), err error) {
	s.slotsOnce.Do(func() { s.slots = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2)) })
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// CheckPassword refuses a password that is too short or too long, or that
// holds control characters or characters PKCS#12 cannot encode (those outside
// Unicode's Basic Multilingual Plane). Its errors never include the password.
func CheckPassword(pw string) error {
	bad := func(detail string) error {
		return &domain.Error{Kind: domain.KindInvalid, Code: CodeBadPassword, Detail: detail}
	}
	if !utf8.ValidString(pw) {
		return bad("the password is not valid UTF-8")
	}
	n := utf8.RuneCountInString(pw)
	if n < MinPassword || n > MaxPassword {
		return bad(fmt.Sprintf("the password must have %d to %d characters", MinPassword, MaxPassword))
	}
	for _, r := range pw {
		if unicode.IsControl(r) {
			return bad("the password must not contain control characters")
		}
		if r > 0xFFFF || r >= 0xD800 && r <= 0xDFFF {
			return bad("the password must not contain characters outside Unicode's Basic Multilingual Plane (PKCS#12 cannot encode them)")
		}
	}
	return nil
}
