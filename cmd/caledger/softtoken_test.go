package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// TestSoftTokens runs POST /v1/soft-tokens end to end: a proxy credential from
// officer add, a header mapping from caledger.json, tokens for a new and for
// a registered subject, what the ledger and the views show, and the refusals,
// none of which writes anything or leaks the password or the attributes.
func TestSoftTokens(t *testing.T) {
	data := initData(t)
	creds := map[string]string{}
	for _, role := range []string{"officer-proxy", "officer"} {
		dir := filepath.Join(t.TempDir(), role)
		if err := run(t.Context(), []string{"officer", "add", "--data", data, "--role", role, "--name", "Front Door", "--out", dir}, noEnv, io.Discard, io.Discard); err != nil {
			t.Fatalf("officer add --role %s: %v", role, err)
		}
		creds[role] = dir
	}
	// The proxy of this deployment names its headers X-Sso-*.
	setConfig(t, data, "soft_token_headers", map[string]string{"common_name": "X-Sso-Name", "email": "X-Sso-Mail", "country": "X-Sso-Country"})

	s := startServe(t, []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, nil)
	base := "https://" + s.addr
	cred := func(role string) *apiClient {
		dir := creds[role]
		return mtlsClient(t, data, base, filepath.Join(dir, role+".pem"), filepath.Join(dir, role+"-key.pem"))
	}
	proxy, officerClient := cred("officer-proxy"), cred("officer")
	admin := mtlsClient(t, data, base, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem"))
	anonymous := mtlsClient(t, data, base, "", "")
	roots := x509.NewCertPool()
	roots.AddCert(firstCert(t, filepath.Join(data, rootPEM)))

	const password = "Tr0ub4dor & 3"
	const name, mail = "Åsa Öberg-Lindqvist", "asa.oberg@example.se"
	form := func(kv ...string) []byte {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return []byte(v.Encode())
	}
	head := func() string {
		_, _, b := admin.do("GET", "/metrics", "", nil)
		for line := range strings.SplitSeq(string(b), "\n") {
			if strings.HasPrefix(line, "caledger_ledger_head_position ") {
				return line
			}
		}
		t.Fatal("no head metric")
		return ""
	}
	// open checks a 201 answer and its token; it returns the certificate and
	// the subject header.
	open := func(t *testing.T, status int, h http.Header, body []byte) (*x509.Certificate, string) {
		t.Helper()
		if status != http.StatusCreated {
			t.Fatalf("status %d: %s", status, body)
		}
		if h.Get("Content-Type") != "application/x-pkcs12" || h.Get("Cache-Control") != "no-store" ||
			!strings.HasPrefix(h.Get("Content-Disposition"), "attachment; filename=") {
			t.Fatalf("headers %v", h)
		}
		key, leaf, cas, err := pkcs12.DecodeChain(body, password)
		if err != nil {
			t.Fatal(err)
		}
		if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
			t.Fatal("the key is not the certificate's")
		}
		inters := x509.NewCertPool()
		for _, c := range cas {
			inters.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatal(err)
		}
		if h.Get("Location") != "/v1/certificates/"+leaf.SerialNumber.Text(16) {
			t.Fatalf("Location %q for serial %s", h.Get("Location"), leaf.SerialNumber.Text(16))
		}
		return leaf, h.Get("Caledger-Subject-Id")
	}

	t.Run("the OpenAPI document names this deployment's headers", func(t *testing.T) {
		status, _, body := anonymous.do("GET", "/openapi.json", "", nil)
		var doc struct {
			Paths map[string]map[string]struct {
				Description string `json:"description"`
			} `json:"paths"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &doc) != nil {
			t.Fatalf("GET /openapi.json: %d", status)
		}
		d := doc.Paths["/v1/soft-tokens"]["post"].Description
		if !strings.Contains(d, "X-Sso-Name (common_name)") || strings.Contains(d, "Caledger-Common-Name") {
			t.Fatalf("the operation's description: %q", d)
		}
	})

	var subjectID string
	t.Run("new subject from an HTML form", func(t *testing.T) {
		status, h, body := proxy.do("POST", "/v1/soft-tokens", "application/x-www-form-urlencoded",
			form("password", password, "key_type", "P-384"),
			"X-Sso-Name", name, "X-Sso-Mail", mail, "X-Sso-Country", "SE",
			// Not in this deployment's mapping: ignored.
			"Caledger-Organization", "Ignored Ltd")
		leaf, id := open(t, status, h, body)
		if leaf.Subject.CommonName != name || len(leaf.EmailAddresses) != 1 || leaf.EmailAddresses[0] != mail ||
			len(leaf.Subject.Country) != 1 || len(leaf.Subject.Organization) != 0 {
			t.Fatalf("subject %v, e-mail %v", leaf.Subject, leaf.EmailAddresses)
		}
		if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P384() {
			t.Fatalf("key %T", leaf.PublicKey)
		}
		if len(id) != 32 {
			t.Fatalf("Caledger-Subject-Id %q", id)
		}
		subjectID = id
		// The record says the key was generated; the proxy recorded it.
		var info struct {
			SubjectID    string `json:"subject_id"`
			KeyGenerated bool   `json:"key_generated"`
			Profile      string `json:"profile"`
		}
		officerClient.json("GET", h.Get("Location"), nil, http.StatusOK, &info)
		if info.SubjectID != id || !info.KeyGenerated || info.Profile != "tls-client" {
			t.Fatalf("certificate record %+v", info)
		}
	})

	t.Run("registered subject, JSON body", func(t *testing.T) {
		b, _ := json.Marshal(map[string]string{"password": password, "profile": "email-protection"})
		status, h, body := proxy.do("POST", "/v1/soft-tokens", "application/json", b, "Caledger-Subject-Id", subjectID)
		leaf, id := open(t, status, h, body)
		if id != subjectID || leaf.Subject.CommonName != name || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageEmailProtection {
			t.Fatalf("subject %s %v, EKU %v", id, leaf.Subject, leaf.ExtKeyUsage)
		}
	})

	t.Run("RFC 8187 header value", func(t *testing.T) {
		status, h, body := proxy.do("POST", "/v1/soft-tokens", "application/x-www-form-urlencoded", form("password", password),
			"X-Sso-Name", "UTF-8''%C3%85sa%20%C3%96berg")
		leaf, _ := open(t, status, h, body)
		if leaf.Subject.CommonName != "Åsa Öberg" {
			t.Fatalf("common name %q", leaf.Subject.CommonName)
		}
	})

	t.Run("refusals write nothing", func(t *testing.T) {
		before := head()
		pw := form("password", password)
		cases := []struct {
			name   string
			c      *apiClient
			ctype  string
			body   []byte
			header []string
			status int
			code   string
		}{
			{"no credential", anonymous, "application/x-www-form-urlencoded", pw, []string{"X-Sso-Name", name}, http.StatusUnauthorized, ""},
			{"an officer is not a proxy", officerClient, "application/x-www-form-urlencoded", pw, []string{"X-Sso-Name", name}, http.StatusForbidden, ""},
			{"a role profile", proxy, "application/x-www-form-urlencoded", form("password", password, "profile", "officer"), []string{"X-Sso-Name", name}, http.StatusForbidden, "forbidden"},
			{"short password", proxy, "application/x-www-form-urlencoded", form("password", "hunter2"), []string{"X-Sso-Name", name}, http.StatusBadRequest, "bad-password"},
			{"no password", proxy, "application/json", []byte(`{}`), []string{"X-Sso-Name", name}, http.StatusBadRequest, "bad-password"},
			{"unknown key type", proxy, "application/x-www-form-urlencoded", form("password", password, "key_type", "DSA"), []string{"X-Sso-Name", name}, http.StatusBadRequest, "key-type-not-allowed"},
			{"unknown CA", proxy, "application/x-www-form-urlencoded", form("password", password, "ca", "nope"), []string{"X-Sso-Name", name}, http.StatusBadRequest, "unknown-ca"},
			{"unknown JSON field", proxy, "application/json", []byte(`{"password":"` + password + `","subject_id":"` + subjectID + `"}`), []string{"X-Sso-Name", name}, http.StatusBadRequest, "bad-body"},
			{"unknown form field", proxy, "application/x-www-form-urlencoded", form("password", password, "name", name), []string{"X-Sso-Name", name}, http.StatusBadRequest, "bad-body"},
			{"not JSON", proxy, "application/json", []byte(password), []string{"X-Sso-Name", name}, http.StatusBadRequest, "bad-body"},
			{"media type", proxy, "text/plain", pw, []string{"X-Sso-Name", name}, http.StatusUnsupportedMediaType, "unsupported-media-type"},
			{"unreadable media type", proxy, "form", pw, []string{"X-Sso-Name", name}, http.StatusUnsupportedMediaType, "unsupported-media-type"},
			{"JSON with data after it", proxy, "application/json", []byte(`{"password":"` + password + `"}}`), []string{"X-Sso-Name", name}, http.StatusBadRequest, "bad-body"},
			{"no attributes", proxy, "application/x-www-form-urlencoded", pw, []string{"Caledger-Common-Name", name}, http.StatusBadRequest, "subject-required"},
			{"subject and attributes", proxy, "application/x-www-form-urlencoded", pw, []string{"X-Sso-Name", name, "Caledger-Subject-Id", subjectID}, http.StatusBadRequest, "subject-and-attributes"},
			{"unknown subject", proxy, "application/x-www-form-urlencoded", pw, []string{"Caledger-Subject-Id", strings.Repeat("0a", 16)}, http.StatusNotFound, "no-subject"},
			{"bad attribute", proxy, "application/x-www-form-urlencoded", pw, []string{"X-Sso-Name", name, "X-Sso-Country", "Sverige"}, http.StatusBadRequest, "bad-attribute"},
			{"missing attribute", proxy, "application/x-www-form-urlencoded", form("password", password, "profile", "email-protection"), []string{"X-Sso-Name", name}, http.StatusBadRequest, "missing-attribute"},
			{"bad RFC 8187 value", proxy, "application/x-www-form-urlencoded", pw, []string{"X-Sso-Name", "UTF-8''%zz" + name}, http.StatusBadRequest, "bad-attribute-header"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				status, h, body := c.c.with(t).do("POST", "/v1/soft-tokens", c.ctype, c.body, c.header...)
				if status != c.status {
					t.Fatalf("status %d %s, want %d", status, body, c.status)
				}
				if h.Get("Content-Type") != "application/problem+json" {
					t.Errorf("served as %q", h.Get("Content-Type"))
				}
				var p problemBody
				if err := json.Unmarshal(body, &p); err != nil || c.code != "" && p.Code != c.code {
					t.Errorf("problem %s, want code %s", body, c.code)
				}
				for _, secret := range []string{password, "hunter2", name, "Sverige", "Åsa", "Öberg"} {
					if strings.Contains(string(body), secret) {
						t.Errorf("the problem repeats %q: %s", secret, body)
					}
				}
			})
		}
		// A header given twice is refused, the subject's as well as an
		// attribute's: a proxy that appends its value to the person's must
		// not have the person's win. Go's client sends both values.
		for header, code := range map[string]string{"X-Sso-Name": "bad-attribute-header", "Caledger-Subject-Id": "bad-subject-header"} {
			req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/v1/soft-tokens", strings.NewReader(string(pw)))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			value := name
			if header == "Caledger-Subject-Id" {
				value = subjectID
			}
			req.Header.Add(header, strings.Repeat("0f", 16))
			req.Header.Add(header, value)
			res, err := proxy.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			var p problemBody
			if res.StatusCode != http.StatusBadRequest || json.Unmarshal(b, &p) != nil || p.Code != code {
				t.Fatalf("%s twice: %d %s", header, res.StatusCode, b)
			}
		}
		if after := head(); after != before {
			t.Fatalf("refusals wrote to the ledger: %s, then %s", before, after)
		}
		// The proxy may do nothing else.
		proxy.json("GET", "/v1/certificates", nil, http.StatusForbidden, nil)
		proxy.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"common_name": "x"}}, http.StatusForbidden, nil)
	})

	// Neither the password nor the attributes reach the logs.
	if err := s.stop(t); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{password, "hunter2", name, mail, "Åsa", "Sverige"} {
		if strings.Contains(s.logs.String(), secret) {
			t.Errorf("the logs hold %q", secret)
		}
	}
}

// TestServeRefusesBadSoftTokenHeaders: a mapping serve cannot use stops the
// start with a message that names the file.
func TestServeRefusesBadSoftTokenHeaders(t *testing.T) {
	data := initData(t)
	setConfig(t, data, "soft_token_headers", map[string]string{"common_name": "X-Sso-Name", "surname": "x-sso-name"})
	err := run(t.Context(), []string{"serve", "--data", data, "--addr", "127.0.0.1:0", "--public-addr", ""}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), configFile) || !strings.Contains(err.Error(), "X-Sso-Name") {
		t.Fatalf("serve with a header used twice: %v", err)
	}
}

// setConfig sets one field of data's caledger.json, as an operator would.
func setConfig(t *testing.T, data, field string, value any) {
	t.Helper()
	path := filepath.Join(data, configFile)
	var cfg map[string]any
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg[field] = value
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
