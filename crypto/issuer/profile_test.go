package issuer_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/issuer"
)

func TestDefaultProfiles(t *testing.T) {
	ps := issuer.DefaultProfiles()
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	want := []string{"tls-server", "tls-client", "email-protection", "officer", "auditor", "compliance", "admin", "officer-proxy"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("profiles %q, want %q", names, want)
	}
	// A fresh copy each call: callers may change theirs.
	ps[0].KeyTypes[0] = "changed"
	if issuer.DefaultProfiles()[0].KeyTypes[0] == "changed" {
		t.Error("DefaultProfiles shares slices between calls")
	}
}

// TestProfilesJSONRoundTrip: the default profiles written as JSON load back the
// same, and testdata/profiles.json (the documented example) is that JSON.
func TestProfilesJSONRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(map[string]any{"profiles": issuer.DefaultProfiles()}); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "profiles.json")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("%s differs from the default profiles (UPDATE_GOLDEN=1 rewrites it):\n%s", golden, buf.Bytes())
	}
	got, err := issuer.LoadProfiles(bytes.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, issuer.DefaultProfiles()) {
		t.Errorf("loaded %+v\nwant %+v", got, issuer.DefaultProfiles())
	}
	if !strings.Contains(string(want), `"validity": "2160h"`) {
		t.Error(`validity is not written as "2160h"`)
	}
}

func TestLoadProfiles(t *testing.T) {
	const base = `"validity": "720h", "key_usage": ["digital_signature"], "ext_key_usage": ["client_auth"], "key_types": ["P-256"], "required": ["common_name"], "allowed": ["email"]`
	one := func(fields string) string { return `{"profiles": [{"name": "p", ` + fields + `}]}` }
	tests := []struct {
		name    string
		json    string
		wantErr string
	}{
		{"minimal", one(base), ""},
		{"min_rsa_bits defaults to 2048", one(base + `, "key_types": ["RSA"]`), ""},
		{"role", one(base + `, "role": "auditor"`), ""},
		{"not JSON", `{"profiles": [`, "profiles:"},
		{"trailing data", one(base) + ` {}`, "after the JSON object"},
		{"unknown field", one(base + `, "lint": "none"`), `unknown field "lint"`},
		{"no profiles", `{"profiles": []}`, "none given"},
		{"bad name", `{"profiles": [{"name": "Tls Server", ` + base + `}]}`, "profile 0: name"},
		{"duplicate name", `{"profiles": [{"name": "p", ` + base + `}, {"name": "p", ` + base + `}]}`, `profile "p": defined twice`},
		{"validity not a string", one(strings.Replace(base, `"720h"`, `720`, 1)), "duration"},
		{"validity in days", one(strings.Replace(base, `"720h"`, `"30d"`, 1)), `"30d"`},
		{"validity zero", one(strings.Replace(base, `"720h"`, `"0s"`, 1)), "validity: must be positive"},
		{"validity too long", one(strings.Replace(base, `"720h"`, `"100000h"`, 1)), "validity"},
		{"unknown key usage", one(base + `, "key_usage": ["cert_sign"]`), `key_usage: "cert_sign" is not one of`},
		{"duplicate key usage", one(base + `, "key_usage": ["digital_signature", "digital_signature"]`), "listed twice"},
		{"no ext key usage", one(base + `, "ext_key_usage": []`), "ext_key_usage: name at least one"},
		{"unknown ext key usage", one(base + `, "ext_key_usage": ["code_signing"]`), `"code_signing" is not one of`},
		{"no key types", one(base + `, "key_types": []`), "key_types: name at least one"},
		{"unknown key type", one(base + `, "key_types": ["P-521"]`), `"P-521" is not one of P-256, P-384, Ed25519, RSA`},
		{"weak RSA minimum", one(base + `, "min_rsa_bits": 1024`), "min_rsa_bits: 1024 is outside 2048 to 8192"},
		{"usage the key cannot do", one(base + `, "key_usage": ["key_agreement"], "key_types": ["Ed25519"]`), "gives Ed25519 keys no usage"},
		{"unknown attribute", one(base + `, "required": ["national_id"]`), `required: "national_id" is not one of`},
		{"allowed and required", one(base + `, "allowed": ["common_name"]`), `allowed: "common_name" is already required`},
		{"server without names", one(base + `, "ext_key_usage": ["server_auth"]`), "must require or allow dns_names or ip_addresses"},
		{"server with names", one(base + `, "ext_key_usage": ["server_auth"], "allowed": ["ip_addresses"]`), ""},
		{"unknown role", one(base + `, "role": "root"`), `role: "root" is not one of`},
		{"role without client_auth", one(base + `, "role": "admin", "ext_key_usage": ["email_protection"]`), "client_auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := issuer.LoadProfiles(strings.NewReader(tt.json))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(ps) != 1 || ps[0].MinRSABits != 2048 {
					t.Errorf("profiles %+v", ps)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		json string
	}{{2160 * time.Hour, `"2160h"`}, {90 * time.Minute, `"1h30m0s"`}, {0, `"0s"`}} {
		b, err := json.Marshal(issuer.Duration(tt.d))
		if err != nil || string(b) != tt.json {
			t.Errorf("Marshal(%v) = %s, %v; want %s", tt.d, b, err, tt.json)
		}
		var d issuer.Duration
		if err := json.Unmarshal(b, &d); err != nil || time.Duration(d) != tt.d {
			t.Errorf("Unmarshal(%s) = %v, %v", b, time.Duration(d), err)
		}
	}
}

func TestKeyUsagesFor(t *testing.T) {
	p := issuer.Profile{KeyUsage: []string{"digital_signature", "key_encipherment", "data_encipherment", "key_agreement", "content_commitment"}, ExtKeyUsage: []string{"client_auth"}}
	ds, cc := x509.KeyUsageDigitalSignature, x509.KeyUsageContentCommitment
	want := map[string]x509.KeyUsage{
		issuer.KeyP256:    ds | cc | x509.KeyUsageKeyAgreement,
		issuer.KeyP384:    ds | cc | x509.KeyUsageKeyAgreement,
		issuer.KeyEd25519: ds | cc,
		issuer.KeyRSA:     ds | cc | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment,
	}
	for kt, ku := range want {
		if got := issuer.KeyUsagesFor(p, kt); got != ku {
			t.Errorf("%s: %b, want %b", kt, got, ku)
		}
	}
	server := issuer.Profile{KeyUsage: []string{"digital_signature"}, ExtKeyUsage: []string{"server_auth"}}
	if got := issuer.KeyUsagesFor(server, issuer.KeyRSA); got != ds|x509.KeyUsageKeyEncipherment {
		t.Errorf("RSA server: %b", got)
	}
	if got := issuer.KeyUsagesFor(server, issuer.KeyP256); got != ds {
		t.Errorf("P-256 server: %b", got)
	}
}
