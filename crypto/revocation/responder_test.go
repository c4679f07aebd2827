package revocation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// statusTable is a Lookup over a fixed table; serials not in it are Unknown.
type statusTable struct {
	caID    string
	answers map[string]Answer // by serial in decimal
	err     error
	calls   atomic.Int64
}

func (s *statusTable) lookup(_ context.Context, caID string, serial *big.Int) (Answer, error) {
	s.calls.Add(1)
	if s.err != nil {
		return Answer{}, s.err
	}
	if caID != s.caID {
		return Answer{}, fmt.Errorf("unexpected CA %q", caID)
	}
	return s.answers[serial.String()], nil
}

var (
	testNow       = time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)
	testRevokedAt = time.Date(2031, 2, 1, 10, 20, 30, 0, time.UTC)
)

func newTestResponder(t *testing.T, ca *testCA, table *statusTable, opts Options) *Responder {
	t.Helper()
	if table.caID == "" {
		table.caID = "ca-1"
	}
	r, err := NewResponder([]Issuer{{ID: table.caID, Certificate: ca.cert, Key: ca.key}}, table.lookup, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func defaultTable() *statusTable {
	return &statusTable{answers: map[string]Answer{
		"100": {Status: Good},
		"101": {Status: Revoked, RevokedAt: testRevokedAt, Reason: 1},
		"102": {Status: Revoked, RevokedAt: testRevokedAt.Add(500 * time.Millisecond)}, // reason unspecified, sub-second
		"103": {Status: Good, RevokedAt: testRevokedAt, Reason: 4},                     // details ignored unless revoked
		"104": {Status: Revoked, RevokedAt: testRevokedAt, Reason: 6},
	}}
}

// parseVerified parses a successful response and checks its signature with the
// CA's certificate (x/crypto/ocsp knows no Ed25519, so the check is done here).
func parseVerified(t *testing.T, der []byte, ca *testCA) *ocsp.Response {
	t.Helper()
	resp, err := ocsp.ParseResponse(der, nil)
	if err != nil {
		t.Fatalf("ParseResponse: %v", err)
	}
	if err := ca.cert.CheckSignature(ca.sigAlgorithm(), resp.TBSResponseData, resp.Signature); err != nil {
		t.Fatalf("response signature: %v", err)
	}
	return resp
}

func TestRespondStatuses(t *testing.T) {
	for _, kt := range keyTypes {
		ca := newTestCA(t, kt.new(), "OCSP CA "+kt.name)
		clock := &fakeClock{t: testNow.Add(123 * time.Millisecond)}
		r := newTestResponder(t, ca, defaultTable(), Options{Now: clock.Now, Validity: 2 * time.Hour})
		for _, tc := range []struct {
			serial    int64
			status    int
			revokedAt time.Time
			reason    int
		}{
			{100, ocsp.Good, time.Time{}, 0},
			{101, ocsp.Revoked, testRevokedAt, ocsp.KeyCompromise},
			{102, ocsp.Revoked, testRevokedAt, ocsp.Unspecified},
			{103, ocsp.Good, time.Time{}, 0},
			{104, ocsp.Revoked, testRevokedAt, ocsp.CertificateHold},
			{105, ocsp.Unknown, time.Time{}, 0},
		} {
			for _, h := range certIDHashes {
				t.Run(fmt.Sprintf("%s/%d/%v", kt.name, tc.serial, h), func(t *testing.T) {
					der, err := r.Respond(t.Context(), simpleRequest(t, ca, h, big.NewInt(tc.serial)))
					if err != nil {
						t.Fatal(err)
					}
					resp := parseVerified(t, der, ca)
					if kt.name != "Ed25519" { // x/crypto verifies the others itself
						if _, err := ocsp.ParseResponse(der, ca.cert); err != nil {
							t.Errorf("ParseResponse with issuer: %v", err)
						}
					}
					if resp.Status != tc.status || resp.SerialNumber.Int64() != tc.serial || resp.IssuerHash != h {
						t.Errorf("status %d serial %v hash %v, want %d %d %v", resp.Status, resp.SerialNumber, resp.IssuerHash, tc.status, tc.serial, h)
					}
					if !resp.RevokedAt.Equal(tc.revokedAt) || resp.RevocationReason != tc.reason {
						t.Errorf("revoked at %v reason %d, want %v %d", resp.RevokedAt, resp.RevocationReason, tc.revokedAt, tc.reason)
					}
					if !resp.ThisUpdate.Equal(testNow) || !resp.ProducedAt.Equal(testNow) || !resp.NextUpdate.Equal(testNow.Add(2*time.Hour)) {
						t.Errorf("produced %v this %v next %v, want %v and +2h", resp.ProducedAt, resp.ThisUpdate, resp.NextUpdate, testNow)
					}
					if !bytes.Equal(resp.ResponderKeyHash, sha1Sum(ca.keyBits(t))) || resp.Certificate != nil {
						t.Errorf("responder key hash %x, certificate %v; want the CA key's SHA-1 and none", resp.ResponderKeyHash, resp.Certificate)
					}
					if exts := responseExtensions(t, resp.TBSResponseData); len(exts) != 0 {
						t.Errorf("response extensions %v without a nonce", exts)
					}
				})
			}
		}
	}
}

// TestRespondMatchesCreateRequest answers requests made by x/crypto/ocsp.
func TestRespondMatchesCreateRequest(t *testing.T) {
	ca := newTestCA(t, newP256(t), "CA")
	r := newTestResponder(t, ca, defaultTable(), Options{})
	for _, h := range certIDHashes {
		req, err := (&ocsp.Request{HashAlgorithm: h, IssuerNameHash: certIDFor(t, ca, h, nil).NameHash,
			IssuerKeyHash: certIDFor(t, ca, h, nil).KeyHash, SerialNumber: big.NewInt(101)}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		der, err := r.Respond(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if resp := parseVerified(t, der, ca); resp.Status != ocsp.Revoked {
			t.Errorf("%v: status %d, want revoked", h, resp.Status)
		}
	}
}

func TestRespondNonce(t *testing.T) {
	ca := newTestCA(t, newP256(t), "CA")
	r := newTestResponder(t, ca, defaultTable(), Options{})
	for _, n := range []int{1, 16, 32, 33, 128} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			nonce := bytes.Repeat([]byte{0xa5}, n)
			ext := nonceExt(t, nonce)
			der, err := r.Respond(t.Context(), simpleRequest(t, ca, crypto.SHA1, big.NewInt(100), ext))
			if err != nil {
				t.Fatal(err)
			}
			resp := parseVerified(t, der, ca)
			exts := responseExtensions(t, resp.TBSResponseData)
			if len(exts) != 1 || !exts[0].Id.Equal(oidNonceForTest) || !bytes.Equal(exts[0].Value, ext.Value) || exts[0].Critical {
				t.Fatalf("response extensions %v, want the nonce %x", exts, ext.Value)
			}
			if len(resp.Extensions) != 0 {
				t.Errorf("singleExtensions %v, want none", resp.Extensions)
			}
		})
	}
	t.Run("raw nonce of RFC 2560 clients", func(t *testing.T) {
		ext := pkix.Extension{Id: oidNonceForTest, Value: []byte("0123456789abcdef")}
		der, _ := r.Respond(t.Context(), simpleRequest(t, ca, crypto.SHA1, big.NewInt(100), ext))
		exts := responseExtensions(t, parseVerified(t, der, ca).TBSResponseData)
		if len(exts) != 1 || !bytes.Equal(exts[0].Value, ext.Value) {
			t.Fatalf("response extensions %v, want the raw nonce echoed", exts)
		}
	})
	t.Run("with other extensions", func(t *testing.T) {
		ext := nonceExt(t, []byte("0123456789abcdef"))
		other := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 4}, Value: []byte{0x30, 0x0b, 0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01}}
		der, _ := r.Respond(t.Context(), simpleRequest(t, ca, crypto.SHA1, big.NewInt(100), other, ext))
		exts := responseExtensions(t, parseVerified(t, der, ca).TBSResponseData)
		if len(exts) != 1 || !bytes.Equal(exts[0].Value, ext.Value) {
			t.Fatalf("response extensions %v, want only the nonce", exts)
		}
	})
}

func TestRespondErrors(t *testing.T) {
	ca := newTestCA(t, newP256(t), "CA")
	other := newTestCA(t, newP256(t), "Other CA")
	sameNameOtherKey := newTestCA(t, newP256(t), "CA")
	r := newTestResponder(t, ca, defaultTable(), Options{MaxRequestBytes: 512})

	good := simpleRequest(t, ca, crypto.SHA1, big.NewInt(100))
	cid := certIDFor(t, ca, crypto.SHA1, big.NewInt(100))
	single := reqSingle{Cert: cid}
	badHash := cid
	badHash.HashAlgorithm = pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}, Parameters: asn1.NullRawValue} // MD5
	badParams := cid
	badParams.HashAlgorithm.Parameters = asn1.RawValue{Tag: asn1.TagInteger, Bytes: []byte{1}}
	critical := pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}

	for _, tc := range []struct {
		name string
		req  []byte
		want ocsp.ResponseStatus
	}{
		{"empty", nil, ocsp.Malformed},
		{"garbage", []byte("GET / HTTP/1.1\r\n"), ocsp.Malformed},
		{"truncated", good[:len(good)-1], ocsp.Malformed},
		{"trailing data", append(append([]byte(nil), good...), 0), ocsp.Malformed},
		{"BER length", append([]byte{0x30, 0x81, byte(len(good) - 2)}, good[2:]...), ocsp.Malformed},
		{"too large", append(append([]byte(nil), good...), make([]byte, 512)...), ocsp.Malformed},
		{"no request", marshalRequest(t, reqOCSP{TBS: reqTBS{List: []reqSingle{}}}), ocsp.Malformed},
		{"two requests", marshalRequest(t, reqOCSP{TBS: reqTBS{List: []reqSingle{single, single}}}), ocsp.Malformed},
		{"version 2", marshalRequest(t, reqOCSP{TBS: reqTBS{Version: 1, List: []reqSingle{single}}}), ocsp.Malformed},
		{"hash parameters", marshalRequest(t, reqOCSP{TBS: reqTBS{List: []reqSingle{{Cert: badParams}}}}), ocsp.Malformed},
		{"empty nonce", simpleRequest(t, ca, crypto.SHA1, big.NewInt(100), nonceExt(t, []byte{})), ocsp.Malformed},
		{"129-octet nonce", simpleRequest(t, ca, crypto.SHA1, big.NewInt(100), nonceExt(t, make([]byte, 129))), ocsp.Malformed},
		{"two nonces", simpleRequest(t, ca, crypto.SHA1, big.NewInt(100), nonceExt(t, []byte{1}), nonceExt(t, []byte{2})), ocsp.Malformed},
		{"unknown critical extension", simpleRequest(t, ca, crypto.SHA1, big.NewInt(100), critical), ocsp.Malformed},
		{"unknown critical single extension", marshalRequest(t, reqOCSP{TBS: reqTBS{List: []reqSingle{{Cert: cid, Exts: []pkix.Extension{critical}}}}}), ocsp.Malformed},
		{"empty extensions", marshalRequest(t, reqOCSP{TBS: reqTBS{List: []reqSingle{single}, Exts: []pkix.Extension{}}}), ocsp.Malformed}, // SIZE (1..MAX)
		{"other CA", simpleRequest(t, other, crypto.SHA1, big.NewInt(100)), ocsp.Unauthorized},
		{"same name, other key", simpleRequest(t, sameNameOtherKey, crypto.SHA256, big.NewInt(100)), ocsp.Unauthorized},
		{"unknown hash", marshalRequest(t, reqOCSP{TBS: reqTBS{List: []reqSingle{{Cert: badHash}}}}), ocsp.Unauthorized},
		{"signed request", marshalRequest(t, reqOCSP{TBS: reqTBS{List: []reqSingle{single}}, Sig: asn1.RawValue{FullBytes: []byte{0xa0, 0x02, 0x30, 0x00}}}), ocsp.Success},
		{"non-critical single extension", marshalRequest(t, reqOCSP{TBS: reqTBS{List: []reqSingle{{Cert: cid, Exts: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3}, Value: []byte{5, 0}}}}}}}), ocsp.Success},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := r.Respond(t.Context(), tc.req)
			if err != nil {
				t.Fatalf("Respond error %v for bad input", err)
			}
			_, err = ocsp.ParseResponse(der, ca.cert)
			if tc.want == ocsp.Success {
				if err != nil {
					t.Fatalf("ParseResponse: %v", err)
				}
				return
			}
			var re ocsp.ResponseError
			if !errors.As(err, &re) || re.Status != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRespondInternalError(t *testing.T) {
	ca := newTestCA(t, newP256(t), "CA")
	for _, tc := range []struct {
		name  string
		table *statusTable
	}{
		{"lookup fails", &statusTable{err: errors.New("view unavailable")}},
		{"invalid status", &statusTable{answers: map[string]Answer{"100": {Status: 7}}}},
		{"revoked without time", &statusTable{answers: map[string]Answer{"100": {Status: Revoked, Reason: 1}}}},
		{"reason 7", &statusTable{answers: map[string]Answer{"100": {Status: Revoked, RevokedAt: testRevokedAt, Reason: 7}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestResponder(t, ca, tc.table, Options{})
			req := simpleRequest(t, ca, crypto.SHA1, big.NewInt(100), nonceExt(t, []byte("secret-ish nonce")))
			der, err := r.Respond(t.Context(), req)
			if err == nil {
				t.Fatal("no error with internalError")
			}
			if strings.Contains(err.Error(), "secret-ish") || strings.Contains(err.Error(), fmt.Sprintf("%x", req[:8])) {
				t.Errorf("error quotes the request: %v", err)
			}
			var re ocsp.ResponseError
			if _, perr := ocsp.ParseResponse(der, ca.cert); !errors.As(perr, &re) || re.Status != ocsp.InternalError {
				t.Fatalf("got %v, want internalError", perr)
			}
		})
	}
	t.Run("signer fails", func(t *testing.T) {
		r, err := NewResponder([]Issuer{{ID: "ca-1", Certificate: ca.cert, Key: failingSigner{ca.key}}}, defaultTable().lookup, Options{})
		if err != nil {
			t.Fatal(err)
		}
		der, err := r.Respond(t.Context(), simpleRequest(t, ca, crypto.SHA1, big.NewInt(100)))
		if err == nil || !bytes.Equal(der, ocsp.InternalErrorErrorResponse) {
			t.Fatalf("got %x, %v; want internalError and an error", der, err)
		}
	})
}

type failingSigner struct{ crypto.Signer }

func (failingSigner) Sign(_ io.Reader, _ []byte, _ crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("token removed")
}

func TestRespondCache(t *testing.T) {
	ca := newTestCA(t, newP256(t), "CA")
	signer := &countingSigner{Signer: ca.key}
	table := defaultTable()
	table.caID = "ca-1"
	clock := &fakeClock{t: testNow}
	r, err := NewResponder([]Issuer{{ID: "ca-1", Certificate: ca.cert, Key: signer}}, table.lookup, Options{Now: clock.Now, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	req := simpleRequest(t, ca, crypto.SHA1, big.NewInt(100))
	respond := func() []byte {
		t.Helper()
		der, err := r.Respond(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}

	first := respond()
	clock.Add(29 * time.Minute)
	if second := respond(); !bytes.Equal(first, second) || signer.n.Load() != 1 || table.calls.Load() != 2 {
		t.Fatalf("within half the validity: same=%v signatures=%d lookups=%d; want the cached response, 1 signature, 2 lookups",
			bytes.Equal(first, second), signer.n.Load(), table.calls.Load())
	}

	// Another CertID hash is another response (its CertID differs).
	respond256, _ := r.Respond(t.Context(), simpleRequest(t, ca, crypto.SHA256, big.NewInt(100)))
	if resp := parseVerified(t, respond256, ca); resp.IssuerHash != crypto.SHA256 || signer.n.Load() != 2 {
		t.Fatalf("SHA-256 CertID answered from the SHA-1 entry (hash %v, signatures %d)", resp.IssuerHash, signer.n.Load())
	}

	// A revocation shows at once.
	table.answers["100"] = Answer{Status: Revoked, RevokedAt: testNow, Reason: 4}
	if resp := parseVerified(t, respond(), ca); resp.Status != ocsp.Revoked || resp.RevocationReason != 4 {
		t.Fatalf("status %d reason %d after revocation, want revoked (4)", resp.Status, resp.RevocationReason)
	}
	n := signer.n.Load()
	respond()
	if signer.n.Load() != n {
		t.Fatal("revoked response not cached")
	}

	// Half the validity after thisUpdate, it is signed again.
	clock.Add(30 * time.Minute)
	resp := parseVerified(t, respond(), ca)
	if signer.n.Load() != n+1 || !resp.ThisUpdate.Equal(clock.Now()) {
		t.Fatalf("signatures %d thisUpdate %v; want a new response at %v", signer.n.Load()-n, resp.ThisUpdate, clock.Now())
	}

	// Requests with a nonce are always signed.
	n = signer.n.Load()
	withNonce := simpleRequest(t, ca, crypto.SHA1, big.NewInt(100), nonceExt(t, []byte("0123456789abcdef")))
	for range 3 {
		if _, err := r.Respond(t.Context(), withNonce); err != nil {
			t.Fatal(err)
		}
	}
	if signer.n.Load() != n+3 {
		t.Fatalf("%d signatures for 3 nonce requests", signer.n.Load()-n)
	}

	// A clock that goes back does not serve a response from the future.
	clock.Add(-time.Hour)
	n = signer.n.Load()
	if resp := parseVerified(t, respond(), ca); signer.n.Load() != n+1 || !resp.ThisUpdate.Equal(clock.Now()) {
		t.Fatal("served a cached response whose thisUpdate is after now")
	}
}

func TestRespondCacheOff(t *testing.T) {
	ca := newTestCA(t, newP256(t), "CA")
	signer := &countingSigner{Signer: ca.key}
	r, err := NewResponder([]Issuer{{ID: "ca-1", Certificate: ca.cert, Key: signer}}, (&statusTable{caID: "ca-1"}).lookup, Options{CacheEntries: -1})
	if err != nil {
		t.Fatal(err)
	}
	req := simpleRequest(t, ca, crypto.SHA1, big.NewInt(100))
	for range 3 {
		if _, err := r.Respond(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	if signer.n.Load() != 3 {
		t.Fatalf("%d signatures with the cache off, want 3", signer.n.Load())
	}
}

func TestCacheBounded(t *testing.T) {
	c := newCache(10)
	for i := range 1000 {
		c.put(fmt.Sprint(i), cached{})
		if n := c.m.Len(); n > 10 {
			t.Fatalf("%d entries after %d puts, bound 10", n, i+1)
		}
	}
	if _, ok := c.get("999"); !ok {
		t.Fatal("the newest entry is gone")
	}
	if _, ok := c.get("0"); ok {
		t.Fatal("the oldest entry is still there")
	}
	// A hit in the old generation moves the entry forward.
	c = newCache(4)
	c.put("a", cached{})
	c.put("b", cached{}) // cur full: {a b} becomes old
	c.get("a")           // a back in cur
	c.put("c", cached{}) // {a c} becomes old, b dropped
	if _, ok := c.get("a"); !ok {
		t.Error("a hit entry was dropped")
	}
	if _, ok := c.get("b"); ok {
		t.Error("an unused entry survived two generations")
	}
}

func TestNewResponderInvalid(t *testing.T) {
	ca := newTestCA(t, newP256(t), "CA")
	other := newTestCA(t, newP256(t), "Other")
	reissued := newTestCAWith(t, ca.key, "CA", func(c *x509.Certificate) { c.SerialNumber = big.NewInt(2) })
	lookup := defaultTable().lookup
	iss := Issuer{ID: "ca-1", Certificate: ca.cert, Key: ca.key}
	for _, tc := range []struct {
		name    string
		issuers []Issuer
		lookup  Lookup
		opts    Options
	}{
		{"no issuers", nil, lookup, Options{}},
		{"nil lookup", []Issuer{iss}, nil, Options{}},
		{"empty ID", []Issuer{{Certificate: ca.cert, Key: ca.key}}, lookup, Options{}},
		{"duplicate ID", []Issuer{iss, {ID: "ca-1", Certificate: other.cert, Key: other.key}}, lookup, Options{}},
		{"key mismatch", []Issuer{{ID: "ca-1", Certificate: ca.cert, Key: other.key}}, lookup, Options{}},
		{"nil certificate", []Issuer{{ID: "ca-1", Key: ca.key}}, lookup, Options{}},
		{"same name and key twice", []Issuer{iss, {ID: "ca-2", Certificate: reissued.cert, Key: ca.key}}, lookup, Options{}},
		{"negative validity", []Issuer{iss}, lookup, Options{Validity: -time.Hour}},
		{"sub-second validity", []Issuer{iss}, lookup, Options{Validity: 1500 * time.Millisecond}},
		{"negative max request", []Issuer{iss}, lookup, Options{MaxRequestBytes: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewResponder(tc.issuers, tc.lookup, tc.opts); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestStatusZeroValue(t *testing.T) {
	var a Answer
	if a.Status != Unknown || Unknown.String() != "unknown" || Good.String() != "good" || Revoked.String() != "revoked" {
		t.Fatal("the zero Answer must say unknown")
	}
}

func TestRespondReturnsACopy(t *testing.T) {
	ca := newTestCA(t, newP256(t), "CA")
	r := newTestResponder(t, ca, defaultTable(), Options{})
	req := simpleRequest(t, ca, crypto.SHA1, big.NewInt(100))
	first, _ := r.Respond(t.Context(), req)
	keep := bytes.Clone(first)
	clear(first)
	if second, _ := r.Respond(t.Context(), req); !bytes.Equal(second, keep) {
		t.Fatal("changing a returned response changed the cached one")
	}
}
