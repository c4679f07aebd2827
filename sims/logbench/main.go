// Command logbench compares, in bare loops with no store around them, the ways of
// making one 1.1 KB record per commit durable that docs/eventstore.md weighed for
// the lone appender: a raw 4 KiB write with fsync or fdatasync, records appended
// to a preallocated log file with fdatasync (alone, and with SQLite fed in the
// background as the store's drainer does), and one SQLite transaction per commit.
// It runs them in alternating 1 s rounds and prints the median of each one's
// ratios to a raw fsync loop measured around every round.
//
//	go run ./sims/logbench [-dir DIR] [-rounds 10]
package main

import (
	"crypto/rand"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver

	"github.com/caledger/caledger/sims/rawdisk"
)

const (
	recordBytes = 1100
	logBytes    = 256 << 20
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "logbench:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "", "directory on the disk to measure (default: a new temporary directory)")
	rounds := flag.Int("rounds", 10, "alternating rounds")
	flag.Parse()
	if *dir == "" {
		d, err := os.MkdirTemp("", "logbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	if err := rawdisk.RefuseTmpfs(*dir); err != nil {
		return err
	}
	record := make([]byte, recordBytes)
	rand.Read(record)
	log, err := newLog(filepath.Join(*dir, "log"))
	if err != nil {
		return err
	}
	defer log.Close()
	full, err := openDB(filepath.Join(*dir, "full.db"), "FULL", 0)
	if err != nil {
		return err
	}
	defer full.Close()
	bg5, err := openDB(filepath.Join(*dir, "bg5.db"), "NORMAL", 0)
	if err != nil {
		return err
	}
	defer bg5.Close()
	bg50, err := openDB(filepath.Join(*dir, "bg50.db"), "NORMAL", 10000)
	if err != nil {
		return err
	}
	defer bg50.Close()
	// Grow full.db's WAL to its working size first: a growing WAL makes each
	// fsync also commit the file's size.
	if _, err := sqliteLoop(full, 2*time.Second, record); err != nil {
		return err
	}
	type variant struct {
		name string
		run  func() (float64, error)
	}
	variants := []variant{
		{"raw 4 KiB write + fdatasync", func() (float64, error) { return rawdisk.DatasyncRate(*dir, time.Second) }},
		{"log file, fdatasync", func() (float64, error) { return log.loop(time.Second, record, nil, 0) }},
		{"log file + SQLite (NORMAL) fed every 5 ms", func() (float64, error) { return log.loop(time.Second, record, bg5, 5*time.Millisecond) }},
		{"log file + SQLite fed every 50 ms, autocheckpoint 10000", func() (float64, error) {
			return log.loop(time.Second, record, bg50, 50*time.Millisecond)
		}},
		{"SQLite, a FULL transaction per commit", func() (float64, error) { return sqliteLoop(full, time.Second, record) }},
	}
	ratios := make([][]float64, len(variants))
	for range max(*rounds, 1) {
		before, err := rawdisk.SyncRate(*dir, 500*time.Millisecond)
		if err != nil {
			return err
		}
		rates := make([]float64, len(variants))
		for i, v := range variants {
			if rates[i], err = v.run(); err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
		}
		after, err := rawdisk.SyncRate(*dir, 500*time.Millisecond)
		if err != nil {
			return err
		}
		for i := range variants {
			ratios[i] = append(ratios[i], rates[i]/((before+after)/2))
		}
	}
	fmt.Printf("| bare loop, one %d-byte record per commit (%d rounds) | median × raw fsync | min | max |\n|---|---|---|---|\n", recordBytes, *rounds)
	for i, v := range variants {
		r := ratios[i]
		slices.Sort(r)
		fmt.Printf("| %s | %.2f | %.2f | %.2f |\n", v.name, r[len(r)/2], r[0], r[len(r)-1])
	}
	return nil
}

// logFile is a zero-filled file written with sequential records that wrap around.
type logFile struct {
	*os.File
	off int64
}

func newLog(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < logBytes; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros, off); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return &logFile{File: f}, nil
}

// loop appends records with fdatasync for d. With db set, a goroutine inserts what
// was written into it every feed, one transaction each, like the store's drainer.
func (l *logFile) loop(d time.Duration, record []byte, db *sql.DB, feed time.Duration) (float64, error) {
	written := make(chan []byte, 1<<16)
	fed := make(chan error, 1)
	if db != nil {
		go func() { fed <- feedLoop(db, written, feed) }()
	}
	n := 0
	start := time.Now()
	var err error
	for time.Since(start) < d {
		if l.off+int64(len(record)) > logBytes {
			l.off = 0
		}
		if _, err = l.WriteAt(record, l.off); err != nil {
			break
		}
		if err = rawdisk.Fdatasync(l.File); err != nil {
			break
		}
		l.off += int64(len(record))
		if db != nil {
			written <- record
		}
		n++
	}
	rate := float64(n) / time.Since(start).Seconds()
	if db != nil {
		close(written)
		err = errors.Join(err, <-fed)
	}
	return rate, err
}

func feedLoop(db *sql.DB, written <-chan []byte, every time.Duration) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	var pending []byte
	for {
		open := true
		select {
		case r, ok := <-written:
			if ok {
				pending = append(pending, r...)
				continue
			}
			open = false
		case <-tick.C:
		}
		if len(pending) > 0 {
			if _, err := db.Exec(`INSERT INTO ev(data) VALUES (?)`, pending); err != nil {
				return err
			}
			pending = pending[:0]
		}
		if !open {
			return nil
		}
	}
}

func openDB(path, synchronous string, autocheckpoint int) (*sql.DB, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous="+synchronous)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	qs := []string{`CREATE TABLE IF NOT EXISTS ev (pos INTEGER PRIMARY KEY, data BLOB NOT NULL)`}
	if autocheckpoint > 0 {
		qs = append(qs, fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", autocheckpoint))
	}
	for _, q := range qs {
		if _, err := db.Exec(q); err != nil {
			db.Close()
			return nil, err
		}
	}
	return db, nil
}

func sqliteLoop(db *sql.DB, d time.Duration, record []byte) (float64, error) {
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := db.Exec(`INSERT INTO ev(data) VALUES (?)`, record); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
