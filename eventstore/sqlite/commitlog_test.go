package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/eventstore/storetest"
)

func testChunk(first, last uint64, fill byte) chunk {
	return chunk{first: first, last: last, data: bytes.Repeat([]byte{fill}, 100+int(first))}
}

func scanAll(buf []byte, id uint64) []chunk {
	var got []chunk
	scanRecords(buf, id, func(c chunk) { got = append(got, c) })
	return got
}

func firsts(cs []chunk) []uint64 {
	var out []uint64
	for _, c := range cs {
		out = append(out, c.first)
	}
	return out
}

func TestScanRecords(t *testing.T) {
	const id = 7
	var file []byte
	var offsets []int
	for i, c := range []chunk{testChunk(1, 1, 'a'), testChunk(2, 4, 'b'), testChunk(5, 5, 'c')} {
		offsets = append(offsets, len(file))
		file = appendRecord(file, id, c)
		if i == 1 {
			file = appendRecord(file, id+1, testChunk(99, 99, 'x')) // another ledger's
		}
	}
	end := len(file)
	file = append(file, make([]byte, 4096)...) // the zeros after the last record

	if got := firsts(scanAll(file, id)); !slices.Equal(got, []uint64{1, 2, 5}) {
		t.Fatalf("intact file: records %v, want 1 2 5 (and not the other ledger's)", got)
	}
	if got := scanAll(file, id)[1]; !bytes.Equal(got.data, testChunk(2, 4, 'b').data) || got.last != 4 {
		t.Fatalf("record 2 read back as %d-%d", got.first, got.last)
	}
	torn := slices.Clone(file[:end-10])
	torn = append(torn, make([]byte, 4096)...)
	if got := firsts(scanAll(torn, id)); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("torn last record: %v, want 1 2", got)
	}
	// Damage in the middle hides only the damaged record: the scan finds the next.
	damaged := slices.Clone(file)
	damaged[offsets[1]+logHeaderBytes+3] ^= 0xff
	if got := firsts(scanAll(damaged, id)); !slices.Equal(got, []uint64{1, 5}) {
		t.Fatalf("damaged middle record: %v, want 1 5", got)
	}
	badLength := slices.Clone(file)
	badLength[offsets[0]+32] = 0xff
	if got := firsts(scanAll(badLength, id)); !slices.Equal(got, []uint64{2, 5}) {
		t.Fatalf("damaged length: %v, want 2 5", got)
	}
}

func FuzzScanRecords(f *testing.F) {
	f.Add(appendRecord(appendRecord(nil, 1, testChunk(1, 2, 'a')), 1, testChunk(3, 3, 'b')))
	f.Add(append(appendRecord(nil, 1, testChunk(1, 1, 'a'))[:50], make([]byte, 64)...))
	f.Add([]byte("CLG1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		scanRecords(b, 1, func(c chunk) {
			if c.first == 0 || c.last < c.first {
				t.Fatalf("record %d-%d accepted", c.first, c.last)
			}
			// Every record found is one that appendRecord would write, inside b.
			if !bytes.Contains(b, appendRecord(nil, 1, c)) {
				t.Fatalf("record %d-%d is not in the input as written", c.first, c.last)
			}
		})
	})
}

// logStore opens a store with 64 KiB log files and appends n events of 1 KiB to
// stream "a", one per append, then closes it.
func logStore(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(context.Background(), dir, Options{LogFileBytes: minLogBytes})
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1024)
	for i := range n {
		if _, err := s.Append(context.Background(), "a", domain.Exact(uint64(i)), storetest.NewEvent(t, "t", payload)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func sqlExec(t *testing.T, dir, q string) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, ledgerFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(q); err != nil {
		t.Fatal(err)
	}
}

// TestReplayAcrossLogFiles: the events ledger.db lacks are spread over both log
// files (the second one written after a turn); Open puts them all back.
func TestReplayAcrossLogFiles(t *testing.T) {
	dir := logStore(t, 80) // 80 KiB of records: both 64 KiB files in use
	sqlExec(t, dir, `DELETE FROM events WHERE first > 40`)
	s, err := Open(context.Background(), dir, Options{LogFileBytes: minLogBytes})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := 0
	for e, err := range s.ReadStream(context.Background(), "a", 1) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if e.Version != uint64(n) || e.Position != uint64(n) {
			t.Fatalf("event %d is version %d at %d", n, e.Version, e.Position)
		}
	}
	if n != 80 {
		t.Fatalf("read %d events after replay, want 80", n)
	}
}

// TestLogGapRefusesOpen: ledger.db lacks events whose log record is damaged while
// later records survive. Open must say which position is lost, not start without it.
func TestLogGapRefusesOpen(t *testing.T) {
	dir := logStore(t, 20) // all in the first log file
	sqlExec(t, dir, `DELETE FROM events WHERE first > 10`)
	path := filepath.Join(dir, logFileNames[0])
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Damage the record of position 14.
	var off int
	for off = 0; ; {
		c, n, _, ok := parseRecord(b[off:])
		if !ok {
			t.Fatal("record 14 not found")
		}
		if c.first == 14 {
			break
		}
		off += n
	}
	b[off+logHeaderBytes+5] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), dir, Options{LogFileBytes: minLogBytes})
	var ce *eventstore.CorruptError
	if !errors.As(err, &ce) || ce.Position != 14 || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Open = %v, want a CorruptError at position 14 that says the log is damaged", err)
	}
}

// TestAppendLargerThanLogFile: an append that cannot fit one log file is refused
// before anything is written.
func TestAppendLargerThanLogFile(t *testing.T) {
	s, err := Open(context.Background(), t.TempDir(), Options{LogFileBytes: minLogBytes})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big := make([]byte, minLogBytes)
	_, err = s.Append(context.Background(), "a", domain.NoStream, storetest.NewEvent(t, "t", big))
	if !errors.Is(err, eventstore.ErrTooLarge) {
		t.Fatalf("Append of %d bytes: %v, want ErrTooLarge", len(big), err)
	}
	if h, _ := s.Head(context.Background()); h != 0 {
		t.Fatalf("head %d after a refused append", h)
	}
}
