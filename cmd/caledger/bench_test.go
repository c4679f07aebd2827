package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// BenchmarkIssue is REST issuance in process, for profiling:
//
//	go test -run '^$' -bench Issue -cpuprofile cpu.out ./cmd/caledger
//
// sims/issuebench measures the same path against the built binary.
func BenchmarkIssue(b *testing.B) {
	data := filepath.Join(b.TempDir(), "data")
	if err := run(b.Context(), []string{"init", "--data", data}, noEnv, io.Discard, io.Discard); err != nil {
		b.Fatal(err)
	}
	s := startServe(b, []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, nil)
	c := client(b, filepath.Join(data, rootPEM), func(c *tls.Config) {
		cert, err := tls.LoadX509KeyPair(filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem"))
		if err != nil {
			b.Fatal(err)
		}
		c.Certificates = []tls.Certificate{cert}
	})
	base := "https://" + s.addr
	// One subject per client: issuances for one subject serialise on its stream.
	ids := make([]string, 64)
	for i := range ids {
		res, err := c.Post(base+"/v1/subjects", "application/json", strings.NewReader(`{"attributes":{"common_name":"Bench Person","country":"DE"}}`))
		if err != nil {
			b.Fatal(err)
		}
		var subject struct{ ID string }
		err = json.NewDecoder(res.Body).Decode(&subject)
		res.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = subject.ID
	}
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
