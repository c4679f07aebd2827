package tree

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/caledger/caledger/eventstore/storetest"
)

// safety bounds a test that would otherwise hang on a bug; no assertion
// depends on it.
const safety = time.Minute

// ref is the reference RFC 6962 tree: MTH straight from the RFC's definition,
// over leaf hashes, memoized by subtree.
type ref struct {
	leaves [][]byte
	memo   map[[2]int][]byte
}

func newRef(events []domain.Event) *ref {
	r := &ref{memo: map[[2]int][]byte{}}
	for i := range events {
		b, err := domain.Encode(&events[i])
		if err != nil {
			panic(err)
		}
		r.leaves = append(r.leaves, rfc6962.DefaultHasher.HashLeaf(b))
	}
	return r
}

// root is MTH(D[0:n]).
func (r *ref) root(n int) []byte { return r.mth(0, n) }

// mth is MTH(D[start:start+n]): the hash of the empty string for n == 0, the
// leaf hash for n == 1, else the node hash of the subtrees split at k, the
// largest power of two smaller than n.
func (r *ref) mth(start, n int) []byte {
	switch n {
	case 0:
		return rfc6962.DefaultHasher.EmptyRoot() // SHA-256 of the empty string
	case 1:
		return r.leaves[start]
	}
	if h, ok := r.memo[[2]int{start, n}]; ok {
		return h
	}
	k := 1
	for k*2 < n {
		k *= 2
	}
	h := rfc6962.DefaultHasher.HashChildren(r.mth(start, k), r.mth(start+k, n-k))
	r.memo[[2]int{start, n}] = h
	return h
}

// events returns valid events for positions from to to, whose content depends
// on seed and the position.
func events(seed string, from, to uint64) []domain.Event {
	var out []domain.Event
	for p := from; p <= to; p++ {
		var id domain.EventID
		binary.BigEndian.PutUint64(id[:], p)
		copy(id[8:], seed)
		e := domain.Event{
			Position: p,
			Stream:   fmt.Sprintf("s-%d", p%7),
			Version:  p/7 + 1,
			ID:       id,
			Type:     "test.event",
			Schema:   1,
			Time:     time.Date(2026, 1, 2, 3, 4, 5, int(p), time.UTC),
			Actor:    domain.Actor{ID: "cert:0a", Role: "officer"},
			Public:   fmt.Appendf(nil, `{"n":%d,"seed":%q}`, p, seed),
		}
		if p%5 == 0 {
			e.Sealed = &domain.Sealed{SubjectID: "subj-1", KeyGroup: "g", KeyID: 3, Ciphertext: []byte(seed + "ct")}
		}
		out = append(out, e)
	}
	return out
}

// fakeSource is an in-memory ledger. Follow yields the events whose position
// is at least from, in slice order (so a test can plant a gap), then waits for
// more until ctx ends.
type fakeSource struct {
	mu     sync.Mutex
	events []domain.Event
	froms  []uint64
	more   chan struct{} // closed and replaced by add
}

func newSource(evs ...domain.Event) *fakeSource {
	return &fakeSource{events: evs, more: make(chan struct{})}
}

func (s *fakeSource) add(evs ...domain.Event) {
	s.mu.Lock()
	s.events = append(s.events, evs...)
	close(s.more)
	s.more = make(chan struct{})
	s.mu.Unlock()
}

func (s *fakeSource) Head(context.Context) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.events) == 0 {
		return 0, nil
	}
	return s.events[len(s.events)-1].Position, nil
}

func (s *fakeSource) Follow(ctx context.Context, from uint64) iter.Seq2[domain.Event, error] {
	s.mu.Lock()
	s.froms = append(s.froms, from)
	s.mu.Unlock()
	return func(yield func(domain.Event, error) bool) {
		next := 0
		for {
			if err := ctx.Err(); err != nil {
				yield(domain.Event{}, err)
				return
			}
			s.mu.Lock()
			evs, more := s.events[next:], s.more
			s.mu.Unlock()
			for _, e := range evs {
				next++
				if e.Position >= from && !yield(e, nil) {
					return
				}
			}
			if len(evs) == 0 {
				select {
				case <-more:
				case <-ctx.Done():
				}
			}
		}
	}
}

func (s *fakeSource) lastFrom() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.froms[len(s.froms)-1]
}

func open(t testing.TB, path string) *Tree {
	t.Helper()
	tr, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	tr.livePause = 0
	t.Cleanup(func() { tr.Close() })
	return tr
}

// start runs tr.Run(src) in a goroutine; the returned function cancels it
// and returns its error.
func start(t testing.TB, tr *Tree, src Source) func() error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx, src) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func waitFor(t testing.TB, tr *Tree, size uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	if err := tr.WaitFor(ctx, size); err != nil {
		t.Fatalf("WaitFor(%d): %v (size %d)", size, err, tr.Size())
	}
}

func stopCanceled(t testing.TB, stop func() error) {
	t.Helper()
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
}

func checkRoot(t testing.TB, tr *Tree, r *ref, size uint64) {
	t.Helper()
	got, err := tr.Root(context.Background(), size)
	if err != nil {
		t.Fatalf("Root(%d): %v", size, err)
	}
	if want := r.root(int(size)); !bytes.Equal(got, want) {
		t.Fatalf("Root(%d) = %x, want %x", size, got, want)
	}
}

func checkInclusion(t testing.TB, tr *Tree, r *ref, index, size uint64) {
	t.Helper()
	p, err := tr.InclusionProof(context.Background(), index, size)
	if err != nil {
		t.Fatalf("InclusionProof(%d, %d): %v", index, size, err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, size, r.leaves[index], p, r.root(int(size))); err != nil {
		t.Fatalf("InclusionProof(%d, %d) does not verify: %v", index, size, err)
	}
}

func checkConsistency(t testing.TB, tr *Tree, r *ref, size1, size2 uint64) {
	t.Helper()
	p, err := tr.ConsistencyProof(context.Background(), size1, size2)
	if err != nil {
		t.Fatalf("ConsistencyProof(%d, %d): %v", size1, size2, err)
	}
	if size1 == size2 && len(p) != 0 {
		t.Fatalf("ConsistencyProof(%d, %d) has %d hashes, want none", size1, size2, len(p))
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, size1, size2, p, r.root(int(size1)), r.root(int(size2))); err != nil {
		t.Fatalf("ConsistencyProof(%d, %d) does not verify: %v", size1, size2, err)
	}
}

// TestRootsAndProofs checks every root, every inclusion and consistency proof
// of the small trees, and a sample of the larger ones, against the reference.
func TestRootsAndProofs(t *testing.T) {
	const n = 300
	evs := events("a", 1, n)
	r := newRef(evs)
	tr := open(t, filepath.Join(t.TempDir(), "tree.db"))
	if got, want := tr.Size(), uint64(0); got != want {
		t.Fatalf("Size() = %d, want %d", got, want)
	}
	checkRoot(t, tr, r, 0)
	src := newSource()
	stop := start(t, tr, src)
	// Feed the events in uneven steps, so that they arrive in many batches.
	for i := 0; i < n; {
		k := min(n-i, 1+i%13)
		src.add(evs[i : i+k]...)
		i += k
		if i%3 == 0 {
			waitFor(t, tr, uint64(i))
		}
	}
	waitFor(t, tr, n)
	if got := tr.Size(); got != n {
		t.Fatalf("Size() = %d, want %d", got, n)
	}
	for size := uint64(0); size <= n; size++ {
		checkRoot(t, tr, r, size)
	}
	for size := uint64(1); size <= n; size++ {
		if size <= 40 || size == n || size&(size-1) == 0 || (size+1)&size == 0 || (size-1)&(size-2) == 0 {
			for i := range size {
				checkInclusion(t, tr, r, i, size)
			}
		} else {
			for _, i := range []uint64{0, size / 3, size / 2, size - 2, size - 1} {
				checkInclusion(t, tr, r, i, size)
			}
		}
	}
	for size2 := uint64(1); size2 <= n; size2++ {
		if size2 <= 40 || size2 == n || size2%37 == 0 {
			for size1 := uint64(1); size1 <= size2; size1++ {
				checkConsistency(t, tr, r, size1, size2)
			}
		} else {
			for _, size1 := range []uint64{1, size2 / 2, size2 - 1, size2} {
				checkConsistency(t, tr, r, max(size1, 1), size2)
			}
		}
	}
	stopCanceled(t, stop)
}

// TestLargeTree builds a tree larger than one batch and checks it around
// powers of two; every batch must hold at most maxBatch leaves.
func TestLargeTree(t *testing.T) {
	const n = 3*maxBatch + 5
	evs := events("b", 1, n)
	r := newRef(evs)
	tr := open(t, filepath.Join(t.TempDir(), "tree.db"))
	var mu sync.Mutex
	var batches []int
	tr.onCommit = func(leaves int) {
		mu.Lock()
		batches = append(batches, leaves)
		mu.Unlock()
	}
	stop := start(t, tr, newSource(evs...))
	waitFor(t, tr, n)
	stopCanceled(t, stop)
	total := 0
	for _, b := range batches {
		if b > maxBatch {
			t.Errorf("a batch appended %d leaves, more than %d", b, maxBatch)
		}
		total += b
	}
	if total != n {
		t.Errorf("batches appended %d leaves in all, want %d", total, n)
	}
	t.Logf("%d leaves in %d commits", n, len(batches))

	var sizes []uint64
	for p := uint64(1); p <= n; p *= 2 {
		sizes = append(sizes, p-1, p, p+1)
	}
	sizes = append(sizes, 3000, 5000, 7777, n-1, n)
	sizes = slices.DeleteFunc(sizes, func(s uint64) bool { return s > n })
	for _, size := range sizes {
		checkRoot(t, tr, r, size)
		if size == 0 {
			continue
		}
		for _, i := range []uint64{0, 1, size / 2, size - 2, size - 1} {
			if i < size {
				checkInclusion(t, tr, r, i, size)
			}
		}
		for _, size1 := range sizes {
			if size1 > 0 && size1 <= size {
				checkConsistency(t, tr, r, size1, size)
			}
		}
	}
}

// TestReopen closes a tree and opens it again: its size and roots survive,
// and Run continues from Size()+1.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "tree.db")
	evs := events("c", 1, 257)
	r := newRef(evs)
	src := newSource(evs[:100]...)

	tr, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, tr, src)
	waitFor(t, tr, 100)
	stopCanceled(t, stop)
	if got := src.lastFrom(); got != 1 {
		t.Errorf("the first Run followed from %d, want 1", got)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, filepath.Dir(path)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]os.FileMode{false: 0o600, true: 0o700}[fi.IsDir()]; fi.Mode().Perm() != want {
			t.Errorf("%s has mode %04o, want %04o", p, fi.Mode().Perm(), want)
		}
	}

	tr = open(t, path)
	if got := tr.Size(); got != 100 {
		t.Fatalf("after reopening, Size() = %d, want 100", got)
	}
	for size := uint64(0); size <= 100; size++ {
		checkRoot(t, tr, r, size)
	}
	src.add(evs[100:]...)
	stop = start(t, tr, src)
	waitFor(t, tr, 257)
	stopCanceled(t, stop)
	src.mu.Lock()
	froms := slices.Clone(src.froms)
	src.mu.Unlock()
	if got := froms[len(froms)-1]; got != 101 {
		t.Errorf("after reopening, Run followed from %d, want 101 (all: %v)", got, froms)
	}
	for _, from := range froms[1:] {
		if from < 100 {
			t.Errorf("after reopening, Run read the ledger from %d (all: %v)", from, froms)
		}
	}
	for size := uint64(0); size <= 257; size++ {
		checkRoot(t, tr, r, size)
	}
	checkConsistency(t, tr, r, 100, 257)
	checkInclusion(t, tr, r, 99, 257)
}

// TestGap: a position other than Size()+1 ends Run with an error naming both
// positions, and nothing past it is committed.
func TestGap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tree.db")
	evs := events("d", 1, 9)
	for _, tc := range []struct {
		name   string
		events []domain.Event
		due    uint64
	}{
		{"gap", append(slices.Clone(evs[:5]), evs[6:]...), 6},           // 1..5, 7..9
		{"repeat", append(slices.Clone(evs[:5]), evs[4:]...), 6},        // 1..5, 5..9
		{"backwards", append(slices.Clone(evs[:5]), evs[2], evs[5]), 6}, // 1..5, 3, 6
		{"at start", evs[1:], 1},                                        // 2..9
		{"second batch", append(slices.Clone(evs[:5]), evs[7:]...), 6},  // like gap
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(path)
			os.Remove(path + "-wal")
			os.Remove(path + "-shm")
			tr, err := Open(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			src := newSource()
			if tc.name == "second batch" {
				// The good events are committed before the bad one arrives.
				src.add(tc.events[:5]...)
			} else {
				src.add(tc.events...)
			}
			ctx, cancel := context.WithTimeout(context.Background(), safety)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- tr.Run(ctx, src) }()
			if tc.name == "second batch" {
				waitFor(t, tr, 5)
				src.add(tc.events[5:]...)
			}
			err = <-done
			if err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrRange) {
				t.Fatalf("Run returned %v, want a gap error", err)
			}
			bad := tc.events[tc.due-1].Position
			if !strings.Contains(err.Error(), fmt.Sprintf("position %d where %d was due", bad, tc.due)) {
				t.Errorf("Run returned %q, want it to name positions %d and %d", err, bad, tc.due)
			}
			if got := tr.Size(); got != tc.due-1 {
				t.Errorf("Size() = %d after the gap, want %d", got, tc.due-1)
			}
			if err := tr.Close(); err != nil {
				t.Fatal(err)
			}
			tr = open(t, path)
			if got := tr.Size(); got != tc.due-1 {
				t.Errorf("after reopening, Size() = %d, want %d", got, tc.due-1)
			}
			r := newRef(evs[:tc.due-1])
			checkRoot(t, tr, r, tc.due-1)
		})
	}
}

// TestOtherLedger: Run refuses a ledger that is shorter than the tree or holds
// another event at the tree's last position, and changes nothing.
func TestOtherLedger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tree.db")
	tr := open(t, path)
	stop := start(t, tr, newSource(events("e", 1, 10)...))
	waitFor(t, tr, 10)
	stopCanceled(t, stop)
	root, err := tr.Root(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	for name, src := range map[string]*fakeSource{
		"shorter":       newSource(events("e", 1, 9)...),
		"empty":         newSource(),
		"other":         newSource(events("f", 1, 12)...),
		"other at head": newSource(append(events("e", 1, 9), events("f", 10, 12)...)...),
	} {
		err := tr.Run(ctx, src)
		if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not the one the tree was built from") {
			t.Errorf("%s: Run returned %v, want an error about another ledger", name, err)
		}
		if got := tr.Size(); got != 10 {
			t.Errorf("%s: Size() = %d, want 10", name, got)
		}
	}
	if got, err := tr.Root(context.Background(), 10); err != nil || !bytes.Equal(got, root) {
		t.Errorf("Root(10) = %x, %v; want %x", got, err, root)
	}
	// The right ledger is accepted, and the tree grows.
	evs := events("e", 1, 12)
	stop = start(t, tr, newSource(evs...))
	waitFor(t, tr, 12)
	stopCanceled(t, stop)
	checkRoot(t, tr, newRef(evs), 12)
}

// TestErrRange: sizes and indexes outside the tree, and invalid combinations,
// match ErrRange.
func TestErrRange(t *testing.T) {
	evs := events("g", 1, 20)
	tr := open(t, filepath.Join(t.TempDir(), "tree.db"))
	ctx := context.Background()
	for _, size := range []uint64{1, 2, 100} {
		if _, err := tr.Root(ctx, size); !errors.Is(err, ErrRange) {
			t.Errorf("empty tree: Root(%d) = %v, want ErrRange", size, err)
		}
	}
	if _, err := tr.InclusionProof(ctx, 0, 0); !errors.Is(err, ErrRange) {
		t.Errorf("empty tree: InclusionProof(0, 0) = %v, want ErrRange", err)
	}
	stop := start(t, tr, newSource(evs...))
	waitFor(t, tr, 20)
	stopCanceled(t, stop)

	for _, size := range []uint64{21, 1 << 40, ^uint64(0)} {
		if _, err := tr.Root(ctx, size); !errors.Is(err, ErrRange) {
			t.Errorf("Root(%d) = %v, want ErrRange", size, err)
		}
	}
	for _, c := range [][2]uint64{{0, 0}, {5, 5}, {6, 5}, {20, 20}, {0, 21}, {25, 30}, {^uint64(0), ^uint64(0)}} {
		if _, err := tr.InclusionProof(ctx, c[0], c[1]); !errors.Is(err, ErrRange) {
			t.Errorf("InclusionProof(%d, %d) = %v, want ErrRange", c[0], c[1], err)
		}
	}
	for _, c := range [][2]uint64{{0, 0}, {0, 5}, {6, 5}, {20, 19}, {5, 21}, {21, 21}, {1, ^uint64(0)}} {
		if _, err := tr.ConsistencyProof(ctx, c[0], c[1]); !errors.Is(err, ErrRange) {
			t.Errorf("ConsistencyProof(%d, %d) = %v, want ErrRange", c[0], c[1], err)
		}
	}
	// The edges are valid.
	r := newRef(evs)
	checkRoot(t, tr, r, 20)
	checkInclusion(t, tr, r, 19, 20)
	checkInclusion(t, tr, r, 0, 1)
	checkConsistency(t, tr, r, 20, 20)
	checkConsistency(t, tr, r, 1, 20)
}

// TestWaitFor: WaitFor returns once Run has committed the size, and with
// ctx's error when ctx ends first.
func TestWaitFor(t *testing.T) {
	tr := open(t, filepath.Join(t.TempDir(), "tree.db"))
	if err := tr.WaitFor(context.Background(), 0); err != nil {
		t.Fatalf("WaitFor(0) = %v", err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tr.WaitFor(canceled, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFor(canceled, 1) = %v, want context.Canceled", err)
	}

	// A waiter that starts before the events exist.
	waiting := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), safety)
		defer cancel()
		err := tr.WaitFor(ctx, 10)
		if err == nil && tr.Size() < 10 {
			err = fmt.Errorf("WaitFor returned at size %d", tr.Size())
		}
		waiting <- err
	}()
	// A waiter for a size that never comes, canceled.
	ctx, cancel := context.WithCancel(context.Background())
	never := make(chan error, 1)
	go func() { never <- tr.WaitFor(ctx, 1000) }()

	src := newSource()
	stop := start(t, tr, src)
	evs := events("h", 1, 12)
	for i := range evs {
		src.add(evs[i])
	}
	if err := <-waiting; err != nil {
		t.Fatalf("WaitFor(10): %v", err)
	}
	cancel()
	if err := <-never; !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFor(1000) after cancel = %v, want context.Canceled", err)
	}
	waitFor(t, tr, 12)
	stopCanceled(t, stop)

	// Close wakes a waiter: one that is waiting (its notify channel taken)
	// before Close starts.
	closed := make(chan error, 1)
	blocked := make(chan struct{}, 1)
	tr.onWait = func() { blocked <- struct{}{} }
	go func() { closed <- tr.WaitFor(context.Background(), 1000) }()
	<-blocked
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err == nil {
		t.Fatal("WaitFor(1000) returned nil after Close")
	}
}

// TestClose: Close stops a running Run; a second Run while one runs fails;
// a second Open of the same file fails; a closed tree refuses work.
func TestClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tree.db")
	tr, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second Open = %v, want an error saying the file is in use", err)
	}
	src := newSource(events("i", 1, 3)...)
	done := make(chan error, 1)
	go func() { done <- tr.Run(context.Background(), src) }()
	waitFor(t, tr, 3)
	if err := tr.Run(context.Background(), src); err == nil {
		t.Error("a second Run returned nil while one runs")
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("Run after Close returned %v, want the tree's closed error", err)
	}
	if err := tr.Run(context.Background(), src); err == nil {
		t.Error("Run on a closed tree returned nil")
	}
	if _, err := tr.Root(context.Background(), 1); err == nil {
		t.Error("Root on a closed tree returned nil")
	}
	if _, err := tr.InclusionProof(context.Background(), 0, 2); err == nil {
		t.Error("InclusionProof on a closed tree returned nil")
	}
	if err := tr.Close(); err != nil {
		t.Errorf("a second Close = %v", err)
	}
	tr2 := open(t, path) // the lock is released
	if got := tr2.Size(); got != 3 {
		t.Errorf("Size() = %d, want 3", got)
	}
}

// TestDamagedFile: Open refuses a file whose right-edge nodes do not give the
// stored root.
func TestDamagedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tree.db")
	tr := open(t, path)
	stop := start(t, tr, newSource(events("j", 1, 5)...))
	waitFor(t, tr, 5)
	stopCanceled(t, stop)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE nodes SET hash = zeroblob(32) WHERE level = 0 AND idx = 4`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(context.Background(), path); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Open of a damaged file = %v, want an error saying it is damaged", err)
	}
}

// TestConcurrentReads reads roots and proofs while Run appends, checking each
// against the reference.
func TestConcurrentReads(t *testing.T) {
	const n = 600
	evs := events("k", 1, n)
	r := newRef(evs)
	for s := range n + 1 {
		r.root(s) // fill the memo before the readers share it
	}
	tr := open(t, filepath.Join(t.TempDir(), "tree.db"))
	src := newSource()
	stop := start(t, tr, src)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	for w := range 4 {
		wg.Go(func() {
			for i := uint64(w); ; i++ {
				if ctx.Err() != nil {
					errs <- fmt.Errorf("the tree reached %d of %d leaves in %s", tr.Size(), n, safety)
					return
				}
				size := tr.Size()
				if size == 0 {
					tr.WaitFor(ctx, 1)
					continue
				}
				root, err := tr.Root(ctx, size)
				if err == nil && !bytes.Equal(root, r.mth(0, int(size))) {
					err = fmt.Errorf("Root(%d) is wrong", size)
				}
				if err == nil {
					var p [][]byte
					index := i % size
					if p, err = tr.InclusionProof(ctx, index, size); err == nil {
						err = proof.VerifyInclusion(rfc6962.DefaultHasher, index, size, r.leaves[index], p, root)
					}
				}
				if err == nil {
					// A smaller size, whose root is read from the file.
					older := 1 + i%size
					var got []byte
					if got, err = tr.Root(ctx, older); err == nil && !bytes.Equal(got, r.mth(0, int(older))) {
						err = fmt.Errorf("Root(%d) of %d is wrong", older, size)
					}
				}
				if err == nil {
					var p [][]byte
					size1 := 1 + i%size
					if p, err = tr.ConsistencyProof(ctx, size1, size); err == nil {
						err = proof.VerifyConsistency(rfc6962.DefaultHasher, size1, size, p, r.mth(0, int(size1)), root)
					}
				}
				if err != nil {
					errs <- err
					return
				}
				if size == n {
					return
				}
			}
		})
	}
	for i := 0; i < n; i += 7 {
		src.add(evs[i:min(n, i+7)]...)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	stopCanceled(t, stop)
}

// TestRealStore runs the tree over the embedded SQLite ledger and checks its
// roots and proofs against the reference over the events read back.
func TestRealStore(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	appendSome := func(round int) {
		for i, stream := range []string{"alpha", "beta", "gamma"} {
			var evs []domain.Event
			for j := range 1 + (round+i)%4 {
				evs = append(evs, storetest.NewEvent(t, "test.event", fmt.Appendf(nil, `{"round":%d,"n":%d}`, round, j)))
			}
			if _, err := s.Append(ctx, stream, domain.Any, evs...); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(tr *Tree) {
		t.Helper()
		head, err := s.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, tr, head)
		var evs []domain.Event
		for e, err := range s.ReadAll(ctx, 1) {
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, e)
		}
		if uint64(len(evs)) != head {
			t.Fatalf("ReadAll gave %d events, head is %d", len(evs), head)
		}
		r := newRef(evs)
		for size := range head + 1 {
			checkRoot(t, tr, r, size)
		}
		for index := range head {
			checkInclusion(t, tr, r, index, head)
		}
		for size1 := uint64(1); size1 <= head; size1++ {
			checkConsistency(t, tr, r, size1, head)
		}
	}
	for round := range 3 {
		appendSome(round)
	}
	path := filepath.Join(t.TempDir(), "tree.db")
	tr := open(t, path)
	stop := start(t, tr, s)
	check(tr)
	appendSome(3) // live, while Run follows
	check(tr)
	stopCanceled(t, stop)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened, the tree accepts its ledger and catches up.
	appendSome(4)
	tr = open(t, path)
	stop = start(t, tr, s)
	check(tr)
	stopCanceled(t, stop)
}

// BenchmarkTreeAppend appends 100k leaves to a new tree per iteration.
func BenchmarkTreeAppend(b *testing.B) {
	const n = 100_000
	evs := events("bench", 1, n)
	src := newSource(evs...)
	b.ResetTimer()
	for range b.N {
		tr, err := Open(context.Background(), filepath.Join(b.TempDir(), "tree.db"))
		if err != nil {
			b.Fatal(err)
		}
		stop := start(b, tr, src)
		waitFor(b, tr, n)
		stop()
		tr.Close()
	}
	b.ReportMetric(float64(b.N)*n/b.Elapsed().Seconds(), "leaves/s")
}
