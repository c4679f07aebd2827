package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/eventstore/storetest"
)

// testRecord is a commit of one chunk, first..last.
func testRecord(first, last uint64, fill byte) logRecord {
	return logRecord{chunk{first: first, last: last, data: bytes.Repeat([]byte{fill}, 100+int(first))}, [2]uint64{first, last}}
}

func scanAll(buf []byte, id uint64) []logRecord {
	var got []logRecord
	scanRecords(buf, id, func(r logRecord) { got = append(got, r) })
	return got
}

func firsts[T interface{ pos() uint64 }](rs []T) []uint64 {
	var out []uint64
	for _, r := range rs {
		out = append(out, r.pos())
	}
	return out
}

func (c chunk) pos() uint64 { return c.first }

func TestScanRecords(t *testing.T) {
	const id = 7
	var file []byte
	var offsets []int
	for i, r := range []logRecord{testRecord(1, 1, 'a'), testRecord(2, 4, 'b'), testRecord(5, 5, 'c')} {
		offsets = append(offsets, len(file))
		file = appendRecord(file, id, r)
		if i == 1 {
			file = appendRecord(file, id+1, testRecord(99, 99, 'x')) // another ledger's
		}
	}
	end := len(file)
	file = append(file, make([]byte, 4096)...) // the zeros after the last record

	if got := firsts(scanAll(file, id)); !slices.Equal(got, []uint64{1, 2, 5}) {
		t.Fatalf("intact file: records %v, want 1 2 5 (and not the other ledger's)", got)
	}
	if got := scanAll(file, id)[1]; !bytes.Equal(got.data, testRecord(2, 4, 'b').data) || got.last != 4 || got.commit != [2]uint64{2, 4} {
		t.Fatalf("record 2 read back as %d-%d of commit %v", got.first, got.last, got.commit)
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
	badLength[offsets[0]+48] = 0xff
	if got := firsts(scanAll(badLength, id)); !slices.Equal(got, []uint64{2, 5}) {
		t.Fatalf("damaged length: %v, want 2 5", got)
	}
	// A record whose chunk lies outside its commit is not one the writer makes.
	outside := testRecord(3, 3, 'd')
	outside.commit = [2]uint64{4, 6}
	if got := scanAll(appendRecord(nil, id, outside), id); len(got) != 0 {
		t.Fatalf("a chunk outside its commit was accepted: %v", got)
	}
}

func TestReplayable(t *testing.T) {
	// A commit of positions first..last written as one record per position.
	commit := func(first, last uint64) []logRecord {
		var rs []logRecord
		for p := first; p <= last; p++ {
			r := testRecord(p, p, 'e')
			r.commit = [2]uint64{first, last}
			rs = append(rs, r)
		}
		return rs
	}
	without := func(rs []logRecord, position uint64) []logRecord {
		return slices.DeleteFunc(slices.Clone(rs), func(r logRecord) bool { return r.first == position })
	}
	cat := func(parts ...[]logRecord) []logRecord { return slices.Concat(parts...) }
	cases := []struct {
		name    string
		head    uint64
		records []logRecord
		want    []uint64 // first positions replayed
		missing uint64   // a gapError at this position
	}{
		{name: "nothing", head: 4},
		{name: "whole commits", head: 4, records: cat(commit(8, 9), commit(5, 7)), want: []uint64{5, 6, 7, 8, 9}},
		{name: "the last commit torn at its end", head: 4, records: without(cat(commit(5, 7), commit(8, 10)), 10), want: []uint64{5, 6, 7}},
		{name: "the last commit torn at its start", head: 4, records: without(cat(commit(5, 7), commit(8, 10)), 8), want: []uint64{5, 6, 7}},
		{name: "the only commit torn in the middle", head: 4, records: without(commit(5, 7), 6)},
		{name: "a commit drained in part", head: 6, records: commit(5, 9)[2:], want: []uint64{7, 8, 9}},
		{name: "a damaged commit before a whole one", head: 4, records: without(cat(commit(5, 7), commit(8, 10)), 6), missing: 6},
		{name: "a whole commit lost before another", head: 4, records: cat(commit(5, 5), commit(7, 8)), missing: 6},
		{name: "the rest of a drained commit damaged", head: 6, records: without(commit(5, 9)[2:], 7), missing: 7},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := replayable(c.head, slices.Clone(c.records))
			if c.missing != 0 {
				var gap *gapError
				if !errors.As(err, &gap) || gap.missing != c.missing {
					t.Fatalf("err = %v, want position %d missing", err, c.missing)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(firsts(got), c.want) {
				t.Fatalf("replayed %v, want %v", firsts(got), c.want)
			}
		})
	}
}

func FuzzScanRecords(f *testing.F) {
	f.Add(appendRecord(appendRecord(nil, 1, testRecord(1, 2, 'a')), 1, testRecord(3, 3, 'b')))
	f.Add(append(appendRecord(nil, 1, testRecord(1, 1, 'a'))[:50], make([]byte, 64)...))
	f.Add([]byte("CLG1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var found []logRecord
		scanRecords(b, 1, func(r logRecord) {
			if r.commit[0] == 0 || r.commit[0] > r.first || r.first > r.last || r.last > r.commit[1] {
				t.Fatalf("record %d-%d of commit %v accepted", r.first, r.last, r.commit)
			}
			// Every record found is one that appendRecord would write, inside b.
			if !bytes.Contains(b, appendRecord(nil, 1, r)) {
				t.Fatalf("record %d-%d is not in the input as written", r.first, r.last)
			}
			found = append(found, r)
		})
		// Whatever was found, replay either picks contiguous whole commits or names a gap.
		cs, err := replayable(0, found)
		var gap *gapError
		if err != nil && !errors.As(err, &gap) {
			t.Fatal(err)
		}
		next := uint64(1)
		for _, c := range cs {
			if c.first != next {
				t.Fatalf("replay skips from %d to %d", next, c.first)
			}
			next = c.last + 1
		}
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
	for _, name := range logFileNames {
		if n := recordsPast(t, filepath.Join(dir, name), 40); n == 0 {
			t.Fatalf("%s holds no record past position 40: the test would not replay from both files", name)
		}
	}
	checkReplayed(t, dir, Options{LogFileBytes: minLogBytes}, 80)
}

// recordsPast counts the records of a log file whose chunks end past position.
func recordsPast(t *testing.T, path string, position uint64) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	scanRecords(b, logIDOf(t, filepath.Dir(path)), func(r logRecord) {
		if r.last > position {
			n++
		}
	})
	return n
}

func logIDOf(t *testing.T, dir string) uint64 {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, ledgerFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var id uint64
	if err := db.QueryRow(`SELECT value FROM meta WHERE key = ?`, logIDKey).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// checkReplayed opens dir and checks stream "a" holds events 1..n, one per
// position, then closes it.
func checkReplayed(t *testing.T, dir string, opts Options, n int) {
	t.Helper()
	s, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := 0
	for e, err := range s.ReadStream(context.Background(), "a", 1) {
		if err != nil {
			t.Fatal(err)
		}
		got++
		if e.Version != uint64(got) || e.Position != uint64(got) {
			t.Fatalf("event %d is version %d at %d", got, e.Version, e.Position)
		}
	}
	if got != n {
		t.Fatalf("read %d events after replay, want %d", got, n)
	}
}

// TestReopenWithSmallerLogFiles: log files made larger than the size Open is now
// given are still read to their end, so nothing past the new size is forgotten.
func TestReopenWithSmallerLogFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(context.Background(), dir, Options{LogFileBytes: 4 * minLogBytes})
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1024)
	for i := range 150 { // about 170 KiB: past 64 KiB in the first file
		if _, err := s.Append(context.Background(), "a", domain.Exact(uint64(i)), storetest.NewEvent(t, "t", payload)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	sqlExec(t, dir, `DELETE FROM events WHERE first > 20`)
	checkReplayed(t, dir, Options{LogFileBytes: minLogBytes}, 150)
}

// TestTornCommitIsDropped: a commit written as several records (one Append of
// three 40 KiB events) of which one did not reach the disk is dropped whole on
// replay, with no error: it was never acknowledged, and an Append is all or
// nothing.
func TestTornCommitIsDropped(t *testing.T) {
	for _, lost := range []int{0, 1, 2} {
		t.Run(fmt.Sprintf("record %d of 3 lost", lost+1), func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(context.Background(), dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if _, err := s.Append(ctx, "a", domain.NoStream, storetest.NewEvent(t, "t", nil)); err != nil {
				t.Fatal(err)
			}
			big := make([]byte, 40<<10)
			evs := []domain.Event{storetest.NewEvent(t, "t", big), storetest.NewEvent(t, "t", big), storetest.NewEvent(t, "t", big)}
			if _, err := s.Append(ctx, "a", domain.Exact(1), evs...); err != nil {
				t.Fatal(err)
			}
			s.Close()
			sqlExec(t, dir, `DELETE FROM events WHERE first > 1`)
			path := filepath.Join(dir, logFileNames[0])
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var offsets []int
			for off := 0; ; {
				r, n, _, ok := parseRecord(b[off:])
				if !ok {
					break
				}
				if r.first > 1 {
					offsets = append(offsets, off)
				}
				off += n
			}
			if len(offsets) != 3 {
				t.Fatalf("the three-event append became %d records, want 3", len(offsets))
			}
			b[offsets[lost]+logHeaderBytes+7] ^= 0xff
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			checkReplayed(t, dir, Options{}, 1)

			// The torn commit's surviving records are still in the file with
			// valid checksums. A new commit reuses their positions; a second
			// crash before the drain must replay only the new one.
			s, err = Open(ctx, dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Append(ctx, "a", domain.Exact(1), storetest.NewEvent(t, "t", nil)); err != nil {
				t.Fatal(err)
			}
			s.Close()
			sqlExec(t, dir, `DELETE FROM events WHERE first > 1`)
			checkReplayed(t, dir, Options{}, 2)
		})
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

// TestEncodeCommit: the records of one commit are what appendRecord writes for
// each of its chunks, the chunks split where chunk.go says, and a request's
// packedBytes is the size encodeCommit makes of it.
func TestEncodeCommit(t *testing.T) {
	const id = 3
	for _, sizes := range [][]int{{10}, {1000, 1000, 1000}, {40 << 10, 40 << 10, 40 << 10}, {70 << 10}, {100, 70 << 10, 100}} {
		var rows []row
		var events [][]byte
		for i, n := range sizes {
			b := bytes.Repeat([]byte{byte('a' + i)}, n)
			rows = append(rows, row{position: uint64(10 + i), data: b})
			events = append(events, b)
		}
		buf, chunks := encodeCommit(id, rows)
		if int64(len(buf)) != packedBytes(events) {
			t.Fatalf("%v: %d bytes of records, packedBytes says %d", sizes, len(buf), packedBytes(events))
		}
		next, off := uint64(10), 0
		for _, c := range chunks {
			if c.first != next {
				t.Fatalf("%v: chunk starts at %d, want %d", sizes, c.first, next)
			}
			if len(c.data) > maxChunkBytes && c.first != c.last {
				t.Fatalf("%v: chunk %d-%d of %d bytes", sizes, c.first, c.last, len(c.data))
			}
			if err := chunkEvents(c.first, c.last, c.data, func(p uint64, e []byte) bool {
				if !bytes.Equal(e, events[p-10]) {
					t.Fatalf("%v: event %d differs", sizes, p)
				}
				return true
			}); err != nil {
				t.Fatal(err)
			}
			next = c.last + 1
			// The record, read at the offsets the format documents (not with
			// the code that writes headers).
			end := off + logHeaderBytes + len(c.data)
			if end > len(buf) {
				t.Fatalf("%v: the records end before chunk %d-%d", sizes, c.first, c.last)
			}
			r := buf[off:end]
			u64 := func(at int) uint64 { return binary.BigEndian.Uint64(r[at:]) }
			switch {
			case binary.BigEndian.Uint32(r) != 0x434c4731:
				t.Fatalf("%v: record at %d has magic %x", sizes, off, r[:4])
			case binary.BigEndian.Uint32(r[4:]) != crc32.Checksum(r[8:], crc32.MakeTable(crc32.Castagnoli)):
				t.Fatalf("%v: record at %d has a CRC that does not cover bytes 8 to its end", sizes, off)
			case u64(8) != id || u64(16) != c.first || u64(24) != c.last || u64(32) != 10 || u64(40) != uint64(9+len(sizes)):
				t.Fatalf("%v: record at %d has header id %d, chunk %d-%d, commit %d-%d", sizes, off, u64(8), u64(16), u64(24), u64(32), u64(40))
			case int(binary.BigEndian.Uint32(r[48:])) != len(c.data) || !bytes.Equal(r[logHeaderBytes:], c.data):
				t.Fatalf("%v: record at %d does not hold its chunk", sizes, off)
			}
			off = end
		}
		if next != uint64(10+len(sizes)) || off != len(buf) {
			t.Fatalf("%v: the records cover positions up to %d and %d of %d bytes", sizes, next-1, off, len(buf))
		}
	}
}

// appendRecord appends r to b as one record, as encodeCommit would.
func appendRecord(b []byte, id uint64, r logRecord) []byte {
	start := len(b)
	b = append(b, make([]byte, logHeaderBytes)...)
	b = append(b, r.data...)
	putHeader(b[start:], id, r.first, r.last, r.commit)
	return b
}
