package api

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humachi"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Readier reports whether the service can take traffic: its stores are open
// and its keys reachable. Ready returns nil when ready. It MUST return
// promptly once ctx is done. Its error is logged, never sent to the client.
type Readier interface {
	Ready(ctx context.Context) error
}

// ReadyFunc adapts a function to the Readier interface.
type ReadyFunc func(ctx context.Context) error

// Ready calls f(ctx).
func (f ReadyFunc) Ready(ctx context.Context) error { return f(ctx) }

// Config holds what the API needs. The zero value serves a working API that
// is always ready, exposes no metrics and logs nothing.
type Config struct {
	// Version is the API version written in the OpenAPI document.
	// Empty means "dev".
	Version string

	// Ready backs GET /readyz. Nil means always ready.
	Ready Readier

	// Metrics is the registry exposed at GET /metrics. Nil means /metrics is
	// not served. Pass a registry of your own, not prometheus's global
	// default one.
	Metrics *prometheus.Registry

	// Logger receives one line per request and the causes of 5xx problems.
	// Nil means no logs.
	Logger *slog.Logger
}

// New returns the HTTP handler serving the API described by cfg.
func New(cfg Config) http.Handler {
	router, _ := newAPI(cfg)
	return router
}

// newAPI builds the router and the huma API on it. Tests use the huma API to
// register extra operations.
func newAPI(cfg Config) (*chi.Mux, huma.API) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	version := cfg.Version
	if version == "" {
		version = "dev"
	}

	router := chi.NewMux()
	// Logging wraps recovery so that a recovered panic is logged as a 500.
	router.Use(logRequests(logger), recoverPanics(logger))
	router.NotFound(notFound)
	router.MethodNotAllowed(methodNotAllowed(router))

	hapi := humachi.New(router, humaConfig(version))
	registerHealth(hapi, cfg.Ready, logger)
	if cfg.Metrics != nil {
		registerMetrics(hapi, cfg.Metrics, logger)
	}
	return router, hapi
}

// humaConfig starts from huma's defaults and removes what we do not want:
//   - the /docs page, which loads its JavaScript from a CDN;
//   - the /schemas routes and the link transformer that adds "$schema" fields
//     and Link headers to every response body.
//
// The OpenAPI document stays at /openapi.json (plus /openapi.yaml and the
// 3.0 downgrades /openapi-3.0.json and /openapi-3.0.yaml that huma adds).
func humaConfig(version string) huma.Config {
	c := huma.DefaultConfig("caledger", version)
	c.Info.Description = "Event-sourced, audit-first certificate authority."
	c.DocsPath = ""
	c.SchemasPath = ""
	c.CreateHooks = nil
	c.Transformers = []huma.Transformer{problemTransformer}
	return c
}
