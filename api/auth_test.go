package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/caledger/caledger/domain"
)

func TestAllowlist(t *testing.T) {
	tests := []struct {
		name  string
		allow []netip.Prefix
		path  string
		want  int
	}{
		{"no list allows all", nil, "/v1/subjects/search", http.StatusNotFound},
		{"outside the list", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "/v1/subjects/search", http.StatusForbidden},
		{"public paths stay public", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "/healthz", http.StatusOK},
		{"CA paths stay public", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "/v1/cas/issuing/crl", http.StatusNotFound},
		{"inside the list", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "/v1/subjects/search", http.StatusNotFound},
		{"IPv6 list, IPv4 client", []netip.Prefix{netip.MustParsePrefix("::1/128")}, "/v1/subjects/search", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, Config{Allow: tt.allow})
			res := do(t, srv, http.MethodGet, tt.path)
			if res.status != tt.want {
				t.Fatalf("GET %s = %d %s, want %d", tt.path, res.status, res.body, tt.want)
			}
			if tt.want == http.StatusForbidden {
				if res.header.Get("Content-Type") != "application/problem+json" {
					t.Errorf("403 as %q", res.header.Get("Content-Type"))
				}
			}
		})
	}
}

func TestAllowedAddresses(t *testing.T) {
	nets := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	for addr, want := range map[string]bool{
		"192.0.2.7:5555":          true,
		"198.51.100.1:5555":       false,
		"[2001:db8::1]:443":       true,
		"[::ffff:192.0.2.9]:1234": true, // IPv4-mapped
		"garbage":                 false,
		"":                        false,
	} {
		if got := allowed(nets, addr); got != want {
			t.Errorf("allowed(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestPrincipalRoles(t *testing.T) {
	admin := Principal{Roles: []string{RoleAdmin}}
	auditor := Principal{Roles: []string{RoleAuditor}}
	if !admin.Has(RoleOfficer) || !admin.Has(RoleCompliance) {
		t.Error("admin lacks a role")
	}
	if auditor.Has(RoleOfficer) || !auditor.Has(RoleAuditor) {
		t.Error("auditor roles wrong")
	}
}

// authFunc is an Authenticator answering every certificate with p and err.
type authFunc func() (Principal, error)

func (f authFunc) Authenticate(context.Context, *x509.Certificate) (Principal, error) { return f() }

// TestCredentialBeforeInput: a protected operation answers 401 to a client
// without a credential before it reads or checks the input (no 422 listing the
// schema's complaints), unknown paths stay 404, and a credential whose status
// cannot be read is answered 503, not 401.
func TestCredentialBeforeInput(t *testing.T) {
	unavailable := &domain.Error{Kind: domain.KindUnavailable, Code: "credential-status-unavailable", Detail: "try again"}
	var auth authFunc = func() (Principal, error) { return Principal{}, unavailable }
	router, _ := newAPI(Config{CAs: oneCA{}, Commands: guardLedger{}, Views: guardViews{}, Auth: auth})
	for _, tt := range []struct {
		name, method, path, body string
		cert                     bool
		want                     int
	}{
		{"bad subject id", http.MethodGet, "/v1/subjects/not-an-id", "", false, http.StatusUnauthorized},
		{"bad search body", http.MethodPost, "/v1/subjects/search", `{"match": 7}`, false, http.StatusUnauthorized},
		{"bad revocation", http.MethodPost, "/v1/certificates/zz/revocation", `{"reason": "nonsense"}`, false, http.StatusUnauthorized},
		{"unknown path", http.MethodGet, "/v1/nothing", "", false, http.StatusNotFound},
		{"public path", http.MethodGet, "/v1/cas", "", false, http.StatusOK},
		{"status unavailable", http.MethodGet, "/v1/certificates", "", true, http.StatusServiceUnavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			if tt.cert {
				req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
			} else {
				req.TLS = &tls.ConnectionState{}
			}
			w := httptest.NewRecorder()
			router.ServeHTTP(w, req)
			if w.Code != tt.want {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, w.Code, w.Body, tt.want)
			}
			if w.Code >= 400 && w.Header().Get("Content-Type") != problemContentType {
				t.Errorf("answered as %q", w.Header().Get("Content-Type"))
			}
		})
	}
}
