package kurrent_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/eventstore/kurrent"
	"github.com/caledger/caledger/eventstore/kurrent/kurrenttest"
	"github.com/caledger/caledger/eventstore/storetest"
)

// fast reconnects quickly, as tests need.
var fast = kurrent.Options{MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}

// logTo returns opts with a logger that writes to the test's log.
func logTo(t testing.TB, opts kurrent.Options) kurrent.Options {
	opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return opts
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func readAll(t testing.TB, s eventstore.Store) []domain.Event {
	t.Helper()
	var out []domain.Event
	for e, err := range s.ReadAll(context.Background(), 1) {
		if err != nil {
			t.Fatalf("ReadAll: %v", err)
		}
		out = append(out, e)
	}
	return out
}

// count returns how many times id is stored, and the position of the last.
func count(events []domain.Event, id domain.EventID) (int, uint64) {
	n, pos := 0, uint64(0)
	for _, e := range events {
		if e.ID == id {
			n, pos = n+1, e.Position
		}
	}
	return n, pos
}

func TestMalformedConnectionString(t *testing.T) {
	ca := t.TempDir() + "/missing-ca.pem"
	for _, tc := range []struct{ conn, want string }{
		{"", "empty"},
		{"localhost:2113", "malformed connection string"},
		{"http://localhost:2113", "unknown scheme"},
		{"kurrentdb://", "host"},
		{"kurrentdb://admin:s3cret@localhost:notaport", "port"},
		// Unencoded reserved characters in a password split it; no piece of it
		// may appear in the error.
		{"kurrentdb://admin:pa?s3cret@localhost:2113", "percent-encoded"},
		{"kurrentdb://admin:pa/s3cret@localhost:2113", "percent-encoded"},
		{"kurrentdb://admin:pa#s3cret@localhost:2113", "percent-encoded"},
		{"kurrentdb://admin:pa%s3cret@localhost:2113", "percent-encoded"},
		{"kurrentdb://admin:s3cret@local host:2113", "malformed"},
		{"kurrentdb://admin:s3cret@localhost:2113/ledger", "path"},
		{"kurrentdb://localhost:2113?tlsCaFlie=/etc/ca.pem", `unknown connection string setting "tlsCaFlie"`},
		{"kurrentdb://localhost:2113?tls=false", "disables TLS"},
		{"kurrentdb://localhost:2113?tlsCAFile=" + ca, "no such file"},
		{"kurrentdb://localhost:2113?nodePreference=sideways", "NodePreference"},
		{"kurrentdb://localhost:2113?defaultDeadline=soon", "defaultDeadline"},
		{"kurrentdb://localhost:2113?tls=maybe", "tls"},
		{"kurrentdb://localhost:2113?userCertFile=/a.pem", "userKeyFile"},
		{"kurrentdb://localhost:2113?%zz", "malformed"},
	} {
		t.Run(tc.conn, func(t *testing.T) {
			start := time.Now()
			s, err := kurrent.Open(context.Background(), tc.conn, kurrent.Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q quotes the password", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("rejecting it took %v: it should not need the network", d)
			}
		})
	}
	if _, err := kurrent.Open(context.Background(), "kurrentdb://localhost", kurrent.Options{Prefix: "$bad-"}); err == nil {
		t.Error("a prefix starting with '$' was accepted")
	}
}

func TestOpenFailures(t *testing.T) {
	srv := startServer(t, kurrenttest.Options{})
	old := startServer(t, kurrenttest.Options{Version: "25.1.0"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct{ name, conn, want string }{
		{"wrong password", srv.ConnectionString("admin", "nope"), "Unauthenticated"},
		{"no credentials", srv.ConnectionString("", ""), "AccessDenied"},
		{"server too old", old.ConnectionString("admin", "changeit"), "needs KurrentDB 26.1"},
		{"untrusted certificate", "kurrentdb://admin:changeit@" + srv.Addr(), "connect"},
		{"nothing listening", "kurrentdb://127.0.0.1:1?tlsCAFile=" + srv.CAFile(), "connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := kurrent.Open(ctx, tc.conn, kurrent.Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "changeit") || strings.Contains(err.Error(), "nope") {
				t.Errorf("error %q: want it to mention %q and no password", err, tc.want)
			}
		})
	}
	// tlsVerifyCert=false connects without the CA (and logs a warning).
	s, err := kurrent.Open(ctx, "kurrentdb://admin:changeit@"+srv.Addr()+"?tlsVerifyCert=false", kurrent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// TestConnectionLossMidAppend cuts the connection while a commit is in flight,
// before and after the server applied it. Either way the caller must get a
// durable success or an error, and the ledger must hold the event at most once
// (exactly once after a success). The store learns the outcome through the
// commit stream, so both cases end in success here.
func TestConnectionLossMidAppend(t *testing.T) {
	for _, fault := range []kurrenttest.Fault{kurrenttest.DropBeforeCommit, kurrenttest.DropAfterCommit} {
		t.Run(fmt.Sprint(fault), func(t *testing.T) {
			srv := startServer(t, kurrenttest.Options{})
			s := open(t, srv.ConnectionString("admin", "changeit"), logTo(t, fast))
			defer s.Close()
			ctx := context.Background()
			if _, err := s.Append(ctx, "s", domain.NoStream, storetest.NewEvent(t, "t", nil)); err != nil {
				t.Fatal(err)
			}
			srv.InjectAppendFault(fault)
			e := storetest.NewEvent(t, "t", []byte(`"cut"`))
			a, err := s.Append(ctx, "s", domain.Exact(1), e)
			all := readAll(t, s)
			n, pos := count(all, e.ID)
			switch {
			case err == nil:
				if n != 1 || pos != a.LastPosition || a.Version != 2 {
					t.Fatalf("acknowledged at %+v; stored %d times, last at %d", a, n, pos)
				}
			case errors.Is(err, eventstore.ErrFailed):
				t.Fatalf("the outcome should have been learnt: %v", err)
			default:
				if n != 0 {
					t.Fatalf("append failed (%v) but the event is stored", err)
				}
				t.Fatalf("the append should have been retried: %v", err)
			}
			if len(all) != 2 {
				t.Fatalf("ledger has %d events, want 2", len(all))
			}
			// The store is usable afterwards.
			if _, err := s.Append(ctx, "s", domain.Exact(2), storetest.NewEvent(t, "t", nil)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestOutcomeUnknown: the server applies a commit and goes down for longer than
// ResolveTimeout. The append fails with ErrFailed, the store refuses appends,
// and a reopened store (after the server is back) has the event once.
func TestOutcomeUnknown(t *testing.T) {
	srv := startServer(t, kurrenttest.Options{})
	opts := fast
	opts.ResolveTimeout = 300 * time.Millisecond
	conn := srv.ConnectionString("admin", "changeit")
	s := open(t, conn, opts)
	defer s.Close()
	ctx := context.Background()
	srv.InjectAppendFault(kurrenttest.StopAfterCommit)
	e := storetest.NewEvent(t, "t", nil)
	if _, err := s.Append(ctx, "s", domain.NoStream, e); !errors.Is(err, eventstore.ErrFailed) {
		t.Fatalf("append with the server down: %v, want ErrFailed", err)
	}
	if _, err := s.Append(ctx, "s", domain.Any, storetest.NewEvent(t, "t", nil)); !errors.Is(err, eventstore.ErrFailed) {
		t.Fatalf("append after ErrFailed: %v, want ErrFailed", err)
	}
	s.Close()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, conn, opts)
	defer s2.Close()
	all := readAll(t, s2)
	if n, pos := count(all, e.ID); n != 1 || pos != 1 {
		t.Fatalf("after reopening: stored %d times at %d", n, pos)
	}
	if a, err := s2.Append(ctx, "s", domain.Exact(1), storetest.NewEvent(t, "t", nil)); err != nil || a.LastPosition != 2 {
		t.Fatalf("append after reopening: %+v %v", a, err)
	}
}

// TestConnectionLossUnderLoad appends from several goroutines while the
// connections are cut every few tens of milliseconds and the server is once
// stopped and restarted. A follower runs throughout. Afterwards every
// acknowledged event is stored once at its position, no failed append (other
// than ErrFailed, whose outcome is unknown by contract) left anything behind,
// positions have no gap, and the follower saw the same ledger, in order.
func TestConnectionLossUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a few seconds")
	}
	srv := startServer(t, kurrenttest.Options{})
	opts := fast
	opts.ResolveTimeout = 20 * time.Second
	if testing.Verbose() {
		opts = logTo(t, opts)
	}
	s := open(t, srv.ConnectionString("admin", "changeit"), opts)
	defer s.Close()

	fctx, fcancel := context.WithCancel(context.Background())
	defer fcancel()
	followed := make(chan []domain.Event, 1)
	var seen atomic.Int64 // events the follower has received
	go func() {
		var got []domain.Event
		for e, err := range s.Follow(fctx, 1) {
			if err != nil {
				break
			}
			got = append(got, e)
			seen.Add(1)
		}
		followed <- got
	}()

	type outcome struct {
		id  domain.EventID
		pos uint64
		err error
	}
	var mu sync.Mutex
	var outcomes []outcome
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprint("w-", w)
			var version uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				evs := []domain.Event{storetest.NewEvent(t, "t", nil), storetest.NewEvent(t, "t", nil)}[:1+w%2]
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				a, err := s.Append(ctx, stream, domain.Exact(version), evs...)
				cancel()
				var wv *domain.WrongVersionError
				if errors.As(err, &wv) {
					t.Errorf("stream %s: unexpected conflict %v", stream, err)
					return
				}
				mu.Lock()
				for i, e := range evs {
					o := outcome{id: e.ID, err: err}
					if err == nil {
						o.pos = a.FirstPosition + uint64(i)
					}
					outcomes = append(outcomes, o)
				}
				mu.Unlock()
				if err == nil {
					version = a.Version
				} else if errors.Is(err, eventstore.ErrFailed) {
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	restarted := false
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(20+rand.IntN(60)) * time.Millisecond)
		if !restarted && time.Until(deadline) < time.Second {
			restarted = true
			srv.Stop()
			time.Sleep(300 * time.Millisecond)
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		srv.DropConnections()
	}
	close(stop)
	wg.Wait()

	all := readAll(t, s)
	stored := map[domain.EventID]uint64{}
	for i, e := range all {
		if e.Position != uint64(i+1) {
			t.Fatalf("index %d has position %d", i, e.Position)
		}
		if _, dup := stored[e.ID]; dup {
			t.Fatalf("event %v stored twice", e.ID)
		}
		stored[e.ID] = e.Position
	}
	var ok, failed, unknown int
	for _, o := range outcomes {
		p, present := stored[o.id]
		switch {
		case o.err == nil:
			ok++
			if !present || p != o.pos {
				t.Fatalf("acknowledged event at %d: stored=%v at %d", o.pos, present, p)
			}
		case errors.Is(o.err, eventstore.ErrFailed):
			unknown++
		default:
			failed++
			if present {
				t.Fatalf("append failed with %v but its event is at %d", o.err, p)
			}
		}
	}
	t.Logf("%d events acknowledged, %d failed, %d unknown; ledger holds %d", ok, failed, unknown, len(all))
	if ok == 0 {
		t.Fatal("nothing was appended")
	}
	// The follower catches up to the head, through the cuts.
	waitFor := time.Now().Add(20 * time.Second)
	for seen.Load() < int64(len(all)) {
		if time.Now().After(waitFor) {
			t.Fatalf("the follower received %d events in 20 s, the ledger has %d", seen.Load(), len(all))
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // room for any event past the head to show
	fcancel()
	got := <-followed
	if len(got) != len(all) {
		t.Fatalf("follower saw %d events, ledger has %d", len(got), len(all))
	}
	for i := range got {
		if got[i].ID != all[i].ID || got[i].Position != all[i].Position {
			t.Fatalf("follower event %d differs: position %d", i, got[i].Position)
		}
	}
}

// TestTenantIsolation: ledgers with different prefixes on one cluster, and
// other writers' streams, do not see each other.
func TestTenantIsolation(t *testing.T) {
	srv := startServer(t, kurrenttest.Options{})
	conn := srv.ConnectionString("admin", "changeit")
	a := open(t, conn, kurrent.Options{Prefix: "ledger-a-"})
	defer a.Close()
	b := open(t, conn, kurrent.Options{Prefix: "ledger-b-"})
	defer b.Close()
	cfg, err := kurrentdb.ParseConnectionString(conn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = kurrentdb.NoopLogging()
	raw, err := kurrentdb.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ctx := context.Background()
	for i := range 20 {
		st := fmt.Sprint("s-", i%3)
		if _, err := a.Append(ctx, st, domain.Any, storetest.NewEvent(t, "a", nil)); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Append(ctx, st, domain.Any, storetest.NewEvent(t, "b", nil), storetest.NewEvent(t, "b", nil)); err != nil {
			t.Fatal(err)
		}
		if _, err := raw.AppendToStream(ctx, "orders-1", kurrentdb.AppendToStreamOptions{},
			kurrentdb.EventData{EventType: "OrderPlaced", ContentType: kurrentdb.ContentTypeJson, Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	for name, tc := range map[string]struct {
		s    eventstore.Store
		n    int
		typ  string
		head uint64
	}{"a": {a, 20, "a", 20}, "b": {b, 40, "b", 40}} {
		all := readAll(t, tc.s)
		if len(all) != tc.n {
			t.Fatalf("ledger %s: %d events, want %d", name, len(all), tc.n)
		}
		for i, e := range all {
			if e.Position != uint64(i+1) || e.Type != tc.typ {
				t.Fatalf("ledger %s, index %d: position %d type %s", name, i, e.Position, e.Type)
			}
		}
		if h, err := tc.s.Head(ctx); err != nil || h != tc.head {
			t.Fatalf("ledger %s: head %d %v", name, h, err)
		}
	}
}

// TestLeaderOnly connects through a follower. Every request asks for the
// leader (the client's own RequiresLeader never reaches the server), the
// follower redirects, and everything is then served by the leader, so reads see
// every acknowledged append.
func TestLeaderOnly(t *testing.T) {
	leader := startServer(t, kurrenttest.Options{})
	follower, err := leader.StartFollower()
	if err != nil {
		t.Fatal(err)
	}
	defer follower.Close()
	s := open(t, follower.ConnectionString("admin", "changeit"), fast)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan uint64, 10)
	go func() {
		for e, err := range s.Follow(ctx, 1) {
			if err != nil {
				return
			}
			got <- e.Position
		}
	}()
	for i := range 5 {
		if _, err := s.Append(ctx, "s", domain.Exact(uint64(i)), storetest.NewEvent(t, "t", nil)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(readAll(t, s)); n != 5 {
		t.Fatalf("ReadAll: %d events", n)
	}
	for want := uint64(1); want <= 5; want++ {
		select {
		case p := <-got:
			if p != want {
				t.Fatalf("Follow: position %d, want %d", p, want)
			}
		case <-ctx.Done():
			t.Fatal("Follow stalled")
		}
	}
	fTotal, fLeader, refused := follower.Requests()
	lTotal, lLeader, _ := leader.Requests()
	t.Logf("follower: %d requests, %d refused; leader: %d requests", fTotal, refused, lTotal)
	if fTotal != fLeader || lTotal != lLeader {
		t.Fatalf("requests without requires-leader: follower %d of %d, leader %d of %d", fTotal-fLeader, fTotal, lTotal-lLeader, lTotal)
	}
	if refused == 0 || fTotal != refused || lTotal == 0 {
		t.Fatalf("the follower served %d requests itself", fTotal-refused)
	}
}
