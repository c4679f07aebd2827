package revocation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"fmt"
)

// DER AlgorithmIdentifiers of the signature algorithms this package produces.
// ECDSA and Ed25519 identifiers have absent parameters, RSA ones a NULL
// (RFC 5758 section 3.2, RFC 8410 section 3, RFC 4055 section 5).
var (
	algECDSAWithSHA256 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	algECDSAWithSHA384 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03}
	algECDSAWithSHA512 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04}
	algEd25519         = []byte{0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70}
	algSHA256WithRSA   = []byte{0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00}
)

// minRSABits is the shortest RSA issuer key accepted.
const minRSABits = 2048

// sigAlg is how an issuer's key signs: which digest, and the identifier that
// names the algorithm in the signed structure.
type sigAlg struct {
	hash   crypto.Hash // 0 for Ed25519, which signs the message itself
	algID  []byte
	pub    crypto.PublicKey
	maxSig int // upper bound of the signature size, to size buffers
}

// sigAlgFor picks the algorithm for pub: ECDSA P-256/P-384/P-521 with
// SHA-256/384/512, Ed25519, RSA (2048 bits or more) PKCS #1 v1.5 with SHA-256.
func sigAlgFor(pub crypto.PublicKey) (sigAlg, error) {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			return sigAlg{crypto.SHA256, algECDSAWithSHA256, pub, 72}, nil
		case elliptic.P384():
			return sigAlg{crypto.SHA384, algECDSAWithSHA384, pub, 104}, nil
		case elliptic.P521():
			return sigAlg{crypto.SHA512, algECDSAWithSHA512, pub, 139}, nil
		}
		return sigAlg{}, fmt.Errorf("%w: unsupported ECDSA curve", ErrInvalid)
	case ed25519.PublicKey:
		return sigAlg{0, algEd25519, pub, ed25519.SignatureSize}, nil
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return sigAlg{}, fmt.Errorf("%w: RSA key shorter than %d bits", ErrInvalid, minRSABits)
		}
		return sigAlg{crypto.SHA256, algSHA256WithRSA, pub, pub.Size()}, nil
	}
	return sigAlg{}, fmt.Errorf("%w: unsupported key type %T", ErrInvalid, pub)
}

// checkKeyPair checks that key is the private half of cert's public key, and
// returns how it signs.
func checkKeyPair(cert *x509.Certificate, key crypto.Signer) (sigAlg, error) {
	if cert == nil || key == nil {
		return sigAlg{}, fmt.Errorf("%w: nil issuer certificate or key", ErrInvalid)
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return sigAlg{}, fmt.Errorf("%w: key does not match the issuer certificate", ErrInvalid)
	}
	return sigAlgFor(cert.PublicKey)
}

// digest returns what the signer signs for tbs: its hash, or tbs itself for
// Ed25519.
func (a sigAlg) digest(tbs []byte) []byte {
	switch a.hash {
	case crypto.SHA256:
		d := sha256.Sum256(tbs)
		return d[:]
	case crypto.SHA384:
		d := sha512.Sum384(tbs)
		return d[:]
	case crypto.SHA512:
		d := sha512.Sum512(tbs)
		return d[:]
	}
	return tbs
}

// sign signs tbs with key and returns the signature and the digest it signed.
func (a sigAlg) sign(key crypto.Signer, tbs []byte) (sig, digest []byte, err error) {
	digest = a.digest(tbs)
	sig, err = key.Sign(rand.Reader, digest, a.hash)
	if err != nil {
		return nil, nil, fmt.Errorf("revocation: signing: %w", err)
	}
	return sig, digest, nil
}

// verify checks sig over digest (the message itself for Ed25519).
func (a sigAlg) verify(digest, sig []byte) bool {
	switch pub := a.pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(pub, digest, sig)
	case ed25519.PublicKey:
		return ed25519.Verify(pub, digest, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(pub, a.hash, digest, sig) == nil
	}
	return false
}
