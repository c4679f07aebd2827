package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/checkpoint"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// TestAuditorLedger checks the auditor's view of the ledger end to end, with
// the transparency-dev verifiers as the outside party: a signed checkpoint
// that the verifier key file checks, a root recomputed from the events'
// canonical encodings, an inclusion proof for every event, and a consistency
// proof after more events, while no personal data appears.
func TestAuditorLedger(t *testing.T) {
	data := initData(t)
	auditorDir := filepath.Join(t.TempDir(), "auditor")
	if err := run(t.Context(), []string{"officer", "add", "--data", data, "--role", "auditor", "--name", "Ledger Auditor", "--out", auditorDir}, noEnv, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	officerDir := filepath.Join(t.TempDir(), "officer")
	if err := run(t.Context(), []string{"officer", "add", "--data", data, "--role", "officer", "--name", "Desk Officer", "--out", officerDir}, noEnv, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	s := startServe(t, []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}, nil)
	base := "https://" + s.addr
	admin := mtlsClient(t, data, base, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem"))
	auditor := mtlsClient(t, data, base, filepath.Join(auditorDir, "auditor.pem"), filepath.Join(auditorDir, "auditor-key.pem"))
	officer := mtlsClient(t, data, base, filepath.Join(officerDir, "officer.pem"), filepath.Join(officerDir, "officer-key.pem"))
	anonymous := mtlsClient(t, data, base, "", "")

	issue := func(name string) {
		t.Helper()
		var subject struct{ ID string }
		admin.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"common_name": name, "email": "x@example.org"}}, http.StatusCreated, &subject)
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		admin.json("POST", "/v1/certificates", map[string]string{"subject_id": subject.ID, "profile": "email-protection",
			"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, http.StatusCreated, nil)
	}
	issue("Secret Person One")

	// The verifier key: the file on the server and the API agree.
	vkeyFile, err := os.ReadFile(filepath.Join(data, checkpointVKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	status, _, vkey := auditor.do("GET", "/v1/ledger/key", "", nil)
	if status != http.StatusOK || !bytes.Equal(vkey, vkeyFile) {
		t.Fatalf("GET /v1/ledger/key = %d %q, file %q", status, vkey, vkeyFile)
	}
	verifier, _, err := readVerifier(filepath.Join(data, checkpointVKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	origin := origin(t, data)

	type event struct {
		Position  uint64
		Canonical []byte
	}
	allEvents := func() []event {
		t.Helper()
		var all []event
		for from := uint64(1); ; {
			var page []event
			auditor.json("GET", fmt.Sprintf("/v1/ledger/events?from=%d&limit=7", from), nil, http.StatusOK, &page)
			if len(page) == 0 {
				return all
			}
			all = append(all, page...)
			from = page[len(page)-1].Position + 1
		}
	}
	// checkpoint waits until the tree covers at least size events.
	checkpoint := func(size uint64) *log.Checkpoint {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			status, _, body := auditor.do("GET", "/v1/ledger/checkpoint", "", nil)
			if status != http.StatusOK {
				t.Fatalf("GET /v1/ledger/checkpoint = %d %s", status, body)
			}
			c, _, _, err := log.ParseCheckpoint(body, origin, verifier)
			if err != nil {
				t.Fatalf("the checkpoint does not verify: %v\n%s", err, body)
			}
			if c.Size >= size {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("the tree covers %d events after 10 s, want %d", c.Size, size)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	type proofBody struct{ Hashes [][]byte }
	hasher := rfc6962.DefaultHasher

	events := allEvents()
	for i, e := range events {
		if e.Position != uint64(i+1) {
			t.Fatalf("event %d has position %d", i, e.Position)
		}
	}
	c1 := checkpoint(uint64(len(events)))
	events = events[:c1.Size]
	// The root, recomputed from the canonical encodings alone.
	rf := compact.RangeFactory{Hash: hasher.HashChildren}
	r := rf.NewEmptyRange(0)
	for _, e := range events {
		if err := r.Append(hasher.HashLeaf(e.Canonical), nil); err != nil {
			t.Fatal(err)
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil || !bytes.Equal(root, c1.Hash) {
		t.Fatalf("recomputed root %x, checkpoint %x (%v)", root, c1.Hash, err)
	}
	for i, e := range events {
		var p proofBody
		auditor.json("GET", fmt.Sprintf("/v1/ledger/proofs/inclusion?index=%d&size=%d", i, c1.Size), nil, http.StatusOK, &p)
		if err := proof.VerifyInclusion(hasher, uint64(i), c1.Size, hasher.HashLeaf(e.Canonical), p.Hashes, c1.Hash); err != nil {
			t.Fatalf("inclusion of event %d: %v", i+1, err)
		}
	}

	// More events; the new checkpoint extends the old one.
	issue("Secret Person Two")
	c2 := checkpoint(c1.Size + 1)
	var p proofBody
	auditor.json("GET", fmt.Sprintf("/v1/ledger/proofs/consistency?size1=%d&size2=%d", c1.Size, c2.Size), nil, http.StatusOK, &p)
	if err := proof.VerifyConsistency(hasher, c1.Size, c2.Size, p.Hashes, c1.Hash, c2.Hash); err != nil {
		t.Fatalf("consistency %d -> %d: %v", c1.Size, c2.Size, err)
	}

	// Bad ranges are problems, not proofs.
	var prob problemBody
	auditor.json("GET", fmt.Sprintf("/v1/ledger/proofs/inclusion?index=%d&size=%d", c2.Size, c2.Size), nil, http.StatusBadRequest, &prob)
	if prob.Code != "bad-range" {
		t.Errorf("inclusion past the log: %+v", prob)
	}
	for _, q := range []string{
		fmt.Sprintf("size1=%d&size2=%d", c2.Size, c2.Size+1000),
		fmt.Sprintf("size1=%d&size2=%d", c2.Size, c1.Size),
	} {
		prob = problemBody{}
		auditor.json("GET", "/v1/ledger/proofs/consistency?"+q, nil, http.StatusBadRequest, &prob)
		if prob.Code != "bad-range" {
			t.Errorf("consistency %s: %+v", q, prob)
		}
	}
	// Equal sizes prove themselves: an empty proof, [] rather than null.
	_, _, empty := auditor.do("GET", fmt.Sprintf("/v1/ledger/proofs/consistency?size1=%d&size2=%d", c2.Size, c2.Size), "", nil)
	if !bytes.Contains(empty, []byte(`"hashes":[]`)) {
		t.Errorf("consistency of equal sizes: %s", empty)
	}
	for _, path := range []string{"/v1/ledger/events?from=0", "/v1/ledger/events?limit=1001", "/v1/ledger/proofs/consistency?size1=0&size2=1"} {
		auditor.json("GET", path, nil, http.StatusUnprocessableEntity, nil)
	}

	// Only auditors (and the admin) read the ledger.
	officer.json("GET", "/v1/ledger/events", nil, http.StatusForbidden, nil)
	officer.json("GET", "/v1/ledger/proofs/inclusion?index=0&size=1", nil, http.StatusForbidden, nil)
	anonymous.json("GET", "/v1/ledger/checkpoint", nil, http.StatusUnauthorized, nil)
	admin.json("GET", "/v1/ledger/events?limit=1", nil, http.StatusOK, nil)

	// What the auditor reads holds no personal data: names and e-mail
	// addresses are sealed, in the JSON and in the canonical bytes alike.
	_, _, page := auditor.do("GET", "/v1/ledger/events?limit=1000", "", nil)
	var raw []json.RawMessage
	if err := json.Unmarshal(page, &raw); err != nil || len(raw) < int(c2.Size) {
		t.Fatalf("events: %v, %d", err, len(raw))
	}
	var canonical bytes.Buffer
	for _, e := range allEvents() {
		canonical.Write(e.Canonical)
	}
	for _, secret := range []string{"Secret Person", "x@example.org", "Ledger Auditor", "Desk Officer"} {
		if bytes.Contains(page, []byte(secret)) || bytes.Contains(canonical.Bytes(), []byte(secret)) {
			t.Errorf("the ledger shows %q to auditors", secret)
		}
	}
}

// TestCheckpointKey checks how serve keeps the checkpoint key: made once with
// its verifier key file, refused when readable by others, and never replaced
// without a trace.
func TestCheckpointKey(t *testing.T) {
	data := initData(t)
	keyPath, vkeyPath := filepath.Join(data, checkpointKeyFile), filepath.Join(data, checkpointVKeyFile)
	first, err := loadCheckpointSigner(data)
	if err != nil {
		t.Fatal(err)
	}
	checkMode(t, keyPath, 0o600)
	if b, err := os.ReadFile(vkeyPath); err != nil || string(b) != first.VerifierKey()+"\n" {
		t.Fatalf("%s = %q, %v", checkpointVKeyFile, b, err)
	}
	origin, err := ledgerOrigin(data)
	if err != nil || first.Origin() != origin {
		t.Fatalf("origin %q, want %q (%v)", first.Origin(), origin, err)
	}
	again, err := loadCheckpointSigner(data)
	if err != nil || again.VerifierKey() != first.VerifierKey() {
		t.Fatalf("second start: %v, key changed: %v", err, again != nil && again.VerifierKey() != first.VerifierKey())
	}

	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCheckpointSigner(data); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a key readable by others: %v", err)
	}
	if err := os.Chmod(keyPath, 0o600); err != nil {
		t.Fatal(err)
	}

	// A replaced key stops the start until the old verifier key is removed.
	other, err := checkpoint.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCheckpointSigner(data); err == nil || !strings.Contains(err.Error(), "was replaced") {
		t.Fatalf("a replaced key: %v", err)
	}
	if b, _ := os.ReadFile(vkeyPath); string(b) != first.VerifierKey()+"\n" {
		t.Fatal("the verifier key file was overwritten")
	}
	if err := os.Remove(vkeyPath); err != nil {
		t.Fatal(err)
	}
	replaced, err := loadCheckpointSigner(data)
	if err != nil || replaced.VerifierKey() == first.VerifierKey() {
		t.Fatalf("after removing the old verifier key: %v", err)
	}

	// A lost key is not silently replaced either: nothing is made.
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCheckpointSigner(data); err == nil || !strings.Contains(err.Error(), "is missing") {
		t.Fatalf("a lost key: %v", err)
	}
	if _, err := os.Stat(keyPath); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a key was made although the verifier key of another remains: %v", err)
	}
}
