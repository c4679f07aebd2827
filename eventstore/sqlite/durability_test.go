package sqlite

import (
	"context"
	"os"
	"testing"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/storetest"
)

// TestEveryCommitIsSynced guards what the crash test cannot see: a SIGKILL leaves
// the page cache intact, so a writer that skipped a sync would still pass it. Every
// acknowledged append must have been followed by an fdatasync of the commit log
// file it was written to, and the drainer's connection must run synchronous=FULL,
// since a log file is reused once the drainer has passed it.
func TestEveryCommitIsSynced(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir(), Options{LogFileBytes: minLogBytes})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	synced := map[*os.File]int{}
	s.commitMu.Lock()
	s.clog.sync = func(f *os.File) error {
		synced[f]++
		return fdatasync(f)
	}
	s.commitMu.Unlock()
	const appends = 200 // 1 KiB each: several turns of the 64 KiB log files
	payload := make([]byte, 1024)
	for i := range appends {
		if _, err := s.Append(ctx, "a", domain.Exact(uint64(i)), storetest.NewEvent(t, "t", payload)); err != nil {
			t.Fatal(err)
		}
	}
	s.commitMu.Lock()
	total := synced[s.clog.files[0]] + synced[s.clog.files[1]]
	s.commitMu.Unlock()
	if total != appends || synced[s.clog.files[0]] == 0 || synced[s.clog.files[1]] == 0 {
		t.Fatalf("%d appends, fdatasyncs per log file %v: want one per append, in both files", appends, synced)
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
