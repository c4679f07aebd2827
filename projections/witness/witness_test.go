package witness_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/caledger/caledger/crypto/checkpoint"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/caledger/caledger/eventstore/storetest"
	"github.com/caledger/caledger/projections/tree"
	"github.com/caledger/caledger/projections/witness"
	"github.com/caledger/caledger/projections/witness/witnesstest"
)

const origin = "caledger.ledger/00112233aabbccdd"

// ledger is a ledger on disk and the Merkle tree that follows it.
type ledger struct {
	t     testing.TB
	store *sqlite.Store
	tree  *tree.Tree
}

func newLedger(t testing.TB) *ledger {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := sqlite.Open(ctx, t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tree.Open(ctx, filepath.Join(t.TempDir(), "tree.db"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = tr.Run(ctx, store) }()
	t.Cleanup(func() {
		cancel()
		<-done
		tr.Close()
		store.Close()
	})
	return &ledger{t: t, store: store, tree: tr}
}

// grow appends n events and waits for the tree to cover them.
func (l *ledger) grow(n int) uint64 {
	l.t.Helper()
	ctx := context.Background()
	for i := range n {
		if _, err := l.store.Append(ctx, fmt.Sprintf("s-%d", i), domain.Any, storetest.NewEvent(l.t, "test.event", []byte(`{}`))); err != nil {
			l.t.Fatal(err)
		}
	}
	head, err := l.store.Head(ctx)
	if err != nil {
		l.t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := l.tree.WaitFor(wctx, head); err != nil {
		l.t.Fatal(err)
	}
	return head
}

func newSigner(t testing.TB) (*checkpoint.Signer, note.Verifier) {
	t.Helper()
	key, err := checkpoint.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := checkpoint.New(key)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(s.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

// twoWitnesses starts witnesses one and two, each told of the log signer
// signs.
func twoWitnesses(t testing.TB, signer *checkpoint.Signer) (one, two *witnesstest.Witness) {
	t.Helper()
	one, two = witnesstest.Start(t, "witness.test/one"), witnesstest.Start(t, "witness.test/two")
	for _, w := range []*witnesstest.Witness{one, two} {
		w.AddLog(origin, signer.VerifierKey())
	}
	return one, two
}

// readersOf is how a reader requiring quorum of ws checks the log's
// checkpoints.
func readersOf(t testing.TB, signer *checkpoint.Signer, quorum int, ws ...*witnesstest.Witness) *checkpoint.Witnesses {
	t.Helper()
	var vkeys []string
	for _, w := range ws {
		vkeys = append(vkeys, w.VKey)
	}
	r, err := checkpoint.ParseWitnesses(vkeys, quorum, signer.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func witnessesOf(t testing.TB, ws ...*witnesstest.Witness) []witness.Witness {
	t.Helper()
	var out []witness.Witness
	for _, w := range ws {
		out = append(out, witness.Witness{URL: w.URL, VKey: w.VKey})
	}
	return out
}

// run starts c; it stops when the test ends.
func run(t testing.TB, c *witness.Cosigner) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitWitnessed(t testing.TB, c *witness.Cosigner, size uint64) (witness.Checkpoint, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return c.WaitFor(ctx, size)
}

// TestRefresh checks that a cosigner with Refresh has the same checkpoint
// cosigned again while the ledger does not grow, with newer cosignature
// times; that a witness down during a refresh keeps its earlier cosignature
// in the refreshed checkpoint; and that a cosigner without Refresh leaves its
// checkpoint as it is. Cosignature times are in seconds, so the test takes a
// little over one.
func TestRefresh(t *testing.T) {
	l := newLedger(t)
	signer, logV := newSigner(t)
	one, two := twoWitnesses(t, signer)
	readers := readersOf(t, signer, 1, one, two)
	still, err := witness.New(l.tree, signer, witness.Options{Witnesses: witnessesOf(t, one), Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := witness.New(l.tree, signer, witness.Options{Witnesses: witnessesOf(t, one, two), Quorum: 1,
		Interval: 20 * time.Millisecond, Refresh: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	size := l.grow(3)
	// cosigned returns c's witnessed checkpoint and when each witness
	// cosigned it.
	cosigned := func(c *witness.Cosigner) (witness.Checkpoint, map[string]time.Time) {
		t.Helper()
		cp, err := waitWitnessed(t, c, size)
		if err != nil {
			t.Fatalf("%v\none: %s\ntwo: %s", err, one.Output(), two.Output())
		}
		got, cosigs, err := readers.Verify(cp.Note, logV)
		if err != nil || got.Size != size {
			t.Fatalf("%d events, %v, %v", got.Size, cosigs, err)
		}
		times := map[string]time.Time{}
		for _, c := range cosigs {
			times[c.Witness] = c.Time
		}
		return cp, times
	}
	run(t, still)
	first, _ := cosigned(still)
	run(t, fresh)
	// refreshed waits until witness one's cosignature is newer than after.
	refreshed := func(after time.Time) map[string]time.Time {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if _, times := cosigned(fresh); times["witness.test/one"].After(after) {
				return times
			}
			if time.Now().After(deadline) {
				t.Fatalf("the cosignature of %s was not refreshed in 5 s\none: %s", after, one.Output())
			}
		}
	}
	// Both witnesses cosign; both cosignatures are refreshed.
	var t0 map[string]time.Time
	for deadline := time.Now().Add(5 * time.Second); len(t0) < 2; time.Sleep(20 * time.Millisecond) {
		if _, t0 = cosigned(fresh); time.Now().After(deadline) {
			t.Fatalf("cosigned by %v, want both witnesses", t0)
		}
	}
	t1 := refreshed(t0["witness.test/one"])
	if len(t1) != 2 {
		t.Fatalf("the refreshed checkpoint is cosigned by %v, want both", t1)
	}
	// With witness two down, the refreshed checkpoint keeps its earlier
	// cosignature beside witness one's new one.
	// A round may be under way as it stops, so what counts is a refresh
	// that witness one cosigned in a later second than the stop: it began
	// after the stop, and witness two's line in it must be from before.
	two.Stop()
	stopped := time.Now()
	t2 := refreshed(stopped.Truncate(time.Second))
	if got, ok := t2["witness.test/two"]; !ok || got.After(stopped) {
		t.Fatalf("witness two, stopped at %v, cosigned at %v (%v), want its earlier cosignature", stopped, got, ok)
	}
	if f := fresh.Failures(); f["witness.test/one"] != 0 || f["witness.test/two"] == 0 {
		t.Fatalf("failures %v, want witness two's only", f)
	}
	if cp, _ := cosigned(still); !bytes.Equal(cp.Note, first.Note) || !cp.At.Equal(first.At) {
		t.Fatalf("the cosigner without Refresh had its checkpoint cosigned again:\n%s\n%s", first.Note, cp.Note)
	}
}

// TestCosign has real witnesses cosign the ledger's checkpoints as it grows,
// across a restart of the cosigner, and checks what a reader checks.
func TestCosign(t *testing.T) {
	l := newLedger(t)
	signer, logV := newSigner(t)
	one, two := twoWitnesses(t, signer)
	readers := readersOf(t, signer, 0, one, two)
	c, err := witness.New(l.tree, signer, witness.Options{Witnesses: witnessesOf(t, one, two), Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)

	check := func(c *witness.Cosigner, size uint64) {
		t.Helper()
		cp, err := waitWitnessed(t, c, size)
		if err != nil {
			t.Fatalf("size %d: %v\none: %s\ntwo: %s", size, err, one.Output(), two.Output())
		}
		got, cosigs, err := readers.Verify(cp.Note, logV)
		if err != nil {
			t.Fatalf("size %d: %v\n%s", size, err, cp.Note)
		}
		if got.Size != size || cp.Size != size || len(cosigs) != 2 {
			t.Fatalf("witnessed %d (%d), %d cosignatures; want %d and 2", got.Size, cp.Size, len(cosigs), size)
		}
		// Each witness holds the size it cosigned.
		for _, w := range []*witnesstest.Witness{one, two} {
			if s := w.Size(origin); s != size {
				t.Fatalf("%s holds %d events, want %d", w.Name, s, size)
			}
		}
	}
	// The first checkpoint; then one that a consistency proof ties to it.
	check(c, l.grow(5))
	check(c, l.grow(3))

	// A second cosigner, as after a restart, knows nothing of the witnesses:
	// they tell it their sizes (409), and it proves consistency from there.
	c2, err := witness.New(l.tree, signer, witness.Options{Witnesses: witnessesOf(t, one, two), Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	run(t, c2)
	check(c2, l.grow(4))
	if f := c2.Failures(); f["witness.test/one"] != 0 || f["witness.test/two"] != 0 {
		t.Fatalf("failures %v", f)
	}

	// With a witness down, a quorum of both is not met and the latest
	// witnessed checkpoint stays; the one cosignature comes with the error,
	// for readers who require one witness.
	two.Stop()
	size := l.grow(2)
	partial, err := waitWitnessed(t, c2, size)
	if err == nil || !strings.Contains(err.Error(), "1 of the 2") || !strings.Contains(err.Error(), "witness.test/two") {
		t.Fatalf("with a witness down: %v", err)
	}
	quorum1 := readersOf(t, signer, 1, one, two)
	if _, cosigs, err := quorum1.Verify(partial.Note, logV); err != nil || partial.Size != size || len(cosigs) != 1 {
		t.Fatalf("the partly cosigned checkpoint: %d events, %v, %v", partial.Size, cosigs, err)
	}
	if cp, _ := c2.Latest(); cp.Size != size-2 {
		t.Fatalf("latest witnessed %d, want %d", cp.Size, size-2)
	}
	failures := c2.Failures()["witness.test/two"]
	if failures == 0 {
		t.Fatal("the witness that is down counts no failure")
	}
	// Asked again at once, the cosigner waits for its retry (1 s) rather
	// than post again.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err = c2.WaitFor(ctx, size)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || c2.Failures()["witness.test/two"] != failures {
		t.Fatalf("asked again during the backoff: %v, failures %d then %d", err, failures, c2.Failures()["witness.test/two"])
	}
	c3, err := witness.New(l.tree, signer, witness.Options{Witnesses: witnessesOf(t, one, two), Quorum: 1, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	run(t, c3)
	cp, err := waitWitnessed(t, c3, size)
	if err != nil {
		t.Fatal(err)
	}
	if _, cosigs, err := quorum1.Verify(cp.Note, logV); err != nil || len(cosigs) != 1 || cosigs[0].Witness != "witness.test/one" {
		t.Fatalf("quorum of one: %v, %v", cosigs, err)
	}
	if _, _, err := readers.Verify(cp.Note, logV); err == nil {
		t.Fatal("a checkpoint cosigned by one witness met a quorum of two")
	}

	// Back up, the witness catches up from the size it held.
	two.Restart()
	check(c2, l.grow(1))
}

// TestCosignRefusals: a witness that does not know the log, one that holds
// another key for it, and a ledger that is not the one the witness cosigned
// (a fork with more events, and one with fewer) are each reported, and
// nothing is witnessed.
func TestCosignRefusals(t *testing.T) {
	signer, _ := newSigner(t)
	w := witnesstest.Start(t, "witness.test/w")
	cosign := func(l *ledger, size uint64) error {
		t.Helper()
		c, err := witness.New(l.tree, signer, witness.Options{Witnesses: witnessesOf(t, w), Interval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		run(t, c)
		_, err = waitWitnessed(t, c, size)
		if err == nil {
			return errors.New("witnessed")
		}
		return err
	}
	l := newLedger(t)
	size := l.grow(4)
	// litewitness answers 403 for a log it does not know (its keys are
	// checked first), where the protocol allows 404.
	if err := cosign(l, size); !strings.Contains(err.Error(), "does not know this log") {
		t.Fatalf("unknown log: %v", err)
	}
	other, _ := newSigner(t)
	w.AddLog(origin, other.VerifierKey())
	if err := cosign(l, size); !strings.Contains(err.Error(), "refused the checkpoint's signature") {
		t.Fatalf("another key: %v", err)
	}

	// The witness cosigns this ledger at 4 events.
	w2 := witnesstest.Start(t, "witness.test/w2")
	w2.AddLog(origin, signer.VerifierKey())
	w = w2
	if err := cosign(l, size); err.Error() != "witnessed" {
		t.Fatal(err)
	}
	// Another ledger under the same key, with more events: its proof from 4
	// does not hold.
	fork := newLedger(t)
	if err := cosign(fork, fork.grow(6)); !strings.Contains(err.Error(), "refused the consistency proof from 4 to 6") {
		t.Fatalf("a fork with more events: %v", err)
	}
	// One with fewer events than the witness cosigned.
	short := newLedger(t)
	if err := cosign(short, short.grow(2)); !strings.Contains(err.Error(), "it cosigned 4 events of this log, and this node's tree has 2") {
		t.Fatalf("a fork with fewer events: %v", err)
	}
	if s := w2.Size(origin); s != 4 {
		t.Fatalf("the witness holds %d events, want 4", s)
	}
}

// BenchmarkRound measures what witnessing adds to an erasure receipt: a
// checkpoint of a grown ledger cosigned by two litewitness instances
// (WaitFor, timed alone: the append and the tree's pause are not). The
// baseline of the same run is one plain HTTP GET of a witness's index page.
func BenchmarkRound(b *testing.B) {
	l := newLedger(b)
	signer, _ := newSigner(b)
	one, two := witnesstest.Start(b, "witness.test/one"), witnesstest.Start(b, "witness.test/two")
	for _, w := range []*witnesstest.Witness{one, two} {
		w.AddLog(origin, signer.VerifierKey())
	}
	c, err := witness.New(l.tree, signer, witness.Options{Witnesses: witnessesOf(b, one, two), Interval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	run(b, c)
	b.Run("http-get", func(b *testing.B) {
		for b.Loop() {
			resp, err := http.Get(one.URL + "/")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	b.Run("witnessed-by-2", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			size := l.grow(1)
			b.StartTimer()
			if _, err := waitWitnessed(b, c, size); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestAddAnswers covers the answers litewitness does not give but the
// protocol allows, or a faulty witness might: each is refused with a reason,
// and nothing is witnessed. A fake witness gives them, since the real one
// cannot be made to.
func TestAddAnswers(t *testing.T) {
	l := newLedger(t)
	size := l.grow(2)
	signer, _ := newSigner(t)
	skey, vkey, err := note.GenerateKey(rand.Reader, "witness.test/fake")
	if err != nil {
		t.Fatal(err)
	}
	cosigner, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	// otherCosignature is a valid cosignature line of another checkpoint.
	other, err := signer.Sign(size+1, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	text, _, _ := bytes.Cut(other, []byte("\n\n"))
	cosigned, err := note.Sign(&note.Note{Text: string(text) + "\n"}, cosigner)
	if err != nil {
		t.Fatal(err)
	}
	_, otherCosignature, _ := bytes.Cut(cosigned, []byte("\n\n"))

	for name, c := range map[string]struct {
		status      int
		contentType string
		body        string
		want        string
	}{
		"unknown log":             {http.StatusNotFound, "text/plain", "unknown log\n", "does not know this log"},
		"409 without a size type": {http.StatusConflict, "text/plain", "5\n", "without the size it holds"},
		"409 of the size sent":    {http.StatusConflict, "text/x.tlog.size", "0\n", "for the size it holds, 0"},
		"422":                     {http.StatusUnprocessableEntity, "text/plain", "bad proof\n", "refused the consistency proof from 0 to 2"},
		"not lines":               {http.StatusOK, "text/plain", "— witness.test/fake AAAA", "not signature lines"},
		"another checkpoint's":    {http.StatusOK, "text/plain", string(otherCosignature), "does not verify"},
		"a server error":          {http.StatusInternalServerError, "text/plain", "boom\nmore\n", `answered 500: "boom"`},
	} {
		t.Run(name, func(t *testing.T) {
			var posts atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/add-checkpoint" {
					http.NotFound(w, r)
					return
				}
				posts.Add(1)
				w.Header().Set("Content-Type", c.contentType)
				w.WriteHeader(c.status)
				io.WriteString(w, c.body)
			}))
			defer srv.Close()
			cs, err := witness.New(l.tree, signer, witness.Options{Witnesses: []witness.Witness{{URL: srv.URL, VKey: vkey}}, Interval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			run(t, cs)
			if _, err := waitWitnessed(t, cs, size); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error with %q, got %v", c.want, err)
			}
			if _, ok := cs.Latest(); ok || posts.Load() == 0 {
				t.Fatalf("witnessed %v after %d posts", ok, posts.Load())
			}
		})
	}
}

// TestWaitForHungWitness: a witness that accepts the request and never
// answers holds up neither WaitFor past its context nor the error saying so.
func TestWaitForHungWitness(t *testing.T) {
	l := newLedger(t)
	size := l.grow(1)
	signer, _ := newSigner(t)
	_, vkey, err := note.GenerateKey(rand.Reader, "witness.test/hung")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release) // before Close, which waits for the handler
	c, err := witness.New(l.tree, signer, witness.Options{Witnesses: []witness.Witness{{URL: srv.URL, VKey: vkey}}, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.WaitFor(ctx, size); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor with a hung witness: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("WaitFor returned after %v, its context ended after 300 ms", took)
	}
}

// memKeeper is a Keeper in memory that counts its saves.
type memKeeper struct {
	b     atomic.Pointer[[]byte]
	saves atomic.Int64
}

func (k *memKeeper) Load(context.Context) ([]byte, error) {
	if p := k.b.Load(); p != nil {
		return *p, nil
	}
	return nil, nil
}

func (k *memKeeper) Save(_ context.Context, b []byte) error {
	b = bytes.Clone(b)
	k.b.Store(&b)
	k.saves.Add(1)
	return nil
}

// shortTree is a tree that shows at most limit events (all: 0), as a tree
// still catching up on the ledger does.
type shortTree struct {
	*tree.Tree
	limit atomic.Uint64
}

func (s *shortTree) Size() uint64 {
	if n := s.limit.Load(); n > 0 {
		return min(n, s.Tree.Size())
	}
	return s.Tree.Size()
}

// TestKeep: a cosigner with a Keeper keeps each witnessed checkpoint; a new
// one, as after a restart, serves the kept checkpoint while the witnesses are
// down, with its cosignatures, waits for a tree that is behind it, and goes
// on from it once the witnesses are back. A kept checkpoint that does not
// check is not served, and the log says why.
func TestKeep(t *testing.T) {
	l := newLedger(t)
	signer, logV := newSigner(t)
	one, two := twoWitnesses(t, signer)
	readers := readersOf(t, signer, 0, one, two)
	// Witness one is reached through a proxy that counts its 409 answers:
	// a cosigner that knows the size it cosigned gets none.
	var conflicts atomic.Int64
	target, err := url.Parse(one.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(r *http.Response) error {
		if r.StatusCode == http.StatusConflict {
			conflicts.Add(1)
		}
		return nil
	}
	proxy.ErrorLog = stdlog.New(io.Discard, "", 0)
	viaProxy := httptest.NewServer(proxy)
	defer viaProxy.Close()
	keeper := &memKeeper{}
	var logs syncBuffer
	tr := &shortTree{Tree: l.tree}
	opts := witness.Options{Witnesses: []witness.Witness{{URL: viaProxy.URL, VKey: one.VKey}, {URL: two.URL, VKey: two.VKey}}, Interval: time.Hour, Keeper: keeper,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	// start restores a new cosigner, as serve does, and runs it.
	start := func(opts witness.Options) (*witness.Cosigner, func()) {
		t.Helper()
		c, err := witness.New(tr, signer, opts)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		c.Restore(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(ctx) }()
		return c, func() { cancel(); <-done }
	}

	c, stop := start(opts)
	size := l.grow(5)
	first, err := waitWitnessed(t, c, size)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if keeper.saves.Load() != 1 {
		t.Fatalf("%d saves, want 1", keeper.saves.Load())
	}
	_, cosigs, err := readers.Verify(first.Note, logV)
	if err != nil {
		t.Fatal(err)
	}
	// The kept time is at most the newest cosignature's, which the
	// witnesses signed (in whole seconds).
	wantAt := first.At
	if newest := newestOf(cosigs); newest.Before(wantAt) {
		wantAt = newest
	}

	// Restarted with both witnesses down and the ledger grown: the kept
	// checkpoint is there before Run's first round, which fails.
	one.Stop()
	two.Stop()
	l.grow(2)
	c, stop = start(opts)
	got, ok := c.Latest()
	if !ok || got.Size != size || !bytes.Equal(got.Note, first.Note) || !got.At.Equal(wantAt) {
		t.Fatalf("after a restart: %v, %d events, at %v, note\n%s\nwant %d, at %v,\n%s", ok, got.Size, got.At, got.Note, size, wantAt, first.Note)
	}
	stop()

	// Configured with one of the two witnesses, it serves the kept
	// checkpoint with that witness's line only.
	onlyOne := opts
	onlyOne.Witnesses = opts.Witnesses[:1]
	c, stop = start(onlyOne)
	got, _ = c.Latest()
	stop()
	quorum1 := readersOf(t, signer, 1, one, two)
	if _, cosigs, err := quorum1.Verify(got.Note, logV); err != nil || len(cosigs) != 1 || cosigs[0].Witness != "witness.test/one" {
		t.Fatalf("with one witness configured: %v, %v\n%s", cosigs, err, got.Note)
	}

	// Back up, the witnesses take the next checkpoints, proved from the
	// kept size (no 409) and then from the one before.
	one.Restart()
	two.Restart()
	c, stop = start(opts)
	for _, n := range []int{0, 1} {
		size = l.grow(n) // the restart's first round covers the 2 events before
		cp, err := waitWitnessed(t, c, size)
		if err != nil {
			t.Fatalf("%v\none: %s\ntwo: %s", err, one.Output(), two.Output())
		}
		if _, cosigs, err := readers.Verify(cp.Note, logV); err != nil || len(cosigs) != 2 || cp.Size != size {
			t.Fatalf("after the restart: %d events, %v, %v", cp.Size, cosigs, err)
		}
	}
	stop()
	// The first run's checkpoint, and the two of this one.
	if keeper.saves.Load() != 3 {
		t.Fatalf("%d saves, want 3", keeper.saves.Load())
	}

	// A tree behind the kept checkpoint, with the witnesses up: it is not
	// served, and no round posts a smaller checkpoint (which the witnesses
	// would refuse with a 409, as a fork) until the tree covers it; then it
	// is served before the next round.
	tr.limit.Store(size - 1)
	logs.Reset()
	c, stop = start(opts)
	if got, ok := c.Latest(); ok {
		t.Fatalf("a kept checkpoint of %d events served with a tree of %d", got.Size, tr.Size())
	}
	if _, err := waitWitnessed(t, c, size-1); err == nil || !strings.Contains(err.Error(), "no checkpoint of") {
		t.Fatalf("a round with the tree behind the kept checkpoint: %v", err)
	}
	if out := logs.String(); !strings.Contains(out, "the kept witnessed checkpoint waits for the tree") {
		t.Fatalf("the log does not say that the kept checkpoint waits:\n%s", out)
	}
	tr.limit.Store(0)
	if got, err := waitWitnessed(t, c, size); err != nil || got.Size != size {
		t.Fatalf("once the tree covers it: %d events, %v", got.Size, err)
	}
	if f := c.Failures(); f["witness.test/one"] != 0 || f["witness.test/two"] != 0 {
		t.Fatalf("failures %v", f)
	}
	stop()
	if n := conflicts.Load(); n != 0 {
		t.Fatalf("witness one answered 409 %d times", n)
	}
	if keeper.saves.Load() != 3 {
		t.Fatalf("%d saves, want still 3", keeper.saves.Load())
	}

	// Kept checkpoints that do not check, with the witnesses down again:
	// WaitFor(1) returns at once with a kept checkpoint, and otherwise fails
	// with the first round.
	one.Stop()
	two.Stop()
	kb, _ := keeper.Load(context.Background())
	var good witness.Kept
	if err := json.Unmarshal(kb, &good); err != nil {
		t.Fatal(err)
	}
	if good.Format != witness.KeptFormat {
		t.Fatalf("kept format %q", good.Format)
	}
	// sign signs a checkpoint of size events with the tree's root at
	// rootSize.
	sign := func(s *checkpoint.Signer, size, rootSize uint64) string {
		t.Helper()
		root, err := l.tree.Root(context.Background(), rootSize)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Sign(size, root)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	otherSigner, _ := newSigner(t)
	for name, tc := range map[string]struct {
		edit func(k *witness.Kept)
		want string
	}{
		"another format":    {func(k *witness.Kept) { k.Format = "caledger-witnessed/0" }, "caledger-witnessed/0"},
		"no time":           {func(k *witness.Kept) { k.At = time.Time{} }, "has no time"},
		"another log's key": {func(k *witness.Kept) { k.Signed = sign(otherSigner, size, size) }, "does not verify with the log's key"},
		"another root":      {func(k *witness.Kept) { k.Signed = sign(signer, size, size-1) }, "another root than the tree"},
		"no cosignatures":   {func(k *witness.Kept) { k.Cosignatures = "" }, "holds 0 of the 2 cosignatures"},
		"one cosignature": {func(k *witness.Kept) {
			k.Cosignatures, _, _ = strings.Cut(k.Cosignatures, "\n")
			k.Cosignatures += "\n"
		}, "holds 1 of the 2 cosignatures"},
		"lines in the signed": {func(k *witness.Kept) { k.Signed += k.Cosignatures }, "other signatures than the log's"},
	} {
		t.Run(name, func(t *testing.T) {
			k := good
			tc.edit(&k)
			b, err := json.Marshal(k)
			if err != nil {
				t.Fatal(err)
			}
			if err := keeper.Save(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			logs.Reset()
			cs, stop := start(opts)
			defer stop()
			if cp, err := waitWitnessed(t, cs, 1); err == nil {
				t.Fatalf("served a kept checkpoint of %d events", cp.Size)
			}
			if out := logs.String(); !strings.Contains(out, "kept witnessed checkpoint is not used") || !strings.Contains(out, tc.want) {
				t.Fatalf("the log does not say %q:\n%s", tc.want, out)
			}
		})
	}
	// A time ahead of the witnesses' is taken as the newest cosignature's;
	// the good one, put back, is served again as it was.
	for _, at := range []time.Time{time.Now().Add(time.Hour), good.At} {
		k := good
		k.At = at
		b, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := keeper.Save(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		c, stop = start(opts)
		cp, ok := c.Latest()
		stop()
		_, cosigs, err := readers.Verify(cp.Note, logV)
		if !ok || err != nil || !bytes.Equal(cp.Note, []byte(good.Signed+good.Cosignatures)) {
			t.Fatalf("the kept checkpoint at %v: %v, %v\n%s", at, ok, err, cp.Note)
		}
		if newest := newestOf(cosigs); cp.At.After(newest) || cp.At.After(good.At) {
			t.Fatalf("the kept checkpoint at %v is served at %v; its newest cosignature is of %v", at, cp.At, newest)
		}
	}
}

// newestOf is the time of the newest of cs.
func newestOf(cs []checkpoint.Cosignature) time.Time {
	var newest time.Time
	for _, c := range cs {
		if c.Time.After(newest) {
			newest = c.Time
		}
	}
	return newest
}

// syncBuffer is a bytes.Buffer for a logger that several goroutines write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}
