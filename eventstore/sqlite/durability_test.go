package sqlite

import (
	"context"
	"testing"
)

// TestWriterSyncsEveryCommit guards what the crash test cannot see: a SIGKILL
// leaves the page cache intact, so a writer that skipped fsync would still pass it.
// go-sqlite3 defaults to synchronous=NORMAL, which in WAL mode does not fsync on
// commit; the writer must run with FULL.
func TestWriterSyncsEveryCommit(t *testing.T) {
	s, err := Open(context.Background(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var sync int
	var journal string
	ctx := context.Background()
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&journal); err != nil {
		t.Fatal(err)
	}
	if sync != 2 || journal != "wal" {
		t.Fatalf("writer runs synchronous=%d journal_mode=%s, want 2 (FULL) and wal", sync, journal)
	}
}
