package sqlite_test

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/caledger/caledger/eventstore/storetest"
)

func open(t *testing.T, dir string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), dir, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fill appends n events, alternating between streams a and b, and closes the store.
func fill(t *testing.T, dir string, n int) {
	t.Helper()
	s := open(t, dir)
	for i := range n {
		stream := []string{"a", "b"}[i%2]
		if _, err := s.Append(context.Background(), stream, domain.Any, storetest.NewEvent(t, "t", fmt.Appendf(nil, "%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// poke runs SQL on one of the store's files while the store is closed.
func poke(t *testing.T, path, query string, args ...any) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatal(err)
	}
}

func corruptAt(t *testing.T, err error, position uint64) {
	t.Helper()
	var ce *eventstore.CorruptError
	if !errors.Is(err, eventstore.ErrCorrupt) || !errors.As(err, &ce) || ce.Position != position {
		t.Fatalf("err = %v, want a CorruptError at position %d", err, position)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("position %d", position)) {
		t.Fatalf("error %q does not name position %d", err, position)
	}
}

func TestCorruptEvents(t *testing.T) {
	valid := func(t *testing.T, position uint64) []byte {
		e := storetest.NewEvent(t, "t", nil)
		e.Stream, e.Position, e.Version = "a", position, 99
		b, err := domain.Encode(&e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := map[string]func(t *testing.T, ledger string){
		"garbage": func(t *testing.T, l string) { poke(t, l, `UPDATE events SET data = x'deadbeef' WHERE first = 5`) },
		"unknown format": func(t *testing.T, l string) {
			poke(t, l, `UPDATE events SET data = substr(data, 1, 4) || x'02' || substr(data, 6) WHERE first = 5`)
		},
		"truncated": func(t *testing.T, l string) {
			poke(t, l, `UPDATE events SET data = substr(data, 1, length(data) - 3) WHERE first = 5`)
		},
		"wrong position": func(t *testing.T, l string) {
			poke(t, l, `UPDATE events SET data = ? WHERE first = 5`, framed(valid(t, 6)))
		},
		"missing": func(t *testing.T, l string) { poke(t, l, `DELETE FROM events WHERE first = 5`) },
	}
	for name, corrupt := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			fill(t, dir, 10) // closing flushes the index: reopening reads nothing back
			corrupt(t, filepath.Join(dir, "ledger.db"))
			s := open(t, dir)
			defer s.Close()
			ctx := context.Background()
			var positions []uint64
			var last error
			for e, err := range s.ReadAll(ctx, 1) {
				if err != nil {
					last = err
					break
				}
				positions = append(positions, e.Position)
			}
			corruptAt(t, last, 5)
			if len(positions) != 4 {
				t.Fatalf("ReadAll yielded %v before the corrupt event, want 1..4", positions)
			}
			// Position 5 is the third event of stream a.
			last = nil
			for _, err := range s.ReadStream(ctx, "a", 1) {
				if err != nil {
					last = err
				}
			}
			corruptAt(t, last, 5)
			// Reading past it works.
			var after []uint64
			for e, err := range s.ReadAll(ctx, 6) {
				if err != nil {
					t.Fatalf("ReadAll(6): %v", err)
				}
				after = append(after, e.Position)
			}
			if len(after) != 5 || after[0] != 6 || after[4] != 10 {
				t.Fatalf("ReadAll(6) yielded %v, want 6..10", after)
			}
		})
	}
	t.Run("in the range recovered on open", func(t *testing.T) {
		dir := t.TempDir()
		fill(t, dir, 10)
		poke(t, filepath.Join(dir, "ledger.db"), `UPDATE events SET data = x'00' WHERE first = 7`)
		removeIndex(t, dir) // forces Open to read every event back
		_, err := sqlite.Open(context.Background(), dir, sqlite.Options{})
		corruptAt(t, err, 7)
	})
	t.Run("unknown ledger format", func(t *testing.T) {
		dir := t.TempDir()
		fill(t, dir, 1)
		poke(t, filepath.Join(dir, "ledger.db"), `UPDATE meta SET value = '9' WHERE key = 'format'`)
		_, err := sqlite.Open(context.Background(), dir, sqlite.Options{})
		if err == nil || !strings.Contains(err.Error(), `format "9"`) {
			t.Fatalf("Open of an unknown format: %v", err)
		}
	})
}

func framed(event []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(event))), event...)
}

func removeIndex(t *testing.T, dir string) {
	t.Helper()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(filepath.Join(dir, "ledger-index.db"+suffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
}

// TestDirectoryNameNeedsNoCare: a data directory whose name holds the characters
// that end a URI's path still works (SQLite is opened through a file: URI).
func TestDirectoryNameNeedsNoCare(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ledger?mode=ro#x%41")
	fill(t, dir, 3)
	s := open(t, dir)
	defer s.Close()
	checkStreams(t, s, map[string]int{"a": 2, "b": 1})
	if _, err := os.Stat(filepath.Join(dir, "ledger.db")); err != nil {
		t.Fatalf("the ledger is not where it belongs: %v", err)
	}
}

func TestSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer s.Close()
	if _, err := sqlite.Open(context.Background(), dir, sqlite.Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open: %v, want an in-use error", err)
	}
	s.Close()
	s2 := open(t, dir) // the lock is released by Close
	s2.Close()
}

func TestIndexRebuiltWhenLost(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir, 20)
	removeIndex(t, dir)
	s := open(t, dir)
	defer s.Close()
	checkStreams(t, s, map[string]int{"a": 10, "b": 10})
	if _, err := s.Append(context.Background(), "a", domain.Exact(9), storetest.NewEvent(t, "t", nil)); !errors.Is(err, eventstore.ErrWrongVersion) {
		t.Fatalf("rebuilt index forgot stream a's version: %v", err)
	}
}

// TestIndexAheadOfLedger covers a ledger file replaced by an older copy (a restore
// done wrong), without the commit log that came with it: the index must not point
// past the ledger's head.
func TestIndexAheadOfLedger(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir, 10)
	poke(t, filepath.Join(dir, "ledger.db"), `DELETE FROM events WHERE first > 6`)
	removeLogs(t, dir)
	s := open(t, dir)
	defer s.Close()
	checkStreams(t, s, map[string]int{"a": 3, "b": 3})
	a, err := s.Append(context.Background(), "a", domain.Exact(3), storetest.NewEvent(t, "t", nil))
	if err != nil || a.LastPosition != 7 || a.Version != 4 {
		t.Fatalf("append after trim: %+v, %v", a, err)
	}
}

// TestLedgerBehindItsLog: ledger.db lacks its last chunks, but the commit log still
// holds them (as after a crash before the drainer wrote them): Open replays them.
func TestLedgerBehindItsLog(t *testing.T) {
	dir := t.TempDir()
	fill(t, dir, 10)
	poke(t, filepath.Join(dir, "ledger.db"), `DELETE FROM events WHERE first > 6`)
	s := open(t, dir)
	checkStreams(t, s, map[string]int{"a": 5, "b": 5})
	if _, err := s.Append(context.Background(), "a", domain.Exact(5), storetest.NewEvent(t, "t", nil)); err != nil {
		t.Fatalf("append after replay: %v", err)
	}
	s.Close()
	// The replayed chunks are in ledger.db itself now.
	removeLogs(t, dir)
	s = open(t, dir)
	defer s.Close()
	checkStreams(t, s, map[string]int{"a": 6, "b": 5})
}

func removeLogs(t *testing.T, dir string) {
	t.Helper()
	for _, name := range []string{"ledger-0.log", "ledger-1.log"} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func checkStreams(t *testing.T, s eventstore.Store, want map[string]int) {
	t.Helper()
	for stream, n := range want {
		var got int
		for e, err := range s.ReadStream(context.Background(), stream, 1) {
			if err != nil {
				t.Fatalf("ReadStream(%s): %v", stream, err)
			}
			got++
			if e.Version != uint64(got) {
				t.Fatalf("stream %s: version %d at index %d", stream, e.Version, got)
			}
		}
		if got != n {
			t.Fatalf("stream %s has %d events, want %d", stream, got, n)
		}
	}
}

// TestCorruptInsideChunk damages the third of five events written in one append
// (so in one chunk): the error names its position, and the two before it are read.
func TestCorruptInsideChunk(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	var evs []domain.Event
	for i := range 5 {
		evs = append(evs, storetest.NewEvent(t, "t", fmt.Appendf(nil, "%d", i)))
	}
	if _, err := s.Append(context.Background(), "a", domain.NoStream, evs...); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ledger := filepath.Join(dir, "ledger.db")
	db, err := sql.Open("sqlite3", "file:"+ledger)
	if err != nil {
		t.Fatal(err)
	}
	var first, last int64
	var data []byte
	if err := db.QueryRow(`SELECT first, last, data FROM events`).Scan(&first, &last, &data); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if first != 1 || last != 5 {
		t.Fatalf("one append became chunk %d-%d", first, last)
	}
	// Walk to the third event and break its format byte.
	off := 0
	for range 2 {
		off += 4 + int(binary.BigEndian.Uint32(data[off:]))
	}
	data[off+4] = 0x7f
	poke(t, ledger, `UPDATE events SET data = ? WHERE first = 1`, data)

	s = open(t, dir)
	defer s.Close()
	var got []uint64
	var last2 error
	for e, err := range s.ReadAll(context.Background(), 1) {
		if err != nil {
			last2 = err
			break
		}
		got = append(got, e.Position)
	}
	corruptAt(t, last2, 3)
	if len(got) != 2 {
		t.Fatalf("read %v before the damaged event, want 1 and 2", got)
	}
	if !strings.Contains(last2.Error(), "unknown format 127") {
		t.Fatalf("error %q does not say what is wrong", last2)
	}
}

// TestIndexFlushRacesAppends flushes the stream index after every entry while 32
// goroutines read streams and append at the version they read: entries move from
// memory to the file under the appenders' feet, so the writer's version hints go
// stale all the time. A stale hint accepted would show as a repeated version.
func TestIndexFlushRacesAppends(t *testing.T) {
	s, err := sqlite.Open(context.Background(), t.TempDir(), sqlite.Options{IndexFlushInterval: time.Millisecond, IndexFlushEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var stored atomic.Int64
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				stream := fmt.Sprintf("h-%d", (g*31+i*17)%40)
				var v uint64
				for e, err := range s.ReadStream(ctx, stream, 1) {
					if err != nil {
						t.Error(err)
						return
					}
					v = e.Version
				}
				e := storetest.NewEvent(t, "t", nil)
				e.Version = v + 1
				_, err := s.Append(ctx, stream, domain.Exact(v), e)
				switch {
				case err == nil:
					stored.Add(1)
				case !errors.Is(err, eventstore.ErrWrongVersion):
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	versions := map[string]int{}
	n := 0
	for e, err := range s.ReadAll(ctx, 1) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		versions[e.Stream]++
		if e.Version != uint64(versions[e.Stream]) {
			t.Fatalf("stream %s: version %d where %d was due", e.Stream, e.Version, versions[e.Stream])
		}
	}
	if int64(n) != stored.Load() {
		t.Fatalf("%d successful appends but %d events", stored.Load(), n)
	}
	checkStreams(t, s, versions)
}
