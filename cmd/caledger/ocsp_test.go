package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDelegatedOCSP: with ocsp.responder "delegated", serve gives each CA a
// responder certificate recorded in the ledger, openssl ocsp verifies its
// responses against the root alone, the expiry shows on /metrics, and a
// restart records a new responder.
func TestDelegatedOCSP(t *testing.T) {
	data := initData(t)
	setConfig(t, data, "ocsp", map[string]any{"responder": "delegated", "responder_validity": "5h"})
	args := []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}
	s := startServe(t, args, nil)
	admin := mtlsClient(t, data, "https://"+s.addr, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem"))

	responders := func() []map[string]any {
		t.Helper()
		var events []struct {
			Type   string
			Stream string
			Public map[string]any
		}
		admin.json("GET", "/v1/ledger/events?from=1&limit=1000", nil, http.StatusOK, &events)
		var out []map[string]any
		for _, e := range events {
			if e.Type == "ca.ocsp-responder-issued" {
				e.Public["stream"] = e.Stream
				out = append(out, e.Public)
			}
		}
		return out
	}
	// Waits for n records, then checks that no more come: one per CA and start.
	waitFor := func(n int) []map[string]any {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			got := responders()
			if len(got) >= n {
				time.Sleep(300 * time.Millisecond)
				if got = responders(); len(got) != n {
					t.Fatalf("%d responder records, want %d: %v", len(got), n, got)
				}
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d responder records after 10 s, want %d", len(got), n)
			}
		}
	}
	first := waitFor(2)
	streams := map[string]bool{}
	for _, r := range first {
		streams[r["stream"].(string)] = true
	}
	if !streams["ca-root"] || !streams["ca-issuing"] {
		t.Fatalf("responder records in %v, want one per CA", streams)
	}

	// What a relying party does, over the plain-HTTP listener.
	work := t.TempDir()
	public := "http://" + s.public
	res, err := http.Get(public + "/v1/cas/issuing/certificate")
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := io.ReadAll(res.Body)
	res.Body.Close()
	issuing := filepath.Join(work, "issuing.pem")
	if err := os.WriteFile(issuing, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// The responder may be asked before the delegate is installed (it is
	// recorded first); a response carries it once it is.
	var got string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got = openssl(t, "ocsp", "-issuer", issuing, "-cert", filepath.Join(data, adminDir, "admin.pem"), "-url", public+"/ocsp",
			"-CAfile", filepath.Join(data, rootPEM), "-verify_other", issuing, "-resp_text")
		if strings.Contains(got, "OCSP No Check") || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{"Response verify OK", ": good", "OCSP Nonce", "OCSP Signing", "OCSP No Check", "OCSP responder"} {
		if !strings.Contains(got, want) {
			t.Errorf("openssl ocsp lacks %q:\n%s", want, got)
		}
	}

	for _, ca := range []string{"root", "issuing"} {
		want := `caledger_ocsp_responder_expiry_timestamp_seconds{ca="` + ca + `"}`
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if _, _, metrics := admin.do("GET", "/metrics", "", nil); strings.Contains(string(metrics), want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/metrics lacks the responder expiry of %s", ca)
			}
		}
	}

	if err := s.stop(t); err != nil {
		t.Fatal(err)
	}
	s = startServe(t, args, nil)
	admin = mtlsClient(t, data, "https://"+s.addr, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem"))
	waitFor(4)
}

// TestServeRefusesBadOCSPConfig: an unknown responder, a validity too short
// for renewal, or a validity without delegation stops serve.
func TestServeRefusesBadOCSPConfig(t *testing.T) {
	data := initData(t)
	for name, c := range map[string]struct {
		cfg  map[string]any
		want string
	}{
		"unknown responder":           {map[string]any{"responder": "hsm"}, `responder "hsm"`},
		"validity below 4h":           {map[string]any{"responder": "delegated", "responder_validity": "1h"}, "below 4h0m0s"},
		"not a duration":              {map[string]any{"responder": "delegated", "responder_validity": "two days"}, "responder_validity"},
		"validity without a delegate": {map[string]any{"responder_validity": "24h"}, "responder is not"},
	} {
		t.Run(name, func(t *testing.T) {
			setConfig(t, data, "ocsp", c.cfg)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			err := run(ctx, []string{"serve", "--data", data, "--addr", "127.0.0.1:0", "--public-addr", ""}, noEnv, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), configFile) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("serve: %v; want an error naming %s and %q", err, configFile, c.want)
			}
		})
	}
}
