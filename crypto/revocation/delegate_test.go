package revocation

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// responderCert makes a delegated OCSP responder certificate for key, issued
// by ca, valid from an hour ago for life; edit changes the template first.
func responderCert(tb testing.TB, ca *testCA, key crypto.Signer, life time.Duration, edit func(*x509.Certificate)) *x509.Certificate {
	tb.Helper()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(77),
		Subject:      pkix.Name{CommonName: "delegated OCSP responder", Organization: []string{"caledger test"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(-time.Hour + life),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
		ExtraExtensions: []pkix.Extension{
			{Id: []int{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}, Value: []byte{0x05, 0x00}}, // id-pkix-ocsp-nocheck
		},
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// TestDelegate: once a delegated responder is set, every response (cached or
// not, with or without a nonce) is signed by its key, names it and carries its
// certificate, and x/crypto/ocsp accepts it against the CA; a response that
// would outlive the delegate's certificate is signed by the CA key again.
func TestDelegate(t *testing.T) {
	ca := newTestCA(t, newP256(t), "Delegating CA")
	clock := &fakeClock{t: time.Now()}
	table := defaultTable()
	r := newTestResponder(t, ca, table, Options{Now: clock.Now})
	serial := big.NewInt(1001)
	table.answers[serial.String()] = Answer{Status: Good}

	query := func(nonce bool) *ocsp.Response {
		t.Helper()
		var exts []pkix.Extension
		if nonce {
			exts = append(exts, nonceExt(t, []byte("0123456789abcdef")))
		}
		der, err := r.Respond(t.Context(), simpleRequest(t, ca, crypto.SHA1, serial, exts...))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ocsp.ParseResponseForCert(der, nil, ca.cert)
		if err != nil {
			t.Fatalf("x/crypto/ocsp refuses the response: %v", err)
		}
		if resp.Status != ocsp.Good || resp.SerialNumber.Cmp(serial) != 0 {
			t.Fatalf("response: status %d, serial %v", resp.Status, resp.SerialNumber)
		}
		return resp
	}
	if resp := query(false); resp.Certificate != nil {
		t.Fatal("a response before any delegation carries a certificate")
	}

	key := newP256(t)
	cert := responderCert(t, ca, key, 48*time.Hour, nil)
	if err := r.CheckDelegate(table.caID, cert, key); err != nil {
		t.Fatal(err)
	}
	if resp := query(true); resp.Certificate != nil {
		t.Fatal("CheckDelegate installed the delegate")
	}
	if got := r.DelegateExpiries(); len(got) != 0 {
		t.Fatalf("DelegateExpiries before Delegate: %v, want none", got)
	}
	if err := r.Delegate(table.caID, cert, key); err != nil {
		t.Fatal(err)
	}
	if got := r.DelegateExpiries(); len(got) != 1 || !got[table.caID].Equal(cert.NotAfter) {
		t.Fatalf("DelegateExpiries: %v, want %s until %v", got, table.caID, cert.NotAfter)
	}
	for _, nonce := range []bool{false, true, false} { // the first answer without a nonce was cached before the delegation
		resp := query(nonce)
		if resp.Certificate == nil || !resp.Certificate.Equal(cert) {
			t.Fatalf("nonce %v: the response carries %v, want the delegate's certificate", nonce, resp.Certificate)
		}
		if err := resp.CheckSignatureFrom(cert); err != nil {
			t.Fatalf("nonce %v: %v", nonce, err)
		}
		if want := sha1Sum(keyBitsOf(t, cert)); string(resp.ResponderKeyHash) != string(want) {
			t.Fatalf("nonce %v: responder key hash %x, want the delegate's %x", nonce, resp.ResponderKeyHash, want)
		}
	}

	// An hour of response validity no longer fits in the delegate's life: the
	// CA key signs again.
	clock.Add(47*time.Hour - 30*time.Minute)
	if resp := query(true); resp.Certificate != nil {
		t.Fatal("a response that outlives the delegate's certificate is still signed by the delegate")
	}
}

// TestDelegateCacheFollowsSigner: a response cached from a delegate is not
// served once the CA key signs again, though it is young enough to be.
func TestDelegateCacheFollowsSigner(t *testing.T) {
	ca := newTestCA(t, newP256(t), "Delegating CA")
	clock := &fakeClock{t: time.Now()}
	table := defaultTable()
	table.answers["1001"] = Answer{Status: Good}
	r := newTestResponder(t, ca, table, Options{Now: clock.Now})
	key := newP256(t)
	// Ends 1 h 10 min from now: it fits an hour's response now, not in 15 min.
	if err := r.Delegate(table.caID, responderCert(t, ca, key, 2*time.Hour+10*time.Minute, nil), key); err != nil {
		t.Fatal(err)
	}
	query := func() *ocsp.Response {
		t.Helper()
		der, err := r.Respond(t.Context(), simpleRequest(t, ca, crypto.SHA1, big.NewInt(1001)))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ocsp.ParseResponseForCert(der, nil, ca.cert)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := query(); resp.Certificate == nil {
		t.Fatal("the first response is not the delegate's")
	}
	clock.Add(15 * time.Minute)
	if resp := query(); resp.Certificate != nil {
		t.Fatal("a cached response of the delegate is served after its certificate stopped fitting")
	}
}

// keyBitsOf is the subjectPublicKey BIT STRING content of cert.
func keyBitsOf(tb testing.TB, cert *x509.Certificate) []byte {
	tb.Helper()
	b, err := subjectKeyBits(cert)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestDelegateRefuses: a delegate the CA did not issue, without the OCSP
// signing usage, outside its validity, with another key, or for a CA the
// responder does not serve is refused, and responses stay the CA's.
func TestDelegateRefuses(t *testing.T) {
	ca := newTestCA(t, newP256(t), "Delegating CA")
	other := newTestCA(t, newP256(t), "Another CA")
	table := defaultTable()
	r := newTestResponder(t, ca, table, Options{})
	key := newP256(t)
	for _, tc := range []struct {
		name string
		id   string
		cert *x509.Certificate
		key  crypto.Signer
		want string
	}{
		{"issued by another CA", table.caID, responderCert(t, other, key, 48*time.Hour, nil), key, "not issued by the CA"},
		{"no OCSP signing usage", table.caID, responderCert(t, ca, key, 48*time.Hour, func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}), key, "lacks the OCSP signing"},
		{"a CA certificate", table.caID, responderCert(t, ca, key, 48*time.Hour, func(c *x509.Certificate) {
			c.IsCA, c.BasicConstraintsValid, c.KeyUsage = true, true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature
		}), key, "is a CA certificate"},
		{"no digitalSignature", table.caID, responderCert(t, ca, key, 48*time.Hour, func(c *x509.Certificate) {
			c.KeyUsage = x509.KeyUsageKeyEncipherment
		}), key, "lacks digitalSignature"},
		{"not yet valid", table.caID, responderCert(t, ca, key, 48*time.Hour, func(c *x509.Certificate) {
			c.NotBefore = time.Now().Add(time.Hour)
		}), key, "not valid now"},
		{"expired", table.caID, responderCert(t, ca, key, 30*time.Minute, nil), key, "not valid now"},
		{"another key", table.caID, responderCert(t, ca, key, 48*time.Hour, nil), newP256(t), "does not match"},
		{"an unknown CA", "ca-9", responderCert(t, ca, key, 48*time.Hour, nil), key, "no issuer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := r.CheckDelegate(tc.id, tc.cert, tc.key)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckDelegate: %v; want ErrInvalid saying %q", err, tc.want)
			}
			err = r.Delegate(tc.id, tc.cert, tc.key)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Delegate: %v; want ErrInvalid saying %q", err, tc.want)
			}
		})
	}
	der, err := r.Respond(t.Context(), simpleRequest(t, ca, crypto.SHA1, big.NewInt(5)))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := ocsp.ParseResponseForCert(der, nil, ca.cert); err != nil || resp.Certificate != nil {
		t.Fatalf("after refused delegations: %v, %v; want a response of the CA key", resp, err)
	}
	if got := r.DelegateExpiries(); len(got) != 0 {
		t.Fatalf("DelegateExpiries after refused delegations: %v, want none", got)
	}
}

// TestDelegateOpenSSL: `openssl ocsp` verifies a delegated response against
// the CA alone (it finds the responder's certificate in the response and
// checks its OCSP signing usage), with the nonce it sent.
func TestDelegateOpenSSL(t *testing.T) {
	openssl := requireOpenSSL(t)
	ca := newTestCA(t, newP256(t), "OpenSSL delegating CA")
	r := newTestResponder(t, ca, &statusTable{answers: map[string]Answer{
		"66": {Status: Revoked, RevokedAt: time.Now().Add(-time.Hour), Reason: 4},
	}}, Options{})
	key := newP256(t)
	if err := r.Delegate("ca-1", responderCert(t, ca, key, 48*time.Hour, nil), key); err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, r)
	dir := t.TempDir()
	caPEM := ca.writePEM(t, dir, "ca.pem")
	out, err := exec.CommandContext(t.Context(), openssl, "ocsp", "-issuer", caPEM, "-serial", "66",
		"-url", srv.URL+"/ocsp", "-CAfile", caPEM, "-resp_text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl ocsp: %v\n%s", err, out)
	}
	for _, w := range []string{"Response verify OK", "66: revoked", "Reason: superseded", "OCSP Nonce:",
		"Responder Id: ", "CN=delegated OCSP responder", "OCSP No Check"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("openssl output lacks %q:\n%s", w, out)
		}
	}
	for _, bad := range []string{"WARNING", "verify error", "Response Verify Failure"} {
		if strings.Contains(string(out), bad) {
			t.Errorf("openssl output has %q:\n%s", bad, out)
		}
	}
	// A CA file that holds another CA does not vouch for the delegate.
	otherPEM := newTestCA(t, newP256(t), "OpenSSL delegating CA").writePEM(t, dir, "other.pem")
	out, _ = exec.CommandContext(t.Context(), openssl, "ocsp", "-issuer", caPEM, "-serial", "66",
		"-url", srv.URL+"/ocsp", "-CAfile", otherPEM).CombinedOutput()
	if strings.Contains(string(out), "Response verify OK") {
		t.Fatalf("openssl accepts the delegate under another CA of the same name:\n%s", out)
	}
}
