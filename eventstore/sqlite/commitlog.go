package sqlite

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"syscall"
)

// The commit log is what makes an append durable: every commit is one write of its
// chunks to a preallocated file and one fdatasync, and the appenders are
// acknowledged after that. ledger.db receives the same chunks behind it (drain.go),
// in transactions of many commits each. A commit that went through SQLite itself
// paid for SQLite's commit protocol and wrote whole 4 KiB pages for a 1 KiB event;
// a lone appender reached about 0.75-0.8 × the disk's raw fsync rate that way, and
// a write to a file whose blocks already exist, synced with fdatasync, reaches
// about 0.95 × (docs/eventstore.md has the runs).
//
// There are two log files, used in turn. A file is reused only once ledger.db holds
// every chunk of its previous turn durably, so the logs only ever hold what
// ledger.db might lack, and Open replays from them the chunks past ledger.db's
// head. Both files are filled with zeros when created: overwriting blocks that
// exist changes no metadata, so fdatasync flushes the data alone.
//
// A record is a chunk (chunk.go) behind a 36-byte header, all big-endian:
//
//	0  magic "CLG1"
//	4  CRC-32C of bytes 8 to the end of the record
//	8  the ledger's log id (meta table), so a log file copied from another ledger is ignored
//	16 first position
//	24 last position
//	32 length of the chunk
//	36 the chunk
//
// A record that fails these checks is the one a crash tore, the zeros or leftovers
// of an earlier turn, or damage; scanRecords skips it.
const (
	logMagic        = 0x434c4731 // "CLG1"
	logHeaderBytes  = 36
	defaultLogBytes = 32 << 20
	minLogBytes     = 64 << 10
)

var logFileNames = [2]string{"ledger-0.log", "ledger-1.log"}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// commitLog is the writer's side of the two log files. Only the goroutine holding
// Store.commitMu uses it (and Open, before any).
type commitLog struct {
	files  [2]*os.File
	size   int64 // of each file
	id     uint64
	active int       // the file being written
	off    int64     // where the next record goes in it
	last   [2]uint64 // the last position each file holds from its current turn; 0: none
	buf    []byte
	// sync makes a write durable: fdatasync. Tests count its calls.
	sync func(*os.File) error
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// openCommitLog opens the two log files of dir, creating and zero-filling them (or
// the part of them that is missing) first.
func openCommitLog(dir string, size int64, id uint64) (*commitLog, error) {
	l := &commitLog{size: size, id: id, sync: fdatasync}
	created := false
	for i, name := range logFileNames {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("event store: commit log: %w", err)
		}
		l.files[i] = f
		st, err := f.Stat()
		if err != nil {
			l.close()
			return nil, fmt.Errorf("event store: commit log: %w", err)
		}
		if st.Size() < size {
			created = true
			if err := zeroFill(f, st.Size(), size); err != nil {
				l.close()
				return nil, fmt.Errorf("event store: commit log %s: %w", name, err)
			}
		}
	}
	if created {
		if err := syncDir(dir); err != nil {
			l.close()
			return nil, err
		}
	}
	return l, nil
}

// zeroFill writes zeros over [from, to) of f and syncs it, so that every block of
// the file exists before the first commit lands in it.
func zeroFill(f *os.File, from, to int64) error {
	zeros := make([]byte, 1<<20)
	for off := from; off < to; {
		n := min(int64(len(zeros)), to-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		off += n
	}
	return f.Sync()
}

func (l *commitLog) close() error {
	var errs []error
	for _, f := range l.files {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

// recordBytes is the size of chunks written as log records.
func recordBytes(chunks []chunk) int64 {
	var n int64
	for _, c := range chunks {
		n += logHeaderBytes + int64(len(c.data))
	}
	return n
}

// fits reports whether chunks can go into the log at all: a commit must fit in one
// file.
func (l *commitLog) fits(chunks []chunk) bool { return recordBytes(chunks) <= l.size }

// append writes chunks (consecutive, in position order) as records and makes them
// durable. When the active file has no room left it moves to the other one, after
// await has confirmed that ledger.db durably holds everything that file held. Any
// error leaves the outcome unknown.
func (l *commitLog) append(chunks []chunk, await func(position uint64) error) error {
	n := recordBytes(chunks)
	if n > l.size {
		return fmt.Errorf("a commit of %d bytes does not fit a log file of %d", n, l.size)
	}
	if l.off+n > l.size {
		other := 1 - l.active
		if l.last[other] != 0 {
			if err := await(l.last[other]); err != nil {
				return err
			}
		}
		l.active, l.off, l.last[other] = other, 0, 0
	}
	l.buf = l.buf[:0]
	for _, c := range chunks {
		l.buf = appendRecord(l.buf, l.id, c)
	}
	f := l.files[l.active]
	if _, err := f.WriteAt(l.buf, l.off); err != nil {
		return fmt.Errorf("commit log: write: %w", err)
	}
	if err := l.sync(f); err != nil {
		return fmt.Errorf("commit log: sync: %w", err)
	}
	l.off += n
	l.last[l.active] = chunks[len(chunks)-1].last
	if cap(l.buf) > 4<<20 {
		l.buf = nil // do not keep a buffer grown by one huge commit
	}
	return nil
}

func appendRecord(b []byte, id uint64, c chunk) []byte {
	start := len(b)
	b = binary.BigEndian.AppendUint32(b, logMagic)
	b = binary.BigEndian.AppendUint32(b, 0) // CRC, below
	b = binary.BigEndian.AppendUint64(b, id)
	b = binary.BigEndian.AppendUint64(b, c.first)
	b = binary.BigEndian.AppendUint64(b, c.last)
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.data)))
	b = append(b, c.data...)
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+8:], castagnoli))
	return b
}

// scanRecords calls fn with every record of ledger id found in a log file's
// bytes. A record that fails its checks (the one a crash tore, the zeros or
// leftovers of an earlier turn, or damage) is skipped by searching for the next
// magic number, so that records behind damage are still found: unapplied then sees
// the gap instead of silently ending the log there. The chunks passed to fn alias
// buf.
func scanRecords(buf []byte, id uint64, fn func(chunk)) {
	magic := binary.BigEndian.AppendUint32(nil, logMagic)
	for off := 0; off+logHeaderBytes <= len(buf); {
		c, n, recordID, ok := parseRecord(buf[off:])
		if ok {
			if recordID == id {
				fn(c)
			}
			off += n
			continue
		}
		i := bytes.Index(buf[off+1:], magic)
		if i < 0 {
			return
		}
		off += 1 + i
	}
}

// parseRecord checks and decodes the record at the start of b, returning it, its
// size and its ledger id.
func parseRecord(b []byte) (c chunk, size int, id uint64, ok bool) {
	if len(b) < logHeaderBytes || binary.BigEndian.Uint32(b) != logMagic {
		return c, 0, 0, false
	}
	n := int64(binary.BigEndian.Uint32(b[32:]))
	if n > int64(len(b)-logHeaderBytes) {
		return c, 0, 0, false
	}
	size = logHeaderBytes + int(n)
	if crc32.Checksum(b[8:size], castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return c, 0, 0, false
	}
	c = chunk{first: binary.BigEndian.Uint64(b[16:]), last: binary.BigEndian.Uint64(b[24:]), data: b[logHeaderBytes:size:size]}
	if c.first == 0 || c.last < c.first {
		return chunk{}, 0, 0, false
	}
	return c, size, binary.BigEndian.Uint64(b[8:]), true
}

// unapplied returns the chunks in the log files past position head, in position
// order. They must follow head without a gap: a gap means a record that was
// acknowledged is damaged, and the events after it cannot be placed.
func (l *commitLog) unapplied(head uint64) ([]chunk, error) {
	var found []chunk
	buf := make([]byte, l.size)
	for i, f := range l.files {
		if _, err := f.ReadAt(buf, 0); err != nil {
			return nil, fmt.Errorf("event store: read commit log %s: %w", logFileNames[i], err)
		}
		scanRecords(buf, l.id, func(c chunk) {
			if c.last > head {
				c.data = bytes.Clone(c.data)
				found = append(found, c)
			}
		})
	}
	sortChunks(found)
	next := head + 1
	for i, c := range found {
		if c.first != next {
			return found[:i], &gapError{next: next, found: c.first}
		}
		next = c.last + 1
	}
	return found, nil
}

type gapError struct{ next, found uint64 }

func (e *gapError) Error() string {
	return fmt.Sprintf("the commit log continues at position %d, not %d: a record is damaged", e.found, e.next)
}
