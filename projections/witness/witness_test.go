package witness_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

func witnessesOf(t testing.TB, ws ...*witnesstest.Witness) []witness.Witness {
	t.Helper()
	var out []witness.Witness
	for _, w := range ws {
		v, err := checkpoint.NewWitnessVerifier(w.VKey)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, witness.Witness{URL: w.URL, Verifier: v})
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

// TestCosign has real witnesses cosign the ledger's checkpoints as it grows,
// across a restart of the cosigner, and checks what a reader checks.
func TestCosign(t *testing.T) {
	l := newLedger(t)
	signer, logV := newSigner(t)
	one, two := witnesstest.Start(t, "witness.test/one"), witnesstest.Start(t, "witness.test/two")
	for _, w := range []*witnesstest.Witness{one, two} {
		w.AddLog(origin, signer.VerifierKey())
	}
	readers, err := checkpoint.ParseWitnesses([]string{one.VKey, two.VKey}, 0)
	if err != nil {
		t.Fatal(err)
	}
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
	// witnessed checkpoint stays; a quorum of one is met without it.
	two.Stop()
	size := l.grow(2)
	if _, err := waitWitnessed(t, c2, size); err == nil || !strings.Contains(err.Error(), "1 of the 2") || !strings.Contains(err.Error(), "witness.test/two") {
		t.Fatalf("with a witness down: %v", err)
	}
	if cp, _ := c2.Latest(); cp.Size != size-2 {
		t.Fatalf("latest witnessed %d, want %d", cp.Size, size-2)
	}
	if c2.Failures()["witness.test/two"] == 0 {
		t.Fatal("the witness that is down counts no failure")
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
	quorum1, err := checkpoint.ParseWitnesses([]string{one.VKey, two.VKey}, 1)
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
