package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// statusWriter records the status of a response.
type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	// 1xx responses other than 101 are informational: the final status follows.
	informational := code >= 100 && code < 200 && code != http.StatusSwitchingProtocols
	if !w.wroteHeader && !informational {
		w.status = code
		w.wroteHeader = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.status = http.StatusOK
		w.wroteHeader = true
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streaming handlers flush through the wrapper.
func (w *statusWriter) Flush() {
	if !w.wroteHeader {
		w.status = http.StatusOK
		w.wroteHeader = true
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController access to the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// asStatusWriter returns w if it already records its status, else wraps it.
func asStatusWriter(w http.ResponseWriter) *statusWriter {
	if sw, ok := w.(*statusWriter); ok {
		return sw
	}
	return &statusWriter{ResponseWriter: w}
}

// routePattern returns the pattern of the route that served r, such as
// /v1/subjects/{id}, or "unmatched". It never returns the request's path.
func routePattern(r *http.Request) string {
	if p := chi.RouteContext(r.Context()).RoutePattern(); p != "" {
		return p
	}
	return "unmatched"
}

// logRequests logs one line per request: method, route pattern, status and
// duration, and counts and times it in m (when not nil). The raw path, the
// query and the client address are left out: they may carry personal data.
func logRequests(logger *slog.Logger, m *requestMetrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			sw := asStatusWriter(w)
			// Deferred so that aborted requests (http.ErrAbortHandler) are logged too.
			defer func() {
				status := sw.status
				if !sw.wroteHeader {
					status = http.StatusOK // what net/http sends for an empty response
				}
				elapsed := time.Since(start)
				route := routePattern(r)
				m.observe(r.Method, route, status, elapsed)
				level := slog.LevelInfo
				if status >= 500 {
					level = slog.LevelError
				}
				logger.LogAttrs(r.Context(), level, "request",
					slog.String("method", r.Method),
					slog.String("route", route),
					slog.Int("status", status),
					slog.Duration("duration", elapsed),
				)
			}()
			next.ServeHTTP(sw, r)
		})
	}
}

// requestMetrics counts and times requests by method, route pattern and
// status. Every label has few values: the pattern, never the path.
type requestMetrics struct {
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// newRequestMetrics registers the request metrics in reg, or reuses those an
// earlier handler on the same registry registered.
func newRequestMetrics(reg *prometheus.Registry) (*requestMetrics, error) {
	total := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "caledger_http_requests_total",
		Help: "HTTP requests served, by method, route pattern (unmatched: no route) and status code.",
	}, []string{"method", "route", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "caledger_http_request_duration_seconds",
		Help:    "Time from a request's arrival at the router to its response's end, by method and route pattern.",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
	}, []string{"method", "route"})
	var err error
	if total, err = registerOrReuse(reg, total); err != nil {
		return nil, err
	}
	if duration, err = registerOrReuse(reg, duration); err != nil {
		return nil, err
	}
	return &requestMetrics{total: total, duration: duration}, nil
}

// requestMetricsIn returns the request metrics registered in reg (nil: none),
// registering them first if no handler has. A failure is logged, and requests
// are then served uncounted.
func requestMetricsIn(reg *prometheus.Registry, logger *slog.Logger) *requestMetrics {
	if reg == nil {
		return nil
	}
	m, err := newRequestMetrics(reg)
	if err != nil {
		logger.Error("request metrics not registered", slog.String("cause", err.Error()))
	}
	return m
}

func registerOrReuse[C prometheus.Collector](reg *prometheus.Registry, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

func (m *requestMetrics) observe(method, route string, status int, elapsed time.Duration) {
	if m == nil {
		return
	}
	if !slices.Contains(httpMethods, method) {
		method = "other" // a client chooses the method: keep the label's values few
	}
	m.total.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(method, route).Observe(elapsed.Seconds())
}

// recoverPanics turns a panic into a 500 problem and logs its cause. The
// panic value is logged only when it is a runtime error (nil dereference,
// index out of range...); other values could hold data, so only their type
// is logged. If the response had already started, the connection is aborted
// so that the client cannot take a truncated body for a complete one.
func recoverPanics(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sw := asStatusWriter(w)
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger.LogAttrs(r.Context(), slog.LevelError, "panic",
					slog.String("route", routePattern(r)),
					slog.String("cause", panicCause(v)),
					slog.String("stack", string(debug.Stack())),
				)
				if sw.wroteHeader {
					panic(http.ErrAbortHandler)
				}
				writeProblem(sw, newProblem(http.StatusInternalServerError, "internal server error"))
			}()
			next.ServeHTTP(sw, r)
		})
	}
}

// httpMethods are the methods the API knows: the request metrics label
// others "other", and 405 answers list those a path allows.
var httpMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// logPanic logs the panic v recovered off a handler's goroutine, where
// recoverPanics cannot catch it, naming where it happened.
func logPanic(ctx context.Context, logger *slog.Logger, v any, where string) {
	logger.LogAttrs(ctx, slog.LevelError, "panic", slog.String("cause", panicCause(v)+" in "+where), slog.String("stack", string(debug.Stack())))
}

// panicCause describes a recovered panic value for the log: a runtime
// error's message (which names no request data), otherwise only its type,
// since a value a handler panicked with may hold anything.
func panicCause(v any) string {
	if re, ok := v.(runtime.Error); ok {
		return re.Error()
	}
	return fmt.Sprintf("%T", v)
}
