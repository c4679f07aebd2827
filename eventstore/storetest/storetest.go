package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
)

// Opener opens a Store on the storage its Harness created. Every call opens the same
// storage, so a test can close a store and open it again.
type Opener func(t *testing.T) eventstore.Store

// Harness creates empty backing storage for one test.
type Harness func(t *testing.T) Opener

// Run runs the whole suite.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		f    func(*testing.T, Opener)
	}{
		{"AppendReadStream", testAppendReadStream},
		{"RoundTripFields", testRoundTripFields},
		{"GlobalOrder", testGlobalOrder},
		{"ExpectedVersion", testExpectedVersion},
		{"EventVersionMismatch", testEventVersionMismatch},
		{"InvalidEvents", testInvalidEvents},
		{"ParallelConflicts", testParallelConflicts},
		{"ParallelStreams", testParallelStreams},
		{"LargePayload", testLargePayload},
		{"ReadFromAnyPosition", testReadFromAnyPosition},
		{"FollowCatchUpToLive", testFollowCatchUpToLive},
		{"FollowFromFuture", testFollowFromFuture},
		{"FollowStopsOnClose", testFollowStopsOnClose},
		{"Cancellation", testCancellation},
		{"CancellationRace", testCancellationRace},
		{"Reopen", testReopen},
		{"ClosedStore", testClosedStore},
		{"CloseWhileAppending", testCloseWhileAppending},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, h(t)) })
	}
}

// NewEvent returns a valid event of the given public payload, for tests.
func NewEvent(t testing.TB, typ string, public []byte) domain.Event {
	t.Helper()
	id, err := domain.NewEventID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return domain.Event{
		ID:     id,
		Type:   typ,
		Schema: 1,
		Time:   time.Now().UTC().Truncate(time.Microsecond),
		Actor:  domain.Actor{ID: "test", Role: "officer"},
		Public: public,
	}
}

func events(t testing.TB, n int, prefix string) []domain.Event {
	t.Helper()
	out := make([]domain.Event, n)
	for i := range out {
		out[i] = NewEvent(t, "test.event", fmt.Appendf(nil, `{"n":"%s-%d"}`, prefix, i))
	}
	return out
}

func mustAppend(t testing.TB, s eventstore.Store, stream string, exp domain.Expected, evs ...domain.Event) domain.Appended {
	t.Helper()
	a, err := s.Append(context.Background(), stream, exp, evs...)
	if err != nil {
		t.Fatalf("Append(%s, %v): %v", stream, exp, err)
	}
	return a
}

// collect drains an iterator, failing the test on error.
func collect(t testing.TB, seq func(func(domain.Event, error) bool)) []domain.Event {
	t.Helper()
	var out []domain.Event
	for e, err := range seq {
		if err != nil {
			t.Fatalf("iterator: %v", err)
		}
		out = append(out, e)
	}
	return out
}

func readStream(t testing.TB, s eventstore.Store, stream string) []domain.Event {
	t.Helper()
	return collect(t, s.ReadStream(context.Background(), stream, 1))
}

func readAll(t testing.TB, s eventstore.Store, from uint64) []domain.Event {
	t.Helper()
	return collect(t, s.ReadAll(context.Background(), from))
}

func head(t testing.TB, s eventstore.Store) uint64 {
	t.Helper()
	h, err := s.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func sameEvent(t testing.TB, got, want domain.Event) {
	t.Helper()
	if got.ID != want.ID || got.Type != want.Type || got.Schema != want.Schema ||
		!got.Time.Equal(want.Time) || got.Actor != want.Actor || !bytes.Equal(got.Public, want.Public) {
		t.Fatalf("event differs:\n got  %+v\n want %+v", got, want)
	}
	if (got.Sealed == nil) != (want.Sealed == nil) {
		t.Fatalf("sealed part: got %v, want %v", got.Sealed, want.Sealed)
	}
	if got.Sealed != nil {
		g, w := got.Sealed, want.Sealed
		if g.SubjectID != w.SubjectID || g.KeyGroup != w.KeyGroup || g.KeyID != w.KeyID || !bytes.Equal(g.Ciphertext, w.Ciphertext) {
			t.Fatalf("sealed part differs: got %+v, want %+v", g, w)
		}
	}
}

func testAppendReadStream(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	evs := events(t, 3, "a")
	a := mustAppend(t, s, "cert-1", domain.NoStream, evs...)
	if a.Version != 3 || a.FirstPosition != 1 || a.LastPosition != 3 {
		t.Fatalf("Appended = %+v, want version 3, positions 1..3", a)
	}
	a = mustAppend(t, s, "cert-1", domain.Exact(3), events(t, 2, "b")...)
	if a.Version != 5 || a.FirstPosition != 4 || a.LastPosition != 5 {
		t.Fatalf("second Appended = %+v", a)
	}
	got := readStream(t, s, "cert-1")
	if len(got) != 5 {
		t.Fatalf("ReadStream returned %d events, want 5", len(got))
	}
	for i, e := range got {
		if e.Version != uint64(i+1) || e.Position != uint64(i+1) || e.Stream != "cert-1" {
			t.Fatalf("event %d: stream %q version %d position %d", i, e.Stream, e.Version, e.Position)
		}
	}
	for i := range evs {
		sameEvent(t, got[i], evs[i])
	}
	from := collect(t, s.ReadStream(context.Background(), "cert-1", 4))
	if len(from) != 2 || from[0].Version != 4 {
		t.Fatalf("ReadStream from 4: %d events, first version %d", len(from), from[0].Version)
	}
	if n := len(readStream(t, s, "cert-2")); n != 0 {
		t.Fatalf("missing stream yielded %d events", n)
	}
}

func testRoundTripFields(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	e := NewEvent(t, "certificate.issued", []byte(`{"serial":"1f"}`))
	e.Schema = 7
	e.Time = time.Date(2031, 2, 3, 4, 5, 6, 789, time.UTC) // nanoseconds survive
	e.Actor = domain.Actor{ID: "cert:0a1b", Role: "compliance"}
	e.Sealed = &domain.Sealed{SubjectID: "00112233445566778899aabbccddeeff", KeyGroup: "identity", KeyID: 4242, Ciphertext: []byte{0, 1, 2, 255}}
	noPublic := NewEvent(t, "x.y", nil)
	mustAppend(t, s, "subject-1", domain.NoStream, e, noPublic)
	got := readStream(t, s, "subject-1")
	sameEvent(t, got[0], e)
	sameEvent(t, got[1], noPublic)
	all := readAll(t, s, 1)
	sameEvent(t, all[0], e)
}

func testGlobalOrder(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	var want []string
	for i := range 30 {
		stream := fmt.Sprintf("s-%d", i%4)
		e := NewEvent(t, "t", fmt.Appendf(nil, "%d", i))
		mustAppend(t, s, stream, domain.Any, e)
		want = append(want, stream)
	}
	all := readAll(t, s, 1)
	if len(all) != 30 {
		t.Fatalf("ReadAll: %d events, want 30", len(all))
	}
	versions := map[string]uint64{}
	for i, e := range all {
		versions[e.Stream]++
		if e.Position != uint64(i+1) || e.Stream != want[i] || e.Version != versions[e.Stream] || string(e.Public) != fmt.Sprint(i) {
			t.Fatalf("position %d: got stream %q version %d public %q", i+1, e.Stream, e.Version, e.Public)
		}
	}
	if h := head(t, s); h != 30 {
		t.Fatalf("Head = %d, want 30", h)
	}
}

func testExpectedVersion(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	ctx := context.Background()
	conflict := func(stream string, exp domain.Expected, actual uint64) {
		t.Helper()
		before := head(t, s)
		_, err := s.Append(ctx, stream, exp, NewEvent(t, "t", nil))
		var wv *domain.WrongVersionError
		if !errors.Is(err, eventstore.ErrWrongVersion) || !errors.As(err, &wv) {
			t.Fatalf("Append(%s, %v) = %v, want a WrongVersionError", stream, exp, err)
		}
		if wv.Actual != actual || wv.Stream != stream {
			t.Fatalf("WrongVersionError = %+v, want actual %d", wv, actual)
		}
		if after := head(t, s); after != before {
			t.Fatalf("a conflicting append moved the head from %d to %d", before, after)
		}
	}
	conflict("a", domain.StreamExists, 0)
	conflict("a", domain.Exact(1), 0)
	mustAppend(t, s, "a", domain.NoStream, events(t, 2, "a")...)
	conflict("a", domain.NoStream, 2)
	conflict("a", domain.Exact(1), 2)
	conflict("a", domain.Exact(3), 2)
	mustAppend(t, s, "a", domain.Exact(2), NewEvent(t, "t", nil))
	mustAppend(t, s, "a", domain.StreamExists, NewEvent(t, "t", nil))
	mustAppend(t, s, "a", domain.Any, NewEvent(t, "t", nil))
	mustAppend(t, s, "b", domain.Any, NewEvent(t, "t", nil))
	if got := readStream(t, s, "a"); len(got) != 5 {
		t.Fatalf("stream a has %d events, want 5", len(got))
	}
	if _, err := s.Append(ctx, "a", domain.Expected(-3), NewEvent(t, "t", nil)); !errors.Is(err, eventstore.ErrInvalid) {
		t.Fatalf("invalid expected version: %v, want ErrInvalid", err)
	}
}

func testEventVersionMismatch(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	// An event sealed for version 1 must not be stored at version 2: its
	// associated data would no longer match.
	e := NewEvent(t, "t", nil)
	e.Version = 1
	mustAppend(t, s, "a", domain.Any, e)
	e2 := NewEvent(t, "t", nil)
	e2.Version = 1
	if _, err := s.Append(context.Background(), "a", domain.Any, e2); !errors.Is(err, eventstore.ErrWrongVersion) {
		t.Fatalf("event version 1 appended at version 2: err = %v, want ErrWrongVersion", err)
	}
	e2.Version = 2
	e3 := NewEvent(t, "t", nil)
	e3.Version = 3
	mustAppend(t, s, "a", domain.Exact(1), e2, e3)
	if h := head(t, s); h != 3 {
		t.Fatalf("Head = %d, want 3", h)
	}
	// Every store names the first event whose version does not fit the stream.
	f1, f2 := NewEvent(t, "t", nil), NewEvent(t, "t", nil)
	f1.Version, f2.Version = 5, 9
	_, err := s.Append(context.Background(), "b", domain.Any, f1, f2)
	if !errors.Is(err, eventstore.ErrWrongVersion) || !strings.Contains(err.Error(), "event 0 was made for version 5") {
		t.Fatalf("events made for versions 5 and 9 on a new stream: err = %v", err)
	}
}

func testInvalidEvents(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	ctx := context.Background()
	good := NewEvent(t, "t", nil)
	cases := map[string]func() (string, []domain.Event){
		"no events":         func() (string, []domain.Event) { return "a", nil },
		"empty stream":      func() (string, []domain.Event) { return "", []domain.Event{good} },
		"stream with space": func() (string, []domain.Event) { return "a b", []domain.Event{good} },
		"system stream":     func() (string, []domain.Event) { return "$all", []domain.Event{good} },
		"empty type": func() (string, []domain.Event) {
			e := good
			e.Type = ""
			return "a", []domain.Event{e}
		},
		"other stream": func() (string, []domain.Event) {
			e := good
			e.Stream = "b"
			return "a", []domain.Event{e}
		},
		"position set": func() (string, []domain.Event) {
			e := good
			e.Position = 9
			return "a", []domain.Event{e}
		},
		"zero time": func() (string, []domain.Event) {
			e := good
			e.Time = time.Time{}
			return "a", []domain.Event{e}
		},
		"one bad among good": func() (string, []domain.Event) {
			e := good
			e.Type = "bad type"
			return "a", []domain.Event{good, e}
		},
	}
	for name, c := range cases {
		stream, evs := c()
		if _, err := s.Append(ctx, stream, domain.Any, evs...); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if h := head(t, s); h != 0 {
		t.Fatalf("invalid appends wrote events: head %d", h)
	}
}

// testParallelConflicts has many writers race for the same stream with exact
// expected versions, retrying on conflict: every append lands exactly once, at
// contiguous versions, and losers see ErrWrongVersion.
func testParallelConflicts(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	ctx := context.Background()
	const writers, perWriter = 32, 10
	var conflicts atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				e := NewEvent(t, "t", fmt.Appendf(nil, `"%d-%d"`, w, i))
				var v uint64
				for {
					_, err := s.Append(ctx, "hot", domain.Exact(v), e)
					var wv *domain.WrongVersionError
					if errors.As(err, &wv) {
						conflicts.Add(1)
						v = wv.Actual
						continue
					}
					if err != nil {
						errc <- err
						return
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	got := readStream(t, s, "hot")
	if len(got) != writers*perWriter {
		t.Fatalf("stream has %d events, want %d", len(got), writers*perWriter)
	}
	seen := map[string]bool{}
	for i, e := range got {
		if e.Version != uint64(i+1) {
			t.Fatalf("version %d at index %d", e.Version, i)
		}
		if seen[string(e.Public)] {
			t.Fatalf("event %s stored twice", e.Public)
		}
		seen[string(e.Public)] = true
	}
	if conflicts.Load() == 0 {
		t.Log("no conflicts happened; the race was not exercised this run")
	}
}

// testParallelStreams appends from many goroutines to many streams at once and
// checks global positions are contiguous and every stream's versions too.
func testParallelStreams(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	ctx := context.Background()
	const writers, perWriter = 64, 20
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("w-%d", w)
			for i := range perWriter {
				n := 1 + i%3
				evs := events(t, n, stream)
				if _, err := s.Append(ctx, stream, domain.Any, evs...); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	all := readAll(t, s, 1)
	versions := map[string]uint64{}
	for i, e := range all {
		if e.Position != uint64(i+1) {
			t.Fatalf("position %d at index %d", e.Position, i)
		}
		versions[e.Stream]++
		if e.Version != versions[e.Stream] {
			t.Fatalf("stream %s: version %d, want %d", e.Stream, e.Version, versions[e.Stream])
		}
	}
	if h := head(t, s); h != uint64(len(all)) {
		t.Fatalf("Head %d, ReadAll %d", h, len(all))
	}
	for stream, v := range versions {
		if n := len(readStream(t, s, stream)); uint64(n) != v {
			t.Fatalf("stream %s: ReadStream %d events, ReadAll %d", stream, n, v)
		}
	}
}

func testLargePayload(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	ctx := context.Background()
	big := make([]byte, domain.MaxPayload)
	rand.Read(big)
	e := NewEvent(t, "t", big)
	mustAppend(t, s, "big", domain.NoStream, e)
	got := readStream(t, s, "big")
	if len(got) != 1 || !bytes.Equal(got[0].Public, big) {
		t.Fatal("1 MiB payload did not round-trip")
	}
	sealedBig := NewEvent(t, "t", big[:domain.MaxPayload/2])
	sealedBig.Sealed = &domain.Sealed{SubjectID: "s", KeyGroup: "g", Ciphertext: big[:domain.MaxPayload/2]}
	mustAppend(t, s, "big", domain.Exact(1), sealedBig)

	tooBig := NewEvent(t, "t", append(big, 0))
	if _, err := s.Append(ctx, "big", domain.Any, tooBig); !errors.Is(err, eventstore.ErrTooLarge) {
		t.Fatalf("1 MiB + 1 payload: err = %v, want ErrTooLarge", err)
	}
	// Many events that are each fine but together exceed one append's limit.
	var many []domain.Event
	for range eventstore.MaxAppendBytes/domain.MaxPayload + 1 {
		many = append(many, NewEvent(t, "t", big))
	}
	if _, err := s.Append(ctx, "big", domain.Any, many...); !errors.Is(err, eventstore.ErrTooLarge) {
		t.Fatalf("oversized append: err = %v, want ErrTooLarge", err)
	}
	if h := head(t, s); h != 2 {
		t.Fatalf("rejected appends wrote events: head %d", h)
	}
}

func testReadFromAnyPosition(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	const n = 1200 // more than any sane page size
	for i := 0; i < n; i += 100 {
		mustAppend(t, s, fmt.Sprintf("s-%d", i%7), domain.Any, events(t, 100, "x")...)
	}
	for _, from := range []uint64{0, 1, 2, 99, 100, 101, 511, 512, 513, 1024, n - 1, n, n + 1, n + 1000} {
		got := readAll(t, s, from)
		start := max(from, 1)
		want := 0
		if start <= n {
			want = int(n - start + 1)
		}
		if len(got) != want {
			t.Fatalf("ReadAll(%d): %d events, want %d", from, len(got), want)
		}
		for i, e := range got {
			if e.Position != start+uint64(i) {
				t.Fatalf("ReadAll(%d): index %d has position %d", from, i, e.Position)
			}
		}
	}
	// Stopping early must not break anything.
	for e, err := range s.ReadAll(context.Background(), 1) {
		if err != nil || e.Position != 1 {
			t.Fatalf("first event: %v %v", e.Position, err)
		}
		break
	}
}

// testFollowCatchUpToLive starts a follower on a ledger that already has events,
// while writers keep appending, and checks it sees every event exactly once, in order.
func testFollowCatchUpToLive(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 20 {
		mustAppend(t, s, fmt.Sprintf("pre-%d", i%3), domain.Any, events(t, 50, "pre")...)
	}
	const writers, perWriter = 8, 40
	total := uint64(20*50 + writers*perWriter)
	got := make(chan error, 1)
	go func() {
		next := uint64(1)
		for e, err := range s.Follow(ctx, 1) {
			if err != nil {
				got <- fmt.Errorf("follow: %w", err)
				return
			}
			if e.Position != next {
				got <- fmt.Errorf("follow: position %d, want %d", e.Position, next)
				return
			}
			if next == total {
				got <- nil
				return
			}
			next++
		}
		got <- errors.New("follow ended early")
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWriter {
				if _, err := s.Append(ctx, fmt.Sprintf("live-%d", w), domain.Any, NewEvent(t, "t", nil)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("follower did not reach the head within 30s")
	}
}

func testFollowFromFuture(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mustAppend(t, s, "a", domain.Any, events(t, 3, "a")...)
	got := make(chan domain.Event, 1)
	go func() {
		for e, err := range s.Follow(ctx, 5) {
			if err != nil {
				close(got)
				return
			}
			got <- e
			return
		}
	}()
	mustAppend(t, s, "a", domain.Any, events(t, 2, "b")...) // positions 4 and 5
	select {
	case e, ok := <-got:
		if !ok || e.Position != 5 {
			t.Fatalf("Follow(5) yielded position %d (ok=%v), want 5", e.Position, ok)
		}
	case <-ctx.Done():
		t.Fatal("Follow(5) never yielded")
	}
}

func testFollowStopsOnClose(t *testing.T, open Opener) {
	s := open(t)
	done := make(chan error, 1)
	go func() {
		for _, err := range s.Follow(context.Background(), 1) {
			if err != nil {
				done <- err
				return
			}
		}
		done <- errors.New("Follow ended without an error")
	}()
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, eventstore.ErrClosed) {
			t.Fatalf("Follow after Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not stop after Close")
	}
}

func testCancellation(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Append(ctx, "a", domain.Any, NewEvent(t, "t", nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context: %v", err)
	}
	if h := head(t, s); h != 0 {
		t.Fatalf("cancelled append wrote: head %d", h)
	}
	mustAppend(t, s, "a", domain.Any, events(t, 5, "a")...)
	for _, seq := range []func(func(domain.Event, error) bool){s.ReadAll(ctx, 1), s.ReadStream(ctx, "a", 1), s.Follow(ctx, 1)} {
		var last error
		for _, err := range seq {
			last = err
			if err != nil {
				break
			}
		}
		if !errors.Is(last, context.Canceled) {
			t.Fatalf("iterator with a cancelled context ended with %v", last)
		}
	}
	// A follower waiting for new events stops when its context is cancelled.
	fctx, fcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		var last error
		for _, err := range s.Follow(fctx, 1) {
			if err != nil {
				last = err
				break
			}
		}
		done <- last
	}()
	time.Sleep(50 * time.Millisecond)
	fcancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("waiting follower stopped with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiting follower ignored cancellation")
	}
}

// testCancellationRace appends with deadlines that expire at random moments: while
// the append is queued, being committed or already done. An append that returns a
// context error must have written nothing; one that succeeds must be stored where
// it said; none may hang.
func testCancellationRace(t *testing.T, open Opener) {
	s := open(t)
	defer s.Close()
	const workers, perWorker = 16, 60
	type outcome struct {
		id       domain.EventID
		stored   bool
		position uint64
	}
	results := make(chan outcome, workers*perWorker)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				// Deadlines from 0 to about 3 ms straddle a commit's duration.
				d := time.Duration((w*perWorker+i)*7919%3000) * time.Microsecond
				ctx, cancel := context.WithTimeout(context.Background(), d)
				e := NewEvent(t, "t", nil)
				a, err := s.Append(ctx, fmt.Sprintf("c-%d", w), domain.Any, e)
				cancel()
				switch {
				case err == nil:
					results <- outcome{e.ID, true, a.LastPosition}
				case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
					results <- outcome{id: e.ID}
				default:
					t.Errorf("append: %v", err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("appends with deadlines hung")
	}
	close(results)
	stored := map[domain.EventID]uint64{}
	for _, e := range readAll(t, s, 1) {
		stored[e.ID] = e.Position
	}
	var ok, cancelled int
	for o := range results {
		p, present := stored[o.id]
		switch {
		case o.stored && (!present || p != o.position):
			t.Fatalf("acknowledged event %v is not at position %d", o.id, o.position)
		case !o.stored && present:
			t.Fatalf("an append that returned a context error was written at position %d", p)
		}
		if o.stored {
			ok++
		} else {
			cancelled++
		}
	}
	t.Logf("%d appends stored, %d cancelled", ok, cancelled)
}

func testReopen(t *testing.T, open Opener) {
	s := open(t)
	want := events(t, 10, "r")
	mustAppend(t, s, "a", domain.NoStream, want[:5]...)
	mustAppend(t, s, "b", domain.NoStream, want[5:]...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t)
	defer s.Close()
	if h := head(t, s); h != 10 {
		t.Fatalf("Head after reopen = %d", h)
	}
	got := readAll(t, s, 1)
	for i := range want {
		sameEvent(t, got[i], want[i])
	}
	if _, err := s.Append(context.Background(), "a", domain.NoStream, NewEvent(t, "t", nil)); !errors.Is(err, eventstore.ErrWrongVersion) {
		t.Fatalf("stream versions forgotten after reopen: %v", err)
	}
	a := mustAppend(t, s, "a", domain.Exact(5), NewEvent(t, "t", nil))
	if a.Version != 6 || a.LastPosition != 11 {
		t.Fatalf("append after reopen: %+v", a)
	}
	if n := len(readStream(t, s, "b")); n != 5 {
		t.Fatalf("stream b after reopen: %d events", n)
	}
}

func testClosedStore(t *testing.T, open Opener) {
	s := open(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Append(ctx, "a", domain.Any, NewEvent(t, "t", nil)); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	var readErr error
	for _, err := range s.ReadAll(ctx, 1) {
		readErr = err
		break
	}
	if !errors.Is(readErr, eventstore.ErrClosed) {
		t.Fatalf("ReadAll after Close: %v, want ErrClosed", readErr)
	}
	if _, err := s.Head(ctx); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Head after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// testCloseWhileAppending closes the store under one appender, then under
// several: every Append returns a position or ErrClosed, and after reopening
// every acknowledged event is where its acknowledgement said.
func testCloseWhileAppending(t *testing.T, open Opener) {
	// Many short rounds with a lone appender, whose Append may be anywhere in
	// its commit when Close comes, then one with several.
	for round, appenders := range []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 8} {
		s := open(t)
		type ack struct {
			id       domain.EventID
			position uint64
		}
		var mu sync.Mutex
		var acks []ack
		var wg sync.WaitGroup
		started := make(chan struct{}, appenders)
		for w := range appenders {
			wg.Go(func() {
				// An appender that stops early still counts as started, so a
				// failure is reported rather than the test hanging.
				signalled := false
				defer func() {
					if !signalled {
						started <- struct{}{}
					}
				}()
				for i := 0; ; i++ {
					e := NewEvent(t, "t", nil)
					a, err := s.Append(context.Background(), fmt.Sprintf("close-%d-%d", round, w), domain.Any, e)
					if errors.Is(err, eventstore.ErrClosed) {
						return
					}
					if err != nil {
						t.Errorf("Append while closing: %v", err)
						return
					}
					mu.Lock()
					acks = append(acks, ack{e.ID, a.LastPosition})
					mu.Unlock()
					if i == 2 {
						started <- struct{}{}
						signalled = true
					}
				}
			})
		}
		for range appenders {
			<-started
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		s = open(t)
		got := map[uint64]domain.EventID{}
		for e, err := range s.ReadAll(context.Background(), 1) {
			if err != nil {
				t.Fatal(err)
			}
			got[e.Position] = e.ID
		}
		for _, a := range acks {
			if got[a.position] != a.id {
				t.Fatalf("round %d, %d appenders: acknowledged event at %d is missing after Close", round, appenders, a.position)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
