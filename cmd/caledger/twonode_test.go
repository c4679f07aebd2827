package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caledger/caledger/eventstore/kurrent/kurrenttest"
)

// copyDir copies the files of src to dst except the paths skip matches: a
// second node gets the first one's configuration and keys, not its views.
func copyDir(t *testing.T, src, dst string, skip func(rel string) bool) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), info.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTwoNodes runs two caledger servers on one ledger: the KurrentDB
// protocol test double, with the key vault shared through it. Each node has
// its own views.
func TestTwoNodes(t *testing.T) {
	kdb, err := kurrenttest.Start(kurrenttest.Options{Users: map[string]string{"caledger": "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kdb.Close() })
	env := map[string]string{"KURRENTDB_URL": kdb.ConnectionString("caledger", "s3cret")}
	getenv := func(k string) string { return env[k] }

	dataA := filepath.Join(t.TempDir(), "a")
	if err := run(t.Context(), []string{"init", "--data", dataA, "--store", "kurrent"}, getenv, io.Discard, io.Discard); err != nil {
		t.Fatalf("init: %v", err)
	}
	cfg, _ := os.ReadFile(filepath.Join(dataA, configFile))
	if bytes.Contains(cfg, []byte("s3cret")) {
		t.Fatal("the ledger's password was written to the configuration")
	}
	if _, err := os.Stat(filepath.Join(dataA, vaultFile)); err == nil {
		t.Error("a node on the shared ledger made a local vault")
	}
	dataB := filepath.Join(t.TempDir(), "b")
	copyDir(t, dataA, dataB, func(rel string) bool { return rel == "views" })

	a := startServe(t, []string{"serve", "--data", dataA, "--addr", "127.0.0.1:0"}, env)
	b := startServe(t, []string{"serve", "--data", dataB, "--addr", "127.0.0.1:0"}, env)
	cred := func(data string) (string, string) {
		return filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem")
	}
	certA, keyA := cred(dataA)
	onA := mtlsClient(t, dataA, "https://"+a.addr, certA, keyA)
	onB := mtlsClient(t, dataA, "https://"+b.addr, certA, keyA)

	var subject struct{ ID string }
	onA.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"common_name": "Two Node Person", "email": "two.node@example.org"}}, http.StatusCreated, &subject)
	newCSR := func() []byte {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	issueFor := func(c *apiClient, id string) string {
		status, h, body := c.do("POST", "/v1/certificates?subject_id="+id+"&profile=tls-client", "application/pkcs10", newCSR())
		if status != http.StatusCreated {
			c.t.Errorf("issue: %d %s", status, body)
			return ""
		}
		return strings.TrimPrefix(h.Get("Location"), "/v1/certificates/")
	}
	issue := func(c *apiClient) string { return issueFor(c, subject.ID) }

	t.Run("an issuance on A is in B's views within 200 ms", func(t *testing.T) {
		serial := issue(onA.with(t))
		issued := time.Now()
		for {
			status, _, _ := onB.with(t).do("GET", "/v1/certificates/"+serial, "", nil)
			if status == http.StatusOK {
				break
			}
			if time.Since(issued) > 200*time.Millisecond {
				t.Fatalf("B still answers %d %s after the issuance on A", status, time.Since(issued))
			}
			time.Sleep(5 * time.Millisecond)
		}
	})

	t.Run("conflicting revocations: one wins, the other gets 409", func(t *testing.T) {
		serial := issue(onA.with(t))
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		for i, c := range []*apiClient{onA.with(t), onB.with(t)} {
			wg.Go(func() {
				statuses[i], _, _ = c.do("POST", "/v1/certificates/"+serial+"/revocation", "application/json", []byte(`{"reason":"keyCompromise"}`))
			})
		}
		wg.Wait()
		if !(statuses[0] == http.StatusOK && statuses[1] == http.StatusConflict || statuses[0] == http.StatusConflict && statuses[1] == http.StatusOK) {
			t.Fatalf("revocations on A and B answered %v, want one 200 and one 409", statuses)
		}
	})

	t.Run("no serial is issued twice", func(t *testing.T) {
		var mu sync.Mutex
		seen := map[string]int{}
		var wg sync.WaitGroup
		for _, c := range []*apiClient{onA.with(t), onB.with(t)} {
			for range 4 {
				// A subject per client: issuances for one subject are serialised
				// on its stream, which is not what this measures.
				var own struct{ ID string }
				c.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"common_name": "Serial Person"}}, http.StatusCreated, &own)
				wg.Go(func() {
					for range 5 {
						if s := issueFor(c, own.ID); s != "" {
							mu.Lock()
							seen[s]++
							mu.Unlock()
						}
					}
				})
			}
		}
		wg.Wait()
		if len(seen) != 40 {
			t.Errorf("%d distinct serials from 40 issuances", len(seen))
		}
		for s, n := range seen {
			if n != 1 {
				t.Errorf("serial %s issued %d times", s, n)
			}
		}
	})

	t.Run("an erasure on A locks B out of the data", func(t *testing.T) {
		var got struct{ Attributes map[string]string }
		onB.with(t).json("GET", "/v1/subjects/"+subject.ID, nil, http.StatusOK, &got, "Caledger-Reason", "before erasure")
		if got.Attributes["email"] != "two.node@example.org" {
			t.Fatalf("B reads %+v", got)
		}
		// Erasures on both nodes at once: one records it, the other gets 409.
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		for i, c := range []*apiClient{onA.with(t), onB.with(t)} {
			wg.Go(func() {
				statuses[i], _, _ = c.do("POST", "/v1/subjects/"+subject.ID+"/erasure", "application/json", []byte(`{"basis":"gdpr-art17"}`))
			})
		}
		wg.Wait()
		if !(statuses[0] == http.StatusOK && statuses[1] == http.StatusConflict || statuses[0] == http.StatusConflict && statuses[1] == http.StatusOK) {
			t.Fatalf("erasures on A and B answered %v, want one 200 and one 409", statuses)
		}
		// The shared vault's erasure is recorded, not complete: wrapped keys
		// stay in the ledger until their KEK epoch is destroyed.
		var state struct {
			Status        string   `json:"status"`
			PendingEpochs []uint32 `json:"pending_epochs"`
		}
		onB.with(t).json("GET", "/v1/subjects/"+subject.ID+"/erasure", nil, http.StatusOK, &state)
		if state.Status != "recorded" || len(state.PendingEpochs) != 1 || state.PendingEpochs[0] != 1 {
			t.Errorf("erasure state on B: %+v", state)
		}
		var p problemBody
		onB.with(t).json("GET", "/v1/subjects/"+subject.ID, nil, http.StatusGone, &p, "Caledger-Reason", "after erasure")
		status, _, body := onB.with(t).do("POST", "/v1/certificates?subject_id="+subject.ID+"&profile=tls-client", "application/pkcs10", newCSR())
		if status != http.StatusGone {
			t.Errorf("B issued for an erased subject: %d %s", status, body)
		}
	})

	for _, s := range []*server{a, b} {
		if err := s.stop(t); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s.logs.String(), "two.node@example.org") || strings.Contains(s.logs.String(), "s3cret") {
			t.Error("personal data or the ledger password in the logs")
		}
	}
}

// TestServeRealCluster is the smoke test of "caledger serve --store kurrent"
// against a real KurrentDB cluster. It runs only when KURRENTDB_URL names one
// (a kurrentdb:// connection string of a KurrentDB 26.1+ cluster that accepts
// 16 MiB appends; see docs/distributed.md): no cluster can run on the machines
// that run make test, which exercise the same path over kurrenttest in
// TestTwoNodes.
func TestServeRealCluster(t *testing.T) {
	url := os.Getenv("KURRENTDB_URL")
	if url == "" {
		t.Skip("KURRENTDB_URL is not set: set it to a KurrentDB cluster's connection string to run this smoke test")
	}
	env := map[string]string{"KURRENTDB_URL": url}
	data := filepath.Join(t.TempDir(), "data")
	if err := run(t.Context(), []string{"init", "--data", data, "--store", "kurrent"}, func(k string) string { return env[k] }, io.Discard, io.Discard); err != nil {
		t.Fatalf("init: %v", err)
	}
	s := startServe(t, []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, env)
	c := mtlsClient(t, data, "https://"+s.addr, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem"))
	var subject struct{ ID string }
	c.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"common_name": "Smoke Test"}}, http.StatusCreated, &subject)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	status, h, body := c.do("POST", "/v1/certificates?subject_id="+subject.ID+"&profile=tls-client", "application/pkcs10",
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if status != http.StatusCreated {
		t.Fatalf("issue: %d %s", status, body)
	}
	serial := strings.TrimPrefix(h.Get("Location"), "/v1/certificates/")
	c.json("POST", "/v1/certificates/"+serial+"/revocation", map[string]string{"reason": "keyCompromise"}, http.StatusOK, nil)
	if status, _, _ := c.do("GET", "/v1/cas/issuing/crl", "", nil); status != http.StatusOK {
		t.Fatalf("crl: %d", status)
	}
	c.json("POST", "/v1/subjects/"+subject.ID+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusOK, nil)
	if err := s.stop(t); err != nil {
		t.Fatal(err)
	}
}
