package api

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humachi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readyTimeout bounds one readiness check, so that a stuck backend makes
// /readyz fail instead of hang.
const readyTimeout = 5 * time.Second

// HealthStatus is the body of /healthz and /readyz.
type HealthStatus struct {
	Status string `json:"status" enum:"ok" doc:"Always ok: failures are problems."`
}

type healthOutput struct {
	Body HealthStatus
}

func registerHealth(hapi huma.API, ready Readier, logger *slog.Logger) {
	huma.Register(hapi, huma.Operation{
		OperationID: "get-healthz",
		Method:      http.MethodGet,
		Path:        "/healthz",
		Summary:     "Liveness",
		Description: "Answers 200 while the process serves HTTP. It checks no dependency.",
		Tags:        []string{"health"},
	}, func(context.Context, *struct{}) (*healthOutput, error) {
		return &healthOutput{Body: HealthStatus{Status: "ok"}}, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "get-readyz",
		Method:      http.MethodGet,
		Path:        "/readyz",
		Summary:     "Readiness",
		Description: "Answers 200 when the service can take traffic, 503 otherwise.",
		Tags:        []string{"health"},
		Errors:      []int{http.StatusServiceUnavailable},
	}, func(ctx context.Context, _ *struct{}) (*healthOutput, error) {
		if ready != nil {
			ctx, cancel := context.WithTimeout(ctx, readyTimeout)
			defer cancel()
			if err := ready.Ready(ctx); err != nil {
				logger.LogAttrs(ctx, slog.LevelWarn, "not ready", slog.String("err", err.Error()))
				return nil, newProblem(http.StatusServiceUnavailable, "the service is not ready")
			}
		}
		return &healthOutput{Body: HealthStatus{Status: "ok"}}, nil
	})
}

// registerMetrics serves reg in the Prometheus text format. It is a huma
// operation so that it appears in the OpenAPI document; the body is written
// by promhttp.
func registerMetrics(hapi huma.API, reg *prometheus.Registry, logger *slog.Logger) {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelError),
		// Serve what could be gathered; the default would answer a 500
		// whose body is the internal error text.
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	})
	huma.Register(hapi, huma.Operation{
		OperationID: "get-metrics",
		Method:      http.MethodGet,
		Path:        "/metrics",
		Summary:     "Prometheus metrics",
		Tags:        []string{"health"},
		Responses: map[string]*huma.Response{
			"200": {
				Description: "Metrics in the Prometheus text exposition format.",
				Content:     map[string]*huma.MediaType{"text/plain": {}},
			},
		},
	}, func(context.Context, *struct{}) (*huma.StreamResponse, error) {
		return &huma.StreamResponse{Body: func(hctx huma.Context) {
			r, w := humachi.Unwrap(hctx)
			h.ServeHTTP(w, r)
		}}, nil
	})
}
