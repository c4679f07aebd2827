package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkIssue is REST issuance in process, for profiling:
//
//	go test -run '^$' -bench Issue -cpuprofile cpu.out ./cmd/caledger
//
// sims/issuebench measures the same path against the built binary.
func BenchmarkIssue(b *testing.B) {
	c, base := benchServer(b)
	// One subject per client: issuances for one subject serialise on its stream.
	ids := registerBenchSubjects(b, c, base, 64)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	var next atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		url := base + "/v1/certificates?subject_id=" + ids[int(next.Add(1))%len(ids)] + "&profile=tls-client"
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(csr))
			req.Header.Set("Content-Type", "application/pkcs10")
			res, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusCreated {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
}

// BenchmarkSearch100 is a subject search that returns 100 subjects, each of
// whose access is recorded durably before the answer:
//
//	go test -run '^$' -bench Search100 -benchtime 30x ./cmd/caledger
func BenchmarkSearch100(b *testing.B) {
	c, base := benchServer(b)
	registerBenchSubjects(b, c, base, 100)
	body := `{"match":{"organization":"Bench Org"},"limit":100,"reason":"benchmark"}`
	search := func() int {
		res, err := c.Post(base+"/v1/subjects/search", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		var found []struct{ ID string }
		err = json.NewDecoder(res.Body).Decode(&found)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK {
			b.Fatalf("search: status %d, %v", res.StatusCode, err)
		}
		return len(found)
	}
	// The subjects view may still be applying the last registrations.
	for deadline := time.Now().Add(5 * time.Second); search() != 100; {
		if time.Now().After(deadline) {
			b.Fatal("the search did not find the 100 subjects within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for b.Loop() {
		if n := search(); n != 100 {
			b.Fatalf("search found %d subjects, want 100", n)
		}
	}
}

// benchServer serves a new data directory and returns an admin client and the
// server's base URL.
func benchServer(b *testing.B) (*http.Client, string) {
	data := initData(b)
	s := startServe(b, []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, nil)
	c := client(b, filepath.Join(data, rootPEM),
		withClientCert(b, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem")))
	return c, "https://" + s.addr
}

// registerBenchSubjects registers n subjects of one organisation.
func registerBenchSubjects(b *testing.B, c *http.Client, base string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		res, err := c.Post(base+"/v1/subjects", "application/json",
			strings.NewReader(`{"attributes":{"common_name":"Bench Person","organization":"Bench Org","country":"DE"}}`))
		if err != nil {
			b.Fatal(err)
		}
		var subject struct{ ID string }
		err = json.NewDecoder(res.Body).Decode(&subject)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusCreated {
			b.Fatalf("register: status %d, %v", res.StatusCode, err)
		}
		ids[i] = subject.ID
	}
	return ids
}

// BenchmarkAudit is "caledger audit" over a served ledger of about 4,050
// events (2,000 issuances of two events each), beside the bare reading of the same event pages
// over the same connection (fetch): what the checks add to the transfer.
//
//	go test -run '^$' -bench Audit -benchtime 5x ./cmd/caledger
func BenchmarkAudit(b *testing.B) {
	data := initData(b)
	auditor := filepath.Join(b.TempDir(), "auditor")
	if err := run(b.Context(), []string{"officer", "add", "--data", data, "--role", "auditor", "--name", "Bench Auditor", "--out", auditor}, noEnv, io.Discard, io.Discard); err != nil {
		b.Fatal(err)
	}
	s := startServe(b, []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, nil)
	base := "https://" + s.addr
	c := client(b, filepath.Join(data, rootPEM),
		withClientCert(b, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem")))
	ids := registerBenchSubjects(b, c, base, 32)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			for range 2000 / len(ids) {
				res, err := c.Post(base+"/v1/certificates?subject_id="+id+"&profile=tls-client", "application/pkcs10", bytes.NewReader(csr))
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusCreated {
					b.Errorf("issuance: status %d", res.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	// Wait for the tree to cover the ledger.
	u, _ := url.Parse(base)
	ac, err := newAuditClient(u, filepath.Join(data, rootPEM), filepath.Join(auditor, "auditor.pem"), filepath.Join(auditor, "auditor-key.pem"))
	if err != nil {
		b.Fatal(err)
	}
	var size uint64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		body, err := ac.get(b.Context(), "/v1/ledger/checkpoint")
		if err != nil {
			b.Fatal(err)
		}
		lines := strings.SplitN(string(body), "\n", 3)
		size, _ = strconv.ParseUint(lines[1], 10, 64)
		page, err := ac.events(b.Context(), size+1, 1)
		if err != nil {
			b.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the tree did not catch up within 10 s")
		}
	}

	b.Run("fetch", func(b *testing.B) {
		for b.Loop() {
			for from := uint64(1); from <= size; from += auditPage {
				if _, err := ac.events(b.Context(), from, auditPage); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.N)*float64(size)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("audit", func(b *testing.B) {
		args := []string{"audit", "--server", base, "--cacert", filepath.Join(data, rootPEM), "--cert", filepath.Join(auditor, "auditor.pem"),
			"--key", filepath.Join(auditor, "auditor-key.pem"), "--vkey", filepath.Join(data, checkpointVKeyFile)}
		for b.Loop() {
			var out bytes.Buffer
			if err := run(b.Context(), args, noEnv, &out, io.Discard); err != nil {
				b.Fatalf("%v\n%s", err, out.String())
			}
		}
		b.ReportMetric(float64(b.N)*float64(size)/b.Elapsed().Seconds(), "events/s")
	})
	// The same audit with the replay of every event kept from the last one
	// (--state), and no event added since: what a resumed audit costs
	// beyond the events it replays (the kept state read and written, the
	// consistency proof).
	b.Run("audit-resumed", func(b *testing.B) {
		state := filepath.Join(b.TempDir(), "audit.checkpoint")
		args := []string{"audit", "--server", base, "--cacert", filepath.Join(data, rootPEM), "--cert", filepath.Join(auditor, "auditor.pem"),
			"--key", filepath.Join(auditor, "auditor-key.pem"), "--vkey", filepath.Join(data, checkpointVKeyFile), "--state", state}
		if err := run(b.Context(), args, noEnv, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			var out bytes.Buffer
			if err := run(b.Context(), args, noEnv, &out, io.Discard); err != nil || !strings.Contains(out.String(), "replayed    0 events after") {
				b.Fatalf("%v\n%s", err, out.String())
			}
		}
	})
}
