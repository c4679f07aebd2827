package api

import (
	"net/http"
	"net/netip"
	"testing"
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
