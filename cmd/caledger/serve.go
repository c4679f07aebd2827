package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/caledger/caledger/api"
	"github.com/caledger/caledger/crypto/authority"
	"github.com/caledger/caledger/crypto/revocation"
	"github.com/caledger/caledger/crypto/softtoken"
	"github.com/caledger/caledger/projections/directory"
	"github.com/caledger/caledger/projections/witness"
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
	store := fs.String("store", envOr(env, "CALEDGER_STORE", ""), "ledger `backend`: sqlite (embedded, in DIR/ledger) or kurrent (KURRENTDB_URL); default: what init chose; env CALEDGER_STORE")
	publicAddr := fs.String("public-addr", envOr(env, "CALEDGER_PUBLIC_ADDR", "127.0.0.1:8080"), "plain-HTTP `address` (host:port) publishing CA certificates, CRLs and OCSP, where the certificates' URLs point; empty: none; env CALEDGER_PUBLIC_ADDR")
	allow := fs.String("allow", envOr(env, "CALEDGER_ALLOW", ""), "comma-separated client `prefixes` (e.g. 10.0.0.0/8,127.0.0.1/32) allowed on protected operations; empty allows all; env CALEDGER_ALLOW")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to `file` (for sims/issuebench -serve-args)")
	setUsage(fs, "serve [--data DIR] [--addr ADDR] [--public-addr ADDR] [--store sqlite] [--allow PREFIXES]", `Serve the HTTPS API until SIGINT or SIGTERM. DIR must have been set up
with 'caledger init'.

The CA certificates, CRLs and OCSP are also published over plain HTTP on
--public-addr, as relying parties expect (the base URL given to init should
point there).

Clients trust DIR/ca/root.pem and authenticate with a client certificate
(mutual TLS) such as DIR/admin/admin.pem:
  curl --cacert DIR/ca/root.pem --cert DIR/admin/admin.pem \
       --key DIR/admin/admin-key.pem https://localhost:8443/v1/certificates`)
	if help, err := parseFlags(fs, args, stdout); help || err != nil {
		return err
	}
	var prefixes []netip.Prefix
	for _, p := range splitComma(*allow) {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			return &usageError{msg: fmt.Sprintf("serve: --allow: %q is not an address prefix such as 10.0.0.0/8", p)}
		}
		prefixes = append(prefixes, prefix)
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	return serve(ctx, logger, env, *store, *dataDir, listenAddrs{api: *addr, public: *publicAddr}, prefixes)
}

// envOr returns env(key), or def when it is empty.
func envOr(env func(string) string, key, def string) string {
	if v := env(key); v != "" {
		return v
	}
	return def
}

// listenAddrs are where serve listens: the HTTPS API, and the plain-HTTP
// publication listener (none when empty).
type listenAddrs struct {
	api, public string
}

// serve serves the API on addrs until ctx is done, then shuts down
// gracefully. It logs one line once listening: msg=listening with the bound
// address (addr), the data directory (data) and the certificate clients must
// trust (cacert).
func serve(ctx context.Context, logger *slog.Logger, env func(string) string, storeName, dataDir string, addrs listenAddrs, allow []netip.Prefix) (err error) {
	dataDir, err = filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	cfg, err := readConfig(dataDir)
	if err != nil {
		return err
	}
	// A mistake in the config stops the start before any backend opens.
	if err := api.CheckSoftTokenHeaders(cfg.SoftTokenHeaders); err != nil {
		return fmt.Errorf("%s: %w", configFile, err)
	}
	responderValidity, err := cfg.OCSP.delegated()
	if err != nil {
		return err
	}
	// The checkpoint key is a file of the data directory: a problem with it,
	// or with the witnesses' keys, stops the start at once too.
	signer, err := loadCheckpointSigner(dataDir)
	if err != nil {
		return err
	}
	var witnessOpts witness.Options
	if cfg.Witness != nil {
		if witnessOpts, err = cfg.Witness.options(signer, logger); err != nil {
			return err
		}
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dataDir, tlsCertFile), filepath.Join(dataDir, tlsKeyFile))
	if err != nil {
		return fmt.Errorf("load the server's TLS certificate: %w", err)
	}
	if cert.Leaf != nil && time.Now().After(cert.Leaf.NotAfter) {
		logger.Warn("the server's TLS certificate has expired", "path", filepath.Join(dataDir, tlsCertFile), "not_after", cert.Leaf.NotAfter)
	}

	if storeName != "" {
		cfg.Store = storeName
	}
	n, err := openNode(ctx, cfg, dataDir, logger, env)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := n.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close backends: %w", cerr))
		}
	}()
	if err := n.loadCAs(ctx, cfg, env); err != nil {
		return err
	}
	if err := n.openTree(ctx); err != nil {
		return err
	}
	var cosigner *witness.Cosigner
	if cfg.Witness != nil {
		witnessOpts.Keeper = keptFile{path: filepath.Join(dataDir, witnessedFile)}
		if cosigner, err = witness.New(n.tree, signer, witnessOpts); err != nil {
			return fmt.Errorf("%s: %w", configFile, err)
		}
		// The checkpoint kept from the last run is served from the first
		// request, if it checks.
		cosigner.Restore(ctx)
	}
	var publisher *directory.Publisher
	if cfg.Directory != nil {
		if publisher, err = n.openDirectory(cfg.Directory); err != nil {
			return err
		}
		defer publisher.Close()
	}

	// The views follow the ledger until the server stops.
	viewsCtx, stopViews := context.WithCancel(context.WithoutCancel(ctx))
	viewsDone := make(chan struct{})
	go func() {
		defer close(viewsDone)
		var wg sync.WaitGroup
		if n.shared != nil {
			wg.Go(func() { n.runSharedVault(viewsCtx) })
		}
		wg.Go(func() { n.runTree(viewsCtx) })
		wg.Go(func() { n.runErasureCompletion(viewsCtx) })
		if cosigner != nil {
			wg.Go(func() { n.runCosigner(viewsCtx, cosigner) })
		}
		if publisher != nil {
			wg.Go(func() { n.runDirectory(viewsCtx, publisher) })
		}
		n.runViews(viewsCtx)
		wg.Wait()
	}()
	defer func() {
		stopViews()
		<-viewsDone
	}()

	ocsp, err := revocation.NewResponder(n.cas.OCSPIssuers(), n.cas.Lookup, revocation.Options{})
	if err != nil {
		return err
	}

	metrics := prometheus.NewRegistry()
	metrics.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	metrics.MustRegister(n.collectors(publisher, cosigner)...)
	if responderValidity > 0 {
		metrics.MustRegister(responderExpiries(ocsp))
	}
	var directoryErasure api.DirectoryErasure
	if publisher != nil {
		directoryErasure = publishedUpTo(publisher)
	}

	clientCAs := n.cas.Pool()
	for _, c := range n.cas.Intermediates() {
		clientCAs.AddCert(c)
	}
	handler := api.New(api.Config{
		Version:          version(),
		Ready:            n,
		Metrics:          metrics,
		Logger:           logger,
		Commands:         n.handlers,
		Eraser:           n.handlers,
		Reporter:         n.views,
		ErasureState:     n.erasureState(),
		DirectoryErasure: directoryErasure,
		Views:            n.views,
		CAs:              n.cas,
		Head:             n.store.Head,
		OCSP:             ocsp,
		Ledger:           &ledgerLog{store: n.store, tree: n.tree, signer: signer, witnessed: cosigner, logger: logger},
		Auth:             n.cas,
		Allow:            allow,
		ProfileRole:      n.issuer.ProfileRole,
		SoftTokens: &softtoken.Service{Commands: n.handlers, Checker: n.issuer,
			Chain: func(caID string) ([]*x509.Certificate, error) { return api.CAChain(n.cas, caID) }},
		SoftTokenHeaders: cfg.SoftTokenHeaders,
	})
	srv := httpServer(handler, 60*time.Second, 64<<10, logger)
	srv.TLSConfig = &tls.Config{
		// TLS 1.3 is negotiated whenever the client offers it.
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// A client certificate is optional (the public operations need none)
		// but, when given, must chain to this CA: a foreign one fails the
		// handshake.
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  clientCAs,
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addrs.api)
	if err != nil {
		return err
	}
	defer ln.Close() // a no-op once the server has closed it
	servers := []*http.Server{srv}
	serveFuncs := []func() error{func() error { return srv.ServeTLS(ln, "", "") }}
	if addrs.public != "" {
		pln, err := lc.Listen(ctx, "tcp", addrs.public)
		if err != nil {
			return fmt.Errorf("publication listener: %w", err)
		}
		defer pln.Close()
		// Relying parties send small requests: shorter reads, smaller headers.
		pub := httpServer(api.Publication(handler, logger.With("listener", "publication"), metrics), 10*time.Second, 16<<10, logger)
		servers = append(servers, pub)
		serveFuncs = append(serveFuncs, func() error { return pub.Serve(pln) })
		logger.Info("publishing", "addr", pln.Addr().String())
	}
	logger.Info("listening", "addr", ln.Addr().String(), "data", dataDir, "cacert", filepath.Join(dataDir, rootPEM))
	if responderValidity > 0 {
		// Started once the listeners are bound, so that a start that fails
		// records no responders. Until the first delegate is recorded, and
		// whenever one runs out unrenewed, the CA key signs.
		respondersDone := make(chan struct{})
		go func() {
			defer close(respondersDone)
			n.supervise(viewsCtx, "delegated OCSP responders stopped; restarting", func(ctx context.Context) error {
				return n.cas.RunOCSPResponders(ctx, ocsp, authority.OCSPResponders{Validity: responderValidity,
					Failed: func(caID string, err error) {
						logger.Error("the CA's delegated OCSP responder was not renewed; retrying", "ca", caID, "err", err)
					}})
			}, nil)
		}()
		defer func() {
			stopViews()
			<-respondersDone
		}()
	}

	errc := make(chan error, len(servers))
	for _, f := range serveFuncs {
		go func() { errc <- f() }()
	}
	select {
	case err := <-errc:
		for _, s := range servers {
			_ = s.Close()
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	var errs []error
	for _, s := range servers {
		if err := s.Shutdown(shutdownCtx); err != nil {
			_ = s.Close()
			errs = append(errs, fmt.Errorf("shutdown: %w", err))
		}
	}
	for range servers {
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("serve: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// scrapeTimeout bounds the store reads of one metrics scrape, so a stuck store
// cannot hang /metrics.
const scrapeTimeout = 2 * time.Second

// collectors returns the node's metrics: the ledger head, each view's lag,
// the Merkle tree's size and lag, the directory publisher's lag and failures
// when dir is not nil, and the witnessed size and each witness's failures
// when cosigner is not nil.
func (n *node) collectors(dir *directory.Publisher, cosigner *witness.Cosigner) []prometheus.Collector {
	lag := prometheus.NewDesc("caledger_view_lag_seconds", "Age of the oldest ledger event a view has not applied yet (0 when caught up).", []string{"view"}, nil)
	behind := prometheus.NewDesc("caledger_view_lag_events", "Ledger events a view has not applied yet.", []string{"view"}, nil)
	head := prometheus.NewDesc("caledger_ledger_head_position", "Global position of the last event committed to the ledger.", nil, nil)
	treeSize := prometheus.NewDesc("caledger_ledger_tree_size", "Events the ledger's Merkle tree covers: the size of the checkpoints it signs.", nil, nil)
	treeBehind := prometheus.NewDesc("caledger_ledger_tree_lag_events", "Ledger events the Merkle tree does not cover yet. It grows without bound when the tree stopped (see the logs).", nil, nil)
	headDescs := []*prometheus.Desc{head, treeSize, treeBehind, lag, behind}
	var dirBehind, dirFailures *prometheus.Desc
	if dir != nil {
		dirBehind = prometheus.NewDesc("caledger_directory_lag_events", "Ledger events the LDAP directory publisher has not published yet (-1: the head could not be read).", nil, nil)
		dirFailures = prometheus.NewDesc("caledger_directory_failures_total", "Failures of the LDAP directory publisher: writes that failed (retried), values the directory refused, subjects whose publication could not be read, failed sweeps and checkpoint saves (see the logs).", nil, nil)
		headDescs = append(headDescs, dirBehind, dirFailures)
	}
	var witnessed []prometheus.Collector
	if cosigner != nil {
		size := prometheus.NewDesc("caledger_ledger_witnessed_size", "Events the latest checkpoint the witnesses cosigned covers (0: none yet).", nil, nil)
		at := prometheus.NewDesc("caledger_ledger_witnessed_timestamp_seconds", "When the witnesses cosigned the latest witnessed checkpoint, in Unix seconds by the node's clock (for one kept from before a restart: at most its newest cosignature's time; 0: none yet). A quiet ledger's checkpoint is cosigned again every witness refresh; the value falls behind when the witnesses do not answer, and stays while refresh is 0s.", nil, nil)
		failures := prometheus.NewDesc("caledger_witness_failures_total", "Rounds in which a witness did not cosign the ledger's checkpoint (see the logs).", []string{"witness"}, nil)
		witnessed = append(witnessed, collectorFunc{descs: []*prometheus.Desc{size, at, failures}, collect: func(ch chan<- prometheus.Metric) {
			cp, ok := cosigner.Latest()
			ch <- prometheus.MustNewConstMetric(size, prometheus.GaugeValue, float64(cp.Size))
			var when float64
			if ok {
				when = float64(cp.At.UnixNano()) / 1e9
			}
			ch <- prometheus.MustNewConstMetric(at, prometheus.GaugeValue, when)
			for name, f := range cosigner.Failures() {
				ch <- prometheus.MustNewConstMetric(failures, prometheus.CounterValue, float64(f), name)
			}
		}})
	}
	return append(witnessed,
		// One read of the head serves the head and the lags of the tree, the
		// views and the directory.
		collectorFunc{descs: headDescs, collect: func(ch chan<- prometheus.Metric) {
			ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
			defer cancel()
			// The positions first: read after the head, they could pass it.
			size := n.tree.Size()
			ch <- prometheus.MustNewConstMetric(treeSize, prometheus.GaugeValue, float64(size))
			var published uint64
			if dir != nil {
				published = dir.Applied()
				ch <- prometheus.MustNewConstMetric(dirFailures, prometheus.CounterValue, float64(dir.Failures()))
			}
			h, err := n.store.Head(ctx)
			if err != nil {
				ch <- prometheus.MustNewConstMetric(head, prometheus.GaugeValue, -1)
				if dir != nil {
					ch <- prometheus.MustNewConstMetric(dirBehind, prometheus.GaugeValue, -1)
				}
				return
			}
			ch <- prometheus.MustNewConstMetric(head, prometheus.GaugeValue, float64(h))
			ch <- prometheus.MustNewConstMetric(treeBehind, prometheus.GaugeValue, float64(h-min(h, size)))
			if dir != nil {
				ch <- prometheus.MustNewConstMetric(dirBehind, prometheus.GaugeValue, float64(h-min(h, published)))
			}
			lags, err := n.views.LagAt(ctx, n.store, h)
			if err != nil {
				return
			}
			for view, l := range lags {
				ch <- prometheus.MustNewConstMetric(lag, prometheus.GaugeValue, l.Age.Seconds(), view)
				ch <- prometheus.MustNewConstMetric(behind, prometheus.GaugeValue, float64(l.Events), view)
			}
		}},
	)
}

// collectorFunc is a prometheus.Collector computed at scrape time.
type collectorFunc struct {
	descs   []*prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// httpServer returns a server for h with the timeouts both listeners share, a
// read timeout and header limit of its own, and its errors in logger.
func httpServer(h http.Handler, readTimeout time.Duration, maxHeaderBytes int, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       readTimeout,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          serverErrorLog(logger),
	}
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

// responderExpiries is the metric of when each CA's delegated OCSP responder
// expires, as ocsp knows it.
func responderExpiries(ocsp *revocation.Responder) prometheus.Collector {
	desc := prometheus.NewDesc("caledger_ocsp_responder_expiry_timestamp_seconds",
		"When the CA's current delegated OCSP responder certificate expires, in Unix seconds. It moves forward at every renewal (half the validity); once it is less than an hour away the CA key signs the responses again.",
		[]string{"ca"}, nil)
	return collectorFunc{descs: []*prometheus.Desc{desc}, collect: func(ch chan<- prometheus.Metric) {
		for id, t := range ocsp.DelegateExpiries() {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(t.Unix()), id)
		}
	}}
}
