package kurrent_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/eventstore/kurrent"
	"github.com/caledger/caledger/eventstore/kurrent/kurrenttest"
	"github.com/caledger/caledger/eventstore/storetest"
)

// startServer starts a test double for the test, with one user.
func startServer(t testing.TB, opts kurrenttest.Options) *kurrenttest.Server {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Users == nil {
		opts.Users = map[string]string{"admin": "changeit"}
	}
	s, err := kurrenttest.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func open(t testing.TB, conn string, opts kurrent.Options) *kurrent.Store {
	t.Helper()
	s, err := kurrent.Open(context.Background(), conn, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConformance runs the suite against the adapter over the test double. All
// harnesses share one server, each with its own stream prefix, so every test
// also runs beside other ledgers' events (and the server's system events) in
// $all.
func TestConformance(t *testing.T) {
	srv := startServer(t, kurrenttest.Options{})
	conn := srv.ConnectionString("admin", "changeit")
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		opts := kurrent.Options{Prefix: "t" + strconv.FormatInt(n.Add(1), 10) + "-"}
		return func(t *testing.T) eventstore.Store { return open(t, conn, opts) }
	})
}

// TestRealCluster runs the suite against the KurrentDB cluster named by
// KURRENTDB_URL (a kurrentdb:// connection string; the cluster must run
// KurrentDB 26.1 or later, with MaxAppendSize raised to 16 MiB for the large
// payload test). Each run uses fresh random stream prefixes, so it can be
// repeated against the same cluster; it leaves its streams behind.
func TestRealCluster(t *testing.T) {
	url := os.Getenv("KURRENTDB_URL")
	if url == "" {
		t.Skip("KURRENTDB_URL is not set: set it to a kurrentdb:// connection string of a KurrentDB 26.1+ cluster to run the conformance suite against it")
	}
	run := make([]byte, 4)
	rand.Read(run)
	t.Logf("running the conformance suite against KURRENTDB_URL with stream prefixes caledgertest-%x-*", run)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		opts := kurrent.Options{Prefix: "caledgertest-" + hex.EncodeToString(run) + "-" + strconv.FormatInt(n.Add(1), 10) + "-", AllowInsecure: true}
		return func(t *testing.T) eventstore.Store { return open(t, url, opts) }
	})
}

// TestTwoNodes runs two stores on one ledger, as two caledger nodes would: they
// append concurrently to their own streams and race for a shared one. Global
// positions stay contiguous and every append lands once, where it was
// acknowledged; the losers of the shared stream see ErrWrongVersion.
func TestTwoNodes(t *testing.T) {
	srv := startServer(t, kurrenttest.Options{})
	conn := srv.ConnectionString("admin", "changeit")
	nodes := []*kurrent.Store{open(t, conn, kurrent.Options{}), open(t, conn, kurrent.Options{})}
	for _, n := range nodes {
		defer n.Close()
	}
	ctx := context.Background()
	type ack struct {
		id  domain.EventID
		pos uint64
	}
	var mu sync.Mutex
	var acks []ack
	var conflicts atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := nodes[w%2]
			own := fmt.Sprint("own-", w)
			var ownVersion uint64
			for i := range 30 {
				stream, exp := own, domain.Exact(ownVersion)
				if i%3 == 0 {
					stream, exp = "shared", domain.Any
				}
				e := storetest.NewEvent(t, "t", nil)
				a, err := s.Append(ctx, stream, exp, e)
				if errors.Is(err, eventstore.ErrWrongVersion) {
					conflicts.Add(1)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if stream == own {
					ownVersion = a.Version
				}
				mu.Lock()
				acks = append(acks, ack{e.ID, a.LastPosition})
				mu.Unlock()
			}
		}()
	}
	// A third writer on the shared stream uses exact versions and retries.
	for _, s := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var v uint64
			for range 20 {
				for {
					e := storetest.NewEvent(t, "t", nil)
					a, err := s.Append(ctx, "shared", domain.Exact(v), e)
					var wv *domain.WrongVersionError
					if errors.As(err, &wv) {
						conflicts.Add(1)
						v = wv.Actual
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					v = a.Version
					mu.Lock()
					acks = append(acks, ack{e.ID, a.LastPosition})
					mu.Unlock()
					break
				}
			}
		}()
	}
	wg.Wait()
	for _, n := range nodes {
		all := readAll(t, n)
		if len(all) != len(acks) {
			t.Fatalf("ledger holds %d events, %d were acknowledged", len(all), len(acks))
		}
		at := map[domain.EventID]uint64{}
		versions := map[string]uint64{}
		for i, e := range all {
			if e.Position != uint64(i+1) {
				t.Fatalf("index %d: position %d", i, e.Position)
			}
			if versions[e.Stream]++; e.Version != versions[e.Stream] {
				t.Fatalf("stream %s: version %d, want %d", e.Stream, e.Version, versions[e.Stream])
			}
			at[e.ID] = e.Position
		}
		for _, a := range acks {
			if at[a.id] != a.pos {
				t.Fatalf("event acknowledged at %d is at %d", a.pos, at[a.id])
			}
		}
	}
	t.Logf("%d appends, %d conflicts", len(acks), conflicts.Load())
}

// TestReadStreamOfLargeEvents reads a stream whose events do not fit one page
// of pageBytes: it is read in several, without losing or repeating an event.
func TestReadStreamOfLargeEvents(t *testing.T) {
	srv := startServer(t, kurrenttest.Options{})
	s := open(t, srv.ConnectionString("admin", "changeit"), kurrent.Options{})
	defer s.Close()
	ctx := context.Background()
	big := make([]byte, domain.MaxPayload)
	var ids []domain.EventID
	for i := range 6 {
		e := storetest.NewEvent(t, "t", big)
		ids = append(ids, e.ID)
		if _, err := s.Append(ctx, "big", domain.Exact(uint64(i)), e); err != nil {
			t.Fatal(err)
		}
	}
	for _, from := range []uint64{1, 3} {
		var got []domain.EventID
		for e, err := range s.ReadStream(ctx, "big", from) {
			if err != nil {
				t.Fatal(err)
			}
			if e.Version != from+uint64(len(got)) {
				t.Fatalf("version %d at index %d", e.Version, len(got))
			}
			got = append(got, e.ID)
		}
		if len(got) != len(ids)-int(from)+1 || got[0] != ids[from-1] {
			t.Fatalf("from %d: read %d events", from, len(got))
		}
	}
}
