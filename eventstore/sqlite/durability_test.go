package sqlite

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/storetest"
)

// TestEveryCommitIsSynced guards what the crash test cannot see: a SIGKILL leaves
// the page cache intact, so a writer that skipped a sync, or acknowledged before
// it, would still pass it. Each lone append must be followed by an fdatasync of
// the log file that holds its record, made before the head (what readers and the
// caller see) moves to it; and the drainer's connection must run
// synchronous=FULL, since a log file is reused once the drainer has passed it.
func TestEveryCommitIsSynced(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir(), Options{LogFileBytes: minLogBytes})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	perFile := map[*os.File]int{}
	var syncs []uint64 // the position each sync made durable
	var problems []string
	s.commitMu.Lock()
	s.clog.sync = func(f *os.File) error {
		perFile[f]++
		next := s.head.Load() + 1 // not yet acknowledged: the head is still before it
		b := make([]byte, minLogBytes)
		if _, err := f.ReadAt(b, 0); err != nil {
			problems = append(problems, err.Error())
		}
		found := false
		scanRecords(b, s.clog.id, func(r logRecord) { found = found || r.first == next })
		if !found {
			problems = append(problems, fmt.Sprintf("sync for position %d: the synced file lacks its record", next))
		}
		syncs = append(syncs, next)
		return fdatasync(f)
	}
	s.commitMu.Unlock()
	const appends = 200 // 1 KiB each: several turns of the 64 KiB log files
	payload := make([]byte, 1024)
	for i := range appends {
		a, err := s.Append(ctx, "a", domain.Exact(uint64(i)), storetest.NewEvent(t, "t", payload))
		if err != nil {
			t.Fatal(err)
		}
		s.commitMu.Lock()
		if len(syncs) != i+1 || syncs[i] != a.LastPosition {
			problems = append(problems, fmt.Sprintf("append %d at position %d: syncs so far %d, last for %v", i, a.LastPosition, len(syncs), syncs[len(syncs)-1:]))
		}
		s.commitMu.Unlock()
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("%d problems, first: %s", len(problems), problems[0])
	}
	if perFile[s.clog.files[0]] == 0 || perFile[s.clog.files[1]] == 0 {
		t.Fatalf("fdatasyncs per log file %v: want both files used", perFile)
	}
	var sync int
	var journal string
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&journal); err != nil {
		t.Fatal(err)
	}
	if sync != 2 || journal != "wal" {
		t.Fatalf("the drainer runs synchronous=%d journal_mode=%s, want 2 (FULL) and wal", sync, journal)
	}
}
