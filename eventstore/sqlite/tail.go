package sqlite

import (
	"slices"
	"sort"
	"sync"
)

// tail holds the chunks that are durable in the commit log but not yet in
// ledger.db, in position order, so that readers see every acknowledged event.
//
// The writer adds a commit's chunks before it advances the head, and the drainer
// drops chunks only after the transaction that wrote them to ledger.db has
// committed. So a reader that looks for a position at or below the head it read
// finds it here, or, if it is older than the first chunk here, in ledger.db.
type tail struct {
	mu     sync.Mutex
	chunks []chunk
	bytes  int
}

// add appends a commit's chunks and returns how many bytes now wait for the
// drainer.
func (t *tail) add(cs []chunk) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.chunks = append(t.chunks, cs...)
	for _, c := range cs {
		t.bytes += len(c.data)
	}
	return t.bytes
}

// size returns how many bytes of chunks wait for the drainer.
func (t *tail) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bytes
}

// pending returns the chunks waiting for the drainer, at most max bytes of them
// (but at least one).
func (t *tail) pending(maxBytes int) []chunk {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, size := 0, 0
	for n < len(t.chunks) && (n == 0 || size+len(t.chunks[n].data) <= maxBytes) {
		size += len(t.chunks[n].data)
		n++
	}
	return slices.Clone(t.chunks[:n])
}

// drop forgets the chunks up to position through, which ledger.db now holds.
func (t *tail) drop(through uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for n < len(t.chunks) && t.chunks[n].last <= through {
		t.bytes -= len(t.chunks[n].data)
		n++
	}
	// A new slice, so the dropped chunks' memory is released.
	t.chunks = append([]chunk(nil), t.chunks[n:]...)
}

// from returns up to n chunks, starting with the one that holds position. It
// returns none when position is older than every chunk here (it is in ledger.db)
// or newer (it is not written yet).
func (t *tail) from(position uint64, n int) []chunk {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := t.find(position)
	if i < 0 {
		return nil
	}
	return slices.Clone(t.chunks[i:min(i+n, len(t.chunks))])
}

// get returns the chunk that holds position, if it is here.
func (t *tail) get(position uint64) (chunk, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := t.find(position)
	if i < 0 {
		return chunk{}, false
	}
	return t.chunks[i], true
}

func (t *tail) find(position uint64) int {
	i := sort.Search(len(t.chunks), func(i int) bool { return t.chunks[i].last >= position })
	if i == len(t.chunks) || t.chunks[i].first > position {
		return -1
	}
	return i
}
