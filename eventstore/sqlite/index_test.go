package sqlite

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/storetest"
)

// TestReadStreamFromAnyVersion reads a growing stream from every version, and
// past its head, while its index entries sit in the file, in memory, or both
// (a flush every seventh append), and checks that each read yields exactly the
// versions from there to the head. Reads that memory covers skip the file; a
// read that skipped it wrongly would miss the flushed versions.
func TestReadStreamFromAnyVersion(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir(), Options{IndexFlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 30
	for v := uint64(1); v <= n; v++ {
		// Another stream in between, so that positions and versions differ.
		if _, err := s.Append(ctx, fmt.Sprintf("other-%d", v), domain.NoStream, storetest.NewEvent(t, "t", nil)); err != nil {
			t.Fatal(err)
		}
		e := storetest.NewEvent(t, "t", nil)
		e.Version = v
		if _, err := s.Append(ctx, "s", domain.Exact(v-1), e); err != nil {
			t.Fatal(err)
		}
		if v%7 == 0 {
			if err := s.idx.flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for from := uint64(1); from <= v+2; from++ {
			next := from
			for e, err := range s.ReadStream(ctx, "s", from) {
				if err != nil {
					t.Fatal(err)
				}
				if e.Version != next || e.Stream != "s" {
					t.Fatalf("head %d, from %d: read %s version %d where version %d was due", v, from, e.Stream, e.Version, next)
				}
				next++
			}
			if want := max(v+1, from); next != want {
				t.Fatalf("head %d, from %d: read up to version %d, want up to %d", v, from, next-1, want-1)
			}
		}
	}
}
