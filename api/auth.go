package api

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humachi"

	"github.com/caledger/caledger/domain"
)

// Roles. A client certificate carries its roles (crypto/issuer writes them in a
// private extension); admin may do everything the others may.
const (
	RoleAdmin      = "admin"
	RoleOfficer    = "officer"
	RoleAuditor    = "auditor"
	RoleCompliance = "compliance"
	// RoleOfficerProxy is a trusted front end that authenticates people
	// itself and asks for soft tokens for them (POST /v1/soft-tokens only).
	RoleOfficerProxy = "officer-proxy"
)

// Principal is an authenticated client.
type Principal struct {
	// Actor is recorded in the events the client causes: the certificate's
	// serial and its first role, never a name.
	Actor domain.Actor
	Roles []string
}

// Has reports whether p may act in role.
func (p Principal) Has(role string) bool {
	return slices.Contains(p.Roles, role) || slices.Contains(p.Roles, RoleAdmin)
}

// Authenticator turns a client certificate that the TLS layer has already
// verified against the CA (tls.VerifyClientCertIfGiven with the CA pool) into a
// principal. It checks what the handshake cannot: that the certificate is not
// revoked, and which roles it carries. A certificate without a role is not a
// client credential; it gets ErrNoRole.
type Authenticator interface {
	Authenticate(ctx context.Context, cert *x509.Certificate) (Principal, error)
}

type principalKey struct{}

// authenticate puts the principal of a verified client certificate in the
// request context. Requests without one carry no principal: the public
// operations serve them, the others answer 401 (requireCredential). A
// certificate that verified but cannot be used (revoked, no role) is answered
// 401 at once, except on the public paths; one whose status cannot be read
// now is answered 503.
func authenticate(auth Authenticator) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if auth == nil || r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
				next.ServeHTTP(w, r)
				return
			}
			p, err := auth.Authenticate(r.Context(), r.TLS.VerifiedChains[0][0])
			if err != nil && publicPath(r.URL.Path) {
				// A client that sends a certificate it cannot use (revoked, or
				// no role: any certificate of this CA a TLS stack offers by
				// itself) still reaches what everyone may read.
				next.ServeHTTP(w, r)
				return
			}
			var de *domain.Error
			if errors.As(err, &de) && de.Kind == domain.KindUnavailable {
				w.Header().Set("Retry-After", "1")
				writeProblem(w, &problem{Type: problemType(de.Code), Title: http.StatusText(http.StatusServiceUnavailable),
					Status: http.StatusServiceUnavailable, Code: de.Code, Detail: de.Detail})
				return
			}
			if err != nil {
				writeProblem(w, unauthenticated("the client certificate is not a valid caledger credential: "+err.Error()))
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
		})
	}
}

// require returns the caller's actor if it holds one of roles; otherwise the
// 401 (no credential) or 403 (wrong role) problem.
func require(ctx context.Context, roles ...string) (domain.Actor, error) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	if !ok {
		return domain.Actor{}, unauthenticated("this operation needs a client certificate (mutual TLS)")
	}
	for _, role := range roles {
		if p.Has(role) {
			actor := p.Actor
			actor.Role = role
			return actor, nil
		}
	}
	return domain.Actor{}, &problem{Type: problemType("forbidden"), Title: http.StatusText(http.StatusForbidden),
		Status: http.StatusForbidden, Code: "forbidden", Detail: "this operation needs the role " + strings.Join(roles, " or ")}
}

// requireCredential is a huma middleware: it answers 401 to a request for an
// operation that needs a client certificate (one with a security requirement)
// and carries no principal, before huma reads or checks its input, so that a
// client without a credential learns nothing of the operation's schema. Which
// role the operation needs is the handler's check (require).
func requireCredential(ctx huma.Context, next func(huma.Context)) {
	if op := ctx.Operation(); op != nil && len(op.Security) > 0 {
		if _, ok := ctx.Context().Value(principalKey{}).(Principal); !ok {
			_, w := humachi.Unwrap(ctx)
			writeProblem(w, unauthenticated("this operation needs a client certificate (mutual TLS)"))
			return
		}
	}
	next(ctx)
}

// unauthenticated is the 401 problem, saying why.
func unauthenticated(detail string) *problem {
	return &problem{Type: problemType("unauthenticated"), Title: http.StatusText(http.StatusUnauthorized),
		Status: http.StatusUnauthorized, Code: "unauthenticated", Detail: detail}
}

// allowlist answers 403 to clients whose address is outside nets, on every path
// except the public ones (health, CA certificates, CRLs, OCSP, docs). An empty
// list allows every address.
func allowlist(nets []netip.Prefix) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if len(nets) == 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if publicPath(r.URL.Path) || allowed(nets, r.RemoteAddr) {
				next.ServeHTTP(w, r)
				return
			}
			writeProblem(w, &problem{Type: problemType("address-not-allowed"), Title: http.StatusText(http.StatusForbidden),
				Status: http.StatusForbidden, Code: "address-not-allowed", Detail: "the client address is not on the allowlist"})
		})
	}
}

func allowed(nets []netip.Prefix, remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	for _, n := range nets {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// publicPath reports whether path is served to anyone (DESIGN.md, the "public"
// rows of the API map): everything the publication listener serves, and more.
func publicPath(path string) bool {
	if publishedPath(path) {
		return true
	}
	switch path {
	case "/readyz", "/metrics", "/docs", "/openapi.json", "/openapi.yaml", "/openapi-3.0.json", "/openapi-3.0.yaml", "/v1/cas":
		return true
	}
	return strings.HasPrefix(path, "/v1/cas/")
}
