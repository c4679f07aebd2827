package kurrenttest_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"

	"github.com/caledger/caledger/eventstore/kurrent/kurrenttest"
)

func start(t *testing.T, opts kurrenttest.Options) *kurrenttest.Server {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := kurrenttest.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func client(t *testing.T, conn string) *kurrentdb.Client {
	t.Helper()
	cfg, err := kurrentdb.ParseConnectionString(conn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = kurrentdb.NoopLogging()
	cfg.MaxDiscoverAttempts = 2
	c, err := kurrentdb.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func event(typ, data string) kurrentdb.EventData {
	return kurrentdb.EventData{EventType: typ, ContentType: kurrentdb.ContentTypeBinary, Data: []byte(data)}
}

func code(err error) kurrentdb.ErrorCode {
	var e *kurrentdb.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return -1
}

func readAll(t *testing.T, c *kurrentdb.Client, stream string) []*kurrentdb.ResolvedEvent {
	t.Helper()
	rs, err := c.ReadStream(context.Background(), stream, kurrentdb.ReadStreamOptions{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []*kurrentdb.ResolvedEvent
	for {
		e, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if code(err) == kurrentdb.ErrorCodeResourceNotFound {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
}

// The v1 append reports a failed expectation in its response, which the client
// turns into ErrorCodeWrongExpectedVersion.
func TestAppendWrongExpectedVersion(t *testing.T) {
	s := start(t, kurrenttest.Options{})
	c := client(t, s.ConnectionString("", ""))
	ctx := context.Background()
	r, err := c.AppendToStream(ctx, "orders", kurrentdb.AppendToStreamOptions{StreamState: kurrentdb.NoStream{}}, event("a", "1"), event("a", "2"))
	if err != nil {
		t.Fatal(err)
	}
	if r.NextExpectedVersion != 1 || r.CommitPosition == 0 {
		t.Fatalf("write result %+v", r)
	}
	for _, st := range []kurrentdb.StreamState{kurrentdb.NoStream{}, kurrentdb.StreamRevision{Value: 0}, kurrentdb.StreamRevision{Value: 5}} {
		_, err := c.AppendToStream(ctx, "orders", kurrentdb.AppendToStreamOptions{StreamState: st}, event("a", "x"))
		if code(err) != kurrentdb.ErrorCodeWrongExpectedVersion || !strings.Contains(err.Error(), "got '1'") {
			t.Fatalf("expected %v: %v", st, err)
		}
	}
	_, err = c.AppendToStream(ctx, "missing", kurrentdb.AppendToStreamOptions{StreamState: kurrentdb.StreamExists{}}, event("a", "x"))
	if code(err) != kurrentdb.ErrorCodeWrongExpectedVersion || !strings.Contains(err.Error(), "no_stream") {
		t.Fatalf("stream exists on a missing stream: %v", err)
	}
	if _, err := c.AppendToStream(ctx, "orders", kurrentdb.AppendToStreamOptions{StreamState: kurrentdb.StreamRevision{Value: 1}}, event("a", "3")); err != nil {
		t.Fatal(err)
	}
	if n := len(readAll(t, c, "orders")); n != 3 {
		t.Fatalf("stream has %d events, want 3", n)
	}
}

func TestReadMissingStream(t *testing.T) {
	s := start(t, kurrenttest.Options{})
	c := client(t, s.ConnectionString("", ""))
	rs, err := c.ReadStream(context.Background(), "nothing-here", kurrentdb.ReadStreamOptions{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	if _, err := rs.Recv(); code(err) != kurrentdb.ErrorCodeResourceNotFound {
		t.Fatalf("read of a missing stream: %v, want ErrorCodeResourceNotFound", err)
	}
}

func TestReadDirections(t *testing.T) {
	s := start(t, kurrenttest.Options{})
	c := client(t, s.ConnectionString("", ""))
	ctx := context.Background()
	for i := range 5 {
		if _, err := c.AppendToStream(ctx, "s", kurrentdb.AppendToStreamOptions{}, event("t", string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	read := func(opts kurrentdb.ReadStreamOptions, n uint64) string {
		rs, err := c.ReadStream(ctx, "s", opts, n)
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		var b strings.Builder
		for {
			e, err := rs.Recv()
			if errors.Is(err, io.EOF) {
				return b.String()
			}
			if err != nil {
				t.Fatal(err)
			}
			b.Write(e.Event.Data)
		}
	}
	for _, tc := range []struct {
		opts kurrentdb.ReadStreamOptions
		n    uint64
		want string
	}{
		{kurrentdb.ReadStreamOptions{}, 10, "abcde"},
		{kurrentdb.ReadStreamOptions{From: kurrentdb.Revision(2)}, 2, "cd"},
		{kurrentdb.ReadStreamOptions{From: kurrentdb.End{}}, 10, ""},
		{kurrentdb.ReadStreamOptions{Direction: kurrentdb.Backwards, From: kurrentdb.End{}}, 1, "e"},
		{kurrentdb.ReadStreamOptions{Direction: kurrentdb.Backwards, From: kurrentdb.Revision(2)}, 10, "cba"},
	} {
		if got := read(tc.opts, tc.n); got != tc.want {
			t.Errorf("read %+v, %d: %q, want %q", tc.opts, tc.n, got, tc.want)
		}
	}
}

// A catch-up subscription sends what exists, then "caught up", then new events.
func TestSubscriptionCatchUpThenLive(t *testing.T) {
	s := start(t, kurrenttest.Options{})
	c := client(t, s.ConnectionString("", ""))
	ctx := context.Background()
	for _, d := range []string{"1", "2"} {
		if _, err := c.AppendToStream(ctx, "s", kurrentdb.AppendToStreamOptions{}, event("t", d)); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := c.SubscribeToStream(ctx, "s", kurrentdb.SubscribeToStreamOptions{From: kurrentdb.Start{}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var got []string
	next := func() *kurrentdb.SubscriptionEvent {
		e := sub.Recv()
		if e.SubscriptionDropped != nil {
			t.Fatal(e.SubscriptionDropped.Error)
		}
		return e
	}
	for len(got) < 2 {
		if e := next(); e.EventAppeared != nil {
			got = append(got, string(e.EventAppeared.Event.Data))
		}
	}
	if e := next(); e.CaughtUp == nil || e.CaughtUp.StreamRevision == nil || *e.CaughtUp.StreamRevision != 1 {
		t.Fatalf("after catching up: %+v, want CaughtUp at revision 1", e)
	}
	if _, err := c.AppendToStream(ctx, "s", kurrentdb.AppendToStreamOptions{}, event("t", "3")); err != nil {
		t.Fatal(err)
	}
	if e := next(); e.EventAppeared == nil || string(e.EventAppeared.Event.Data) != "3" || e.EventAppeared.Event.EventNumber != 2 {
		t.Fatalf("live event: %+v", e)
	}
	// From a revision is exclusive.
	sub2, err := c.SubscribeToStream(ctx, "s", kurrentdb.SubscribeToStreamOptions{From: kurrentdb.Revision(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	if e := sub2.Recv(); e.EventAppeared == nil || e.EventAppeared.Event.EventNumber != 2 {
		t.Fatalf("subscription from revision 1 began with %+v", e)
	}
}

// $all subscriptions filter on the server, skip system events, and start after
// the given position.
func TestFilteredAllSubscription(t *testing.T) {
	s := start(t, kurrenttest.Options{})
	c := client(t, s.ConnectionString("", ""))
	ctx := context.Background()
	var positions []kurrentdb.Position
	for _, stream := range []string{"mine-1", "other-1", "mine-2", "mine-1"} {
		r, err := c.AppendToStream(ctx, stream, kurrentdb.AppendToStreamOptions{}, event("t", stream))
		if err != nil {
			t.Fatal(err)
		}
		positions = append(positions, kurrentdb.Position{Commit: r.CommitPosition, Prepare: r.PreparePosition})
	}
	collect := func(opts kurrentdb.SubscribeToAllOptions) []string {
		sub, err := c.SubscribeToAll(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		var got []string
		for {
			e := sub.Recv()
			switch {
			case e.SubscriptionDropped != nil:
				t.Fatal(e.SubscriptionDropped.Error)
			case e.CaughtUp != nil:
				return got
			case e.EventAppeared != nil:
				got = append(got, e.EventAppeared.Event.StreamID)
			}
		}
	}
	prefix := &kurrentdb.SubscriptionFilter{Type: kurrentdb.StreamFilterType, Prefixes: []string{"mine-"}}
	if got := strings.Join(collect(kurrentdb.SubscribeToAllOptions{From: kurrentdb.Start{}, Filter: prefix}), " "); got != "mine-1 mine-2 mine-1" {
		t.Fatalf("prefix filter: %s", got)
	}
	if got := strings.Join(collect(kurrentdb.SubscribeToAllOptions{From: positions[0], Filter: prefix}), " "); got != "mine-2 mine-1" {
		t.Fatalf("from a position: %s", got)
	}
	all := collect(kurrentdb.SubscribeToAllOptions{From: kurrentdb.Start{}, Filter: kurrentdb.ExcludeSystemEventsFilter()})
	if len(all) != 4 {
		t.Fatalf("excluding system events: %v", all)
	}
	unfiltered := collect(kurrentdb.SubscribeToAllOptions{From: kurrentdb.Start{}})
	if len(unfiltered) != 5 || !strings.HasPrefix(unfiltered[0], "$") {
		t.Fatalf("unfiltered $all should begin with a system event: %v", unfiltered)
	}
}

// AppendRecords checks every consistency check first, reports all that fail,
// and then writes nothing.
func TestAppendRecordsChecks(t *testing.T) {
	s := start(t, kurrenttest.Options{})
	c := client(t, s.ConnectionString("", ""))
	ctx := context.Background()
	rec := func(stream, data string) kurrentdb.AppendRecord {
		return kurrentdb.AppendRecord{Stream: stream, Record: event("t", data)}
	}
	r, err := c.AppendRecords(ctx, []kurrentdb.AppendRecord{rec("a", "1"), rec("b", "1"), rec("a", "2")},
		kurrentdb.StreamStateCheck{Stream: "a", ExpectedState: kurrentdb.NoStream{}},
		kurrentdb.StreamStateCheck{Stream: "c", ExpectedState: kurrentdb.NoStream{}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Position <= 0 || len(r.Responses) != 2 {
		t.Fatalf("response %+v", r)
	}
	_, err = c.AppendRecords(ctx, []kurrentdb.AppendRecord{rec("a", "3"), rec("d", "1")},
		kurrentdb.StreamStateCheck{Stream: "a", ExpectedState: kurrentdb.StreamRevision{Value: 0}},
		kurrentdb.StreamStateCheck{Stream: "b", ExpectedState: kurrentdb.StreamRevision{Value: 0}},
		kurrentdb.StreamStateCheck{Stream: "c", ExpectedState: kurrentdb.StreamExists{}})
	var v *kurrentdb.AppendConsistencyViolationError
	if code(err) != kurrentdb.ErrorCodeAppendConsistencyViolation || !errors.As(err, &v) {
		t.Fatalf("failing checks: %v", err)
	}
	if len(v.Violations) != 2 || v.Violations[0].CheckIndex != 0 || v.Violations[0].ActualState != (kurrentdb.StreamRevision{Value: 1}) ||
		v.Violations[1].CheckIndex != 2 || v.Violations[1].ActualState != (kurrentdb.NoStream{}) {
		t.Fatalf("violations %+v", v.Violations)
	}
	if readAll(t, c, "d") != nil || len(readAll(t, c, "a")) != 2 {
		t.Fatal("a rejected AppendRecords wrote events")
	}
	got := readAll(t, c, "a")
	if string(got[0].Event.Data) != "1" || string(got[1].Event.Data) != "2" || got[0].Event.ContentType != "application/octet-stream" || got[0].Event.EventType != "t" {
		t.Fatalf("records of a: %+v %+v", got[0].Event, got[1].Event)
	}
}

func TestAppendRecordsSizeLimits(t *testing.T) {
	s := start(t, kurrenttest.Options{MaxAppendSize: 1000, MaxRecordSize: 600})
	c := client(t, s.ConnectionString("", ""))
	ctx := context.Background()
	big := kurrentdb.AppendRecord{Stream: "a", Record: event("t", strings.Repeat("x", 700))}
	if _, err := c.AppendRecords(ctx, []kurrentdb.AppendRecord{big}); code(err) != kurrentdb.ErrorCodeAppendRecordSizeExceeded {
		t.Fatalf("record too large: %v", err)
	}
	half := kurrentdb.AppendRecord{Stream: "a", Record: event("t", strings.Repeat("x", 400))}
	if _, err := c.AppendRecords(ctx, []kurrentdb.AppendRecord{half, half, half}); code(err) != kurrentdb.ErrorCodeAppendTransactionSizeExceeded {
		t.Fatalf("transaction too large: %v", err)
	}
}

func TestAuthentication(t *testing.T) {
	s := start(t, kurrenttest.Options{Users: map[string]string{"admin": "changeit"}})
	ctx := context.Background()
	for _, tc := range []struct {
		user, pass string
		want       kurrentdb.ErrorCode
	}{
		{"admin", "wrong", kurrentdb.ErrorCodeUnauthenticated},
		{"", "", kurrentdb.ErrorCodeAccessDenied},
	} {
		c := client(t, s.ConnectionString(tc.user, tc.pass))
		if _, err := c.AppendToStream(ctx, "s", kurrentdb.AppendToStreamOptions{}, event("t", "x")); code(err) != tc.want {
			t.Errorf("user %q: %v, want code %d", tc.user, err, tc.want)
		}
	}
	c := client(t, s.ConnectionString("admin", "changeit"))
	if _, err := c.AppendToStream(ctx, "s", kurrentdb.AppendToStreamOptions{}, event("t", "x")); err != nil {
		t.Fatal(err)
	}
}

// The "+discover" schemes read gossip first and connect to the leader it names.
func TestGossipDiscovery(t *testing.T) {
	s := start(t, kurrenttest.Options{})
	conn := strings.Replace(s.ConnectionString("", ""), "kurrentdb://", "kurrentdb+discover://", 1)
	c := client(t, conn)
	members, err := c.Gossip(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || !members[0].IsAlive {
		t.Fatalf("members %+v", members)
	}
	if _, err := c.AppendToStream(context.Background(), "s", kurrentdb.AppendToStreamOptions{}, event("t", "x")); err != nil {
		t.Fatal(err)
	}
}

// Without the CA the server's certificate does not verify.
func TestTLSNeedsTheCA(t *testing.T) {
	s := start(t, kurrenttest.Options{})
	c := client(t, "kurrentdb://"+s.Addr())
	if _, err := c.AppendToStream(context.Background(), "s", kurrentdb.AppendToStreamOptions{}, event("t", "x")); err == nil {
		t.Fatal("connected without trusting the test CA")
	}
}

func TestFaultsAndRestart(t *testing.T) {
	s := start(t, kurrenttest.Options{})
	c := client(t, s.ConnectionString("", ""))
	ctx := context.Background()
	s.InjectAppendFault(kurrenttest.DropAfterCommit)
	if _, err := c.AppendToStream(ctx, "s", kurrentdb.AppendToStreamOptions{}, event("t", "1")); err == nil {
		t.Fatal("append succeeded through a dropped connection")
	}
	s.InjectAppendFault(kurrenttest.DropBeforeCommit)
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		// The client reconnects on its own after an unavailable error; retry
		// until the fault has been consumed by a request that reached the server.
		if _, err = c.AppendToStream(ctx, "s", kurrentdb.AppendToStreamOptions{}, event("t", "2")); err != nil && s.Appends() >= 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err == nil || s.Appends() < 2 {
		t.Fatalf("the DropBeforeCommit fault was not consumed by an append that reached the server within 10 s (last error %v, %d appends)", err, s.Appends())
	}
	s.Stop()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	c2 := client(t, s.ConnectionString("", ""))
	got := readAll(t, c2, "s")
	if len(got) != 1 || string(got[0].Event.Data) != "1" {
		t.Fatalf("after the faults the stream holds %d events", len(got))
	}
}
