package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/caledger/caledger/api"
	"github.com/caledger/caledger/crypto/checkpoint"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/projections/audit"
)

const (
	// replaySuffix names the file, beside the audit's --state file, that
	// keeps the replay of the kept checkpoint's events.
	replaySuffix = ".replay"
	// auditPage is how many events one request of the audit asks for: the
	// most GET /v1/ledger/events gives.
	auditPage = 1000
	// maxAuditResponse bounds what is read of one answer. A page of
	// ordinary events takes a few MiB; one of events near the 1 MiB payload
	// limit would not fit, so the audit asks again for fewer
	// (errAnswerTooLarge).
	maxAuditResponse = 64 << 20
)

func runAudit(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("audit", flag.ContinueOnError)
	server := flags.String("server", envOr(env, "CALEDGER_SERVER", "https://localhost:8443"), "the server's base `URL`; env CALEDGER_SERVER")
	cacert := flags.String("cacert", "", "PEM `file` of the CA the server's TLS certificate chains to (the server's data/ca/root.pem)")
	cert := flags.String("cert", "", "the auditor's client certificate `file` (PEM; role auditor or admin)")
	key := flags.String("key", "", "the client certificate's private key `file` (PEM)")
	vkeyPath := flags.String("vkey", "", "the checkpoints' verifier key `file`, obtained out of band (the server's data/ca/checkpoint.vkey)")
	statePath := flags.String("state", "", "`file` keeping the last checkpoint this audit verified: the new one must extend it; replaced after an audit with no problem (the replay's state is kept beside it, in FILE"+replaySuffix+")")
	full := flags.Bool("full", false, "replay every event, even when the replay of the kept checkpoint's events is kept (--state)")
	list := flags.Bool("list", false, "print every event: position, time, actor role and id, type, stream")
	wflags := addWitnessFlags(flags)
	maxAge := flags.Duration("witness-max-age", 0, "with --witness-vkey: the quorum's cosignatures must be at most this old (such as 2h; above the server's witness refresh and interval); 0: any age")
	setUsage(flags, "audit --cacert FILE --cert FILE --key FILE --vkey FILE [--state FILE [--full]] [--witness-vkey FILE ... [--witness-quorum N] [--witness-max-age D]] [--server URL]",
		`Verify the ledger as an outside auditor, with no access to personal data:
  1. check the server's signed checkpoint with the verifier key you hold;
  2. replay every event it covers from the canonical bytes, recompute the
     Merkle root and compare it with the checkpoint's;
  3. check each stream's versions, that nothing was sealed under an erased
     key, and each certificate's revocation and deletion;
  4. with --state, check that the log still extends the checkpoint kept by
     the last audit (nothing recorded then was changed or removed), by a
     consistency proof and by the replay, then keep the new checkpoint
     (a witnessed checkpoint older than the kept one must be a prefix of
     it, and the kept one stays). The replay's state is kept too, in
     FILE`+replaySuffix+`: once the proof shows that the log extends the kept
     checkpoint, the next audit replays only the events added since. --full
     replays them all again, which also checks that the server still serves
     the events it signed before.
With --witness-vkey it audits the latest checkpoint the server's witnesses
cosigned instead of one the server signs alone, and requires the witnesses'
cosignatures: then the log audited is the one they saw, which every other
reader trusting them sees too. --witness-max-age bounds their age, so that
the server cannot show an old witnessed checkpoint and hide what it
appended since.
It exits 1 with the problems found (the state file is then left unchanged).
See docs/ledger.md.`)
	if help, err := parseFlags(flags, args, stdout); help || err != nil {
		return err
	}
	for _, f := range []struct{ name, value string }{{"cacert", *cacert}, {"cert", *cert}, {"key", *key}, {"vkey", *vkeyPath}} {
		if f.value == "" {
			return &usageError{msg: fmt.Sprintf("audit: --%s is required (run 'caledger audit -h')", f.name)}
		}
	}
	base, err := url.Parse(*server)
	if err != nil || base.Scheme != "https" || base.Host == "" {
		return &usageError{msg: fmt.Sprintf("audit: --server %q is not an https URL", *server)}
	}
	verifier, vkey, err := readVerifier(*vkeyPath)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	witnesses, err := wflags.load(vkey)
	if err != nil {
		return prefixed("audit", err)
	}
	switch {
	case *full && *statePath == "":
		return &usageError{msg: "audit: --full needs --state: without a kept replay every audit replays every event"}
	case *maxAge < 0:
		return &usageError{msg: fmt.Sprintf("audit: --witness-max-age %s is negative", *maxAge)}
	case *maxAge > 0 && witnesses == nil:
		return &usageError{msg: "audit: --witness-max-age needs --witness-vkey"}
	}
	origin := verifier.Name()
	var kept *log.Checkpoint
	var keptReplay []byte
	if *statePath != "" {
		b, err := os.ReadFile(*statePath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("audit: state: %w", err)
		default:
			if kept, _, _, err = log.ParseCheckpoint(b, origin, verifier); err != nil {
				return fmt.Errorf("audit: %s is not a checkpoint of %s signed with %s: %w", *statePath, origin, *vkeyPath, err)
			}
			// The kept replay grows with the ledger: not read for --full,
			// which replays from the first event.
			if !*full {
				if keptReplay, err = os.ReadFile(*statePath + replaySuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("audit: state: %w", err)
				}
			}
		}
	}
	c, err := newAuditClient(base, *cacert, *cert, *key)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer c.http.CloseIdleConnections()

	// The key the server says it signs with must be the one held: a
	// mismatch is reported as such rather than as a bad signature.
	served, err := c.get(ctx, "/v1/ledger/key")
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if got := strings.TrimSpace(string(served)); got != vkey {
		return fmt.Errorf("audit: the server signs checkpoints for key %q, not for the key in %s (%q)", got, *vkeyPath, vkey)
	}
	path := "/v1/ledger/checkpoint"
	if witnesses != nil {
		path = "/v1/ledger/checkpoint/witnessed"
	}
	signed, err := c.get(ctx, path)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	var cp *log.Checkpoint
	var cosigs []checkpoint.Cosignature
	if witnesses == nil {
		cp, _, _, err = log.ParseCheckpoint(signed, origin, verifier)
	} else {
		var c log.Checkpoint
		c, cosigs, err = witnesses.Verify(signed, verifier)
		cp = &c
	}
	switch {
	case err != nil && witnesses != nil:
		return fmt.Errorf("audit: the server's witnessed checkpoint does not verify with %s and the witnesses' keys: %w", *vkeyPath, err)
	case err != nil:
		return fmt.Errorf("audit: the server's checkpoint does not verify with %s: %w", *vkeyPath, err)
	}

	a := &auditRun{stdout: stdout, list: *list}
	fmt.Fprintf(stdout, "log         %s\ncheckpoint  %d events, root %s (signature verified)\n", origin, cp.Size, b64(cp.Hash))
	if witnesses != nil {
		fmt.Fprintf(stdout, "witnessed   by %s (%d required)\n", cosigners(cosigs), witnesses.Quorum())
		if *maxAge > 0 {
			if err := witnesses.CheckAge(cosigs, time.Now(), *maxAge); err != nil {
				a.problem("the witnessed checkpoint is too old (--witness-max-age %s): %v", *maxAge, err)
			}
		}
	}
	// A witnessed checkpoint lags the ledger (by up to the witnessing
	// interval), so it may be older than the one an audit without witnesses
	// kept: then it must be a prefix of the kept one, which stays kept.
	keepOld := witnesses != nil && kept != nil && cp.Size < kept.Size
	if kept != nil {
		fmt.Fprintf(stdout, "kept        %d events, root %s (%s)\n", kept.Size, b64(kept.Hash), *statePath)
		if keepOld {
			a.consistency(ctx, c, cp, kept, "the witnessed one", "the kept checkpoint")
		} else {
			a.consistency(ctx, c, kept, cp, "the kept one", "the checkpoint")
		}
	}
	// The kept replay is resumed only once the proof shows that the log
	// extends the kept checkpoint, whose events it replayed.
	var from *audit.Replay
	var resumed uint64
	if kept != nil && keptReplay == nil && !*full {
		fmt.Fprintf(stdout, "resume      not from %s, every event is replayed: there is no such file\n", *statePath+replaySuffix)
	}
	if keptReplay != nil && !keepOld && len(a.problems) == 0 {
		if from = a.resume(keptReplay, kept, *statePath+replaySuffix); from != nil {
			resumed = from.Size()
		}
	}
	start := time.Now()
	bar := &progressBar{w: stderr}
	r, err := a.replay(ctx, c, cp, kept, from, bar.update)
	bar.done()
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := a.report(r, resumed, time.Since(start)); err != nil {
		return fmt.Errorf("audit: %w", err)
	}

	if len(a.problems) > 0 {
		fmt.Fprintf(stdout, "\nPROBLEMS (%d)\n", len(a.problems))
		for _, p := range a.problems {
			fmt.Fprintf(stdout, "  %s\n", p)
		}
		msg := fmt.Sprintf("audit: %d problem(s) found", len(a.problems))
		if *statePath != "" {
			msg += "; " + *statePath + " was left unchanged"
		}
		return errors.New(msg)
	}
	if keepOld {
		fmt.Fprintf(stdout, "\nOK: %d events verified; the witnessed checkpoint is older than the one kept in %s, which stays kept\n", cp.Size, *statePath)
		return nil
	}
	if *statePath != "" {
		// The replay first: one that is newer than the checkpoint beside it
		// (a stop in between) is not resumed, and the next audit replays all.
		st, err := r.MarshalState()
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		if err := writeFileAtomic(*statePath+replaySuffix, st, 0o600); err != nil {
			return fmt.Errorf("audit: keep the replay: %w", err)
		}
		if err := writeFileAtomic(*statePath, signed, 0o644); err != nil {
			return fmt.Errorf("audit: keep the checkpoint: %w", err)
		}
		fmt.Fprintf(stdout, "\nOK: %d events verified; the checkpoint is kept in %s\n", cp.Size, *statePath)
	} else {
		fmt.Fprintf(stdout, "\nOK: %d events verified (use --state FILE to check the next audit against this one)\n", cp.Size)
	}
	return nil
}

// auditRun collects what one audit finds.
type auditRun struct {
	stdout   io.Writer
	list     bool
	problems []string
}

func (a *auditRun) problem(format string, args ...any) {
	a.problems = append(a.problems, fmt.Sprintf(format, args...))
}

// consistency checks the server's proof that the log of checkpoint kept is a
// prefix of that of checkpoint cp; keptName and cpName name them in the
// report (usually the checkpoint the last audit kept, and the current one).
func (a *auditRun) consistency(ctx context.Context, c *auditClient, kept, cp *log.Checkpoint, keptName, cpName string) {
	switch {
	case cp.Size < kept.Size:
		a.problem("the log shrank from %d events (%s) to %d: events were removed", kept.Size, keptName, cp.Size)
		return
	case kept.Size == 0:
		return // the empty log is a prefix of every log
	}
	body, err := c.get(ctx, fmt.Sprintf("/v1/ledger/proofs/consistency?size1=%d&size2=%d", kept.Size, cp.Size))
	if err != nil {
		a.problem("no consistency proof from %d to %d events: %v", kept.Size, cp.Size, err)
		return
	}
	var p api.Proof
	if err := json.Unmarshal(body, &p); err != nil {
		a.problem("the consistency proof does not parse: %v", err)
		return
	}
	// The library's error prints both roots as byte lists; the sizes say
	// enough, and the replay below names the roots.
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, kept.Size, cp.Size, p.Hashes, kept.Hash, cp.Hash); err != nil {
		a.problem("%s of %d events does not extend %s of %d events: the server's consistency proof fails", cpName, cp.Size, keptName, kept.Size)
		return
	}
	fmt.Fprintf(a.stdout, "consistency %s extends %s (proof verified)\n", cpName, keptName)
}

// resume returns the replay kept in state (the file named name) if it is
// the replay of the kept checkpoint's events, and nil, saying why, if not.
func (a *auditRun) resume(state []byte, kept *log.Checkpoint, name string) *audit.Replay {
	r, err := audit.Resume(state)
	if err == nil {
		var root []byte
		if root, err = r.Root(); err == nil && (r.Size() != kept.Size || !bytes.Equal(root, kept.Hash)) {
			err = fmt.Errorf("it is the replay of %d events, root %s, not of the kept checkpoint's", r.Size(), b64(root))
		}
	}
	if err != nil {
		fmt.Fprintf(a.stdout, "resume      not from %s, every event is replayed: %v\n", name, err)
		return nil
	}
	fmt.Fprintf(a.stdout, "resume      from %d events replayed before, kept in %s (--full replays them again)\n", r.Size(), name)
	return r
}

// replay reads the events the checkpoint covers and replays them, from the
// start or, when from is not nil, after the events from replayed. Errors are
// failures to talk to the server; what the server answers wrongly is a
// problem.
func (a *auditRun) replay(ctx context.Context, c *auditClient, cp, kept *log.Checkpoint, from *audit.Replay, progress func(done, total uint64)) (*audit.Replay, error) {
	r := from
	if r == nil {
		r = audit.New()
	}
	checkKept := func() error {
		// The replay stops at cp.Size, so a kept checkpoint larger than that
		// is never reached (the consistency check reports the shrink, or
		// proves an older witnessed checkpoint a prefix of the kept one).
		if kept == nil || r.Size() != kept.Size {
			return nil
		}
		root, err := r.Root()
		if err != nil {
			return err
		}
		if !bytes.Equal(root, kept.Hash) {
			a.problem("the first %d events replayed give root %s, not the kept checkpoint's %s: events recorded before were changed", kept.Size, b64(root), b64(kept.Hash))
		}
		return nil
	}
	if err := checkKept(); err != nil {
		return nil, err
	}
	limit := auditPage
pages:
	for r.Size() < cp.Size {
		page, err := c.events(ctx, r.Size()+1, int(min(cp.Size-r.Size(), uint64(limit))))
		if errors.Is(err, errAnswerTooLarge) && limit > 1 {
			limit /= 2
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			a.problem("the server serves %d events, but its checkpoint covers %d", r.Size(), cp.Size)
			break
		}
		for i := range page {
			le := &page[i]
			if r.Size() == cp.Size {
				break
			}
			want := r.Size() + 1
			if le.Position != want {
				a.problem("the server answered position %d where %d was due", le.Position, want)
				break pages
			}
			e, err := r.Add(le.Canonical)
			if err == nil {
				if field := ledgerEventMismatch(le, &e); field != "" {
					a.problem("position %d: the event's %s as served differs from its canonical bytes", want, field)
				}
				if a.list {
					fmt.Fprintf(a.stdout, "%8d  %s  %-10s %-37s %-26s %s\n", e.Position, e.Time.UTC().Format("2006-01-02T15:04:05.000Z"),
						audit.RoleName(e.Actor.Role), audit.ActorName(e.Actor.ID), audit.TypeName(e.Type), audit.StreamName(e.Stream))
				}
			}
			if err := checkKept(); err != nil {
				return nil, err
			}
		}
		progress(r.Size(), cp.Size)
	}
	root, err := r.Root()
	if err != nil {
		return nil, err
	}
	if r.Size() == cp.Size && !bytes.Equal(root, cp.Hash) {
		a.problem("the %d events served give root %s, not the checkpoint's %s: the events served are not those the checkpoint signs", cp.Size, b64(root), b64(cp.Hash))
	}
	findings, total := r.Findings()
	for _, f := range findings {
		a.problem("%s", f)
	}
	if total > uint64(len(findings)) {
		a.problem("%d more findings of the replay not shown", total-uint64(len(findings)))
	}
	return r, nil
}

// report prints what the replay saw, in the whole log: the events of the
// first resumed positions were replayed by an earlier audit.
func (a *auditRun) report(r *audit.Replay, resumed uint64, took time.Duration) error {
	s := r.Stats()
	root, err := r.Root()
	if err != nil {
		return err
	}
	w := a.stdout
	if resumed > 0 {
		fmt.Fprintf(w, "replayed    %d events after the %d resumed, in %s, root %s\n", r.Size()-resumed, resumed, took.Round(time.Millisecond), b64(root))
	} else {
		fmt.Fprintf(w, "replayed    %d events in %s, root %s\n", r.Size(), took.Round(time.Millisecond), b64(root))
	}
	if s.Events > 0 {
		fmt.Fprintf(w, "time        %s to %s\n", s.First.Format(time.RFC3339), s.Last.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "streams     %d\nsealed      %d events carry a sealed part (not opened)\n", s.Streams, s.Sealed)
	fmt.Fprintf(w, "generated   %d certificates have key pairs caledger generated (soft tokens)\n", s.KeyGenerated)
	for _, m := range []struct {
		title  string
		counts map[string]uint64
	}{{"by type", s.ByType}, {"by role", s.ByActorRole}} {
		fmt.Fprintf(w, "%-12s", m.title)
		for i, k := range slices.Sorted(maps.Keys(m.counts)) {
			if i > 0 {
				fmt.Fprintf(w, "%-12s", "")
			}
			fmt.Fprintf(w, "%-28s %d\n", printable(k), m.counts[k])
		}
		if len(m.counts) == 0 {
			fmt.Fprintln(w)
		}
	}
	return nil
}

// printable replaces what a terminal would interpret in text a server
// chose (control characters, invalid UTF-8) with '?', so that it cannot
// forge or hide lines of the report.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

// ledgerEventMismatch names the first field of le, the JSON of an event as
// served, that differs from e, the event its canonical bytes encode ("" if
// none): auditors reading the JSON must read what the log commits to.
func ledgerEventMismatch(le *api.LedgerEvent, e *domain.Event) string {
	var public bytes.Buffer
	if len(e.Public) > 0 && json.Compact(&public, e.Public) != nil {
		public.Reset()
	}
	var served bytes.Buffer
	if len(le.Public) > 0 && json.Compact(&served, le.Public) != nil {
		served.Reset()
	}
	switch {
	case le.Stream != e.Stream:
		return "stream"
	case le.Version != e.Version:
		return "version"
	case le.ID != e.ID.String():
		return "id"
	case le.Type != e.Type:
		return "type"
	case le.Schema != e.Schema:
		return "schema"
	case !le.Time.Equal(e.Time):
		return "time"
	case le.ActorID != e.Actor.ID || le.ActorRole != e.Actor.Role:
		return "actor"
	case !bytes.Equal(public.Bytes(), served.Bytes()) && !(len(e.Public) == 0 && string(le.Public) == "null"):
		return "public part"
	case (le.SealedFor == nil) != (e.Sealed == nil):
		return "sealed part"
	case e.Sealed != nil && (le.SealedFor.SubjectID != e.Sealed.SubjectID || le.SealedFor.KeyGroup != e.Sealed.KeyGroup):
		return "sealed part"
	}
	return ""
}

// readVerifier reads a note verifier key file (data/ca/checkpoint.vkey) and
// returns the verifier and the key as written.
func readVerifier(path string) (note.Verifier, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("verifier key: %w", err)
	}
	vkey := strings.TrimSpace(string(b))
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return v, vkey, nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// errAnswerTooLarge: an answer exceeded maxAuditResponse.
var errAnswerTooLarge = fmt.Errorf("the answer exceeds %d MiB", maxAuditResponse>>20)

// auditClient reads the auditor's endpoints over mutual TLS.
type auditClient struct {
	base *url.URL
	http *http.Client
}

func newAuditClient(base *url.URL, cacert, certFile, keyFile string) (*auditClient, error) {
	pemBytes, err := os.ReadFile(cacert)
	if err != nil {
		return nil, fmt.Errorf("--cacert: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("--cacert: %s holds no PEM certificate", cacert)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--cert/--key: %w", err)
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
	}
	// No redirects: the client certificate is for this server, and an
	// answer from elsewhere would not be the server's.
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &auditClient{base: base, http: &http.Client{Transport: tr, Timeout: 2 * time.Minute, CheckRedirect: noRedirect}}, nil
}

// get returns the body of a 200 answer to GET path; any other answer is an
// error that shows the problem's title and detail.
func (c *auditClient) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.base.String(), "/")+path, nil)
	if err != nil {
		return nil, err
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxAuditResponse+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", req.URL.Path, err)
	}
	if len(body) > maxAuditResponse {
		return nil, fmt.Errorf("GET %s: %w", req.URL.Path, errAnswerTooLarge)
	}
	if res.StatusCode != http.StatusOK {
		var p struct{ Title, Detail string }
		_ = json.Unmarshal(body, &p)
		return nil, fmt.Errorf("GET %s: %s: %s %s", req.URL.Path, printable(res.Status), printable(p.Title), printable(p.Detail))
	}
	return body, nil
}

// events reads up to limit events from position from on.
func (c *auditClient) events(ctx context.Context, from uint64, limit int) ([]api.LedgerEvent, error) {
	body, err := c.get(ctx, "/v1/ledger/events?from="+strconv.FormatUint(from, 10)+"&limit="+strconv.Itoa(limit))
	if err != nil {
		return nil, err
	}
	var page []api.LedgerEvent
	if err := json.Unmarshal(body, &page); err != nil {
		return nil, fmt.Errorf("the events from position %d do not parse: %w", from, err)
	}
	return page, nil
}
