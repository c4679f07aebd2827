package main

import (
	"bufio"
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
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"
)

// The OCSP phase runs after the issuance phase, against certificates it
// issued: a quarter of them are revoked through the API, then N keep-alive
// plain-HTTP clients POST OCSP requests to the publication listener, first
// with a nonce in every request (each prepared request has its own, and the
// requests are sent in turn; the responder signs every response to a request
// with a nonce), then without one (so the responder may answer from its
// cache), each time with net/http's client and then with leanClient. Every
// 16th response is parsed, its signature and status checked against what the
// phase revoked, and, in the nonce runs, checked to carry its request's nonce,
// so an answer from a cache would count as bad.

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
	delegated   int64 // checked responses signed by a delegated responder
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
		var info struct {
			Status string `json:"status"`
		}
		err = json.NewDecoder(res.Body).Decode(&info)
		res.Body.Close()
		if res.StatusCode/100 != 2 {
			return nil, fmt.Errorf("revoke: status %d", res.StatusCode)
		}
		// The answer comes from the views, which OCSP reads too: once it says
		// revoked, so does OCSP.
		if err != nil || info.Status != "revoked" {
			return nil, fmt.Errorf("revoke: the views do not show the revocation yet (status %q, %v)", info.Status, err)
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
// with net/http's client or (lean) with leanClient, and checks every 16th
// answer of each client.
func ocspRun(ctx context.Context, public string, targets []ocspTarget, issuer *x509.Certificate, requests, nonces [][]byte, clients int, d time.Duration, lean bool) ocspResult {
	var do func(w, i int) (int, []byte, error)
	if lean {
		l := newLeanClient(public, "/ocsp", requests, clients)
		defer l.close()
		do = func(w, i int) (int, []byte, error) {
			if err := ctx.Err(); err != nil {
				return 0, nil, err
			}
			return l.do(w, i)
		}
	} else {
		tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
		defer tr.CloseIdleConnections()
		url := "http://" + public + "/ocsp"
		do = clientDo(&http.Client{Transport: tr, Timeout: 30 * time.Second}, func(i int) *http.Request {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(requests[i%len(requests)]))
			req.Header.Set("Content-Type", "application/ocsp-request")
			return req
		})
	}
	var bad, good, revoked, delegated atomic.Int64
	check := func(i int, der []byte) {
		if (i/clients)%16 != 0 { // every 16th of this client's
			return
		}
		t := targets[i%len(requests)%len(targets)]
		resp, err := ocsp.ParseResponseForCert(der, t.leaf, issuer)
		// x/crypto/ocsp does not parse responseExtensions, where the nonce
		// is echoed; 32 random bytes are found in the response only there.
		nonce := nonces[i%len(requests)]
		if err == nil && resp.Certificate != nil {
			delegated.Add(1)
		}
		switch {
		case err != nil, nonce != nil && !bytes.Contains(der, nonce):
			bad.Add(1)
		case resp.Status == ocsp.Revoked && t.revoked:
			revoked.Add(1)
		case resp.Status == ocsp.Good && !t.revoked:
			good.Add(1)
		default:
			bad.Add(1)
		}
	}
	rate, lat, failed := closedLoop(clients, d, http.StatusOK, do, check)
	return ocspResult{rate: rate, lat: lat, errs: failed, bad: bad.Load(), goodSeen: good.Load(), revokedSeen: revoked.Load(), delegated: delegated.Load()}
}

// leanClient is the OCSP runs' second load generator, the way load tools such
// as wrk work: one plain TCP connection per worker, each request written from
// bytes prepared before the run in one write, each response read with
// http.ReadResponse. It leaves out what net/http's client adds to every request
// (building a Request, the connection pool, the reader and writer goroutines
// of each connection and the channels between them), so more of the two shared
// cores go to the server. The server sees the same method, path and body
// (net/http's client also sends User-Agent and Accept-Encoding).
type leanClient struct {
	addr  string
	msgs  [][]byte    // request i is msgs[i%len(msgs)]
	conns []*leanConn // worker w uses conns[w] only
}

type leanConn struct {
	c  net.Conn
	br *bufio.Reader
}

func newLeanClient(addr, path string, bodies [][]byte, workers int) *leanClient {
	l := &leanClient{addr: addr, msgs: make([][]byte, len(bodies)), conns: make([]*leanConn, workers)}
	for i, b := range bodies {
		msg := fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/ocsp-request\r\nContent-Length: %d\r\n\r\n", path, addr, len(b))
		l.msgs[i] = append(msg, b...)
	}
	return l
}

// do sends request i on worker w's connection (dialled on first use, and
// again after a failure or a "Connection: close") and returns the status and
// body of the answer.
func (l *leanClient) do(w, i int) (int, []byte, error) {
	lc := l.conns[w]
	if lc == nil {
		c, err := net.DialTimeout("tcp", l.addr, 10*time.Second)
		if err != nil {
			return 0, nil, err
		}
		lc = &leanConn{c: c, br: bufio.NewReader(c)}
		l.conns[w] = lc
	}
	drop := func() {
		lc.c.Close()
		l.conns[w] = nil
	}
	_ = lc.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := lc.c.Write(l.msgs[i%len(l.msgs)]); err != nil {
		drop()
		return 0, nil, err
	}
	res, err := http.ReadResponse(lc.br, nil)
	if err != nil {
		drop()
		return 0, nil, err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.Close {
		drop()
	}
	return res.StatusCode, body, err
}

func (l *leanClient) close() {
	for _, lc := range l.conns {
		if lc != nil {
			lc.c.Close()
		}
	}
}

// ocspRequests builds count requests cycling over targets; with nonces each
// carries its own random 32-byte nonce, returned beside it (nil without).
func ocspRequests(targets []ocspTarget, issuer *x509.Certificate, count int, withNonces bool) (requests, nonces [][]byte, err error) {
	requests, nonces = make([][]byte, count), make([][]byte, count)
	for i := range requests {
		if withNonces {
			nonces[i] = make([]byte, 32)
			_, _ = rand.Read(nonces[i])
		}
		if requests[i], err = ocspRequest(targets[i%len(targets)].leaf, issuer, nonces[i]); err != nil {
			return nil, nil, err
		}
	}
	return requests, nonces, nil
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
// delegated says the server was given delegated responders: then the checked
// responses must be signed by one, and otherwise by none.
func ocspPhase(ctx context.Context, out io.Writer, pid int, c *http.Client, base, public string, chains [][]byte, clients int, d time.Duration,
	baseline func(context.Context, time.Duration) (float64, error), baselineWhat string, delegated bool) error {
	leaves, issuer, err := parseIssued(chains)
	if err != nil {
		return err
	}
	targets, err := revokeQuarter(ctx, c, base, leaves)
	if err != nil {
		return err
	}
	var rows []string
	var failures int64
	for _, nonces := range []bool{true, false} {
		requests, nonceOf, err := ocspRequests(targets, issuer, 4*len(targets), nonces)
		if err != nil {
			return err
		}
		for _, lean := range []bool{false, true} {
			rawBefore, err := baseline(ctx, 2*time.Second)
			if err != nil {
				return err
			}
			cpu0, err := processCPU(pid)
			if err != nil {
				return err
			}
			r := ocspRun(ctx, public, targets, issuer, requests, nonceOf, clients, d, lean)
			cpu1, err := processCPU(pid)
			if err != nil {
				return err
			}
			rawAfter, err := baseline(ctx, 2*time.Second)
			if err != nil {
				return err
			}
			raw := (rawBefore + rawAfter) / 2
			what := "a nonce in every request (every response signed)"
			if !nonces {
				what = "no nonce (responses may come from the cache)"
			}
			gen := "net/http client"
			if lean {
				gen = "lean client (prepared requests, http.ReadResponse)"
			}
			rows = append(rows, fmt.Sprintf("| OCSP over HTTP POST, %d keep-alive clients (%s), %d certificates (a quarter revoked), %s | %.0f responses/s, p50 %s, p99 %s, %d errors, %d of %d checked responses wrong, %d signed by a delegated responder; %s | %s, %d goroutines: %.0f/s (before %.0f, after %.0f) | %.2f× |\n",
				clients, gen, len(targets), what, r.rate, pct(r.lat, 50), pct(r.lat, 99), r.errs, r.bad, r.bad+r.goodSeen+r.revokedSeen, r.delegated, serverCPU(cpu1-cpu0, len(r.lat)),
				baselineWhat, runtime.GOMAXPROCS(0), raw, rawBefore, rawAfter, r.rate/raw))
			failures += r.errs + r.bad
			if r.goodSeen == 0 || r.revokedSeen == 0 {
				failures++
				rows = append(rows, fmt.Sprintf("| (the run checked %d good and %d revoked answers: both must be seen) | | | |\n", r.goodSeen, r.revokedSeen))
			}
			if delegated != (r.delegated > 0) {
				failures++
				rows = append(rows, fmt.Sprintf("| (%d checked responses were signed by a delegated responder, with delegated responders configured: %v) | | | |\n", r.delegated, delegated))
			}
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
