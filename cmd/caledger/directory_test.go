package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/caledger/caledger/projections/directory"
	"github.com/caledger/caledger/projections/directory/slapdtest"
)

// directoryRig is a served data directory publishing to a slapd; extra is
// added to the directory's configuration.
func directoryRig(t *testing.T, extra map[string]any) (*auditRig, *slapdtest.Server) {
	t.Helper()
	srv := slapdtest.Start(t, slapdtest.Options{})
	data := initData(t)
	if err := os.WriteFile(filepath.Join(data, "directory-password"), []byte(slapdtest.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{"url": srv.URL, "bind_dn": slapdtest.RootDN,
		"password_file": "directory-password", "base_dn": slapdtest.People, "sweep_interval": "0"}
	maps.Copy(cfg, extra)
	setConfig(t, data, "directory", cfg)
	r := &auditRig{t: t, data: data, serveArgs: []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}}
	r.start()
	return r, srv
}

// waitEntry waits until subject's entry exists (want) or not.
func waitEntry(t *testing.T, srv *slapdtest.Server, subject string, want bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; {
		if got := len(srv.Entries(t.Context(), "(uid="+subject+")")) == 1; got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("entry of %s present: %v after 15 s, want %v", subject, !want, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDirectoryPublication: serve publishes an S/MIME certificate to the LDAP
// directory, an erasure removes the entry and its receipt says so, and a
// receipt made while the directory is down says "pending" until it is back.
func TestDirectoryPublication(t *testing.T) {
	r, srv := directoryRig(t, nil)
	subject, serial := r.issue("Secret Person One")
	waitEntry(t, srv, subject, true)
	e := srv.Entries(t.Context(), "(mail=secret@example.org)")
	if len(e) != 1 || e[0].GetAttributeValue("uid") != subject {
		t.Fatalf("search by mail found %d entries", len(e))
	}
	der := e[0].GetRawAttributeValue("userCertificate;binary")
	cert, err := x509.ParseCertificate(der)
	if err != nil || cert.SerialNumber.Text(16) != serial {
		t.Fatalf("published certificate: %v, want serial %s", err, serial)
	}
	for deadline := time.Now().Add(10 * time.Second); r.metric("caledger_directory_lag_events") != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("caledger_directory_lag_events = %v", r.metric("caledger_directory_lag_events"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f := r.metric("caledger_directory_failures_total"); f != 0 {
		t.Fatalf("caledger_directory_failures_total = %v", f)
	}

	var receipt struct{ Status, Directory string }
	r.admin.json("POST", "/v1/subjects/"+subject+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusOK, &receipt)
	if receipt.Directory != "removed" {
		t.Fatalf("erasure receipt: directory %q, want removed", receipt.Directory)
	}
	if len(srv.Entries(t.Context(), "(uid="+subject+")")) != 0 {
		t.Fatal("the receipt says removed while the entry is still there")
	}

	// With the directory down, the receipt does not claim the removal.
	other, _ := r.issue("Secret Person Two")
	waitEntry(t, srv, other, true)
	srv.Stop()
	r.admin.json("POST", "/v1/subjects/"+other+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusOK, &receipt)
	if receipt.Directory != "pending" {
		t.Fatalf("erasure receipt with the directory down: directory %q, want pending", receipt.Directory)
	}
	if r.metric("caledger_directory_lag_events") < 1 || r.metric("caledger_directory_failures_total") < 1 {
		t.Fatal("the metrics do not show the directory behind")
	}
	srv.Restart()
	for deadline := time.Now().Add(15 * time.Second); receipt.Directory != "removed"; {
		if time.Now().After(deadline) {
			t.Fatalf("erasure receipt: directory %q 15 s after the directory came back", receipt.Directory)
		}
		time.Sleep(50 * time.Millisecond)
		r.admin.json("GET", "/v1/subjects/"+other+"/erasure", nil, http.StatusOK, &receipt)
	}
	if len(srv.Entries(t.Context(), "(uid="+other+")")) != 0 {
		t.Fatal("the receipt says removed while the entry is still there")
	}

	// The checkpoint survives the server, and names the ledger's event.
	r.stop()
	cp, err := jsonFile[directory.Checkpoint]{path: filepath.Join(r.data, directoryCheckpointFile)}.Load(t.Context())
	if err != nil || cp.Position == 0 || !strings.Contains(cp.Target, srv.URL) {
		t.Fatalf("checkpoint %+v, %v", cp, err)
	}
	if logs := r.s.logs.String(); strings.Contains(logs, "Secret Person") || strings.Contains(logs, "secret@") {
		t.Fatalf("the logs hold personal data:\n%s", logs)
	}
}

// TestServeRefusesBadDirectory: a directory configuration serve cannot use
// stops the start with an error naming caledger.json.
func TestServeRefusesBadDirectory(t *testing.T) {
	data := initData(t)
	pw := filepath.Join(data, "directory-password")
	if err := os.WriteFile(pw, []byte("s3cr3t-pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pw, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	empty := filepath.Join(data, "empty-password")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := map[string]any{"url": "ldap://127.0.0.1:1", "base_dn": slapdtest.People}
	for name, c := range map[string]struct {
		set  map[string]any
		want string
	}{
		"unknown profile":   {map[string]any{"profiles": []string{"no-such-profile"}}, "no-such-profile"},
		"readable password": {map[string]any{"bind_dn": slapdtest.RootDN, "password_file": "directory-password"}, "chmod 600"},
		"no password":       {map[string]any{"bind_dn": slapdtest.RootDN}, "password_file"},
		"national id":       {map[string]any{"attributes": []string{"serial_number"}}, "serial_number"},
		"bad sweep":         {map[string]any{"sweep_interval": "hourly"}, "sweep_interval"},
		"bad URL":           {map[string]any{"url": "http://127.0.0.1"}, "ldap://"},
		"bad CA file":       {map[string]any{"url": "ldaps://127.0.0.1:1", "ca_file": "directory-password"}, "no PEM"},
		"CA file, no TLS":   {map[string]any{"ca_file": "directory-password"}, "ca_file"},
		"empty password":    {map[string]any{"bind_dn": slapdtest.RootDN, "password_file": empty}, "empty"},
		"role profile":      {map[string]any{"profiles": []string{"admin"}}, "admin credentials"},
		"negative sweep":    {map[string]any{"sweep_interval": "-1h"}, "sweep_interval"},
		"bad base DN":       {map[string]any{"base_dn": "people"}, "base DN"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := maps.Clone(base)
			maps.Copy(cfg, c.set)
			setConfig(t, data, "directory", cfg)
			// An accepted configuration would serve until the timeout.
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			err := run(ctx, []string{"serve", "--data", data, "--addr", "127.0.0.1:0", "--public-addr", ""}, noEnv, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), configFile) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("serve: %v; want an error naming %s and %q", err, configFile, c.want)
			}
			if strings.Contains(err.Error(), "s3cr3t-pw") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

// TestDirectoryPublishesCAs: with publish_cas, serve publishes every CA's
// certificate and CRL, signed by the CA; a revocation reaches the directory's
// CRL, which then equals the one served over HTTP.
func TestDirectoryPublishesCAs(t *testing.T) {
	r, srv := directoryRig(t, map[string]any{"publish_cas": true})
	conn := srv.Admin()
	defer conn.Close()
	// published returns CA id's certificate and CRL as the directory holds
	// them, or nil.
	published := func(id string) (*x509.Certificate, *x509.RevocationList, []byte) {
		t.Helper()
		res, err := conn.Search(ldap.NewSearchRequest("cn="+id+","+slapdtest.People, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 0, false,
			"(objectClass=pkiCA)", []string{"cACertificate;binary", "certificateRevocationList;binary"}, nil))
		if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			return nil, nil, nil
		}
		if err != nil || len(res.Entries) != 1 {
			t.Fatalf("read the entry of CA %s: %v", id, err)
		}
		cert, err := x509.ParseCertificate(res.Entries[0].GetRawAttributeValue("cACertificate;binary"))
		if err != nil {
			t.Fatalf("CA %s: %v", id, err)
		}
		der := res.Entries[0].GetRawAttributeValue("certificateRevocationList;binary")
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatalf("CA %s's CRL: %v", id, err)
		}
		if err := crl.CheckSignatureFrom(cert); err != nil {
			t.Fatalf("CA %s's CRL: %v", id, err)
		}
		return cert, crl, der
	}
	for _, id := range []string{"root", "issuing"} {
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if cert, _, _ := published(id); cert != nil {
				if !cert.IsCA {
					t.Fatalf("CA %s: the entry holds a certificate that is not a CA's", id)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CA %s was not published", id)
			}
		}
	}

	_, serial := r.issue("Secret Person One")
	r.admin.json("POST", "/v1/certificates/"+serial+"/revocation", map[string]string{"reason": "keyCompromise"}, http.StatusOK, nil)
	var der []byte
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, crl, d := published("issuing")
		if len(crl.RevokedCertificateEntries) == 1 && crl.RevokedCertificateEntries[0].SerialNumber.Text(16) == serial {
			der = d
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the directory's CRL does not list %s after 15 s", serial)
		}
	}
	if status, _, served := r.admin.do("GET", "/v1/cas/issuing/crl", "", nil); status != http.StatusOK || !bytes.Equal(served, der) {
		t.Fatalf("GET the CRL: %d; the directory's CRL is not the one served over HTTP", status)
	}
	// openssl, as a relying party would, reads the directory's CRL.
	path := filepath.Join(t.TempDir(), "issuing.crl")
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := openssl(t, "crl", "-inform", "DER", "-in", path, "-noout", "-text"); !strings.Contains(strings.ToUpper(out), strings.ToUpper(serial)) {
		t.Fatalf("openssl does not find serial %s in the directory's CRL:\n%s", serial, out)
	}
	if f := r.metric("caledger_directory_failures_total"); f != 0 {
		t.Fatalf("caledger_directory_failures_total = %v", f)
	}
}
