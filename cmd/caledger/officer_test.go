package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The officer tests run the real binary's code paths end to end: init, officer
// add, serve over mutual TLS, and openssl as the outside peer.

type apiClient struct {
	t    *testing.T
	c    *http.Client
	base string
}

// mtlsClient returns a client trusting the data directory's root CA and
// presenting the credential certPath/keyPath (none when empty).
func mtlsClient(t *testing.T, data, base, certPath, keyPath string) *apiClient {
	t.Helper()
	configure := func(*tls.Config) {}
	if certPath != "" {
		configure = withClientCert(t, certPath, keyPath)
	}
	return &apiClient{t: t, base: base, c: client(t, filepath.Join(data, rootPEM), configure)}
}

// withClientCert configures a client to present the certificate at certPath.
func withClientCert(t testing.TB, certPath, keyPath string) func(*tls.Config) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *tls.Config) { c.Certificates = []tls.Certificate{cert} }
}

// with returns a copy of a that reports to t (a subtest's).
func (a *apiClient) with(t *testing.T) *apiClient {
	c := *a
	c.t = t
	return &c
}

func (a *apiClient) do(method, path, contentType string, body []byte, header ...string) (int, http.Header, []byte) {
	a.t.Helper()
	req, err := http.NewRequestWithContext(a.t.Context(), method, a.base+path, bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return res.StatusCode, res.Header, b
}

func (a *apiClient) json(method, path string, in any, want int, out any, header ...string) []byte {
	a.t.Helper()
	var body []byte
	if in != nil {
		body, _ = json.Marshal(in)
	}
	status, h, b := a.do(method, path, "application/json", body, header...)
	if status != want {
		a.t.Fatalf("%s %s = %d %s, want %d", method, path, status, b, want)
	}
	if status >= 400 && h.Get("Content-Type") != "application/problem+json" {
		a.t.Errorf("%s %s: problem served as %q", method, path, h.Get("Content-Type"))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			a.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return b
}

type problemBody struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Until  string `json:"until"`
}

func openssl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

const (
	personName  = "Grace Brewster Hopper"
	personEmail = "grace.hopper@example.org"
)

func TestOfficerFlow(t *testing.T) {
	data := initData(t)
	// An auditor credential, issued offline before the server starts.
	auditorDir := filepath.Join(t.TempDir(), "auditor")
	var out bytes.Buffer
	if err := run(t.Context(), []string{"officer", "add", "--data", data, "--role", "auditor", "--name", "Audit Desk", "--out", auditorDir}, noEnv, &out, io.Discard); err != nil {
		t.Fatalf("officer add: %v", err)
	}
	if !strings.Contains(out.String(), "issued auditor credential") {
		t.Fatalf("officer add printed %q", out.String())
	}

	officerDir := filepath.Join(t.TempDir(), "officer")
	if err := run(t.Context(), []string{"officer", "add", "--data", data, "--role", "officer", "--name", "Desk Officer", "--out", officerDir}, noEnv, io.Discard, io.Discard); err != nil {
		t.Fatalf("officer add: %v", err)
	}

	s := startServe(t, []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, nil)
	base := "https://" + s.addr
	officerClient := mtlsClient(t, data, base, filepath.Join(officerDir, "officer.pem"), filepath.Join(officerDir, "officer-key.pem"))
	admin := mtlsClient(t, data, base, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem"))
	auditor := mtlsClient(t, data, base, filepath.Join(auditorDir, "auditor.pem"), filepath.Join(auditorDir, "auditor-key.pem"))
	anonymous := mtlsClient(t, data, base, "", "")
	work := t.TempDir()

	var p problemBody
	t.Run("roles", func(t *testing.T) {
		anonymous.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"common_name": "x"}}, http.StatusUnauthorized, &p)
		auditor.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"common_name": "x"}}, http.StatusForbidden, &p)
		auditor.json("GET", "/v1/certificates", nil, http.StatusOK, nil)
		// A certificate from a foreign CA fails the handshake.
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "intruder"}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		foreign := client(t, filepath.Join(data, rootPEM), func(c *tls.Config) {
			// Sent whatever CAs the server asks for.
			c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
			}
		})
		if res, err := foreign.Get(base + "/v1/certificates"); err == nil {
			res.Body.Close()
			t.Fatalf("a foreign client certificate got %d", res.StatusCode)
		}
	})

	var subject struct{ ID string }
	admin.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{
		"common_name": personName, "email": personEmail, "country": "US"}}, http.StatusCreated, &subject)

	// openssl makes the key and CSR; its subject is ignored.
	keyPath, csrPath := filepath.Join(work, "leaf-key.pem"), filepath.Join(work, "leaf.csr")
	openssl(t, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=ignored",
		"-keyout", keyPath, "-out", csrPath)
	csrPEM, err := os.ReadFile(csrPath)
	if err != nil {
		t.Fatal(err)
	}
	head := func() string {
		_, _, b := admin.do("GET", "/metrics", "", nil)
		for line := range strings.SplitSeq(string(b), "\n") {
			if strings.HasPrefix(line, "caledger_ledger_head_position ") {
				return line
			}
		}
		return ""
	}

	t.Run("bad requests write nothing", func(t *testing.T) {
		before := head()
		admin.json("POST", "/v1/certificates", map[string]string{"subject_id": subject.ID, "profile": "tls-client", "csr": "garbage"}, http.StatusBadRequest, &p)
		admin.json("POST", "/v1/certificates", map[string]string{"subject_id": subject.ID, "profile": "no-such-profile", "csr": string(csrPEM)}, http.StatusBadRequest, &p)
		if p.Code != "unknown-profile" {
			t.Errorf("unknown profile: %+v", p)
		}
		forged := bytes.Replace(csrPEM, []byte("A"), []byte("B"), 1)
		status, _, _ := admin.do("POST", "/v1/certificates?subject_id="+subject.ID+"&profile=tls-client", "application/pkcs10", forged)
		if status != http.StatusBadRequest {
			t.Errorf("forged CSR: %d", status)
		}
		admin.json("POST", "/v1/certificates", map[string]string{"subject_id": "00000000000000000000000000000000", "profile": "tls-client", "csr": string(csrPEM)}, http.StatusNotFound, &p)

		// A weak key, an attribute the profile needs and the subject lacks, an
		// oversized body, an unknown attribute.
		weakKey := filepath.Join(work, "weak-key.pem")
		weakCSR := filepath.Join(work, "weak.csr")
		openssl(t, "req", "-new", "-newkey", "rsa:1024", "-nodes", "-subj", "/CN=weak", "-keyout", weakKey, "-out", weakCSR)
		weak, _ := os.ReadFile(weakCSR)
		admin.json("POST", "/v1/certificates", map[string]string{"subject_id": subject.ID, "profile": "tls-client", "csr": string(weak)}, http.StatusBadRequest, &p)
		if p.Code != "weak-key" {
			t.Errorf("RSA-1024: %+v", p)
		}
		admin.json("POST", "/v1/certificates", map[string]string{"subject_id": subject.ID, "profile": "tls-server", "csr": string(csrPEM)}, http.StatusBadRequest, &p)
		if p.Code != "missing-attribute" {
			t.Errorf("tls-server without names: %+v", p)
		}
		status, _, _ = admin.do("POST", "/v1/certificates?subject_id="+subject.ID+"&profile=tls-client", "application/pkcs10", bytes.Repeat([]byte("A"), 300<<10))
		if status != http.StatusRequestEntityTooLarge {
			t.Errorf("oversized CSR: %d", status)
		}
		admin.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"shoe_size": "44"}}, http.StatusBadRequest, &p)
		if p.Code != "unknown-attribute" || strings.Contains(p.Detail, "shoe_size") {
			t.Errorf("unknown attribute: %+v", p)
		}
		if after := head(); after != before {
			t.Errorf("rejected requests moved the ledger: %s -> %s", before, after)
		}
	})

	issue := func(profile string) (serial string, chainPath string) {
		t.Helper()
		status, h, chain := admin.do("POST", "/v1/certificates?subject_id="+subject.ID+"&profile="+profile, "application/pkcs10", csrPEM,
			"Accept", "application/pem-certificate-chain")
		if status != http.StatusCreated || h.Get("Content-Type") != "application/pem-certificate-chain" {
			t.Fatalf("issue: %d %s %s", status, h.Get("Content-Type"), chain)
		}
		serial = strings.TrimPrefix(h.Get("Location"), "/v1/certificates/")
		chainPath = filepath.Join(work, serial+".pem")
		if err := os.WriteFile(chainPath, chain, 0o600); err != nil {
			t.Fatal(err)
		}
		return serial, chainPath
	}
	revokedSerial, revokedChain := issue("tls-client")
	goodSerial, goodChain := issue("email-protection")

	t.Run("only admins handle credentials", func(t *testing.T) {
		o := officerClient.with(t)
		for _, profile := range []string{"admin", "officer", "auditor", "compliance"} {
			status, _, b := o.do("POST", "/v1/certificates?subject_id="+subject.ID+"&profile="+profile, "application/pkcs10", csrPEM)
			if status != http.StatusForbidden {
				t.Errorf("an officer asked for a %s credential: %d %s", profile, status, b)
			}
		}
		status, _, b := o.do("POST", "/v1/certificates?subject_id="+subject.ID+"&profile=tls-client", "application/pkcs10", csrPEM)
		if status != http.StatusCreated {
			t.Errorf("an officer issuing tls-client: %d %s", status, b)
		}
	})

	t.Run("openssl verifies the chain", func(t *testing.T) {
		for _, chain := range []string{revokedChain, goodChain} {
			if got := openssl(t, "verify", "-CAfile", filepath.Join(data, rootPEM), "-untrusted", chain, chain); !strings.Contains(got, ": OK") {
				t.Fatalf("openssl verify: %s", got)
			}
		}
		leaf := openssl(t, "x509", "-in", revokedChain, "-noout", "-subject")
		if !strings.Contains(leaf, personName) || strings.Contains(leaf, "ignored") {
			t.Errorf("subject from the registered subject, not the CSR: %s", leaf)
		}
	})

	var info struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	admin.json("POST", "/v1/certificates/"+revokedSerial+"/revocation", map[string]string{"reason": "keyCompromise"}, http.StatusOK, &info)
	if info.Status != "revoked" || info.Reason != "keyCompromise" {
		t.Fatalf("after revocation: %+v", info)
	}
	revokedAt := time.Now()
	admin.json("POST", "/v1/certificates/"+revokedSerial+"/revocation", map[string]string{"reason": "keyCompromise"}, http.StatusConflict, &p)
	if p.Code != "already-revoked" {
		t.Errorf("double revocation: %+v", p)
	}

	t.Run("CRL lists the revocation within a second", func(t *testing.T) {
		status, h, crl := anonymous.with(t).do("GET", "/v1/cas/issuing/crl", "", nil)
		if time.Since(revokedAt) > time.Second {
			t.Errorf("CRL fetched %s after the revocation", time.Since(revokedAt))
		}
		if status != http.StatusOK || h.Get("Content-Type") != "application/pkix-crl" {
			t.Fatalf("crl: %d %s", status, h.Get("Content-Type"))
		}
		crlPath := filepath.Join(work, "issuing.crl")
		if err := os.WriteFile(crlPath, crl, 0o600); err != nil {
			t.Fatal(err)
		}
		text := openssl(t, "crl", "-inform", "DER", "-in", crlPath, "-noout", "-text")
		if !strings.Contains(strings.ToLower(strings.ReplaceAll(text, ":", "")), strings.ToLower(revokedSerial)) {
			t.Errorf("openssl crl does not list %s:\n%s", revokedSerial, text)
		}
		if !strings.Contains(text, "Key Compromise") || !strings.Contains(text, "CRL Number") {
			t.Errorf("CRL lacks the reason or number:\n%s", text)
		}
		// With no revocation since, the same CRL is served: no new number, no
		// new ledger record.
		before := head()
		if _, _, again := anonymous.with(t).do("GET", "/v1/cas/issuing/crl", "", nil); !bytes.Equal(again, crl) {
			t.Error("a second fetch built a new CRL")
		}
		if after := head(); after != before {
			t.Errorf("a cached CRL moved the ledger: %s -> %s", before, after)
		}
	})

	t.Run("openssl ocsp", func(t *testing.T) {
		issuing := filepath.Join(work, "issuing.pem")
		_, _, caPEM := anonymous.with(t).do("GET", "/v1/cas/issuing/certificate", "", nil)
		if err := os.WriteFile(issuing, caPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ chain, want string }{{revokedChain, "revoked"}, {goodChain, "good"}} {
			reqPath, respPath := filepath.Join(work, "ocsp.req"), filepath.Join(work, "ocsp.resp")
			openssl(t, "ocsp", "-issuer", issuing, "-cert", tc.chain, "-reqout", reqPath)
			req, _ := os.ReadFile(reqPath)
			status, _, resp := anonymous.with(t).do("POST", "/ocsp", "application/ocsp-request", req)
			if status != http.StatusOK {
				t.Fatalf("ocsp: %d", status)
			}
			if err := os.WriteFile(respPath, resp, 0o600); err != nil {
				t.Fatal(err)
			}
			// openssl checks the signature, the chain and that its nonce came back.
			got := openssl(t, "ocsp", "-reqin", reqPath, "-respin", respPath, "-resp_text",
				"-CAfile", filepath.Join(data, rootPEM), "-verify_other", issuing)
			if !strings.Contains(got, "Cert Status: "+tc.want) || !strings.Contains(got, "Response verify OK") || !strings.Contains(got, "OCSP Nonce") {
				t.Errorf("openssl ocsp for %s:\n%s", tc.want, got)
			}
		}
	})

	t.Run("published over plain HTTP", func(t *testing.T) {
		// What a relying party does: take the URLs from the certificate, fetch
		// the CRL and ask the OCSP responder over plain HTTP. The certificate
		// names init's default base URL; the test's listener has its own port.
		leaf := firstCert(t, revokedChain)
		const base = "http://localhost:8080"
		if !slices.Equal(leaf.OCSPServer, []string{base + "/ocsp"}) ||
			!slices.Equal(leaf.CRLDistributionPoints, []string{base + "/v1/cas/issuing/crl"}) ||
			!slices.Equal(leaf.IssuingCertificateURL, []string{base + "/v1/cas/issuing/certificate"}) {
			t.Fatalf("URLs in the certificate: OCSP %v, CRL %v, CA issuers %v", leaf.OCSPServer, leaf.CRLDistributionPoints, leaf.IssuingCertificateURL)
		}
		public := "http://" + s.public
		res, err := http.Get(public + "/v1/cas/issuing/crl")
		if err != nil {
			t.Fatal(err)
		}
		crl, _ := io.ReadAll(res.Body)
		res.Body.Close()
		_, _, viaTLS := anonymous.with(t).do("GET", "/v1/cas/issuing/crl", "", nil)
		if res.StatusCode != http.StatusOK || !bytes.Equal(crl, viaTLS) {
			t.Errorf("CRL over plain HTTP: %d, same as over TLS: %v", res.StatusCode, bytes.Equal(crl, viaTLS))
		}
		issuing := filepath.Join(work, "issuing-http.pem")
		res, err = http.Get(public + "/v1/cas/issuing/certificate")
		if err != nil {
			t.Fatal(err)
		}
		caPEM, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if err := os.WriteFile(issuing, caPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ chain, want string }{{revokedChain, "revoked"}, {goodChain, "good"}} {
			got := openssl(t, "ocsp", "-issuer", issuing, "-cert", tc.chain, "-url", public+"/ocsp",
				"-CAfile", filepath.Join(data, rootPEM), "-verify_other", issuing)
			if !strings.Contains(got, ": "+tc.want) || !strings.Contains(got, "Response verify OK") {
				t.Errorf("openssl ocsp -url %s/ocsp for %s:\n%s", public, tc.want, got)
			}
		}
	})

	t.Run("deletion", func(t *testing.T) {
		admin.json("DELETE", "/v1/certificates/"+goodSerial, nil, http.StatusConflict, &p)
		if p.Code != "not-revoked" {
			t.Errorf("deleting a valid certificate: %+v", p)
		}
		status, _, b := admin.do("DELETE", "/v1/certificates/"+revokedSerial, "", nil)
		if status != http.StatusNoContent {
			t.Fatalf("delete: %d %s", status, b)
		}
		admin.json("GET", "/v1/certificates/"+revokedSerial, nil, http.StatusOK, &info)
		if info.Status != "deleted" {
			t.Errorf("after deletion: %+v", info)
		}
	})

	t.Run("personal data reads are audited", func(t *testing.T) {
		admin.json("GET", "/v1/subjects/"+subject.ID, nil, http.StatusUnprocessableEntity, &p)
		var got struct{ Attributes map[string]string }
		admin.json("GET", "/v1/subjects/"+subject.ID, nil, http.StatusOK, &got, "Caledger-Reason", "ticket 99")
		if got.Attributes["email"] != personEmail {
			t.Errorf("read: %+v", got)
		}
		var found []struct{ ID string }
		admin.json("POST", "/v1/subjects/search", map[string]any{"match": map[string]string{"email": "GRACE.HOPPER@*"}, "reason": "ticket 100"}, http.StatusOK, &found)
		if len(found) != 1 || found[0].ID != subject.ID {
			t.Errorf("search: %+v", found)
		}
	})

	t.Run("correction with reissue", func(t *testing.T) {
		var c struct {
			Reissued []struct {
				Old   string `json:"old_serial"`
				New   string `json:"new_serial"`
				Chain string `json:"chain"`
			}
		}
		admin.json("PATCH", "/v1/subjects/"+subject.ID, map[string]any{"attributes": map[string]string{"common_name": "Grace Hopper"}, "reissue": true}, http.StatusOK, &c)
		// The subject's valid certificates: goodSerial and the officer's tls-client one.
		idx := slices.IndexFunc(c.Reissued, func(r struct {
			Old   string `json:"old_serial"`
			New   string `json:"new_serial"`
			Chain string `json:"chain"`
		}) bool {
			return r.Old == goodSerial
		})
		if len(c.Reissued) != 2 || idx < 0 {
			t.Fatalf("reissued: %+v", c)
		}
		block, _ := pem.Decode([]byte(c.Reissued[idx].Chain))
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil || cert.Subject.CommonName != "Grace Hopper" {
			t.Fatalf("replacement: %v %v", cert, err)
		}
		admin.json("GET", "/v1/certificates/"+goodSerial, nil, http.StatusOK, &info)
		if info.Status != "revoked" || info.Reason != "superseded" {
			t.Errorf("old certificate after reissue: %+v", info)
		}
	})

	t.Run("a revoked credential is refused", func(t *testing.T) {
		var list []struct {
			Serial    string `json:"serial"`
			Profile   string `json:"profile"`
			SubjectID string `json:"subject_id"`
		}
		admin.json("GET", "/v1/certificates?limit=1000", nil, http.StatusOK, &list)
		var auditorSerial, auditorSubject string
		for _, c := range list {
			if c.Profile == "auditor" {
				auditorSerial, auditorSubject = c.Serial, c.SubjectID
			}
		}
		if auditorSerial == "" {
			t.Fatalf("no auditor credential among %+v", list)
		}
		// A correction with reissue would withdraw the credential and issue
		// another: an officer is refused, and nothing is recorded.
		officerClient.with(t).json("PATCH", "/v1/subjects/"+auditorSubject,
			map[string]any{"attributes": map[string]string{"common_name": "Mallory"}, "reissue": true}, http.StatusForbidden, &p)
		var held struct{ Attributes map[string]string }
		admin.with(t).json("GET", "/v1/subjects/"+auditorSubject, nil, http.StatusOK, &held, "Caledger-Reason", "check a refused correction")
		if held.Attributes["common_name"] == "Mallory" {
			t.Error("a refused correction with reissue was recorded")
		}
		admin.json("GET", "/v1/certificates/"+auditorSerial, nil, http.StatusOK, &info)
		if info.Status != "valid" {
			t.Errorf("the credential after a refused reissue: %+v", info)
		}
		officerClient.with(t).json("POST", "/v1/certificates/"+auditorSerial+"/revocation", map[string]string{"reason": "privilegeWithdrawn"}, http.StatusForbidden, &p)
		admin.json("POST", "/v1/certificates/"+auditorSerial+"/revocation", map[string]string{"reason": "privilegeWithdrawn"}, http.StatusOK, nil)
		auditor.with(t).json("GET", "/v1/certificates", nil, http.StatusUnauthorized, &p)
		if p.Code != "unauthenticated" {
			t.Errorf("revoked auditor: %+v", p)
		}
	})

	t.Run("no personal data in metrics", func(t *testing.T) {
		_, _, b := anonymous.with(t).do("GET", "/metrics", "", nil)
		for _, secret := range []string{personName, personEmail, "Hopper"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("/metrics contains %q", secret)
			}
		}
	})

	t.Run("access report", func(t *testing.T) {
		officerClient.with(t).json("GET", "/v1/subjects/"+subject.ID+"/report", nil, http.StatusForbidden, &p, "Caledger-Reason", "DSAR 7")
		var report struct {
			Attributes   map[string]string
			Certificates []struct{ Serial string }
			Accesses     []struct {
				Actor     string
				Operation string
			}
		}
		admin.with(t).json("GET", "/v1/subjects/"+subject.ID+"/report", nil, http.StatusOK, &report, "Caledger-Reason", "DSAR 7")
		if report.Attributes["email"] != personEmail || len(report.Certificates) < 3 {
			t.Errorf("report: %+v", report)
		}
		ops := map[string]bool{}
		for _, a := range report.Accesses {
			ops[a.Operation] = true
			if !strings.HasPrefix(a.Actor, "cert:") {
				t.Errorf("access by %q", a.Actor)
			}
		}
		if !ops["read"] || !ops["search"] || !ops["report"] {
			t.Errorf("the report's access log lacks reads, searches or itself: %+v", report.Accesses)
		}
	})

	t.Run("erasure", func(t *testing.T) {
		a := admin.with(t)
		officerClient.with(t).json("POST", "/v1/subjects/"+subject.ID+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusForbidden, &p)
		var receipt struct {
			Status string `json:"status"`
			Basis  string `json:"basis"`
		}
		a.json("GET", "/v1/subjects/"+subject.ID+"/erasure", nil, http.StatusNotFound, &p)
		if p.Code != "not-erased" {
			t.Errorf("state of an erasure not yet made: %+v", p)
		}
		a.json("POST", "/v1/subjects/"+subject.ID+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusOK, &receipt)
		if receipt.Status != "keys-destroyed" || receipt.Basis != "gdpr-art17" {
			t.Errorf("receipt: %+v", receipt)
		}
		a.json("GET", "/v1/subjects/"+subject.ID+"/erasure", nil, http.StatusOK, &receipt)
		if receipt.Status != "keys-destroyed" {
			t.Errorf("erasure state: %+v", receipt)
		}
		a.json("GET", "/v1/subjects/"+subject.ID, nil, http.StatusGone, &p, "Caledger-Reason", "after erasure")
		var found []struct{ ID string }
		a.json("POST", "/v1/subjects/search", map[string]any{"match": map[string]string{"email": personEmail}, "reason": "after erasure"}, http.StatusOK, &found)
		if len(found) != 0 {
			t.Errorf("an erased subject is still found: %+v", found)
		}
		status, _, b := a.do("POST", "/v1/certificates?subject_id="+subject.ID+"&profile=tls-client", "application/pkcs10", csrPEM)
		if status != http.StatusGone {
			t.Errorf("issuance for an erased subject: %d %s", status, b)
		}
		// Erasing again records nothing, destroys the keys again and says so.
		a.json("POST", "/v1/subjects/"+subject.ID+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusConflict, &p)
		if p.Code != "already-erased" {
			t.Errorf("second erasure: %+v", p)
		}
	})

	t.Run("docs offline", func(t *testing.T) {
		status, h, b := anonymous.do("GET", "/docs", "", nil)
		if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || bytes.Contains(b, []byte("https://")) {
			t.Errorf("/docs: %d %s, external reference: %v", status, h.Get("Content-Type"), bytes.Contains(b, []byte("https://")))
		}
	})

	if t.Failed() {
		t.Logf("server logs:\n%s", s.logs)
	}
	if err := s.stop(t); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{personName, personEmail, "Grace Hopper", "ticket 99"} {
		if strings.Contains(s.logs.String(), secret) {
			t.Errorf("the logs contain personal data %q", secret)
		}
	}

	// The views rebuild from the ledger to the same answers.
	var rebuilt bytes.Buffer
	if err := run(t.Context(), []string{"projections", "rebuild", "--data", data}, noEnv, &rebuilt, io.Discard); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if !strings.Contains(rebuilt.String(), "rebuilt the views") {
		t.Errorf("rebuild printed %q", rebuilt.String())
	}
	for _, name := range []string{"views.db", "views.db-wal"} {
		raw, _ := os.ReadFile(filepath.Join(data, "views", name))
		for _, secret := range []string{personEmail, "Grace Hopper"} {
			if bytes.Contains(raw, []byte(secret)) {
				t.Errorf("rebuilt %s holds the erased subject's %q", name, secret)
			}
		}
	}
	s2 := startServe(t, []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, nil)
	admin2 := mtlsClient(t, data, "https://"+s2.addr, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem"))
	admin2.json("GET", "/v1/certificates/"+revokedSerial, nil, http.StatusOK, &info)
	if info.Status != "deleted" {
		t.Errorf("after rebuild: %+v", info)
	}
}

// TestSearchRecordsEveryAccess checks that a search returning many subjects
// (whose access records are appended side by side) records an access for each.
func TestSearchRecordsEveryAccess(t *testing.T) {
	data := initData(t)
	s := startServe(t, []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, nil)
	admin := mtlsClient(t, data, "https://"+s.addr, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem"))
	want := map[string]bool{}
	for i := range 40 {
		var subject struct{ ID string }
		admin.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{
			"common_name": fmt.Sprintf("Searched Person %d", i), "organization": "Search Org"}}, http.StatusCreated, &subject)
		want[subject.ID] = true
	}
	var found []struct{ ID string }
	admin.json("POST", "/v1/subjects/search", map[string]any{"match": map[string]string{"organization": "Search Org"}, "limit": 100, "reason": "bulk check"}, http.StatusOK, &found)
	if len(found) != len(want) {
		t.Fatalf("the search found %d subjects, want %d", len(found), len(want))
	}
	for _, f := range found {
		if !want[f.ID] {
			t.Fatalf("the search found %s, which was not registered here", f.ID)
		}
		delete(want, f.ID)
		// The reasons stay sealed; the report shows the operations.
		var report struct{ Accesses []struct{ Operation string } }
		admin.json("GET", "/v1/subjects/"+f.ID+"/report", nil, http.StatusOK, &report, "Caledger-Reason", "audit of the search")
		searches := 0
		for _, a := range report.Accesses {
			if a.Operation == "search" {
				searches++
			}
		}
		if searches != 1 {
			t.Errorf("subject %s: %d search accesses recorded, want 1: %+v", f.ID, searches, report.Accesses)
		}
	}
}

func TestRetainUntilExpiry(t *testing.T) {
	data := initData(t, "--retain-until-expiry")
	s := startServe(t, []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, nil)
	admin := mtlsClient(t, data, "https://"+s.addr, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem"))
	var subject struct{ ID string }
	admin.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"common_name": "Retained Person"}}, http.StatusCreated, &subject)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	var issued struct{ Serial string }
	admin.json("POST", "/v1/certificates", map[string]string{"subject_id": subject.ID, "profile": "tls-client",
		"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, http.StatusCreated, &issued)
	admin.json("POST", "/v1/certificates/"+issued.Serial+"/revocation", map[string]string{"reason": "cessationOfOperation"}, http.StatusOK, nil)
	var p problemBody
	admin.json("DELETE", "/v1/certificates/"+issued.Serial, nil, http.StatusConflict, &p)
	until, err := time.Parse(time.RFC3339, p.Until)
	if p.Code != "retained-until-expiry" || err != nil || until.Before(time.Now()) {
		t.Fatalf("delete under retain_until_expiry: %+v", p)
	}
}

// firstCert parses the first certificate of the PEM file at path.
func firstCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
