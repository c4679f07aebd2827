package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/danielgtaylor/huma/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers (the server's
// goroutines) and a reader (the test).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// response is what a test checks of an HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, srv *httptest.Server, method, path string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: body}
}

// clientProblem is the RFC 9457 body as a client sees it.
type clientProblem struct {
	Type   string           `json:"type"`
	Title  string           `json:"title"`
	Status int              `json:"status"`
	Detail string           `json:"detail"`
	Errors []map[string]any `json:"errors"`
}

// checkProblem asserts that res is a complete clientProblem with the given status.
func checkProblem(t *testing.T, res response, status int) clientProblem {
	t.Helper()
	if res.status != status {
		t.Errorf("status = %d, want %d; body %s", res.status, status, res.body)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	var p clientProblem
	if err := json.Unmarshal(res.body, &p); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, res.body)
	}
	if p.Type != "about:blank" || p.Title != http.StatusText(status) || p.Status != status || p.Detail == "" {
		t.Errorf("clientProblem = %+v, want type about:blank, title %q, status %d and a detail", p, http.StatusText(status), status)
	}
	return p
}

func newTestServer(t *testing.T, cfg Config, register ...func(huma.API)) *httptest.Server {
	t.Helper()
	router, hapi := newAPI(cfg)
	for _, r := range register {
		r(hapi)
	}
	srv := httptest.NewServer(router)
	t.Cleanup(srv.Close)
	return srv
}

func TestHealthz(t *testing.T) {
	srv := newTestServer(t, Config{})
	res := do(t, srv, http.MethodGet, "/healthz")
	if res.status != http.StatusOK {
		t.Fatalf("status = %d, want 200", res.status)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(res.body, &body); err != nil {
		t.Fatal(err)
	}
	if len(body) != 1 || body["status"] != "ok" {
		t.Errorf("body = %s, want {\"status\":\"ok\"}", res.body)
	}
}

func TestReadyz(t *testing.T) {
	const secret = "sqlite: open /var/lib/caledger/ledger.db: permission denied"
	tests := []struct {
		name   string
		ready  Readier
		status int
	}{
		{"nil means ready", nil, http.StatusOK},
		{"ready", ReadyFunc(func(context.Context) error { return nil }), http.StatusOK},
		{"not ready", ReadyFunc(func(context.Context) error { return errors.New(secret) }), http.StatusServiceUnavailable},
		{"ctx has a deadline", ReadyFunc(func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("no deadline")
			}
			return nil
		}), http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &syncBuffer{}
			srv := newTestServer(t, Config{Ready: tt.ready, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			res := do(t, srv, http.MethodGet, "/readyz")
			if tt.status == http.StatusOK {
				if res.status != http.StatusOK || !bytes.Contains(res.body, []byte(`"status":"ok"`)) {
					t.Fatalf("got %d %s, want 200 status ok", res.status, res.body)
				}
				return
			}
			checkProblem(t, res, tt.status)
			if bytes.Contains(res.body, []byte("sqlite")) {
				t.Errorf("clientProblem leaks the readiness error: %s", res.body)
			}
			if !strings.Contains(logs.String(), "permission denied") {
				t.Errorf("readiness error not logged; logs:\n%s", logs)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "caledger_test_total", Help: "Test counter."})
	reg.MustRegister(c)
	c.Add(3)

	srv := newTestServer(t, Config{Metrics: reg})
	res := do(t, srv, http.MethodGet, "/metrics")
	if res.status != http.StatusOK {
		t.Fatalf("status = %d, want 200", res.status)
	}
	if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain", ct)
	}
	if !bytes.Contains(res.body, []byte("caledger_test_total 3")) {
		t.Errorf("metrics lack the registered counter:\n%s", res.body)
	}
	// Only the given registry is served, not the global default one.
	if bytes.Contains(res.body, []byte("go_goroutines")) {
		t.Errorf("metrics include the default registry's collectors:\n%s", res.body)
	}

	t.Run("nil registry", func(t *testing.T) {
		srv := newTestServer(t, Config{})
		checkProblem(t, do(t, srv, http.MethodGet, "/metrics"), http.StatusNotFound)
	})

	t.Run("requests by route", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		// A second handler on the same registry shares its metrics.
		first := newTestServer(t, Config{Metrics: reg})
		srv := newTestServer(t, Config{Metrics: reg})
		do(t, first, http.MethodGet, "/healthz?name=Alice")
		do(t, srv, http.MethodGet, "/healthz")
		do(t, srv, http.MethodGet, "/v1/subjects/alice@example.com")
		do(t, srv, "BREW", "/healthz")
		body := do(t, srv, http.MethodGet, "/metrics").body
		for _, want := range []string{
			`caledger_http_requests_total{code="200",method="GET",route="/healthz"} 2`,
			`caledger_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
			`caledger_http_requests_total{code="405",method="other",route="unmatched"} 1`,
			`caledger_http_request_duration_seconds_count{method="GET",route="/healthz"} 2`,
		} {
			if !bytes.Contains(body, []byte(want)) {
				t.Errorf("metrics lack %s:\n%s", want, body)
			}
		}
		if bytes.Contains(bytes.ToLower(body), []byte("alice")) {
			t.Errorf("metrics hold a path or query:\n%s", body)
		}
	})
}

func TestOpenAPI(t *testing.T) {
	srv := newTestServer(t, Config{Version: "1.2.3", Metrics: prometheus.NewRegistry()})
	res := do(t, srv, http.MethodGet, "/openapi.json")
	if res.status != http.StatusOK {
		t.Fatalf("status = %d, want 200", res.status)
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
		Info    struct {
			Title   string `json:"title"`
			Version string `json:"version"`
		} `json:"info"`
		Paths map[string]map[string]struct {
			Responses map[string]struct {
				Content map[string]any `json:"content"`
			} `json:"responses"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(res.body, &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Errorf("openapi = %q, want 3.1.x", doc.OpenAPI)
	}
	if doc.Info.Title != "caledger" || doc.Info.Version != "1.2.3" {
		t.Errorf("info = %+v, want caledger 1.2.3", doc.Info)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if _, ok := doc.Paths[p]["get"]; !ok {
			t.Errorf("paths lack GET %s", p)
		}
	}
	if _, ok := doc.Paths["/readyz"]["get"].Responses["503"].Content[problemContentType]; !ok {
		t.Errorf("GET /readyz does not document a 503 %s", problemContentType)
	}
	if bytes.Contains(res.body, []byte("unpkg.com")) || bytes.Contains(res.body, []byte("$schema")) {
		t.Errorf("document points at a CDN or schema links:\n%s", res.body)
	}
}

func TestDocsPageIsOffline(t *testing.T) {
	srv := newTestServer(t, Config{})
	res := do(t, srv, http.MethodGet, "/docs")
	if res.status != http.StatusOK || !strings.HasPrefix(res.header.Get("Content-Type"), "text/html") {
		t.Fatalf("/docs: %d %s", res.status, res.header.Get("Content-Type"))
	}
	// Nothing is loaded from elsewhere: no absolute URL, and the CSP forbids it.
	if strings.Contains(string(res.body), "http://") || strings.Contains(string(res.body), "https://") {
		t.Error("/docs refers to another host")
	}
	if csp := res.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP = %q", csp)
	}
	if !strings.Contains(string(res.body), `fetch("/openapi.json")`) {
		t.Error("/docs does not render /openapi.json")
	}
	checkProblem(t, do(t, srv, http.MethodGet, "/schemas/ErrorModel.json"), http.StatusNotFound)
}

func TestRoutingProblems(t *testing.T) {
	srv := newTestServer(t, Config{})
	t.Run("unknown route", func(t *testing.T) {
		res := do(t, srv, http.MethodGet, "/v1/nothing?email=someone@example.com")
		p := checkProblem(t, res, http.StatusNotFound)
		if strings.Contains(p.Detail, "nothing") || bytes.Contains(res.body, []byte("example.com")) {
			t.Errorf("clientProblem echoes the request: %s", res.body)
		}
	})
	t.Run("wrong method", func(t *testing.T) {
		res := do(t, srv, http.MethodPost, "/healthz")
		checkProblem(t, res, http.StatusMethodNotAllowed)
		if allow := res.header.Values("Allow"); len(allow) != 1 || allow[0] != http.MethodGet {
			t.Errorf("Allow = %q, want [GET]", allow)
		}
	})
	t.Run("unknown method", func(t *testing.T) {
		checkProblem(t, do(t, srv, "BREW", "/healthz"), http.StatusMethodNotAllowed)
	})
}

func TestHandlerErrors(t *testing.T) {
	const secret = "password=hunter2"
	type echoInput struct {
		Body struct {
			Count int `json:"count" minimum:"1"`
		}
	}
	register := func(hapi huma.API) {
		huma.Register(hapi, huma.Operation{OperationID: "panic", Method: http.MethodGet, Path: "/test/panic"},
			func(context.Context, *struct{}) (*healthOutput, error) {
				panic("boom: " + secret)
			})
		huma.Register(hapi, huma.Operation{OperationID: "nil-map", Method: http.MethodGet, Path: "/test/nil-map"},
			func(context.Context, *struct{}) (*healthOutput, error) {
				var m map[string]int
				m["x"] = 1
				return nil, nil
			})
		huma.Register(hapi, huma.Operation{OperationID: "fail", Method: http.MethodGet, Path: "/test/fail"},
			func(context.Context, *struct{}) (*healthOutput, error) {
				return nil, errors.New(secret)
			})
		huma.Register(hapi, huma.Operation{OperationID: "echo", Method: http.MethodPost, Path: "/test/echo"},
			func(context.Context, *echoInput) (*healthOutput, error) {
				return &healthOutput{Body: HealthStatus{Status: "ok"}}, nil
			})
	}
	logs := &syncBuffer{}
	srv := newTestServer(t, Config{Logger: slog.New(slog.NewTextHandler(logs, nil))}, register)

	t.Run("panic", func(t *testing.T) {
		res := do(t, srv, http.MethodGet, "/test/panic")
		checkProblem(t, res, http.StatusInternalServerError)
		if bytes.Contains(res.body, []byte("boom")) || bytes.Contains(res.body, []byte("hunter2")) {
			t.Errorf("clientProblem leaks the panic: %s", res.body)
		}
		if strings.Contains(logs.String(), "hunter2") {
			t.Errorf("log leaks a non-runtime panic value:\n%s", logs)
		}
		if !strings.Contains(logs.String(), "msg=panic route=/test/panic cause=string") {
			t.Errorf("panic not logged with its route and type:\n%s", logs)
		}
	})
	t.Run("runtime panic", func(t *testing.T) {
		res := do(t, srv, http.MethodGet, "/test/nil-map")
		checkProblem(t, res, http.StatusInternalServerError)
		if !strings.Contains(logs.String(), "assignment to entry in nil map") {
			t.Errorf("runtime error not logged:\n%s", logs)
		}
	})
	t.Run("unexpected error", func(t *testing.T) {
		res := do(t, srv, http.MethodGet, "/test/fail")
		p := checkProblem(t, res, http.StatusInternalServerError)
		if bytes.Contains(res.body, []byte("hunter2")) || len(p.Errors) != 0 {
			t.Errorf("clientProblem leaks the handler error: %s", res.body)
		}
	})
	t.Run("validation", func(t *testing.T) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/test/echo",
			strings.NewReader(`{"count": -987654}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		hres, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer hres.Body.Close()
		body, _ := io.ReadAll(hres.Body)
		p := checkProblem(t, response{hres.StatusCode, hres.Header, body}, http.StatusUnprocessableEntity)
		if len(p.Errors) == 0 || p.Errors[0]["location"] != "body.count" {
			t.Errorf("errors = %v, want one at body.count", p.Errors)
		}
		if _, ok := p.Errors[0]["value"]; ok {
			t.Errorf("clientProblem echoes the request value: %s", body)
		}
	})
}

func TestRequestLog(t *testing.T) {
	logs := &syncBuffer{}
	srv := newTestServer(t, Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	do(t, srv, http.MethodGet, "/healthz?name=Alice")
	do(t, srv, http.MethodGet, "/v1/subjects/alice@example.com")

	out := logs.String()
	for _, want := range []string{
		"msg=request method=GET route=/healthz status=200 duration=",
		"msg=request method=GET route=unmatched status=404 duration=",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	for _, leak := range []string{"Alice", "alice", "127.0.0.1"} {
		if strings.Contains(out, leak) {
			t.Errorf("logs contain %q:\n%s", leak, out)
		}
	}
}
