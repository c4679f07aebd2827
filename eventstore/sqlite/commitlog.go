package sqlite

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
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
// A record is a chunk (chunk.go) behind a 52-byte header, all big-endian:
//
//	0  magic "CLG1"
//	4  CRC-32C of bytes 8 to the end of the record
//	8  the ledger's log id (meta table), so a log file copied from another ledger is ignored
//	16 first position of the chunk
//	24 last position of the chunk
//	32 first position of the commit the chunk belongs to
//	40 last position of that commit
//	48 length of the chunk
//	52 the chunk
//
// A commit larger than one chunk is several records, written by one pwrite; the
// commit's range in each of them lets Open tell a whole commit from a torn one.
// A record that fails these checks is the one a crash tore, the zeros or leftovers
// of an earlier turn, or damage; scanRecords skips it.
const (
	logMagic        = 0x434c4731 // "CLG1"
	logHeaderBytes  = 52
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

// append writes the records of one commit (encodeCommit), whose last position is
// last, and makes them durable. When the active file has no room left it moves to
// the other one, after await has confirmed that ledger.db durably holds everything
// that file held. Any error leaves the outcome unknown.
func (l *commitLog) append(records []byte, last uint64, await func(position uint64) error) error {
	n := int64(len(records))
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
	f := l.files[l.active]
	if _, err := f.WriteAt(records, l.off); err != nil {
		return fmt.Errorf("commit log: write: %w", err)
	}
	if err := l.sync(f); err != nil {
		return fmt.Errorf("commit log: sync: %w", err)
	}
	l.off += n
	l.last[l.active] = last
	return nil
}

// encodeCommit packs rows (consecutive, in position order) into chunks of up to
// maxChunkBytes and lays them out as the log records of one commit, in a new
// buffer of exactly the right size. The chunks' data alias the buffer, which is
// never reused: the tail keeps them after the commit.
func encodeCommit(id uint64, rows []row) ([]byte, []chunk) {
	total := recordsBytes(len(rows), func(i int) int { return len(rows[i].data) })
	commit := [2]uint64{rows[0].position, rows[len(rows)-1].position}
	buf := make([]byte, 0, int(total))
	var chunks []chunk
	start, first, open := 0, uint64(0), false
	finish := func(last uint64) {
		putHeader(buf[start:], id, first, last, commit)
		chunks = append(chunks, chunk{first: first, last: last, data: buf[start+logHeaderBytes : len(buf) : len(buf)]})
	}
	for i, r := range rows {
		if open && chunkFull(len(buf)-start-logHeaderBytes, len(r.data)) {
			finish(rows[i-1].position)
			open = false
		}
		if !open {
			start, first, open = len(buf), r.position, true
			buf = buf[:len(buf)+logHeaderBytes]
		}
		buf = appendFramed(buf, r.data)
	}
	finish(rows[len(rows)-1].position)
	return buf, chunks
}

// recordsBytes is the size of the records encodeCommit makes of n events, the
// i-th of size(i) bytes.
func recordsBytes(n int, size func(i int) int) int64 {
	var total int64
	c := 0
	for i := range n {
		if chunkFull(c, size(i)) {
			total += logHeaderBytes + int64(c)
			c = 0
		}
		c += 4 + size(i)
	}
	if c > 0 {
		total += logHeaderBytes + int64(c)
	}
	return total
}

// logRecord is a chunk as the log holds it, with the range of its commit.
type logRecord struct {
	chunk
	commit [2]uint64 // first and last position
}

// putHeader fills in the header of the record that is all of b, its chunk already
// in place after the header.
func putHeader(b []byte, id, first, last uint64, commit [2]uint64) {
	binary.BigEndian.PutUint32(b, logMagic)
	binary.BigEndian.PutUint64(b[8:], id)
	binary.BigEndian.PutUint64(b[16:], first)
	binary.BigEndian.PutUint64(b[24:], last)
	binary.BigEndian.PutUint64(b[32:], commit[0])
	binary.BigEndian.PutUint64(b[40:], commit[1])
	binary.BigEndian.PutUint32(b[48:], uint32(len(b)-logHeaderBytes))
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
}

// scanRecords calls fn with every record of ledger id found in a log file's
// bytes. A record that fails its checks (the one a crash tore, the zeros or
// leftovers of an earlier turn, or damage) is skipped by searching for the next
// magic number, so that records behind damage are still found: replayable then
// sees the gap instead of silently ending the log there. The records passed to
// fn alias buf.
func scanRecords(buf []byte, id uint64, fn func(logRecord)) {
	magic := binary.BigEndian.AppendUint32(nil, logMagic)
	for off := 0; off+logHeaderBytes <= len(buf); {
		r, n, recordID, ok := parseRecord(buf[off:])
		if ok {
			if recordID == id {
				fn(r)
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
func parseRecord(b []byte) (r logRecord, size int, id uint64, ok bool) {
	if len(b) < logHeaderBytes || binary.BigEndian.Uint32(b) != logMagic {
		return r, 0, 0, false
	}
	n := int64(binary.BigEndian.Uint32(b[48:]))
	if n > int64(len(b)-logHeaderBytes) {
		return r, 0, 0, false
	}
	size = logHeaderBytes + int(n)
	if crc32.Checksum(b[8:size], castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return r, 0, 0, false
	}
	r = logRecord{
		chunk:  chunk{first: binary.BigEndian.Uint64(b[16:]), last: binary.BigEndian.Uint64(b[24:]), data: b[logHeaderBytes:size:size]},
		commit: [2]uint64{binary.BigEndian.Uint64(b[32:]), binary.BigEndian.Uint64(b[40:])},
	}
	if r.commit[0] == 0 || r.commit[0] > r.first || r.first > r.last || r.last > r.commit[1] {
		return logRecord{}, 0, 0, false
	}
	return r, size, binary.BigEndian.Uint64(b[8:]), true
}

// unapplied returns the chunks in the log files past position head that Open
// must write to ledger.db, in position order (replayable decides which). Each
// file is read to its end, which may lie past the configured size if the ledger
// was last opened with larger files.
func (l *commitLog) unapplied(head uint64) ([]chunk, error) {
	var found []logRecord
	var buf []byte // one buffer for both files
	for i, f := range l.files {
		st, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("event store: read commit log %s: %w", logFileNames[i], err)
		}
		if int64(cap(buf)) < st.Size() {
			buf = make([]byte, st.Size())
		}
		buf = buf[:st.Size()]
		if _, err := f.ReadAt(buf, 0); err != nil {
			return nil, fmt.Errorf("event store: read commit log %s: %w", logFileNames[i], err)
		}
		scanRecords(buf, l.id, func(r logRecord) {
			if r.last > head {
				r.data = bytes.Clone(r.data)
				found = append(found, r)
			}
		})
	}
	return replayable(head, found)
}

// replayable picks, from the records past head, those of the whole commits that
// follow head without a gap. Commits are written one after another, each synced
// before the next starts, so only the last one can be torn: its records, if any
// remain, are dropped (it was never acknowledged). Anything else after a missing
// position (a later commit, or the rest of a commit that began at or before
// head) means damage to records that were synced, and replayable returns a
// gapError naming the first missing position rather than start without it.
func replayable(head uint64, found []logRecord) ([]chunk, error) {
	slices.SortFunc(found, func(a, b logRecord) int { return cmp.Compare(a.first, b.first) })
	next, complete, afterComplete := head+1, 0, head+1
	for i, r := range found {
		if r.first != next {
			break
		}
		next = r.last + 1
		if r.last == r.commit[1] {
			complete, afterComplete = i+1, next
		}
	}
	for _, r := range found[complete:] {
		if r.commit[0] != afterComplete {
			return nil, &gapError{missing: next}
		}
	}
	chunks := make([]chunk, complete)
	for i, r := range found[:complete] {
		chunks[i] = r.chunk
	}
	return chunks, nil
}

type gapError struct{ missing uint64 }

func (e *gapError) Error() string {
	return fmt.Sprintf("the commit log is damaged: position %d is missing, and records written after it are not", e.missing)
}
