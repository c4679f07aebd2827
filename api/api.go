package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/projections"

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
// is always ready, exposes no metrics, logs nothing and offers only the
// health operations; each group of operations is served when its
// dependencies are set.
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

	// Commands, Views and CAs back the subject and certificate operations
	// (served when all three are set); CAs alone backs the public CA
	// operations.
	Commands Commands
	Views    Views
	CAs      CAs
	// Head returns the ledger's head position; mutating operations wait
	// (briefly) for the views to reach it, so a client reads its own writes.
	Head func(ctx context.Context) (uint64, error)

	// Reporter, when set, backs GET /v1/subjects/{id}/report (compliance).
	Reporter Reporter

	// Eraser and ErasureState, when both set, back POST and GET
	// /v1/subjects/{id}/erasure (compliance). ErasureState asks the key
	// vault how far an erasure has gone.
	Eraser       Eraser
	ErasureState ErasureState
	// DirectoryErasure, when set, adds to erasure receipts whether the LDAP
	// directory has caught up with the erasure.
	DirectoryErasure DirectoryErasure

	// ProfileRole returns the role certificates of a profile carry, "" for
	// none. Issuing, revoking or deleting a certificate of a role profile (a
	// client credential) needs the admin role, so that an officer cannot mint
	// or withdraw credentials. Nil means no profile carries a role.
	ProfileRole func(profile string) string

	// SoftTokens, when set (with Commands, Views and CAs), backs POST
	// /v1/soft-tokens (officer-proxy). SoftTokenHeaders maps subject
	// attributes to the request headers the proxy sets them in (an empty
	// name takes the attribute from no header); nil means
	// DefaultSoftTokenHeaders. Check it with CheckSoftTokenHeaders.
	SoftTokens       SoftTokens
	SoftTokenHeaders map[string]string

	// OCSP, when set, answers GET /ocsp/{request} and POST /ocsp.
	OCSP http.Handler

	// Ledger, when set, backs the auditor's /v1/ledger operations: the
	// events, signed checkpoints of the Merkle log over them, and proofs.
	Ledger Ledger

	// Auth turns verified client certificates into principals. Nil means no
	// client is ever authenticated: protected operations answer 401.
	Auth Authenticator

	// Allow, when not empty, limits the protected operations to clients
	// whose address is in one of these prefixes.
	Allow []netip.Prefix
}

// Commands runs the commands of the officer operations; domain.Handlers
// implements it.
type Commands interface {
	RegisterSubject(ctx context.Context, actor domain.Actor, attrs map[string]string) (domain.SubjectID, error)
	CorrectSubject(ctx context.Context, actor domain.Actor, id domain.SubjectID, attrs map[string]string, group string) error
	CorrectAndReissue(ctx context.Context, actor domain.Actor, id domain.SubjectID, attrs map[string]string, group string, allow func(profile string) error) ([]domain.Reissued, error)
	ReadSubject(ctx context.Context, actor domain.Actor, id domain.SubjectID, operation, reason string) (map[string]string, error)
	RecordAccess(ctx context.Context, actor domain.Actor, id domain.SubjectID, operation, reason string) error
	IssueCertificate(ctx context.Context, actor domain.Actor, req domain.IssueRequest) (domain.Issued, error)
	RevokeCertificate(ctx context.Context, actor domain.Actor, serial domain.Serial, reason domain.RevocationReason) error
	DeleteCertificate(ctx context.Context, actor domain.Actor, serial domain.Serial, retainUntilExpiry bool) error
	// CertificateState reads a certificate's public facts from the ledger,
	// for when the views have not caught up.
	CertificateState(ctx context.Context, serial domain.Serial) (domain.Certificate, error)
}

// Views are the read models the queries use; projections.Views implements it.
type Views interface {
	WaitFor(ctx context.Context, position uint64) error
	Certificate(ctx context.Context, serial domain.Serial) (CertificateRow, error)
	Certificates(ctx context.Context, f CertificateFilter) ([]CertificateRow, error)
	SearchSubjects(ctx context.Context, match map[string]string, limit int) ([]SubjectRow, error)
}

// The view rows, as the projections package defines them.
type (
	CertificateRow    = projections.CertificateRow
	CertificateFilter = projections.CertificateFilter
	SubjectRow        = projections.SubjectRow
)

// viewWait bounds how long a mutating operation waits for the views to show
// its effect. The views lag the ledger by well under this; if they fall
// further behind, the operation still succeeds (its events are durable).
const viewWait = time.Second

// mtlsScheme names the OpenAPI security scheme: a client certificate.
const mtlsScheme = "mtls"

// server holds what the operations share.
type server struct {
	cfg    Config
	logger *slog.Logger
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
	s := &server{cfg: cfg, logger: logger}

	router := chi.NewMux()
	// Logging wraps recovery so that a recovered panic is logged as a 500.
	metrics := requestMetricsIn(cfg.Metrics, logger)
	router.Use(logRequests(logger, metrics), recoverPanics(logger), allowlist(cfg.Allow), authenticate(cfg.Auth))
	router.NotFound(notFound)
	router.MethodNotAllowed(methodNotAllowed(router))

	hapi := humachi.New(router, humaConfig(version))
	hapi.UseMiddleware(requireCredential) // before any operation is registered
	registerHealth(hapi, cfg.Ready, logger)
	if cfg.Metrics != nil {
		registerMetrics(hapi, cfg.Metrics, logger)
	}
	if cfg.CAs != nil {
		s.registerCAs(hapi)
		if cfg.Commands != nil && cfg.Views != nil {
			s.registerSubjects(hapi)
			s.registerCertificates(hapi)
			if cfg.Eraser != nil && cfg.ErasureState != nil {
				s.registerErasure(hapi)
			}
			if cfg.Reporter != nil {
				s.registerReport(hapi)
			}
			if cfg.SoftTokens != nil {
				s.registerSoftTokens(hapi)
			}
		}
	}
	if cfg.Ledger != nil {
		s.registerLedger(hapi)
	}
	if cfg.OCSP != nil {
		router.Handle("/ocsp", cfg.OCSP)
		router.Handle("/ocsp/*", http.StripPrefix("/ocsp", cfg.OCSP))
	}
	registerDocs(router)
	return router, hapi
}

// problem turns err into the problem sent to the client.
func (s *server) problem(ctx context.Context, err error) error { return fromError(ctx, s.logger, err) }

// waitForViews waits, at most viewWait, until the views have applied position.
func (s *server) waitForViews(ctx context.Context, position uint64) {
	if position == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, viewWait)
	defer cancel()
	if err := s.cfg.Views.WaitFor(ctx, position); err != nil {
		s.logger.LogAttrs(ctx, slog.LevelWarn, "views lag", slog.Uint64("position", position))
	}
}

// waitForHead waits for the views to reach the ledger's head.
func (s *server) waitForHead(ctx context.Context) {
	if s.cfg.Head == nil {
		return
	}
	head, err := s.cfg.Head(ctx)
	if err == nil {
		s.waitForViews(ctx, head)
	}
}

// humaConfig starts from huma's defaults and removes what we do not want:
//   - huma's /docs page, which loads its JavaScript from a CDN (ours,
//     docs.go, works offline);
//   - the /schemas routes and the link transformer that adds "$schema" fields
//     and Link headers to every response body.
//
// The OpenAPI document stays at /openapi.json (plus /openapi.yaml and the
// 3.0 downgrades /openapi-3.0.json and /openapi-3.0.yaml that huma adds).
func humaConfig(version string) huma.Config {
	c := huma.DefaultConfig("caledger", version)
	c.Info.Description = "Event-sourced, audit-first certificate authority. Officers, auditors and compliance staff authenticate with " +
		"client certificates (mutual TLS) that carry their roles. Personal data never travels in a URL."
	c.DocsPath = ""
	c.SchemasPath = ""
	c.CreateHooks = nil
	c.Transformers = []huma.Transformer{problemTransformer}
	c.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		mtlsScheme: {Type: "mutualTLS", Description: "A client certificate issued by this CA with the officer, auditor, compliance, officer-proxy or admin role."},
	}
	return c
}
