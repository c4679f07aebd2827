package revocation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a self-signed CA certificate and its key.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// keyTypes are the issuer key types tests run over.
var keyTypes = []struct {
	name string
	new  func() crypto.Signer
}{
	{"P-256", func() crypto.Signer { k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); return k }},
	{"P-384", func() crypto.Signer { k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader); return k }},
	{"P-521", func() crypto.Signer { k, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader); return k }},
	{"Ed25519", func() crypto.Signer { _, k, _ := ed25519.GenerateKey(rand.Reader); return k }},
	{"RSA-2048", func() crypto.Signer { return rsaKey() }},
}

func newP256(tb testing.TB) crypto.Signer {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func newTestCA(tb testing.TB, key crypto.Signer, name string) *testCA {
	tb.Helper()
	return newTestCAWith(tb, key, name, func(*x509.Certificate) {})
}

func newTestCAWith(tb testing.TB, key crypto.Signer, name string, edit func(*x509.Certificate)) *testCA {
	tb.Helper()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"caledger test"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// writePEM writes the CA certificate to dir/name and returns the path.
func (ca *testCA) writePEM(tb testing.TB, dir, name string) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// sigAlgorithm is the x509 name of the algorithm ca signs with.
func (ca *testCA) sigAlgorithm() x509.SignatureAlgorithm {
	switch k := ca.key.Public().(type) {
	case ed25519.PublicKey:
		return x509.PureEd25519
	case *rsa.PublicKey:
		return x509.SHA256WithRSA
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P384():
			return x509.ECDSAWithSHA384
		case elliptic.P521():
			return x509.ECDSAWithSHA512
		}
	}
	return x509.ECDSAWithSHA256
}

// keyBits is the subjectPublicKey BIT STRING content of ca's certificate.
func (ca *testCA) keyBits(tb testing.TB) []byte {
	tb.Helper()
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(ca.cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		tb.Fatal(err)
	}
	return spki.PublicKey.RightAlign()
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// countingSigner counts signatures.
type countingSigner struct {
	crypto.Signer
	n atomic.Int64
}

func (s *countingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.n.Add(1)
	return s.Signer.Sign(r, digest, opts)
}

// Test-side OCSP request structures (RFC 6960 section 4.1.1), encoded with
// encoding/asn1 so that the package's parser is checked against another
// encoder.
type (
	reqCertID struct {
		HashAlgorithm pkix.AlgorithmIdentifier
		NameHash      []byte
		KeyHash       []byte
		Serial        *big.Int
	}
	reqSingle struct {
		Cert reqCertID
		Exts []pkix.Extension `asn1:"explicit,tag:0,optional"`
	}
	reqTBS struct {
		Version int `asn1:"explicit,tag:0,default:0,optional"`
		List    []reqSingle
		Exts    []pkix.Extension `asn1:"explicit,tag:2,optional"`
	}
	reqOCSP struct {
		TBS reqTBS
		Sig asn1.RawValue `asn1:"explicit,tag:0,optional"`
	}
)

var hashOIDsForTest = map[crypto.Hash]asn1.ObjectIdentifier{
	crypto.SHA1:   {1, 3, 14, 3, 2, 26},
	crypto.SHA256: {2, 16, 840, 1, 101, 3, 4, 2, 1},
	crypto.SHA384: {2, 16, 840, 1, 101, 3, 4, 2, 2},
	crypto.SHA512: {2, 16, 840, 1, 101, 3, 4, 2, 3},
}

// certIDFor is the CertID for serial under ca, with hash h.
func certIDFor(tb testing.TB, ca *testCA, h crypto.Hash, serial *big.Int) reqCertID {
	tb.Helper()
	nh, kh := h.New(), h.New()
	nh.Write(ca.cert.RawSubject)
	kh.Write(ca.keyBits(tb))
	return reqCertID{
		HashAlgorithm: pkix.AlgorithmIdentifier{Algorithm: hashOIDsForTest[h], Parameters: asn1.NullRawValue},
		NameHash:      nh.Sum(nil),
		KeyHash:       kh.Sum(nil),
		Serial:        serial,
	}
}

func marshalRequest(tb testing.TB, r reqOCSP) []byte {
	tb.Helper()
	der, err := asn1.Marshal(r)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

// simpleRequest is a one-certificate request with optional request extensions.
func simpleRequest(tb testing.TB, ca *testCA, h crypto.Hash, serial *big.Int, exts ...pkix.Extension) []byte {
	tb.Helper()
	return marshalRequest(tb, reqOCSP{TBS: reqTBS{List: []reqSingle{{Cert: certIDFor(tb, ca, h, serial)}}, Exts: exts}})
}

var oidNonceForTest = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}

// nonceExt is a nonce extension holding an OCTET STRING of n.
func nonceExt(tb testing.TB, n []byte) pkix.Extension {
	tb.Helper()
	v, err := asn1.Marshal(n)
	if err != nil {
		tb.Fatal(err)
	}
	return pkix.Extension{Id: oidNonceForTest, Value: v}
}

// responseExtensions returns the responseExtensions of a BasicOCSPResponse's
// ResponseData (which x/crypto/ocsp does not expose).
func responseExtensions(tb testing.TB, tbsResponseData []byte) []pkix.Extension {
	tb.Helper()
	var rd struct {
		Version     int `asn1:"optional,default:0,explicit,tag:0"`
		ResponderID asn1.RawValue
		ProducedAt  time.Time `asn1:"generalized"`
		Responses   []asn1.RawValue
		Exts        []pkix.Extension `asn1:"explicit,tag:1,optional"`
	}
	rest, err := asn1.Unmarshal(tbsResponseData, &rd)
	if err != nil || len(rest) != 0 {
		tb.Fatalf("ResponseData does not parse: %v", err)
	}
	return rd.Exts
}

func sha1Sum(b []byte) []byte { s := sha1.Sum(b); return s[:] }
