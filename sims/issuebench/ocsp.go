package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"
)

// The OCSP phase runs after the issuance phase, against certificates it
// issued: a quarter of them are revoked through the API, then N keep-alive
// plain-HTTP clients POST OCSP requests to the publication listener, first
// with a fresh nonce in every request (so every response is freshly signed),
// then without one (so the responder may answer from its cache). Every 16th
// response is parsed and its status checked against what the phase revoked.

// ocspTarget is an issued certificate and what OCSP must say about it.
type ocspTarget struct {
	leaf    *x509.Certificate
	revoked bool
}

// ocspResult is one timed OCSP run.
type ocspResult struct {
	rate        float64
	lat         []time.Duration
	errs, bad   int64
	goodSeen    int64
	revokedSeen int64
}

// parseIssued turns PEM chains returned by issuance into leaf certificates and
// returns the issuing CA's certificate (the second certificate of the chain).
func parseIssued(chains [][]byte) ([]*x509.Certificate, *x509.Certificate, error) {
	var leaves []*x509.Certificate
	var issuer *x509.Certificate
	for _, chain := range chains {
		var certs []*x509.Certificate
		for rest := chain; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, err
			}
			certs = append(certs, c)
		}
		if len(certs) < 2 {
			return nil, nil, errors.New("an issuance response holds no chain")
		}
		leaves = append(leaves, certs[0])
		issuer = certs[1]
	}
	if issuer == nil {
		return nil, nil, errors.New("no certificate was issued")
	}
	return leaves, issuer, nil
}

// revokeQuarter revokes every fourth leaf through the API.
func revokeQuarter(ctx context.Context, c *http.Client, base string, leaves []*x509.Certificate) ([]ocspTarget, error) {
	targets := make([]ocspTarget, len(leaves))
	body, _ := json.Marshal(map[string]string{"reason": "keyCompromise"})
	for i, leaf := range leaves {
		targets[i] = ocspTarget{leaf: leaf, revoked: i%4 == 0}
		if !targets[i].revoked {
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/certificates/"+leaf.SerialNumber.Text(16)+"/revocation", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		res, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode/100 != 2 {
			return nil, fmt.Errorf("revoke: status %d", res.StatusCode)
		}
	}
	return targets, nil
}

// ocspRequest is an RFC 6960 OCSPRequest with one CertID (SHA-1, as most
// clients send) and, when nonce is set, a nonce extension.
func ocspRequest(leaf, issuer *x509.Certificate, nonce []byte) ([]byte, error) {
	base, err := ocsp.CreateRequest(leaf, issuer, &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil || nonce == nil {
		return base, err
	}
	// Re-encode with requestExtensions: x/crypto/ocsp cannot add them.
	var r struct {
		TBS struct {
			List []asn1.RawValue
		}
	}
	if _, err := asn1.Unmarshal(base, &r); err != nil {
		return nil, err
	}
	v, _ := asn1.Marshal(nonce)
	type tbs struct {
		List []asn1.RawValue
		Exts []pkix.Extension `asn1:"explicit,tag:2"`
	}
	return asn1.Marshal(struct{ TBS tbs }{tbs{List: r.TBS.List,
		Exts: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}, Value: v}}}})
}

// ocspRun POSTs requests[i%len] from clients keep-alive connections for d,
// and checks every 16th answer of each client.
func ocspRun(ctx context.Context, url string, targets []ocspTarget, issuer *x509.Certificate, requests [][]byte, clients int, d time.Duration) ocspResult {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	var bad, good, revoked atomic.Int64
	newReq := func(i int) *http.Request {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(requests[i%len(requests)]))
		req.Header.Set("Content-Type", "application/ocsp-request")
		return req
	}
	check := func(i int, der []byte) {
		if (i/clients)%16 != 0 { // every 16th of this client's
			return
		}
		t := targets[i%len(requests)%len(targets)]
		resp, err := ocsp.ParseResponseForCert(der, t.leaf, issuer)
		switch {
		case err != nil:
			bad.Add(1)
		case resp.Status == ocsp.Revoked && t.revoked:
			revoked.Add(1)
		case resp.Status == ocsp.Good && !t.revoked:
			good.Add(1)
		default:
			bad.Add(1)
		}
	}
	rate, lat, failed := closedLoop(c, clients, d, http.StatusOK, newReq, check)
	return ocspResult{rate: rate, lat: lat, errs: failed, bad: bad.Load(), goodSeen: good.Load(), revokedSeen: revoked.Load()}
}

// ocspRequests builds count requests cycling over targets; with nonces each
// carries its own random 32-byte nonce.
func ocspRequests(targets []ocspTarget, issuer *x509.Certificate, count int, nonces bool) ([][]byte, error) {
	out := make([][]byte, count)
	for i := range out {
		var nonce []byte
		if nonces {
			nonce = make([]byte, 32)
			_, _ = rand.Read(nonce)
		}
		der, err := ocspRequest(targets[i%len(targets)].leaf, issuer, nonce)
		if err != nil {
			return nil, err
		}
		out[i] = der
	}
	return out, nil
}

// rawSignRate is ECDSA P-256 signatures of a SHA-256 digest per second over d,
// with GOMAXPROCS goroutines: what one freshly signed OCSP response must cost
// at least.
func rawSignRate(_ context.Context, d time.Duration) (float64, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return 0, err
	}
	digest := sha256.Sum256([]byte("OCSP response data"))
	return rateOf(d, func() bool {
		_, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
		return err == nil
	}), nil
}

// ocspPhase revokes a quarter of leaves and times both OCSP runs beside the
// baseline (the CA key's raw signing rate), writing their rows to out.
func ocspPhase(ctx context.Context, out io.Writer, pid int, c *http.Client, base, public string, chains [][]byte, clients int, d time.Duration,
	baseline func(context.Context, time.Duration) (float64, error), baselineWhat string) error {
	leaves, issuer, err := parseIssued(chains)
	if err != nil {
		return err
	}
	targets, err := revokeQuarter(ctx, c, base, leaves)
	if err != nil {
		return err
	}
	time.Sleep(time.Second) // the revocations reach OCSP within a second
	url := "http://" + public + "/ocsp"
	var rows []string
	var failures int64
	for _, nonces := range []bool{true, false} {
		requests, err := ocspRequests(targets, issuer, 4*len(targets), nonces)
		if err != nil {
			return err
		}
		rawBefore, _ := baseline(ctx, 2*time.Second)
		cpu0, err := processCPU(pid)
		if err != nil {
			return err
		}
		r := ocspRun(ctx, url, targets, issuer, requests, clients, d)
		cpu1, err := processCPU(pid)
		if err != nil {
			return err
		}
		rawAfter, _ := baseline(ctx, 2*time.Second)
		raw := (rawBefore + rawAfter) / 2
		what := "a fresh nonce in every request (every response signed)"
		if !nonces {
			what = "no nonce (responses may come from the cache)"
		}
		rows = append(rows, fmt.Sprintf("| OCSP over HTTP POST, %d keep-alive clients, %d certificates (a quarter revoked), %s | %.0f responses/s, p50 %s, p99 %s, %d errors, %d of %d checked responses wrong; %s | %s, %d goroutines: %.0f/s (before %.0f, after %.0f) | %.2f× |\n",
			clients, len(targets), what, r.rate, pct(r.lat, 50), pct(r.lat, 99), r.errs, r.bad, r.bad+r.goodSeen+r.revokedSeen, serverCPU(cpu1-cpu0, len(r.lat)),
			baselineWhat, runtime.GOMAXPROCS(0), raw, rawBefore, rawAfter, r.rate/raw))
		failures += r.errs + r.bad
		if r.goodSeen == 0 || r.revokedSeen == 0 {
			failures++
			rows = append(rows, fmt.Sprintf("| (the run checked %d good and %d revoked answers: both must be seen) | | | |\n", r.goodSeen, r.revokedSeen))
		}
	}
	for _, row := range rows {
		fmt.Fprint(out, row)
	}
	if failures > 0 {
		return fmt.Errorf("%d OCSP requests failed or were answered wrongly", failures)
	}
	return nil
}
