package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/issuer"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// logSink collects a server's log lines and spots the startup lines.
type logSink struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	addrc  chan string // receives the API's bound address once
	public string      // the publication listener's address, logged before the API's
}

var (
	listeningLine  = regexp.MustCompile(`msg=listening addr=(\S+)`)
	publishingLine = regexp.MustCompile(`msg=publishing addr=(\S+)`)
)

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := publishingLine.FindSubmatch(p); m != nil {
		s.public = string(m[1])
	}
	if m := listeningLine.FindSubmatch(p); m != nil {
		select {
		case s.addrc <- string(m[1]):
		default:
		}
	}
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// server is a running "caledger serve".
type server struct {
	addr   string
	public string // the plain-HTTP publication listener
	logs   *logSink
	cancel context.CancelFunc
	done   chan error
}

// startServe calls run with args and env and waits until it listens. The
// bound addresses are read from the startup log lines. Unless args choose one,
// the publication listener gets a free port.
func startServe(t testing.TB, args []string, env map[string]string) *server {
	t.Helper()
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--public-addr") }) {
		args = append(slices.Clone(args), "--public-addr", "127.0.0.1:0")
	}
	ctx, cancel := context.WithCancel(t.Context())
	s := &server{logs: &logSink{addrc: make(chan string, 1)}, cancel: cancel, done: make(chan error, 1)}
	go func() {
		s.done <- run(ctx, args, func(k string) string { return env[k] }, io.Discard, s.logs)
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	select {
	case s.addr = <-s.logs.addrc:
		s.logs.mu.Lock()
		s.public = s.logs.public
		s.logs.mu.Unlock()
	case err := <-s.done:
		s.done <- err // for the cleanup
		t.Fatalf("run returned before listening: %v\nlogs:\n%s", err, s.logs)
	case <-time.After(10 * time.Second):
		t.Fatalf("no startup line after 10s; logs:\n%s", s.logs)
	}
	return s
}

// stop cancels the server's context and returns run's result.
func (s *server) stop(t testing.TB) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("run did not return 20s after cancel; logs:\n%s", s.logs)
		return nil
	}
}

// client returns an HTTPS client trusting only certPath, optionally with
// the TLS versions and server name it offers.
func client(t testing.TB, certPath string, configure func(*tls.Config)) *http.Client {
	t.Helper()
	pemBytes, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s holds no certificate", certPath)
	}
	cfg := &tls.Config{RootCAs: roots}
	if configure != nil {
		configure(cfg)
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}

// initData runs "caledger init" in a new data directory and returns it.
func initData(t testing.TB, extra ...string) string {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	var out bytes.Buffer
	if err := run(t.Context(), append([]string{"init", "--data", data}, extra...), noEnv, &out, io.Discard); err != nil {
		t.Fatalf("init: %v", err)
	}
	return data
}

func TestServe(t *testing.T) {
	data := initData(t)
	certPath := filepath.Join(data, rootPEM)

	s := startServe(t, []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, nil)
	base := "https://" + s.addr

	checkMode(t, data, 0o700)
	checkMode(t, filepath.Join(data, "tls"), 0o700)
	checkMode(t, certPath, 0o644)
	checkMode(t, filepath.Join(data, tlsKeyFile), 0o600)
	checkMode(t, filepath.Join(data, ledgerDir, "ledger.db"), 0o600)
	checkMode(t, filepath.Join(data, ledgerDir, "ledger-0.log"), 0o600)
	checkMode(t, filepath.Join(data, ledgerDir, "ledger-1.log"), 0o600)
	checkMode(t, filepath.Join(data, kekFile), 0o600)
	checkMode(t, filepath.Join(data, vaultFile), 0o600)
	checkMode(t, filepath.Join(data, adminDir, "admin-key.pem"), 0o600)
	checkMode(t, filepath.Join(data, adminDir, "admin.p12"), 0o600)
	checkMode(t, filepath.Join(data, configFile), 0o600)

	logs := s.logs.String()
	for _, want := range []string{"data=" + data, "cacert=" + certPath} {
		if !strings.Contains(logs, want) {
			t.Errorf("startup line lacks %q; logs:\n%s", want, logs)
		}
	}

	t.Run("the admin PKCS#12 opens with its password", func(t *testing.T) {
		p12 := filepath.Join(data, adminDir, "admin.p12")
		b, err := os.ReadFile(p12)
		if err != nil {
			t.Fatal(err)
		}
		pw, _ := os.ReadFile(p12 + ".password")
		key, cert, chain, err := pkcs12.DecodeChain(b, strings.TrimSpace(string(pw)))
		if err != nil || key == nil || len(chain) != 1 || len(issuer.RolesOf(cert)) != 1 || issuer.RolesOf(cert)[0] != "admin" {
			t.Fatalf("admin.p12: %v (chain %d)", err, len(chain))
		}
		// openssl reads it too (PKCS#12 "Modern": AES-256, PBKDF2).
		out, err := exec.CommandContext(t.Context(), "openssl", "pkcs12", "-in", p12, "-passin", "file:"+p12+".password", "-noout", "-info").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "AES-256") {
			t.Fatalf("openssl pkcs12: %v\n%s", err, out)
		}
	})

	t.Run("healthz over IP SAN", func(t *testing.T) {
		res, body := get(t, client(t, certPath, nil), base+"/healthz")
		if res.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
			t.Fatalf("got %d %s", res.StatusCode, body)
		}
		if res.TLS.Version != tls.VersionTLS13 {
			t.Errorf("TLS version %x, want TLS 1.3", res.TLS.Version)
		}
		if res.ProtoMajor != 2 {
			t.Errorf("protocol %s, want HTTP/2", res.Proto)
		}
	})
	t.Run("openapi over DNS SAN", func(t *testing.T) {
		c := client(t, certPath, func(c *tls.Config) { c.ServerName = "localhost" })
		res, body := get(t, c, base+"/openapi.json")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("got %d %s", res.StatusCode, body)
		}
		var doc struct {
			OpenAPI string                    `json:"openapi"`
			Paths   map[string]map[string]any `json:"paths"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(doc.OpenAPI, "3.1") || doc.Paths["/healthz"] == nil || doc.Paths["/v1/certificates"] == nil {
			t.Errorf("openapi %q with paths %v, want 3.1 with /healthz and /v1/certificates", doc.OpenAPI, doc.Paths)
		}
	})
	t.Run("readyz and metrics", func(t *testing.T) {
		c := client(t, certPath, nil)
		if res, body := get(t, c, base+"/readyz"); res.StatusCode != http.StatusOK {
			t.Errorf("readyz: %d %s", res.StatusCode, body)
		}
		res, body := get(t, c, base+"/metrics")
		if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("go_goroutines")) {
			t.Errorf("metrics: %d, go collector missing:\n%s", res.StatusCode, body)
		}
		for _, want := range []string{"caledger_ledger_head_position ", `caledger_view_lag_seconds{view="certificates"}`,
			`caledger_http_requests_total{code="200",method="GET",route="/readyz"} `} {
			if !bytes.Contains(body, []byte(want)) {
				t.Errorf("metrics lack %s:\n%s", want, body)
			}
		}
	})
	t.Run("the publication listener serves only what relying parties fetch", func(t *testing.T) {
		public := "http://" + s.public
		plain := &http.Client{Timeout: 10 * time.Second}
		for path, want := range map[string]string{
			"/healthz":                      "",
			"/v1/cas/issuing/certificate":   "application/x-pem-file",
			"/v1/cas/root/certificate":      "application/x-pem-file",
			"/v1/cas/issuing/crl":           "application/pkix-crl",
			"/v1/cas/nonexistent/crl":       "404",
			"/v1/cas":                       "404",
			"/v1/certificates":              "404",
			"/v1/subjects/x":                "404",
			"/metrics":                      "404",
			"/readyz":                       "404",
			"/docs":                         "404",
			"/openapi.json":                 "404",
			"/v1/cas/issuing/crl/../../cas": "404",
		} {
			res, body := get(t, plain, public+path)
			switch {
			case want == "404":
				if res.StatusCode != http.StatusNotFound || res.Header.Get("Content-Type") != "application/problem+json" {
					t.Errorf("GET %s: %d %s, want a 404 problem", path, res.StatusCode, res.Header.Get("Content-Type"))
				}
			case res.StatusCode != http.StatusOK:
				t.Errorf("GET %s: %d %s", path, res.StatusCode, body)
			case want != "" && !strings.HasPrefix(res.Header.Get("Content-Type"), want):
				t.Errorf("GET %s: Content-Type %s, want %s", path, res.Header.Get("Content-Type"), want)
			}
		}
	})
	t.Run("a second server on the same data is refused", func(t *testing.T) {
		err := run(t.Context(), []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("second serve: %v", err)
		}
	})
	t.Run("unknown store", func(t *testing.T) {
		err := run(t.Context(), []string{"serve", "--data", data, "--store", "oracle"}, func(string) string { return "" }, io.Discard, io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Fatalf("unknown store: %v, want a usage error", err)
		}
	})
	t.Run("TLS 1.2 accepted", func(t *testing.T) {
		c := client(t, certPath, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 })
		if res, _ := get(t, c, base+"/healthz"); res.TLS.Version != tls.VersionTLS12 {
			t.Errorf("TLS version %x, want TLS 1.2", res.TLS.Version)
		}
	})
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		c := client(t, certPath, func(c *tls.Config) {
			c.MinVersion = tls.VersionTLS10
			c.MaxVersion = tls.VersionTLS11
		})
		if _, err := c.Get(base + "/healthz"); err == nil {
			t.Error("TLS 1.1 handshake succeeded")
		}
	})
	t.Run("other names refused", func(t *testing.T) {
		c := client(t, certPath, func(c *tls.Config) { c.ServerName = "ca.example.com" })
		if _, err := c.Get(base + "/healthz"); err == nil {
			t.Error("certificate accepted for ca.example.com")
		}
	})
	t.Run("client address not logged", func(t *testing.T) {
		conn, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		clientAddr := conn.LocalAddr().String()
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.0\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(conn).ReadString('\n')
		if !strings.Contains(line, "400") {
			t.Errorf("plain HTTP got %q, want a 400", line)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(s.logs.String(), "TLS handshake error") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		logs := s.logs.String()
		if !strings.Contains(logs, "TLS handshake error from [redacted]") {
			t.Errorf("handshake error not logged redacted; logs:\n%s", logs)
		}
		if strings.Contains(logs, clientAddr) {
			t.Errorf("logs contain the client address %s:\n%s", clientAddr, logs)
		}
	})

	if err := s.stop(t); err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(s.logs.String(), "msg=stopped") {
		t.Errorf("no shutdown line; logs:\n%s", s.logs)
	}

	// Second start, configured through the environment, with the same CA.
	s2 := startServe(t, []string{"serve"}, map[string]string{"CALEDGER_DATA": data, "CALEDGER_ADDR": "127.0.0.1:0"})
	if res, body := get(t, client(t, certPath, nil), "https://"+s2.addr+"/healthz"); res.StatusCode != http.StatusOK {
		t.Errorf("second start: %d %s", res.StatusCode, body)
	}
	if err := s2.stop(t); err != nil {
		t.Fatalf("second run: %v", err)
	}
}

func TestInitTwice(t *testing.T) {
	data := initData(t)
	err := run(t.Context(), []string{"init", "--data", data}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "already initialised") {
		t.Fatalf("second init: %v", err)
	}
	if err := run(t.Context(), []string{"init", "--data", data, "--if-needed"}, noEnv, io.Discard, io.Discard); err != nil {
		t.Fatalf("init --if-needed: %v", err)
	}
}

func TestServeNotInitialised(t *testing.T) {
	err := run(t.Context(), []string{"serve", "--data", t.TempDir(), "--addr", "127.0.0.1:0"}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "caledger init") {
		t.Fatalf("run = %v, want a hint to run init", err)
	}
}

func TestServeAddressInUse(t *testing.T) {
	data := initData(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = run(t.Context(), []string{"serve", "--data", data, "--addr", ln.Addr().String()}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("run = %v, want address already in use", err)
	}
}

func TestServeBadCertificate(t *testing.T) {
	data := initData(t)
	// A damaged certificate is reported, not silently replaced.
	if err := os.WriteFile(filepath.Join(data, tlsCertFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(t.Context(), []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "TLS certificate") {
		t.Fatalf("run = %v, want a TLS load error", err)
	}
}

func TestInitChecksBeforeGenerating(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	var manyNames string
	for i := range 60 {
		manyNames += fmt.Sprintf("h%d.example,10.0.0.%d,", i, i)
	}
	// Each is refused by the issuer's own checks (a trailing dot, a U-label,
	// too many names), so init must refuse it before it generates anything.
	for _, c := range []struct{ names, want string }{
		{"bad name!,localhost", `"bad name!"`},
		{"localhost.", `"localhost."`},
		{"bücher.example", `"bücher.example"`},
		{"*.example", `"*.example"`},
		{manyNames, "more than 100 alternative names"},
		{" , ", "empty"},
	} {
		err := run(t.Context(), []string{"init", "--data", data, "--server-names", c.names}, noEnv, io.Discard, io.Discard)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("init with server names %.40q: %v", c.names, err)
		}
		if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a refused init left %s behind (%v)", data, err)
		}
	}
	if err := run(t.Context(), []string{"init", "--data", data, "--if-needed"}, noEnv, io.Discard, io.Discard); err != nil {
		t.Fatalf("init after a refused one: %v", err)
	}
}

func TestInitAfterPartialInit(t *testing.T) {
	data := initData(t)
	// An init that recorded its CAs but died before writing its configuration.
	if err := os.Remove(filepath.Join(data, configFile)); err != nil {
		t.Fatal(err)
	}
	err := run(t.Context(), []string{"init", "--data", data, "--if-needed"}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "did not finish") || !strings.Contains(err.Error(), "remove the directory") {
		t.Fatalf("init over a partial init: %v", err)
	}
	keys, _ := os.ReadDir(filepath.Join(data, caKeysDir))
	if len(keys) != 2 {
		t.Errorf("%d CA key files after the refused init, want the first init's 2", len(keys))
	}
}

func TestOfficerAddNeverOverwrites(t *testing.T) {
	data := initData(t)
	var outs []string
	for range 2 {
		var out bytes.Buffer
		if err := run(t.Context(), []string{"officer", "add", "--data", data, "--role", "officer", "--name", "Same Role"}, noEnv, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out.String())
	}
	dirs, _ := os.ReadDir(filepath.Join(data, "officers"))
	if len(dirs) != 2 {
		t.Fatalf("two credentials in %d directories:\n%s", len(dirs), outs)
	}
	for _, d := range dirs {
		if !strings.Contains(outs[0]+outs[1], d.Name()) {
			t.Errorf("directory %s is not named by a printed serial:\n%s", d.Name(), outs)
		}
		checkMode(t, filepath.Join(data, "officers", d.Name(), "officer-key.pem"), 0o600)
	}
	out := filepath.Join(t.TempDir(), "cred")
	if err := run(t.Context(), []string{"officer", "add", "--data", data, "--role", "auditor", "--name", "A", "--out", out}, noEnv, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	key, _ := os.ReadFile(filepath.Join(out, "auditor-key.pem"))
	err := run(t.Context(), []string{"officer", "add", "--data", data, "--role", "auditor", "--name", "B", "--out", out}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "never written over") {
		t.Fatalf("second officer add into the same directory: %v", err)
	}
	if again, _ := os.ReadFile(filepath.Join(out, "auditor-key.pem")); !bytes.Equal(key, again) {
		t.Error("the first credential's key was replaced")
	}
}
