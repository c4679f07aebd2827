package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/api"
	"github.com/caledger/caledger/projections/witness/witnesstest"
	"golang.org/x/mod/sumdb/note"
)

// TestWitnessedLedger configures two real witnesses (litewitness): the
// erasure receipt's evidence comes in a checkpoint both cosigned, which
// verify-erasure checks with their keys; the audit checks the witnessed
// checkpoint; a witness that is down shows in the receipt, the metrics and the
// log, and a receipt asked for again once it is back is witnessed again.
func TestWitnessedLedger(t *testing.T) {
	r := newAuditRig(t)
	// No witnesses yet: there is no witnessed checkpoint to serve.
	if status, _, body := r.admin.do("GET", "/v1/ledger/checkpoint/witnessed", "", nil); status != http.StatusNotFound || !bytes.Contains(body, []byte("no-witnesses")) {
		t.Fatalf("without witnesses: %d %s", status, body)
	}
	vkey, err := os.ReadFile(filepath.Join(r.data, checkpointVKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	one, two := witnesstest.Start(t, "witness.test/one"), witnesstest.Start(t, "witness.test/two")
	dir := t.TempDir()
	var witnessFlags []string
	for _, w := range []*witnesstest.Witness{one, two} {
		// What an operator gives a witness: the log's origin (the name of its
		// key) and the verifier key.
		w.AddLog(origin(t, r.data), strings.TrimSpace(string(vkey)))
		f := filepath.Join(dir, strings.ReplaceAll(w.Name, "/", "-")+".vkey")
		if err := os.WriteFile(f, []byte(w.VKey+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		witnessFlags = append(witnessFlags, "--witness-vkey", f)
	}
	// An audit that requires witnesses of a node that has none stops.
	if out, err := r.audit(witnessFlags...); err == nil || !strings.Contains(err.Error(), "this node has no witnesses") {
		t.Fatalf("a witnessed audit of a node without witnesses: %v\n%s", err, out)
	}
	// The log's own key is no witness key.
	if _, err := r.audit("--witness-vkey", filepath.Join(r.data, checkpointVKeyFile)); err == nil || !strings.Contains(err.Error(), "the log's own key") {
		t.Fatalf("the log's key as a witness key: %v", err)
	}
	r.stop()
	setConfig(t, r.data, "witness", map[string]any{"interval": "1h", "witnesses": []map[string]string{
		{"url": one.URL, "vkey": one.VKey}, {"url": two.URL + "/", "vkey": two.VKey}}})
	r.start()

	verify := func(name string, rc api.ErasureReceipt, extra ...string) (string, error) {
		t.Helper()
		return verifyErasure(t, dir, name, rc, filepath.Join(r.data, checkpointVKeyFile), extra...)
	}

	// witnessedReceipt asks for subject's receipt until both witnesses
	// cosigned its checkpoint (at once, unless the machine is slow enough
	// for the 2 s wait to run out).
	witnessedReceipt := func(subject string) (api.ErasureReceipt, string) {
		t.Helper()
		var receipt api.ErasureReceipt
		for deadline := time.Now().Add(30 * time.Second); ; {
			r.admin.json("GET", "/v1/subjects/"+subject+"/erasure", nil, http.StatusOK, &receipt)
			out, err := verify("receipt", receipt, witnessFlags...)
			if err == nil {
				return receipt, out
			}
			if time.Now().After(deadline) {
				t.Fatalf("verify-erasure with the witnesses' keys: %v\n%s", err, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	subject, _ := r.issue("Secret Person One")
	var receipt api.ErasureReceipt
	r.admin.json("POST", "/v1/subjects/"+subject+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusOK, &receipt)
	// The POST's own receipt is witnessed: a round on loopback takes a few
	// milliseconds of its 2 s wait.
	out, err := verify("posted", receipt, witnessFlags...)
	if err != nil || !strings.Contains(out, "witnessed by witness.test/one (") || !strings.Contains(out, ", witness.test/two (") {
		t.Fatalf("verify-erasure of the POST's receipt with the witnesses' keys: %v\n%s", err, out)
	}
	size := parseUnsigned(t, []byte(receipt.Evidence[0].Checkpoint)).Size
	for _, w := range []*witnesstest.Witness{one, two} {
		if got := w.Size(origin(t, r.data)); got < size {
			t.Fatalf("%s holds %d events, and the receipt's checkpoint has %d", w.Name, got, size)
		}
	}
	// The receipt without the cosignatures proves the record, but not to a
	// reader who requires the witnesses.
	bare := receipt
	bare.Evidence = append([]api.Evidence(nil), receipt.Evidence...)
	signed, _, _ := strings.Cut(receipt.Evidence[0].Checkpoint, "\n— witness.test/")
	bare.Evidence[0].Checkpoint = signed + "\n"
	if out, err := verify("bare", bare); err != nil {
		t.Fatalf("the receipt without cosignatures, no witness keys: %v\n%s", err, out)
	}
	if _, err := verify("bare-witnessed", bare, witnessFlags...); err == nil || !strings.Contains(err.Error(), "cosigned by 0 of the 2 witnesses required") {
		t.Fatalf("the receipt without cosignatures: %v", err)
	}
	if _, err := verify("quorum", receipt, append(witnessFlags, "--witness-quorum", "3")...); err == nil || !strings.Contains(err.Error(), "--witness-quorum 3: the --witness-vkey files hold 2 keys") {
		t.Fatalf("a quorum above the witnesses given: %v", err)
	}

	// A bound on the cosignatures' age: an hour passes; a nanosecond does
	// not, and the audit fails. The bound needs witnesses.
	if out, err := r.audit(append(witnessFlags, "--witness-max-age", "1h", "--state", "")...); err != nil {
		t.Fatalf("audit with the cosignatures at most an hour old: %v\n%s", err, out)
	}
	if out, err := r.audit(append(witnessFlags, "--witness-max-age", "1ns", "--state", "")...); err == nil ||
		!strings.Contains(out, "the witnessed checkpoint is too old (--witness-max-age 1ns)") || !strings.Contains(out, "0 of the 2 cosignatures required") {
		t.Fatalf("audit with the cosignatures at most a nanosecond old: %v\n%s", err, out)
	}
	var usage *usageError
	if _, err := r.audit("--witness-max-age", "1h"); !errors.As(err, &usage) || !strings.Contains(err.Error(), "needs --witness-vkey") {
		t.Fatalf("--witness-max-age without witnesses: %v", err)
	}
	// When they cosigned shows on /metrics.
	if at := r.metric("caledger_ledger_witnessed_timestamp_seconds"); at < float64(time.Now().Add(-time.Minute).Unix()) || at > float64(time.Now().Unix()+1) {
		t.Fatalf("caledger_ledger_witnessed_timestamp_seconds %v, now %d", at, time.Now().Unix())
	}

	// The auditor audits the witnessed checkpoint, and keeps it.
	out, err = r.audit(witnessFlags...)
	if err != nil || !strings.Contains(out, "witnessed   by witness.test/one (") {
		t.Fatalf("audit with the witnesses' keys: %v\n%s", err, out)
	}
	// An audit without witnesses keeps a later checkpoint than the
	// witnessed one (the ledger grew, and no round ran since: the interval
	// is an hour). A witnessed audit after it proves the witnessed
	// checkpoint a prefix of the kept one, which stays kept.
	r.issue("Secret Person Three")
	kept := r.settle()
	if out, err := r.audit(); err != nil {
		t.Fatalf("audit: %v\n%s", err, out)
	}
	out, err = r.audit(witnessFlags...)
	if err != nil || !strings.Contains(out, "consistency the kept checkpoint extends the witnessed one (proof verified)") ||
		!strings.Contains(out, "which stays kept") || strings.Contains(out, "resume ") {
		t.Fatalf("a witnessed audit after a later unwitnessed one: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(r.state); err != nil || parseUnsigned(t, b).Size != kept {
		t.Fatalf("the state file after a witnessed audit of an older checkpoint: %v", err)
	}
	// The kept replay stayed with the kept checkpoint.
	if out, err := r.audit(); err != nil || !strings.Contains(out, fmt.Sprintf("resume      from %d events replayed before", kept)) {
		t.Fatalf("an audit after the witnessed one: %v\n%s", err, out)
	}
	if got := r.metric("caledger_ledger_witnessed_size"); got < float64(size) {
		t.Fatalf("caledger_ledger_witnessed_size %v, want at least %d", got, size)
	}

	// With a witness down, the erasure still answers within its 2 s wait,
	// with evidence that a reader requiring both witnesses refuses and one
	// requiring either accepts.
	two.Stop()
	other, _ := r.issue("Secret Person Two")
	start := time.Now()
	r.admin.json("POST", "/v1/subjects/"+other+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusOK, &receipt)
	if took := time.Since(start); took > 4*time.Second || len(receipt.Evidence) != 1 {
		t.Fatalf("with a witness down the receipt took %v, evidence %d", took, len(receipt.Evidence))
	}
	if _, err := verify("down", receipt, witnessFlags...); err == nil || !strings.Contains(err.Error(), "cosigned by 1 of the 2 witnesses required; no cosignature of witness.test/two") {
		t.Fatalf("a receipt with a witness down met a quorum of both: %v", err)
	}
	if out, err := verify("down-quorum-1", receipt, append(witnessFlags, "--witness-quorum", "1")...); err != nil || !strings.Contains(out, "witnessed by witness.test/one (") {
		t.Fatalf("a receipt with a witness down, quorum of one: %v\n%s", err, out)
	}
	if r.metric(`caledger_witness_failures_total{witness="witness.test/two"}`) < 1 {
		t.Fatal("the metrics show no failure of the witness that is down")
	}
	if !strings.Contains(r.s.logs.String(), "erasure evidence in a checkpoint the quorum of witnesses has not cosigned") {
		t.Fatalf("the log does not say the evidence is not witnessed:\n%s", r.s.logs)
	}
	// Back up, a receipt asked for again is witnessed by both (after the
	// cosigner's retry: 1 s, then 2 s, ...).
	two.Restart()
	witnessedReceipt(other)
	if logs := r.s.logs.String(); strings.Contains(logs, "Secret Person") || strings.Contains(logs, "secret@") {
		t.Fatalf("the logs hold personal data:\n%s", logs)
	}

	// Restarted while both witnesses are down, the node serves the
	// checkpoint they last cosigned, kept in data/views/witnessed.json, and a
	// witnessed audit passes.
	status, _, before := r.admin.do("GET", "/v1/ledger/checkpoint/witnessed", "", nil)
	if status != http.StatusOK {
		t.Fatalf("the witnessed checkpoint: %d %s", status, before)
	}
	r.stop()
	if _, err := os.Stat(filepath.Join(r.data, witnessedFile)); err != nil {
		t.Fatal(err)
	}
	one.Stop()
	two.Stop()
	r.start()
	if status, _, after := r.admin.do("GET", "/v1/ledger/checkpoint/witnessed", "", nil); status != http.StatusOK || !bytes.Equal(after, before) {
		t.Fatalf("after a restart with the witnesses down: %d\n%s\nwant\n%s", status, after, before)
	}
	if out, err := r.audit(append(witnessFlags, "--state", "")...); err != nil {
		t.Fatalf("a witnessed audit after a restart with the witnesses down: %v\n%s", err, out)
	}
	one.Restart()
	two.Restart()

	// With "refresh" set, the quiet ledger's checkpoint is cosigned again:
	// when it was cosigned moves on, and an audit bounding the age by a few
	// seconds passes.
	r.stop()
	setConfig(t, r.data, "witness", map[string]any{"interval": "1s", "refresh": "1s", "witnesses": []map[string]string{
		{"url": one.URL, "vkey": one.VKey}, {"url": two.URL, "vkey": two.VKey}}})
	r.start()
	var first float64
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		at := r.metric("caledger_ledger_witnessed_timestamp_seconds")
		if first == 0 {
			first = at
		} else if at > first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("caledger_ledger_witnessed_timestamp_seconds stayed at %v for 20 s", first)
		}
	}
	if out, err := r.audit(append(witnessFlags, "--witness-max-age", "10s", "--state", "")...); err != nil {
		t.Fatalf("audit of a refreshed checkpoint: %v\n%s", err, out)
	}
}

// TestServeRefusesBadWitnesses: a witness configuration serve cannot use
// stops the start with an error naming caledger.json.
func TestServeRefusesBadWitnesses(t *testing.T) {
	data := initData(t)
	_, vkey, err := note.GenerateKey(rand.Reader, "witness.test/w")
	if err != nil {
		t.Fatal(err)
	}
	ok := map[string]string{"url": "http://127.0.0.1:1", "vkey": vkey}
	// The checkpoint key, as serve makes it on its first start.
	signer, err := loadCheckpointSigner(data)
	if err != nil {
		t.Fatal(err)
	}
	logVKey := signer.VerifierKey()
	for name, c := range map[string]struct {
		cfg  map[string]any
		want string
	}{
		"no witnesses":  {map[string]any{}, "no witnesses"},
		"bad URL":       {map[string]any{"witnesses": []map[string]string{{"url": "ftp://w", "vkey": vkey}}}, "not an http or https URL"},
		"bad key":       {map[string]any{"witnesses": []map[string]string{{"url": "http://w", "vkey": "w+1+2"}}}, "witness key"},
		"twice":         {map[string]any{"witnesses": []map[string]string{ok, ok}}, "named twice"},
		"quorum":        {map[string]any{"witnesses": []map[string]string{ok}, "quorum": 2}, "quorum of 2"},
		"the endpoint":  {map[string]any{"witnesses": []map[string]string{{"url": "http://w/add-checkpoint", "vkey": vkey}}}, "without /add-checkpoint"},
		"credentials":   {map[string]any{"witnesses": []map[string]string{{"url": "http://u:p@w", "vkey": vkey}}}, "the url holds credentials"},
		"the log's key": {map[string]any{"witnesses": []map[string]string{{"url": "http://w", "vkey": logVKey}}}, "the log's own key"},
		"interval":      {map[string]any{"witnesses": []map[string]string{ok}, "interval": "10ms"}, "interval \"10ms\""},
		"refresh":       {map[string]any{"witnesses": []map[string]string{ok}, "refresh": "10ms"}, "refresh \"10ms\""},
	} {
		t.Run(name, func(t *testing.T) {
			setConfig(t, data, "witness", c.cfg)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			// --store kurrent without KURRENTDB_URL: the config must be
			// refused before the ledger is opened, which would fail.
			err := run(ctx, []string{"serve", "--data", data, "--store", "kurrent", "--addr", "127.0.0.1:0", "--public-addr", ""}, noEnv, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), configFile) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("serve: %v; want an error naming %s and %q", err, configFile, c.want)
			}
		})
	}
}
