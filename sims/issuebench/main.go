// Command issuebench measures REST issuance end to end: it builds and starts a
// real "caledger serve" (after "caledger init") in a temporary data directory,
// registers subjects, and has N concurrent keep-alive mutual-TLS clients post
// P-256 CSRs to POST /v1/certificates. Each issuance includes CSR checks,
// zlint, signing, the durable ledger appends and the wait for the views. The
// baseline is the raw x509.CreateCertificate rate (P-256, GOMAXPROCS
// goroutines) measured in the same run, before and after.
//
// An OCSP phase follows (ocsp.go): a quarter of the certificates issued are
// revoked, then the same number of clients POST OCSP requests to the plain-HTTP
// publication listener, with and without nonces, with net/http's client and
// with a lean one; the baseline is the CA key's raw signing rate.
//
// The load generator runs on the same cores as the server (TLS and JSON on both
// sides), so the ratio understates what the server alone would reach. Each row
// therefore also gives the server's own CPU time per request, read from
// /proc/<pid>/stat around the timed phase.
//
//	go run ./sims/issuebench [-clients 64] [-duration 10s] [-ocsp-duration 5s] [-bin bin/caledger]
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "issuebench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("issuebench", flag.ContinueOnError)
	clients := fs.Int("clients", 64, "concurrent keep-alive mTLS clients")
	duration := fs.Duration("duration", 10*time.Second, "length of the timed issuance phase")
	bin := fs.String("bin", "", "caledger binary (default: go build into a temporary directory)")
	serveArgs := fs.String("serve-args", "", "extra arguments for caledger serve, e.g. \"--cpuprofile /tmp/serve.prof\"")
	ocspDuration := fs.Duration("ocsp-duration", 5*time.Second, "length of each timed OCSP run after the issuance phase (0: none)")
	hsm := fs.Bool("hsm", false, "put the CA keys on a fresh SoftHSM2 token; the baseline is then the raw SoftHSM2 P-256 signing rate")
	responder := fs.String("ocsp-responder", "", "set the config's ocsp.responder (\"ca\" or \"delegated\"; empty: the default, ca)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "issuebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if *bin == "" {
		*bin = filepath.Join(dir, "caledger")
		build := exec.CommandContext(ctx, "go", "build", "-o", *bin, "./cmd/caledger")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build: %w", err)
		}
	}
	data := filepath.Join(dir, "data")
	initArgs := []string{"init", "--data", data}
	env := os.Environ()
	var token *softToken
	if *hsm {
		if token, err = newSoftToken(ctx, dir); err != nil {
			return err
		}
		initArgs = append(initArgs, "--key-provider", "pkcs11", "--pkcs11-library", token.library, "--pkcs11-token", token.label)
		env = append(env, "SOFTHSM2_CONF="+token.conf, "CALEDGER_PKCS11_PIN="+token.pin)
	}
	initCmd := exec.CommandContext(ctx, *bin, initArgs...)
	initCmd.Env = env
	if b, err := initCmd.CombinedOutput(); err != nil {
		return fmt.Errorf("init: %v\n%s", err, b)
	}
	if *responder != "" {
		if err := setOCSPResponder(data, *responder); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return err
	}
	public := ln.Addr().String()
	ln.Close()
	srv := exec.CommandContext(ctx, *bin, append([]string{"serve", "--data", data, "--addr", addr, "--public-addr", public}, strings.Fields(*serveArgs)...)...)
	srv.Stderr = io.Discard
	srv.Env = env
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() {
		_ = srv.Process.Signal(os.Interrupt)
		_ = srv.Wait()
	}()
	c, err := newClient(data, *clients)
	if err != nil {
		return err
	}
	base := "https://" + addr
	if err := waitReady(ctx, c, base); err != nil {
		return err
	}

	// Subjects and CSRs are made before the clock starts.
	const subjects = 256
	ids := make([]string, subjects)
	for i := range ids {
		if ids[i], err = register(ctx, c, base, i); err != nil {
			return err
		}
	}
	csrs := make([][]byte, 1024)
	for i := range csrs {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			return err
		}
		csrs[i] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}

	baseline, keys := rawCreateRate, "software P-256 CA key"
	what := "raw x509.CreateCertificate P-256"
	// OCSP responses are signed with the CA key: its raw signing rate.
	signBaseline, signWhat := rawSignRate, "raw ECDSA P-256 signatures"
	if token != nil {
		baseline, keys, what = token.signRate, "SoftHSM2 P-256 CA key", "raw SoftHSM2 P-256 signatures"
		signBaseline, signWhat = token.signRate, what
	}
	rawBefore, err := baseline(ctx, 2*time.Second)
	if err != nil {
		return err
	}
	scraper, err := newClient(data, 1)
	if err != nil {
		return err
	}
	lagCtx, stopLag := context.WithCancel(ctx)
	lagc := make(chan []time.Duration, 1)
	go func() { lagc <- sampleViewLag(lagCtx, scraper, base) }()
	cpu0, err0 := processCPU(srv.Process.Pid)
	rate, lat, chains, errs := issue(ctx, c, base, ids, csrs, *clients, *duration)
	cpu1, err1 := processCPU(srv.Process.Pid)
	rss, err2 := peakRSS(srv.Process.Pid)
	stopLag()
	lags := <-lagc
	if err := errors.Join(err0, err1, err2); err != nil {
		return err
	}
	rawAfter, err := baseline(ctx, 2*time.Second)
	if err != nil {
		return err
	}
	raw := (rawBefore + rawAfter) / 2

	fmt.Fprintf(out, "| measurement | result | baseline (same run) | ratio |\n|---|---|---|---|\n")
	fmt.Fprintf(out, "| REST issuance, %d mTLS clients, P-256 CSRs, tls-client profile, %s | %.0f certificates/s, p50 %s, p99 %s, %d errors; %s; server peak RSS %.0f MiB | %s, %d goroutines: %.0f/s (before %.0f, after %.0f) | %.2f× |\n",
		*clients, keys, rate, pct(lat, 50), pct(lat, 99), errs, serverCPU(cpu1-cpu0, len(lat)), rss, what, runtime.GOMAXPROCS(0), raw, rawBefore, rawAfter, rate/raw)
	slices.Sort(lags)
	fmt.Fprintf(out, "| view lag during issuance: caledger_view_lag_seconds from /metrics every 100 ms, the largest of the views | p50 %s, p99 %s, max %s over %d samples | | |\n",
		pct(lags, 50), pct(lags, 99), pct(lags, 100), len(lags))
	if errs > 0 {
		return fmt.Errorf("%d issuances failed", errs)
	}
	if *ocspDuration <= 0 {
		return nil
	}
	return ocspPhase(ctx, out, srv.Process.Pid, c, base, public, chains, *clients, *ocspDuration, signBaseline, signWhat, *responder == "delegated")
}

// sampleViewLag scrapes /metrics every 100 ms until ctx ends and returns, per
// scrape, the largest caledger_view_lag_seconds of the views.
func sampleViewLag(ctx context.Context, c *http.Client, base string) []time.Duration {
	var out []time.Duration
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return out
		case <-tick.C:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
		res, err := c.Do(req)
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		worst, found := 0.0, false
		for line := range strings.Lines(string(body)) {
			rest, ok := strings.CutPrefix(line, "caledger_view_lag_seconds{")
			if !ok {
				continue
			}
			_, v, _ := strings.Cut(rest, "} ")
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				worst, found = max(worst, f), true
			}
		}
		if found {
			out = append(out, time.Duration(worst*float64(time.Second)))
		}
	}
}

func newClient(data string, conns int) (*http.Client, error) {
	rootPEM, err := os.ReadFile(filepath.Join(data, "ca", "root.pem"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	cert, err := tls.LoadX509KeyPair(filepath.Join(data, "admin", "admin.pem"), filepath.Join(data, "admin", "admin-key.pem"))
	if err != nil {
		return nil, err
	}
	// HTTP/1.1 keep-alive, one connection per client, as the target states.
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}},
		MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

func waitReady(ctx context.Context, c *http.Client, base string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if res, err := c.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("the server did not become ready")
}

func register(ctx context.Context, c *http.Client, base string, i int) (string, error) {
	body, _ := json.Marshal(map[string]any{"attributes": map[string]string{"common_name": fmt.Sprintf("Bench Person %d", i), "country": "DE"}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/subjects", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var out struct{ ID string }
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("register: %d %v", res.StatusCode, err)
	}
	return out.ID, nil
}

// issue runs the timed issuance phase. It returns the first keptChains PEM
// chains issued, for the OCSP phase.
func issue(ctx context.Context, c *http.Client, base string, ids []string, csrs [][]byte, clients int, d time.Duration) (rate float64, lat []time.Duration, chains [][]byte, errs int64) {
	const keptChains = 1024
	var mu sync.Mutex
	newReq := func(i int) *http.Request {
		url := base + "/v1/certificates?subject_id=" + ids[i%len(ids)] + "&profile=tls-client"
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(csrs[i%len(csrs)]))
		req.Header.Set("Content-Type", "application/pkcs10")
		req.Header.Set("Accept", "application/pem-certificate-chain")
		return req
	}
	rate, lat, errs = closedLoop(clients, d, http.StatusCreated, clientDo(c, newReq), func(_ int, chain []byte) {
		mu.Lock()
		defer mu.Unlock()
		if len(chains) < keptChains {
			chains = append(chains, chain)
		}
	})
	return rate, lat, chains, errs
}

// closedLoop has clients workers send requests back to back for d: worker w
// sends request w, w+clients, ... with do(w, i), which returns the answer's
// status and body. A request succeeds when it answers status; got (called
// concurrently) then sees its index and body. It returns the successes per
// second, their latencies sorted, and the failures.
func closedLoop(clients int, d time.Duration, status int, do func(w, i int) (int, []byte, error), got func(i int, body []byte)) (rate float64, lat []time.Duration, failed int64) {
	var n, bad atomic.Int64
	var mu sync.Mutex
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			var mine []time.Duration
			for i := w; time.Now().Before(stop); i += clients {
				t0 := time.Now()
				code, body, err := do(w, i)
				if err != nil || code != status {
					bad.Add(1)
					continue
				}
				n.Add(1)
				mine = append(mine, time.Since(t0))
				got(i, body)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(lat)
	return float64(n.Load()) / time.Since(start).Seconds(), lat, bad.Load()
}

// clientDo sends newReq(i) with c: net/http's client, as an application would.
func clientDo(c *http.Client, newReq func(i int) *http.Request) func(w, i int) (int, []byte, error) {
	return func(_, i int) (int, []byte, error) {
		res, err := c.Do(newReq(i))
		if err != nil {
			return 0, nil, err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		return res.StatusCode, body, err
	}
}

// serverCPU describes the server's CPU time spent per request over n requests,
// and the rate it would reach alone on GOMAXPROCS cores: the load generator
// shares the cores, so this is what the server itself costs.
func serverCPU(cpu time.Duration, n int) string {
	if n == 0 {
		return "server CPU unknown"
	}
	per := cpu / time.Duration(n)
	return fmt.Sprintf("server CPU %s per request (%.0f/s if it had the %d cores to itself)",
		per.Round(time.Microsecond), float64(runtime.GOMAXPROCS(0))/per.Seconds(), runtime.GOMAXPROCS(0))
}

func pct(lat []time.Duration, p int) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	return lat[(len(lat)-1)*p/100].Round(100 * time.Microsecond)
}

// rawCreateRate is x509.CreateCertificate of a P-256 leaf per second over d,
// with GOMAXPROCS goroutines.
func rawCreateRate(_ context.Context, d time.Duration) (float64, error) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return rateOf(d, func() bool {
		serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "Bench Person", Country: []string{"DE"}},
			NotBefore: time.Now(), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		_, err := x509.CreateCertificate(rand.Reader, tmpl, ca, leafKey.Public(), caKey)
		return err == nil
	}), nil
}

// rateOf runs f on GOMAXPROCS goroutines for d and returns how many calls per
// second succeeded.
func rateOf(d time.Duration, f func() bool) float64 {
	var n atomic.Int64
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if f() {
					n.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

// setOCSPResponder sets ocsp.responder in the config of data.
func setOCSPResponder(data, responder string) error {
	path := filepath.Join(data, "caledger.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	cfg["ocsp"] = map[string]any{"responder": responder}
	if b, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
