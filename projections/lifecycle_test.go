package projections

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/projections/handoff"
)

func TestWaitFor(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.open(t, r.viewsPath())
	r.register(t, map[string]string{"common_name": "A"})
	head := r.head(t)

	// Not running: WaitFor honours its context.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := v.WaitFor(short, head); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor with nothing applying: %v, want DeadlineExceeded", err)
	}

	done := make(chan error, 1)
	go func() { done <- v.WaitFor(ctx, head) }()
	stop := run(t, v, r.store)
	select {
	case err := <-done:
		must(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("WaitFor did not return once the position was applied")
	}
	if err := v.WaitFor(ctx, 0); err != nil {
		t.Fatal(err)
	}
	must(t, stop())

	// Close wakes a waiter.
	go func() { done <- v.WaitFor(ctx, head+100) }()
	time.Sleep(10 * time.Millisecond)
	must(t, v.Close())
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("WaitFor after Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake WaitFor")
	}
}

// TestLiveLag appends from four goroutines while Run follows, and measures how
// long each append takes to become visible. The target is 100 ms; the test
// allows more for the race detector and a shared machine.
func TestLiveLag(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.open(t, r.viewsPath())
	stop := run(t, v, r.store)
	var mu sync.Mutex
	var lags []time.Duration
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			id := r.register(t, map[string]string{"common_name": "Live"})
			for i := range 40 {
				var err error
				if (g+i)%4 == 0 {
					err = r.h.CorrectSubject(ctx, officer, id, map[string]string{"email": "live@example.org"}, domain.GroupIdentity)
				} else {
					err = r.h.RecordAccess(ctx, officer, id, "read", "monitoring")
				}
				if err != nil {
					t.Error(err)
					return
				}
				p, err := r.store.Head(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				began := time.Now()
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err = v.WaitFor(wctx, p)
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				lags = append(lags, time.Since(began))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(lags)
	if len(lags) == 0 {
		t.Fatal("no measurements")
	}
	p50, p99, worst := lags[len(lags)/2], lags[len(lags)*99/100], lags[len(lags)-1]
	t.Logf("append-to-visible lag over %d appends: p50 %v, p99 %v, max %v", len(lags), p50, p99, worst)
	if p99 > 500*time.Millisecond {
		t.Errorf("p99 lag %v, want well under 500ms (target 100ms)", p99)
	}
	lag, err := v.Lag(ctx, r.store)
	must(t, err)
	for name, l := range lag {
		if l != (Lag{}) {
			t.Errorf("lag of %s after catching up: %+v", name, l)
		}
	}
	must(t, stop())
}

func TestLag(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.open(t, r.viewsPath())
	r.register(t, map[string]string{"common_name": "A"})
	r.clock.Set(start.Add(time.Minute))
	r.register(t, map[string]string{"common_name": "B"})
	r.clock.Set(start.Add(90 * time.Second))

	lag, err := v.Lag(ctx, r.store)
	must(t, err)
	if len(lag) != numProjections {
		t.Fatalf("lag for %d projections", len(lag))
	}
	for name, l := range lag {
		if l.Events != 2 || l.Age != 90*time.Second {
			t.Errorf("lag of %s: %+v, want 2 events, 90s", name, l)
		}
	}
	// Against a head read earlier, the lag is counted up to that head.
	lag, err = v.LagAt(ctx, r.store, 1)
	must(t, err)
	if len(lag) != numProjections {
		t.Fatalf("lag at head 1 for %d projections", len(lag))
	}
	for name, l := range lag {
		if l.Events != 1 || l.Age != 90*time.Second {
			t.Errorf("lag of %s at head 1: %+v, want 1 event, 90s", name, l)
		}
	}
	stop := run(t, v, r.store)
	r.sync(t, v)
	// A checkpoint past a head read earlier counts as caught up.
	lag, err = v.LagAt(ctx, r.store, 1)
	must(t, err)
	if len(lag) != numProjections {
		t.Fatalf("lag past head 1 for %d projections", len(lag))
	}
	for name, l := range lag {
		if l != (Lag{}) {
			t.Errorf("lag of %s past head 1: %+v, want none", name, l)
		}
	}
	lag, err = v.Lag(ctx, r.store)
	must(t, err)
	for name, l := range lag {
		if l != (Lag{}) {
			t.Errorf("lag of %s after catching up: %+v", name, l)
		}
	}
	must(t, stop())
}

func TestRunStops(t *testing.T) {
	t.Run("context", func(t *testing.T) {
		r := newRig(t)
		v := r.open(t, r.viewsPath())
		stop := run(t, v, r.store)
		r.register(t, map[string]string{"common_name": "A"})
		r.sync(t, v)
		if err := v.Run(context.Background(), r.store); !errors.Is(err, ErrBusy) {
			t.Errorf("a second Run: %v, want ErrBusy", err)
		}
		if err := v.Rebuild(context.Background(), r.store, nil); !errors.Is(err, ErrBusy) {
			t.Errorf("Rebuild during Run: %v, want ErrBusy", err)
		}
		if err := stop(); err != nil {
			t.Errorf("Run after its context ended: %v, want nil", err)
		}
	})
	t.Run("views closed", func(t *testing.T) {
		r := newRig(t)
		v := r.open(t, r.viewsPath())
		done := make(chan error, 1)
		go func() { done <- v.Run(context.Background(), r.store) }()
		r.register(t, map[string]string{"common_name": "A"})
		r.sync(t, v)
		must(t, v.Close())
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after Close: %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after Close")
		}
		if err := v.Run(context.Background(), r.store); !errors.Is(err, ErrClosed) {
			t.Errorf("Run on closed views: %v, want ErrClosed", err)
		}
		if _, err := v.Certificate(context.Background(), "1"); !errors.Is(err, ErrClosed) {
			t.Errorf("query on closed views: %v, want ErrClosed", err)
		}
	})
	t.Run("ledger closed", func(t *testing.T) {
		r := newRig(t)
		path := r.viewsPath()
		v := r.open(t, path)
		done := make(chan error, 1)
		go func() { done <- v.Run(context.Background(), r.store) }()
		r.register(t, map[string]string{"common_name": "A"})
		r.sync(t, v)
		head := r.head(t)
		must(t, r.store.Close())
		select {
		case err := <-done:
			if !errors.Is(err, eventstore.ErrClosed) {
				t.Errorf("Run after the ledger closed: %v, want ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after the ledger closed")
		}
		must(t, v.Close())
		v = r.open(t, path)
		for name, cp := range v.Checkpoints() {
			if cp != head {
				t.Errorf("checkpoint %s = %d, want %d", name, cp, head)
			}
		}
	})
}

// TestSkipsUnknownEvents: events of an unknown type or schema are skipped, logged
// by type only, and the checkpoints move past them.
func TestSkipsUnknownEvents(t *testing.T) {
	r := newRig(t)
	var logs bytes.Buffer
	v, err := Open(context.Background(), r.viewsPath(), Options{Sealer: r.sealer,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	must(t, err)
	t.Cleanup(func() { v.Close() })
	stop := run(t, v, r.store)
	id := r.register(t, victim)
	r.issue(t, id, "issuing") // subject.certificate-linked is known, and not logged
	appendRaw(t, r, "ca-issuing", "ca.key-rotated", 1, `{"ca_id":"issuing"}`)
	appendRaw(t, r, "ca-issuing", "ca.key-rotated", 1, `{"ca_id":"issuing"}`)
	appendRaw(t, r, domain.SubjectStream(id), domain.TypeSubjectCorrected, 2, `{"subject_id":"`+string(id)+`"}`)
	r.sync(t, v)
	must(t, stop())
	for name, cp := range v.Checkpoints() {
		if cp != r.head(t) {
			t.Errorf("checkpoint %s = %d, want the head %d", name, cp, r.head(t))
		}
	}
	out := logs.String()
	if strings.Count(out, "ca.key-rotated") != 1 || !strings.Contains(out, "subject.corrected") ||
		strings.Contains(out, domain.TypeSubjectCertificateLinked) {
		t.Errorf("log of skipped types:\n%s", out)
	}
	for _, s := range secrets() {
		if strings.Contains(out, s) {
			t.Errorf("log contains personal data %q", s)
		}
	}
}

// TestMalformedEventStops: a known type and schema whose payload does not decode
// stops Run with an error naming the position, not the payload.
func TestMalformedEventStops(t *testing.T) {
	r := newRig(t)
	v := r.open(t, r.viewsPath())
	r.register(t, map[string]string{"common_name": "A"})
	p := appendRaw(t, r, "cert-1", domain.TypeCertificateRevoked, 1, `{"serial":17}`)
	for range 2 { // it stops there every time: nothing is skipped
		err := v.Run(context.Background(), r.store)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("event %d", p)) {
			t.Fatalf("Run over a malformed event: %v", err)
		}
		for name, cp := range v.Checkpoints() {
			if cp >= p {
				t.Errorf("checkpoint %s = %d, past the malformed event %d", name, cp, p)
			}
		}
	}
}

func TestOpen(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	path := r.viewsPath()
	if _, err := Open(ctx, path, Options{}); err == nil {
		t.Error("Open without a Sealer succeeded")
	}
	v := r.open(t, path)
	fi, err := os.Stat(path)
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("views file mode %04o, want 0600", fi.Mode().Perm())
	}
	if _, err := Open(ctx, path, Options{Sealer: r.sealer}); err == nil {
		t.Error("a second Open of the same file succeeded")
	}
	must(t, v.Close())
	must(t, v.Close()) // idempotent
	must(t, os.Chmod(path, 0o644))
	if _, err := Open(ctx, path, Options{Sealer: r.sealer}); err == nil {
		t.Error("Open of a file others can read succeeded")
	}
}

// headCounter is a Source that counts its Head calls.
type headCounter struct {
	Source
	heads atomic.Int64
}

func (c *headCounter) Head(ctx context.Context) (uint64, error) {
	c.heads.Add(1)
	return c.Source.Head(ctx)
}

// TestRunFollowsWithoutAskingHead: once caught up, Run commits each live event
// without asking the ledger for its head (a round trip on KurrentDB), and the
// event is visible to WaitFor right after.
func TestRunFollowsWithoutAskingHead(t *testing.T) {
	r := newRig(t)
	v := r.open(t, r.viewsPath())
	registerMany(t, r, fillers(20)) // some history to catch up with
	src := &headCounter{Source: r.store}
	stop := run(t, v, src)
	r.sync(t, v)
	before := src.heads.Load()
	for i := range 30 {
		r.register(t, map[string]string{"common_name": fmt.Sprintf("Live %d", i)})
		r.sync(t, v) // fails the test after 10 s if the event stays uncommitted
	}
	if n := src.heads.Load() - before; n != 0 {
		t.Errorf("Run asked the ledger's head %d times for 30 live events, want 0", n)
	}
	if before > 1 {
		t.Errorf("Run asked the ledger's head %d times to start and catch up, want at most 1 (its checkpoint check)", before)
	}
	must(t, stop())
}

// TestReadAhead: the reader hands over every event in order, holds at most
// readAheadMax untaken, passes on the error that ends Follow, and returns
// when its context ends while it waits for room.
func TestReadAhead(t *testing.T) {
	const n = 3*readAheadMax + 7
	src := make(sliceSource, n)
	for i := range src {
		src[i].Position = uint64(i + 1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q := handoff.New[Followed](readAheadMax)
	var reader sync.WaitGroup
	reader.Go(func() { ReadAhead(ctx, q, src, 1) })

	next := uint64(1)
	for next <= n {
		items, done := q.Take()
		if done {
			t.Fatalf("the reader returned after %d events", next-1)
		}
		if len(items) > readAheadMax {
			t.Fatalf("took %d events at once; the reader may hold at most %d", len(items), readAheadMax)
		}
		if len(items) == 0 {
			<-q.Ready()
			continue
		}
		for _, f := range items {
			if f.Err != nil || f.Event.Position != next {
				t.Fatalf("took position %d (%v), want %d", f.Event.Position, f.Err, next)
			}
			next++
		}
		time.Sleep(time.Millisecond) // let the reader fill up
	}
	cancel() // sliceSource yields ctx's error once its events are read
	for {
		items, done := q.Take()
		if len(items) > 0 {
			if len(items) != 1 || !errors.Is(items[0].Err, context.Canceled) {
				t.Fatalf("after the last event: %+v, want one context.Canceled", items)
			}
			continue
		}
		if done {
			break
		}
		<-q.Ready()
	}
	reader.Wait()

	// A reader waiting for room returns when its context ends.
	ctx, cancel = context.WithCancel(context.Background())
	q = handoff.New[Followed](readAheadMax)
	returned := make(chan struct{})
	go func() { ReadAhead(ctx, q, src, 1); close(returned) }()
	<-q.Full()
	cancel()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("a reader waiting for room did not return when its context ended")
	}
	if _, done := q.Take(); !done {
		t.Error("the reader returned without saying so")
	}
}
