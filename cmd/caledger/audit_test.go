package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/api"
	"github.com/caledger/caledger/crypto/checkpoint"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/caledger/caledger/projections/audit"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// auditRig is a served data directory with an auditor credential, and the
// "caledger audit" command line that checks it.
type auditRig struct {
	t          *testing.T
	data       string
	s          *server
	admin      *apiClient
	auditor    string // the credential's directory
	state      string
	serveArgs  []string
	auditFlags []string
}

func newAuditRig(t *testing.T) *auditRig {
	data := initData(t)
	auditor := filepath.Join(t.TempDir(), "auditor")
	if err := run(t.Context(), []string{"officer", "add", "--data", data, "--role", "auditor", "--name", "Ledger Auditor", "--out", auditor}, noEnv, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	r := &auditRig{t: t, data: data, auditor: auditor, state: filepath.Join(t.TempDir(), "audit.checkpoint"),
		serveArgs: []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}}
	r.start()
	return r
}

func (r *auditRig) start() {
	r.s = startServe(r.t, r.serveArgs, nil)
	r.admin = mtlsClient(r.t, r.data, "https://"+r.s.addr, filepath.Join(r.data, adminDir, "admin.pem"), filepath.Join(r.data, adminDir, "admin-key.pem"))
}

func (r *auditRig) stop() {
	if err := r.s.stop(r.t); err != nil {
		r.t.Fatal(err)
	}
}

// audit runs "caledger audit" against the server with the auditor's
// credential, the verifier key file and the state file, plus extra flags.
func (r *auditRig) audit(extra ...string) (string, error) {
	r.t.Helper()
	args := append([]string{"audit", "--server", "https://" + r.s.addr, "--cacert", filepath.Join(r.data, rootPEM),
		"--cert", filepath.Join(r.auditor, "auditor.pem"), "--key", filepath.Join(r.auditor, "auditor-key.pem"),
		"--vkey", filepath.Join(r.data, checkpointVKeyFile), "--state", r.state}, extra...)
	var out bytes.Buffer
	err := run(r.t.Context(), args, noEnv, &out, io.Discard)
	return out.String(), err
}

// settle waits until the tree covers every event, so that an audit covers
// them all.
func (r *auditRig) settle() uint64 {
	r.t.Helper()
	var head []struct{ Position uint64 }
	for deadline := time.Now().Add(10 * time.Second); ; {
		r.admin.json("GET", "/v1/ledger/events?from=1&limit=1000", nil, http.StatusOK, &head)
		_, _, body := r.admin.do("GET", "/v1/ledger/checkpoint", "", nil)
		c := parseUnsigned(r.t, body) // the audit checks the signature
		if c.Size == uint64(len(head)) {
			return c.Size
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the tree covers %d of %d events after 10 s", c.Size, len(head))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// parseUnsigned reads the size of a checkpoint without checking it.
func parseUnsigned(t *testing.T, signed []byte) *log.Checkpoint {
	t.Helper()
	text, _, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		t.Fatalf("not a signed note: %q", signed)
	}
	var c log.Checkpoint
	if _, err := c.Unmarshal(append(text, '\n')); err != nil {
		t.Fatal(err)
	}
	return &c
}

// issue registers a subject and issues it a certificate; it returns the
// subject's id and the serial.
func (r *auditRig) issue(name string) (subject, serial string) {
	r.t.Helper()
	var s struct{ ID string }
	r.admin.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"common_name": name, "email": "secret@example.org"}}, http.StatusCreated, &s)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	var c struct{ Serial string }
	r.admin.json("POST", "/v1/certificates", map[string]string{"subject_id": s.ID, "profile": "email-protection",
		"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, http.StatusCreated, &c)
	return s.ID, c.Serial
}

// TestAudit runs "caledger audit" against a served ledger with issuance,
// revocation, deletion and erasure: it passes, keeps the checkpoint, checks
// the next audit against it, and shows no personal data.
func TestAudit(t *testing.T) {
	r := newAuditRig(t)
	subject, serial := r.issue("Secret Person One")
	r.admin.json("POST", "/v1/certificates/"+serial+"/revocation", map[string]string{"reason": "superseded"}, http.StatusOK, nil)
	if status, _, b := r.admin.do("DELETE", "/v1/certificates/"+serial, "", nil); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, b)
	}
	r.admin.json("POST", "/v1/subjects/"+subject+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusOK, nil)
	// A soft token: the audit counts certificates whose keys caledger made.
	if status, _, b := r.admin.do("POST", "/v1/soft-tokens", "application/x-www-form-urlencoded", []byte("password=correct+horse+battery"),
		"Caledger-Common-Name", "Secret Person Two"); status != http.StatusCreated {
		t.Fatalf("soft token: %d %s", status, b)
	}
	size := r.settle()

	out, err := r.audit()
	if err != nil {
		t.Fatalf("audit: %v\n%s", err, out)
	}
	for _, want := range []string{
		fmt.Sprintf("checkpoint  %d events", size), fmt.Sprintf("replayed    %d events", size),
		"certificate.deleted", "subject.erased", "OK: ", r.state,
		"generated   1 certificates have key pairs caledger generated",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q:\n%s", want, out)
		}
	}
	kept, err := os.ReadFile(r.state)
	if err != nil {
		t.Fatal(err)
	}
	checkMode(t, r.state, 0o644)
	keptReplay, err := os.ReadFile(r.state + replaySuffix)
	if err != nil {
		t.Fatal(err)
	}
	checkMode(t, r.state+replaySuffix, 0o600)
	firstReport := out

	// The next audit checks the log against the kept checkpoint, and
	// replays only the events added since.
	r.issue("Secret Person Two")
	size2 := r.settle()
	out, err = r.audit("--list")
	if err != nil {
		t.Fatalf("second audit: %v\n%s", err, out)
	}
	if !strings.Contains(out, "consistency the checkpoint extends the kept one") ||
		!strings.Contains(out, fmt.Sprintf("kept        %d events", size)) {
		t.Errorf("the second audit did not check the kept checkpoint:\n%s", out)
	}
	if !strings.Contains(out, fmt.Sprintf("resume      from %d events replayed before", size)) ||
		!strings.Contains(out, fmt.Sprintf("replayed    %d events after the %d resumed", size2-size, size)) {
		t.Errorf("the second audit did not resume the kept replay:\n%s", out)
	}
	if n := listed(out, "certificate.issued"); n != 1 {
		t.Errorf("--list shows %d issuances, want the new one:\n%s", n, out)
	}
	// The report covers the whole log: the counts of the first audit's
	// events come from the kept replay.
	if !strings.Contains(out, "subject.erased               1") || !strings.Contains(out, "generated   1 certificates") ||
		!strings.Contains(firstReport, "subject.erased               1") {
		t.Errorf("the resumed report lacks the kept replay's counts:\n%s", out)
	}
	resumed := out
	out, err = r.audit("--full", "--list")
	if err != nil || strings.Contains(out, "resume ") || !strings.Contains(out, fmt.Sprintf("replayed    %d events in", size2)) ||
		listed(out, "certificate.issued") < 2 {
		t.Errorf("--full: %v\n%s", err, out)
	}
	// The summaries agree, but for the times taken.
	if summary(resumed) != summary(out) {
		t.Errorf("the resumed audit reports\n%s\nthe full one\n%s", summary(resumed), summary(out))
	}
	// A kept replay that is not the kept checkpoint's, or not a replay at
	// all, is not resumed: every event is replayed.
	for _, tc := range []struct {
		replay []byte
		want   string
	}{
		{keptReplay, fmt.Sprintf("it is the replay of %d events", size)},
		{[]byte("{}"), "has format"},
		{otherRoot(t, r.state+replaySuffix), fmt.Sprintf("it is the replay of %d events", size2)},
	} {
		if err := os.WriteFile(r.state+replaySuffix, tc.replay, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err = r.audit()
		if err != nil || !strings.Contains(out, "resume      not from") || !strings.Contains(out, tc.want) ||
			!strings.Contains(out, fmt.Sprintf("replayed    %d events in", size2)) {
			t.Errorf("a kept replay %.20q: %v\n%s", tc.replay, err, out)
		}
	}
	// No kept replay (an audit that stopped between its two writes, or one
	// from before the replay was kept): every event is replayed, and said.
	if err := os.Remove(r.state + replaySuffix); err != nil {
		t.Fatal(err)
	}
	if out, err = r.audit(); err != nil || !strings.Contains(out, "there is no such file") || !strings.Contains(out, fmt.Sprintf("replayed    %d events in", size2)) {
		t.Errorf("no kept replay: %v\n%s", err, out)
	}
	if _, err := r.audit("--full", "--state", ""); !isUsage(err) {
		t.Errorf("--full without --state: %v, want a usage error", err)
	}
	if b, err := os.ReadFile(r.state + replaySuffix); err != nil {
		t.Fatal(err)
	} else {
		for _, secret := range []string{"Secret Person", "secret@example.org", "Ledger Auditor"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("the kept replay holds %q", secret)
			}
		}
	}
	if newer, _ := os.ReadFile(r.state); bytes.Equal(newer, kept) || !bytes.Contains(newer, fmt.Appendf(nil, "\n%d\n", size2)) {
		t.Errorf("the state was not replaced by the newer checkpoint:\n%s", newer)
	}
	for _, secret := range []string{"Secret Person", "secret@example.org", "Ledger Auditor"} {
		if strings.Contains(out, secret) {
			t.Errorf("the audit shows %q", secret)
		}
	}

	// A verifier key other than the server's is refused as such.
	_, vkey, err := note.GenerateKey(rand.Reader, "caledger.ledger/other")
	if err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(t.TempDir(), "other.vkey")
	if err := os.WriteFile(otherKey, []byte(vkey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := r.audit("--vkey", otherKey, "--state", ""); err == nil || !strings.Contains(err.Error(), "the server signs checkpoints for key") {
		t.Errorf("another verifier key: %v\n%s", err, out)
	}
	// A kept checkpoint that the key does not sign is refused before any
	// request.
	skey, err := checkpoint.GenerateKey(origin(t, r.data))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := checkpoint.New(skey)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := signer.Sign(1, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.state, forged, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := r.audit(); err == nil || !strings.Contains(err.Error(), "is not a checkpoint of") {
		t.Errorf("a forged kept checkpoint: %v\n%s", err, out)
	}

	// Usage errors.
	for _, args := range [][]string{
		{"audit"},
		{"audit", "--cacert", "x", "--cert", "x", "--key", "x", "--vkey", "x", "--server", "http://localhost:8443"},
	} {
		if err := run(t.Context(), args, noEnv, io.Discard, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		} else if _, ok := err.(*usageError); !ok {
			t.Errorf("%q: %v is not a usage error", args, err)
		}
	}
}

// otherRoot returns the kept replay in file with one hash of its compact
// range changed: a replay of as many events as the kept checkpoint's, with
// another root.
func otherRoot(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	s["range"].([]any)[0] = base64.StdEncoding.EncodeToString(make([]byte, 32))
	if b, err = json.Marshal(s); err != nil {
		t.Fatal(err)
	}
	return b
}

// summary is an audit's report without the lines that differ between a
// resumed and a full audit (the resume, the time taken, the events listed).
func summary(report string) string {
	var keep []string
	for _, l := range strings.Split(report, "\n") {
		if strings.HasPrefix(l, "replayed ") {
			_, root, _ := strings.Cut(l, ", root ")
			l = "root " + root
		}
		if !listLine(l) && !strings.HasPrefix(l, "resume ") && !strings.HasPrefix(l, "kept ") && !strings.HasPrefix(l, "consistency ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// listLine reports whether l is an event as --list prints it: it starts
// with the position.
func listLine(l string) bool {
	l = strings.TrimLeft(l, " ")
	return l != "" && l[0] >= '0' && l[0] <= '9'
}

// listed counts the events of type typ that --list printed in report.
func listed(report, typ string) int {
	n := 0
	for _, l := range strings.Split(report, "\n") {
		if listLine(l) && strings.Contains(l, " "+typ+" ") {
			n++
		}
	}
	return n
}

func origin(t *testing.T, data string) string {
	t.Helper()
	o, err := ledgerOrigin(data)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestAuditDetectsRewrite rewrites one event in the middle of the ledger, as
// someone with the server's files could, and checks that the audit reports
// it: first while the tree still signs the old root, then after the tree was
// rebuilt over the rewritten ledger, when only the checkpoint the auditor
// kept shows it.
func TestAuditDetectsRewrite(t *testing.T) {
	r := newAuditRig(t)
	_, serial := r.issue("Secret Person One")
	r.admin.json("POST", "/v1/certificates/"+serial+"/revocation", map[string]string{"reason": "superseded"}, http.StatusOK, nil)
	r.issue("Secret Person Two") // the ledger's last event stays as it was
	r.settle()
	if out, err := r.audit(); err != nil {
		t.Fatalf("audit before the rewrite: %v\n%s", err, out)
	}
	kept, err := os.ReadFile(r.state)
	if err != nil {
		t.Fatal(err)
	}
	r.stop()

	// The revocation's reason becomes keyCompromise: the ledger is
	// rewritten event by event, in a store of its own, then swapped in.
	rewriteLedger(t, filepath.Join(r.data, ledgerDir), func(e *domain.Event) {
		if e.Type == domain.TypeCertificateRevoked {
			e.Public = bytes.Replace(e.Public, []byte(`"reason":4`), []byte(`"reason":1`), 1)
		}
	})
	r.start()
	r.settle()
	// The signed history did not change, so an audit that resumes the kept
	// replay has nothing to read again; --full reads every event.
	out, err := r.audit()
	if err != nil || !strings.Contains(out, "replayed    0 events after the") {
		t.Fatalf("the resumed audit: %v\n%s", err, out)
	}
	out, err = r.audit("--full")
	if err == nil || !strings.Contains(out, "not those the checkpoint signs") || !strings.Contains(out, "events recorded before were changed") ||
		strings.Contains(out, "resume ") {
		t.Fatalf("the rewrite went unnoticed while the tree signs the old root: %v\n%s", err, out)
	}
	if now, _ := os.ReadFile(r.state); !bytes.Equal(now, kept) {
		t.Fatal("a failed audit replaced the kept checkpoint")
	}

	// Rebuild the tree over the rewritten ledger: its checkpoints now match
	// the events served, and only the kept checkpoint shows the rewrite.
	r.stop()
	if err := os.Remove(filepath.Join(r.data, treeFile)); err != nil {
		t.Fatal(err)
	}
	r.start()
	r.settle()
	// The consistency proof fails, so the kept replay is not resumed.
	out, err = r.audit()
	if err == nil || !strings.Contains(out, "does not extend the kept one") || !strings.Contains(out, "events recorded before were changed") ||
		strings.Contains(out, "not those the checkpoint signs") || strings.Contains(out, "resume ") {
		t.Fatalf("the rebuilt tree hid the rewrite from the kept checkpoint: %v\n%s", err, out)
	}
	// An auditor who kept nothing sees a consistent log: keeping
	// checkpoints is what makes a rewrite visible.
	if out, err := r.audit("--state", ""); err != nil {
		t.Fatalf("an audit without a kept checkpoint: %v\n%s", err, out)
	}
}

// rewriteLedger replaces the event store in dir by a copy whose events went
// through change.
func rewriteLedger(t *testing.T, dir string, change func(*domain.Event)) {
	t.Helper()
	ctx := context.Background()
	old, err := sqlite.Open(ctx, dir, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tmp := dir + ".rewritten"
	fresh, err := sqlite.Open(ctx, tmp, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for e, err := range old.ReadAll(ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		change(&e)
		stream, version := e.Stream, e.Version
		e.Position = 0
		if _, err := fresh.Append(ctx, stream, domain.Exact(version-1), e); err != nil {
			t.Fatalf("rewrite %s v%d: %v", stream, version, err)
		}
	}
	if err := errors.Join(old.Close(), fresh.Close()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
}

// TestLedgerEventMismatch checks that each field of an event as served is
// compared with its canonical bytes.
func TestLedgerEventMismatch(t *testing.T) {
	e := domain.Event{Position: 3, Stream: "access-s1", Version: 2, ID: domain.EventID{1}, Type: domain.TypePersonalDataAccessed,
		Schema: 1, Time: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), Actor: domain.Actor{ID: "cert:0a", Role: "officer"},
		Public: []byte(`{"operation":"read","subject_id":"s1"}`),
		Sealed: &domain.Sealed{SubjectID: "s1", KeyGroup: domain.GroupIdentity, KeyID: 1, Ciphertext: []byte("c")}}
	served := func() *api.LedgerEvent {
		return &api.LedgerEvent{Position: 3, Stream: "access-s1", Version: 2, ID: e.ID.String(), Type: e.Type, Schema: 1,
			Time: e.Time.In(time.FixedZone("x", 3600)), ActorID: "cert:0a", ActorRole: "officer",
			Public:    json.RawMessage("{\"operation\": \"read\", \"subject_id\": \"s1\"}"),
			SealedFor: &api.LedgerSealed{SubjectID: "s1", KeyGroup: domain.GroupIdentity}}
	}
	if f := ledgerEventMismatch(served(), &e); f != "" {
		t.Fatalf("the same event differs in %s", f)
	}
	for want, change := range map[string]func(*api.LedgerEvent){
		"stream":      func(l *api.LedgerEvent) { l.Stream = "access-s2" },
		"version":     func(l *api.LedgerEvent) { l.Version = 1 },
		"id":          func(l *api.LedgerEvent) { l.ID = domain.EventID{2}.String() },
		"type":        func(l *api.LedgerEvent) { l.Type = domain.TypeSubjectRegistered },
		"schema":      func(l *api.LedgerEvent) { l.Schema = 2 },
		"time":        func(l *api.LedgerEvent) { l.Time = l.Time.Add(time.Nanosecond) },
		"actor":       func(l *api.LedgerEvent) { l.ActorRole = "admin" },
		"public part": func(l *api.LedgerEvent) { l.Public = json.RawMessage(`{"operation":"search","subject_id":"s1"}`) },
		"sealed part": func(l *api.LedgerEvent) { l.SealedFor.KeyGroup = domain.GroupNationalID },
	} {
		l := served()
		change(l)
		if got := ledgerEventMismatch(l, &e); got != want {
			t.Errorf("changed %s: mismatch in %q", want, got)
		}
	}
	l := served()
	l.SealedFor = nil
	if got := ledgerEventMismatch(l, &e); got != "sealed part" {
		t.Errorf("sealed part dropped: mismatch in %q", got)
	}
	// The actor is its id as well as its role.
	l = served()
	l.ActorID = "cert:ff"
	if got := ledgerEventMismatch(l, &e); got != "actor" {
		t.Errorf("changed actor id: mismatch in %q", got)
	}
}

// metric returns the value of the unlabelled metric name on /metrics, or -1
// when it is absent.
func (r *auditRig) metric(name string) float64 {
	r.t.Helper()
	_, _, b := r.admin.do("GET", "/metrics", "", nil)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				r.t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// TestTreeMetrics checks that /metrics shows the tree's size and lag, and
// that a tree stopped by a ledger it does not match shows as a growing lag.
func TestTreeMetrics(t *testing.T) {
	r := newAuditRig(t)
	r.issue("Secret Person One")
	size := r.settle()
	if got, lag := r.metric("caledger_ledger_tree_size"), r.metric("caledger_ledger_tree_lag_events"); got != float64(size) || lag != 0 {
		t.Fatalf("tree size %v lag %v, want %d and 0", got, lag, size)
	}
	r.stop()
	// The ledger's last event changes: the tree no longer matches it and
	// stops at its size, with an error in the logs.
	rewriteLedger(t, filepath.Join(r.data, ledgerDir), func(e *domain.Event) {
		if e.Position == size {
			e.Public = bytes.Replace(e.Public, []byte(`"profile":"email-protection"`), []byte(`"profile":"tls-client"`), 1)
		}
	})
	r.start()
	r.issue("Secret Person Two")
	if got, lag := r.metric("caledger_ledger_tree_size"), r.metric("caledger_ledger_tree_lag_events"); got != float64(size) || lag < 2 {
		t.Fatalf("a stopped tree: size %v lag %v, want %d and at least 2", got, lag, size)
	}
	// The tree runs apart from the issuance: its log line may come later.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(r.s.logs.String(), "is not the one the tree holds"); {
		if time.Now().After(deadline) {
			t.Fatalf("the logs do not say why the tree stopped:\n%s", r.s.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAuditLyingServer runs the audit against a server that serves a ledger
// of its own and lies in one way at a time: each lie is a problem.
func TestAuditLyingServer(t *testing.T) {
	key, err := checkpoint.GenerateKey("caledger.ledger/test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := checkpoint.New(key)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := checkpoint.GenerateKey("caledger.ledger/test")
	other, err := checkpoint.New(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	var events []api.LedgerEvent
	replayed := audit.New()
	for i := range 5 {
		subject := domain.SubjectID(fmt.Sprintf("%032x", i+1))
		e := domain.Event{Position: uint64(i + 1), Stream: domain.SubjectStream(subject), Version: 1, ID: domain.EventID{byte(i)},
			Type: domain.TypeSubjectRegistered, Schema: 1, Time: time.Date(2026, 11, 1, 0, 0, i, 0, time.UTC),
			Actor: domain.Actor{ID: "cert:a1", Role: "officer"}, Public: fmt.Appendf(nil, `{"subject_id":%q}`, subject)}
		le, err := api.LedgerEventOf(&e)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, le)
		if _, err := replayed.Add(le.Canonical); err != nil {
			t.Fatal(err)
		}
	}
	root, err := replayed.Root()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		lie  func(events []api.LedgerEvent, cp *checkpoint.Signer) ([]api.LedgerEvent, *checkpoint.Signer)
		want string // in the output or the error; "" means the audit passes
	}{
		{"honest", func(e []api.LedgerEvent, s *checkpoint.Signer) ([]api.LedgerEvent, *checkpoint.Signer) { return e, s }, ""},
		{"fewer events", func(e []api.LedgerEvent, s *checkpoint.Signer) ([]api.LedgerEvent, *checkpoint.Signer) {
			return e[:4], s
		},
			"the server serves 4 events, but its checkpoint covers 5"},
		{"an event left out", func(e []api.LedgerEvent, s *checkpoint.Signer) ([]api.LedgerEvent, *checkpoint.Signer) {
			return append(slices.Clone(e[:2]), e[3:]...), s
		}, "the server answered position 4 where 3 was due"},
		{"JSON that says another thing", func(e []api.LedgerEvent, s *checkpoint.Signer) ([]api.LedgerEvent, *checkpoint.Signer) {
			e = slices.Clone(e)
			e[1].ActorRole = "auditor"
			return e, s
		}, "position 2: the event's actor as served differs from its canonical bytes"},
		{"other canonical bytes", func(e []api.LedgerEvent, s *checkpoint.Signer) ([]api.LedgerEvent, *checkpoint.Signer) {
			e = slices.Clone(e)
			e[1].Canonical = e[2].Canonical
			return e, s
		}, "not those the checkpoint signs"},
		{"a checkpoint signed with another key", func(e []api.LedgerEvent, _ *checkpoint.Signer) ([]api.LedgerEvent, *checkpoint.Signer) {
			return e, other
		}, "does not verify with"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			served, cpSigner := tc.lie(events, signer)
			mux := http.NewServeMux()
			mux.HandleFunc("GET /v1/ledger/key", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, signer.VerifierKey()) })
			mux.HandleFunc("GET /v1/ledger/checkpoint", func(w http.ResponseWriter, _ *http.Request) {
				b, _ := cpSigner.Sign(uint64(len(events)), root)
				w.Write(b)
			})
			mux.HandleFunc("GET /v1/ledger/events", func(w http.ResponseWriter, r *http.Request) {
				from, _ := strconv.Atoi(r.URL.Query().Get("from"))
				limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
				var page []api.LedgerEvent
				for _, e := range served {
					if e.Position >= uint64(from) && len(page) < limit {
						page = append(page, e)
					}
				}
				json.NewEncoder(w).Encode(page)
			})
			srv := httptest.NewTLSServer(mux)
			defer srv.Close()
			dir := t.TempDir()
			if err := writePEM(filepath.Join(dir, "server.pem"), 0o644, srv.Certificate().Raw); err != nil {
				t.Fatal(err)
			}
			certPath, keyPath := selfSignedClient(t, dir)
			vkey := filepath.Join(dir, "checkpoint.vkey")
			if err := os.WriteFile(vkey, []byte(signer.VerifierKey()+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := run(t.Context(), []string{"audit", "--server", srv.URL, "--cacert", filepath.Join(dir, "server.pem"),
				"--cert", certPath, "--key", keyPath, "--vkey", vkey}, noEnv, &out, io.Discard)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("%v\n%s", err, out.String())
				}
				return
			}
			if err == nil || !strings.Contains(out.String()+err.Error(), tc.want) {
				t.Fatalf("want %q; got %v\n%s", tc.want, err, out.String())
			}
		})
	}
}

// selfSignedClient writes a client certificate and key of no CA to dir.
func selfSignedClient(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(time.Hour)},
		&x509.Certificate{SerialNumber: big.NewInt(1)}, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	certPath, keyPath = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	if err := writePEM(certPath, 0o644, der); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// verifyErasure writes rc to dir/name.json and runs "caledger
// verify-erasure" on it with the verifier key file vkey and the extra flags.
func verifyErasure(t *testing.T, dir, name string, rc api.ErasureReceipt, vkey string, extra ...string) (string, error) {
	t.Helper()
	b, err := json.Marshal(rc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = run(t.Context(), append([]string{"verify-erasure", "--receipt", path, "--vkey", vkey}, extra...), noEnv, &out, io.Discard)
	return out.String(), err
}

// TestVerifyErasure checks erasure receipts as a regulator would, offline:
// the receipt of POST .../erasure carries the subject.erased events with
// inclusion proofs in a signed checkpoint, "caledger verify-erasure" accepts
// it with the verifier key file, and refuses it when anything is changed.
func TestVerifyErasure(t *testing.T) {
	r := newAuditRig(t)
	subject, _ := r.issue("Secret Person One")
	// Some groups first, then the whole subject: two events of evidence.
	r.admin.json("POST", "/v1/subjects/"+subject+"/erasure", map[string]any{"basis": "consent-withdrawn", "key_groups": []string{"national-id"}}, http.StatusOK, nil)
	var receipt api.ErasureReceipt
	r.admin.json("POST", "/v1/subjects/"+subject+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusOK, &receipt)
	if len(receipt.Evidence) != 2 || receipt.Evidence[0].Checkpoint != receipt.Evidence[1].Checkpoint {
		t.Fatalf("the receipt's evidence: %+v", receipt.Evidence)
	}
	dir := t.TempDir()
	vkey := filepath.Join(r.data, checkpointVKeyFile)
	verify := func(name string, rc api.ErasureReceipt, vkey string) (string, error) {
		t.Helper()
		return verifyErasure(t, dir, name, rc, vkey)
	}
	out, err := verify("receipt", receipt, vkey)
	if err != nil || !strings.Contains(out, "OK: the ledger records the erasure of subject "+subject) ||
		!strings.Contains(out, "erasure of key groups national-id") || !strings.Contains(out, "erasure of all key groups") {
		t.Fatalf("verify-erasure: %v\n%s", err, out)
	}
	// A receipt of the group erasure alone (as it was before the second
	// erasure) verifies with its own evidence.
	groupOnly := receipt
	groupOnly.KeyGroups, groupOnly.Evidence = []string{"national-id"}, receipt.Evidence[:1]
	if out, err := verify("group", groupOnly, vkey); err != nil {
		t.Fatalf("a receipt of a group erasure: %v\n%s", err, out)
	}
	// The receipt GET returns verifies too, against a later checkpoint.
	var later api.ErasureReceipt
	r.issue("Secret Person Two")
	r.settle()
	r.admin.json("GET", "/v1/subjects/"+subject+"/erasure", nil, http.StatusOK, &later)
	if out, err := verify("later", later, vkey); err != nil || later.Evidence[0].Checkpoint == receipt.Evidence[0].Checkpoint {
		t.Fatalf("the receipt of GET: %v\n%s", err, out)
	}

	clone := func() api.ErasureReceipt {
		c := receipt
		c.Evidence = slices.Clone(receipt.Evidence)
		for i := range c.Evidence {
			c.Evidence[i].Canonical = slices.Clone(c.Evidence[i].Canonical)
			c.Evidence[i].Inclusion = slices.Clone(c.Evidence[i].Inclusion)
		}
		return c
	}
	_, otherVKey, _ := note.GenerateKey(rand.Reader, origin(t, r.data))
	otherVKeyFile := filepath.Join(dir, "other.vkey")
	if err := os.WriteFile(otherVKeyFile, []byte(otherVKey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		change func(*api.ErasureReceipt)
		vkey   string
		want   string
	}{
		"another subject": {func(rc *api.ErasureReceipt) { rc.SubjectID = domain.SubjectID(strings.Repeat("ab", 16)) }, vkey, "erases another subject"},
		"a changed event": {func(rc *api.ErasureReceipt) {
			e, _ := domain.Decode(rc.Evidence[1].Canonical)
			e.Public = bytes.Replace(e.Public, []byte("gdpr-art17"), []byte("court-order"), 1)
			rc.Evidence[1].Canonical, _ = domain.Encode(&e)
		}, vkey, "the inclusion proof does not place the event"},
		"another position":    {func(rc *api.ErasureReceipt) { rc.Evidence[1].Position++ }, vkey, "is recorded at position"},
		"another key":         {func(*api.ErasureReceipt) {}, otherVKeyFile, "the checkpoint does not verify"},
		"only the group part": {func(rc *api.ErasureReceipt) { rc.Evidence = rc.Evidence[:1] }, vkey, "the evidence erases only some key groups"},
		"no evidence":         {func(rc *api.ErasureReceipt) { rc.Evidence = nil }, vkey, "carries no ledger evidence"},
		"a group not erased": {func(rc *api.ErasureReceipt) {
			rc.KeyGroups, rc.Evidence = []string{"identity"}, rc.Evidence[:1]
		}, vkey, `claims key group "identity" erased`},
		"repeated evidence": {func(rc *api.ErasureReceipt) { rc.Evidence[1] = rc.Evidence[0] }, vkey, "repeats position"},
		"not an erasure": {func(rc *api.ErasureReceipt) {
			// The ledger's first event (ca.created), with valid evidence
			// against the receipt's checkpoint.
			var first []api.LedgerEvent
			r.admin.json("GET", "/v1/ledger/events?from=1&limit=1", nil, http.StatusOK, &first)
			var p api.Proof
			size := parseUnsigned(t, []byte(rc.Evidence[1].Checkpoint)).Size
			r.admin.json("GET", fmt.Sprintf("/v1/ledger/proofs/inclusion?index=0&size=%d", size), nil, http.StatusOK, &p)
			rc.Evidence[1].Position, rc.Evidence[1].Canonical, rc.Evidence[1].Inclusion = 1, first[0].Canonical, p.Hashes
		}, vkey, "is a ca.created event, not subject.erased"},
	} {
		rc := clone()
		tc.change(&rc)
		if out, err := verify(strings.ReplaceAll(name, " ", "-"), rc, tc.vkey); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want %q, got %v\n%s", name, tc.want, err, out)
		}
	}
}
