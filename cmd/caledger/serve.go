package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/caledger/caledger/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// shutdownTimeout bounds how long in-flight requests may run after a
// shutdown signal.
const shutdownTimeout = 15 * time.Second

func runServe(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	dataDir := fs.String("data", envOr(env, "CALEDGER_DATA", "./data"), "data `directory`; env CALEDGER_DATA")
	addr := fs.String("addr", envOr(env, "CALEDGER_ADDR", "127.0.0.1:8443"), "listen `address` (host:port); env CALEDGER_ADDR")
	store := fs.String("store", envOr(env, "CALEDGER_STORE", "sqlite"), "ledger `backend`: sqlite (embedded, in DIR/ledger); env CALEDGER_STORE")
	setUsage(fs, "serve [--data DIR] [--addr ADDR] [--store sqlite]", `Serve the HTTPS API until SIGINT or SIGTERM.

The ledger, the key vault and the local key-encryption key live in DIR
(DIR/ledger, DIR/keys); they are created on first start.

On first start, a TLS key and a self-signed certificate for localhost,
127.0.0.1 and ::1 are written to DIR/tls/; clients trust DIR/tls/server.pem:
  curl --cacert DIR/tls/server.pem https://localhost:8443/healthz`)
	if help, err := parseFlags(fs, args, stdout); help || err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	return serve(ctx, logger, *store, *dataDir, *addr)
}

// envOr returns env(key), or def when it is empty.
func envOr(env func(string) string, key, def string) string {
	if v := env(key); v != "" {
		return v
	}
	return def
}

// serve serves the API on addr until ctx is done, then shuts down
// gracefully. It logs one line once listening: msg=listening with the bound
// address (addr), the data directory (data) and the certificate clients must
// trust (cacert).
func serve(ctx context.Context, logger *slog.Logger, storeName, dataDir, addr string) (err error) {
	dataDir, err = filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	sc, err := loadOrCreateServerCert(filepath.Join(dataDir, "tls"), time.Now())
	if err != nil {
		return err
	}
	if sc.cert.Leaf != nil && time.Now().After(sc.cert.Leaf.NotAfter) {
		logger.Warn("TLS certificate has expired; delete it to generate a new one",
			"cacert", sc.certPath, "not_after", sc.cert.Leaf.NotAfter)
	}

	b, closeBackends, err := openBackends(ctx, storeName, dataDir, logger)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := closeBackends(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close backends: %w", cerr))
		}
	}()

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	metrics.MustRegister(b.collectors()...)

	srv := &http.Server{
		Handler: api.New(api.Config{
			Version: version(),
			Ready:   b,
			Metrics: metrics,
			Logger:  logger,
		}),
		TLSConfig: &tls.Config{
			// TLS 1.3 is negotiated whenever the client offers it.
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{sc.cert},
		},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          serverErrorLog(logger),
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	tlsState := "reused"
	if sc.created {
		tlsState = "created"
	}
	logger.Info("listening", "addr", ln.Addr().String(), "data", dataDir, "cacert", sc.certPath, "tls", tlsState)

	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// serverErrorLog returns the logger for http.Server's own errors. net/http
// puts client addresses in them ("TLS handshake error from 192.0.2.1:5555"),
// and an IP address is personal data, so addresses are redacted.
func serverErrorLog(logger *slog.Logger) *log.Logger {
	w := slog.NewLogLogger(logger.Handler(), slog.LevelWarn).Writer()
	return log.New(&addrRedactor{
		w: w,
		// IPv4 with an optional port; bracketed IPv6 (with a zone) and port,
		// as net.JoinHostPort writes it.
		re: regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b|\[[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(%[\w.-]+)?\](:\d+)?`),
	}, "", 0)
}

// addrRedactor replaces IP addresses in what it writes.
type addrRedactor struct {
	w  io.Writer
	re *regexp.Regexp
}

func (r *addrRedactor) Write(p []byte) (int, error) {
	if _, err := r.w.Write(r.re.ReplaceAll(p, []byte("[redacted]"))); err != nil {
		return 0, err
	}
	return len(p), nil
}
