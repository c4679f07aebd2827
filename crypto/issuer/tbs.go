package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// errTBSCaptured stops x509.CreateCertificate once it has encoded the
// TBSCertificate: tbsCapture hands it the error instead of a signature.
var errTBSCaptured = errors.New("issuer: TBSCertificate captured")

// tbsCapture is the crypto.MessageSigner given to x509.CreateCertificate to obtain
// the TBSCertificate it encodes without signing anything. crypto.SignMessage (which
// CreateCertificate uses) passes a MessageSigner the whole TBSCertificate rather
// than its digest.
type tbsCapture struct {
	pub crypto.PublicKey
	tbs []byte
}

func (c *tbsCapture) Public() crypto.PublicKey { return c.pub }

func (c *tbsCapture) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("issuer: tbsCapture signs nothing")
}

func (c *tbsCapture) SignMessage(_ io.Reader, msg []byte, _ crypto.SignerOpts) ([]byte, error) {
	c.tbs = msg
	return nil, errTBSCaptured
}

// buildTBS encodes template as a TBSCertificate for subjectKey issued by parent.
// The capturing signer presents parent's own public key, so CreateCertificate's
// check that the signer matches the parent passes and its issuer name, authority
// key identifier and signature algorithm are those of the real CA: no re-keyed
// copy of the CA certificate is needed.
func buildTBS(template, parent *x509.Certificate, subjectKey any) ([]byte, error) {
	c := &tbsCapture{pub: parent.PublicKey}
	_, err := x509.CreateCertificate(rand.Reader, template, parent, subjectKey, c)
	if !errors.Is(err, errTBSCaptured) {
		if err == nil {
			err = errors.New("x509.CreateCertificate did not ask for a signature")
		}
		return nil, fmt.Errorf("issuer: encode certificate: %w", err)
	}
	return c.tbs, nil
}

// signature describes how an issuer key signs: the x509 algorithm and the
// options crypto.SignMessage needs.
type signature struct {
	alg  x509.SignatureAlgorithm
	opts crypto.SignerOpts
}

// signatureFor returns how a CA with public key pub signs, matching the default
// x509.CreateCertificate picks, and the name of the key type for throwaway keys.
func signatureFor(pub crypto.PublicKey) (signature, string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return signature{x509.ECDSAWithSHA256, crypto.SHA256}, KeyP256, nil
		case elliptic.P384():
			return signature{x509.ECDSAWithSHA384, crypto.SHA384}, KeyP384, nil
		}
	case ed25519.PublicKey:
		return signature{x509.PureEd25519, crypto.Hash(0)}, KeyEd25519, nil
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return signature{x509.SHA256WithRSA, crypto.SHA256}, KeyRSA, nil
		}
	}
	return signature{}, "", fmt.Errorf("issuer: CA key %T is not P-256, P-384, Ed25519 or RSA of 2048 bits or more", pub)
}

// assemble returns the DER Certificate of tbs and sig. The outer
// signatureAlgorithm is copied from the one inside tbs, so the two always match
// (RFC 5280 4.1.1.2).
func assemble(tbs, sig []byte) ([]byte, error) {
	in := cryptobyte.String(tbs)
	var body, algID cryptobyte.String
	if !in.ReadASN1(&body, cbasn1.SEQUENCE) ||
		!body.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!body.SkipASN1(cbasn1.INTEGER) ||
		!body.ReadASN1Element(&algID, cbasn1.SEQUENCE) {
		return nil, errors.New("issuer: malformed TBSCertificate")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(algID)
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}
