package api

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Publication wraps api, the handler New returns, for the plain-HTTP
// publication listener: it passes on the requests for the CA certificates, the
// CRLs and OCSP, which relying parties fetch from the URLs written into every
// certificate, and /healthz. Everything else, the API and its documentation
// included, answers 404 there.
//
// Why plain HTTP: RFC 5280 (4.2.1.13, 4.2.2.1) and RFC 6960 (appendix A) name
// http as the scheme for these URLs, and relying parties (OpenSSL, Windows,
// Java) fetch them over it. Fetching a certificate's revocation status over TLS
// whose server certificate comes from the same CA would be circular. What is
// served is signed (CRLs, OCSP responses, certificates), so TLS adds nothing to
// its integrity, and none of it is personal.
//
// The 404s it answers itself are logged to logger and counted in reg (either
// may be nil) like the API's own requests, with the route "unmatched": a
// scanner probing the listener shows up, and its paths are never written down.
func Publication(api http.Handler, logger *slog.Logger, reg *prometheus.Registry) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	refuse := logRequests(logger, requestMetricsIn(reg, logger))(http.HandlerFunc(notFound))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !publishedPath(r.URL.Path) {
			refuse.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// publishedPath reports whether path is served on the publication listener:
// /healthz, /ocsp, /ocsp/{request}, /v1/cas/{id}/certificate and
// /v1/cas/{id}/crl.
func publishedPath(path string) bool {
	switch {
	case path == "/healthz", path == "/ocsp", strings.HasPrefix(path, "/ocsp/"):
		return true
	}
	rest, ok := strings.CutPrefix(path, "/v1/cas/")
	if !ok {
		return false
	}
	id, what, ok := strings.Cut(rest, "/")
	return ok && id != "" && (what == "certificate" || what == "crl")
}
