package issuer

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
	"unicode/utf8"
)

// caBackdate is how far before now a CA certificate's validity starts.
const caBackdate = time.Minute

// caKeyUsage: signing certificates and CRLs, and digitalSignature so that the CA
// key may sign OCSP responses itself.
const caKeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature

// NewRoot makes a self-signed root CA certificate for key, valid from a minute
// before now for validity, with no path length limit. The key may be an HSM key;
// nothing but one signature is asked of it.
func NewRoot(ctx context.Context, key crypto.Signer, name pkix.Name, validity time.Duration, serial *big.Int, now time.Time) (*x509.Certificate, error) {
	tmpl, err := caTemplate(name, validity, serial, now)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, _, err := signatureFor(key.Public()); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("issuer: root certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// NewIntermediate makes a certificate for an intermediate CA with public key key,
// signed by parent, with path length 0: it issues only end-entity certificates.
// Its validity is capped by parent's; opts.BaseURL adds the parent's CRL and
// issuer URLs as for end-entity certificates.
func NewIntermediate(ctx context.Context, parent CA, key crypto.PublicKey, name pkix.Name, validity time.Duration, serial *big.Int, now time.Time, opts Options) (*x509.Certificate, error) {
	tmpl, err := caTemplate(name, validity, serial, now)
	if err != nil {
		return nil, err
	}
	if _, _, err := signatureFor(key); err != nil {
		return nil, err
	}
	base, err := checkBaseURL(opts.BaseURL)
	if err != nil {
		return nil, err
	}
	if _, _, err := checkCA(parent); err != nil {
		return nil, err
	}
	if tmpl.NotAfter.After(parent.Certificate.NotAfter) {
		tmpl.NotAfter = parent.Certificate.NotAfter
	}
	if !tmpl.NotAfter.After(tmpl.NotBefore) {
		return nil, fmt.Errorf("issuer: CA %q expires before the intermediate would start", parent.ID)
	}
	tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	tmpl.CRLDistributionPoints, tmpl.OCSPServer, tmpl.IssuingCertificateURL = caURLs(base, parent.ID)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.Certificate, key, parent.Key)
	if err != nil {
		return nil, fmt.Errorf("issuer: intermediate certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

func caTemplate(name pkix.Name, validity time.Duration, serial *big.Int, now time.Time) (*x509.Certificate, error) {
	if serial == nil || serial.Sign() <= 0 || serial.BitLen() > 159 {
		return nil, errors.New("issuer: a CA serial must be positive and at most 20 octets")
	}
	if validity <= 0 {
		return nil, errors.New("issuer: a CA validity must be positive")
	}
	if len(name.ToRDNSequence()) == 0 {
		return nil, errors.New("issuer: a CA needs a non-empty subject name")
	}
	nb := now.Add(-caBackdate).UTC().Truncate(time.Second)
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               name,
		NotBefore:             nb,
		NotAfter:              nb.Add(validity),
		KeyUsage:              caKeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil
}

// oidOCSPNoCheck is id-pkix-ocsp-nocheck (RFC 6960 section 4.2.2.2.1).
var oidOCSPNoCheck = []int{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// NewOCSPResponder makes a delegated OCSP responder certificate (RFC 6960
// section 4.2.2.2) for public key key, issued by parent: end entity, key usage
// digitalSignature, extended key usage id-kp-OCSPSigning only, and
// id-pkix-ocsp-nocheck, so that clients do not ask for its own status (keep
// its validity short: it cannot be revoked in effect). Its subject is
// parent's with " OCSP responder" appended to the common name (cut to fit 64
// bytes), and its
// validity starts a minute before now, capped by parent's. It is linted like
// every certificate before the CA key signs it, and the CA's signature is
// checked.
func NewOCSPResponder(ctx context.Context, parent CA, key crypto.PublicKey, validity time.Duration, serial *big.Int, now time.Time) (*x509.Certificate, error) {
	if serial == nil || serial.Sign() <= 0 || serial.BitLen() > 159 {
		return nil, errors.New("issuer: a serial must be positive and at most 20 octets")
	}
	if validity <= 0 {
		return nil, errors.New("issuer: an OCSP responder's validity must be positive")
	}
	if _, _, err := signatureFor(key); err != nil {
		return nil, err
	}
	ca, err := newCAState(parent, "", map[string][]byte{})
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("issuer: OCSP responder key: %w", err)
	}
	ski, err := subjectKeyID(spki)
	if err != nil {
		return nil, fmt.Errorf("issuer: OCSP responder key: %w", err)
	}
	name := parent.Certificate.Subject
	const suffix = " OCSP responder" // kept whole, so that the name is never the CA's
	name.CommonName = strings.TrimSpace(truncate(name.CommonName, 64-len(suffix)) + suffix)
	nb := now.Add(-caBackdate).UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		SignatureAlgorithm:    ca.sig.alg,
		Subject:               name,
		NotBefore:             nb,
		NotAfter:              nb.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
		BasicConstraintsValid: true,
		SubjectKeyId:          ski,
		ExtraExtensions:       []pkix.Extension{{Id: oidOCSPNoCheck, Value: []byte{0x05, 0x00}}}, // NULL
	}
	if tmpl.NotAfter.After(parent.Certificate.NotAfter) {
		tmpl.NotAfter = parent.Certificate.NotAfter
	}
	if !tmpl.NotAfter.After(tmpl.NotBefore) {
		return nil, fmt.Errorf("issuer: CA %q expires before its OCSP responder would start", parent.ID)
	}
	tbs, err := buildTBS(tmpl, parent.Certificate, key)
	if err != nil {
		return nil, err
	}
	zc, err := ca.lintCertificate(tbs)
	if err != nil {
		return nil, err
	}
	l, err := newLinter(&Profile{Name: "ocsp-responder"})
	if err != nil {
		return nil, err
	}
	if failed := l.run(zc); len(failed) > 0 {
		return nil, fmt.Errorf("issuer: CA %q: OCSP responder: %s", parent.ID, lintDetail(failed))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	der, err := ca.sign(tbs)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// truncate cuts s to at most n bytes, at a rune boundary.
func truncate(s string, n int) string {
	for len(s) > n {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}
