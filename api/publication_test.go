package api

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestPublishedPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/healthz":                     true,
		"/ocsp":                        true,
		"/ocsp/MEUwQzBBMD8wPTAJBgUrDg": true,
		"/v1/cas/issuing/crl":          true,
		"/v1/cas/root/certificate":     true,
		"/v1/cas":                      false,
		"/v1/cas/":                     false,
		"/v1/cas//crl":                 false,
		"/v1/cas/issuing":              false,
		"/v1/cas/issuing/crl/":         false,
		"/v1/cas/issuing/crl/x":        false,
		"/v1/cas/issuing/../subjects":  false,
		"/v1/certificates":             false,
		"/v1/subjects/search":          false,
		"/readyz":                      false,
		"/metrics":                     false,
		"/docs":                        false,
		"/openapi.json":                false,
		"/ocspx":                       false,
		"":                             false,
	} {
		if got := publishedPath(path); got != want {
			t.Errorf("publishedPath(%q) = %v, want %v", path, got, want)
		}
	}
}

// TestPublicationRefusals checks that the publication listener passes on only
// what it publishes, and that what it refuses is logged and counted like the
// API's own requests, without the path.
func TestPublicationRefusals(t *testing.T) {
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	router, _ := newAPI(Config{Metrics: reg, Logger: logger})
	pub := httptest.NewServer(Publication(router, logger, reg))
	t.Cleanup(pub.Close)

	if res := do(t, pub, http.MethodGet, "/healthz"); res.status != http.StatusOK {
		t.Fatalf("/healthz on the publication listener: %d", res.status)
	}
	checkProblem(t, do(t, pub, http.MethodGet, "/v1/subjects/alice@example.com"), http.StatusNotFound)
	checkProblem(t, do(t, pub, http.MethodGet, "/metrics"), http.StatusNotFound)

	metrics := httptest.NewServer(router)
	t.Cleanup(metrics.Close)
	body := do(t, metrics, http.MethodGet, "/metrics").body
	for _, want := range []string{
		`caledger_http_requests_total{code="200",method="GET",route="/healthz"} 1`,
		`caledger_http_requests_total{code="404",method="GET",route="unmatched"} 2`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}
	logged := logs.String()
	if n := strings.Count(logged, "route=unmatched status=404"); n != 2 {
		t.Errorf("%d refusals logged, want 2:\n%s", n, logged)
	}
	if strings.Contains(strings.ToLower(logged+string(body)), "alice") {
		t.Errorf("a refused path was written down:\n%s\n%s", logged, body)
	}
}
