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
	"time"
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
