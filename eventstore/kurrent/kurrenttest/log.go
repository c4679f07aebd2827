package kurrenttest

import (
	"sort"
	"sync"
)

// firstPosition is where the double's transaction log starts. A real node's log
// begins with its own system records, so positions never start at zero there
// either.
const firstPosition = 1 << 10

// A record is one event in the log. Records never change once appended, so they
// can be read without the log's lock once found.
type record struct {
	stream   string
	revision uint64
	id       [16]byte
	metadata map[string]string // "type", "content-type", "created"
	custom   []byte
	data     []byte
	// commit and prepare are the record's $all position. Every record of one
	// append shares the commit position (that of the append's first record);
	// prepare positions grow with every record, as byte offsets in a log would.
	commit, prepare uint64
}

func (r *record) after(commit, prepare uint64) bool {
	return r.commit > commit || r.commit == commit && r.prepare > prepare
}

// proposal is an event to append.
type proposal struct {
	stream   string
	id       [16]byte
	metadata map[string]string
	custom   []byte
	data     []byte
}

func (p *proposal) size() int {
	n := len(p.data) + len(p.custom)
	for k, v := range p.metadata {
		n += len(k) + len(v)
	}
	return n
}

// eventLog is the double's storage: an append-only slice of records (the $all
// order) and, per stream, the records of that stream in revision order.
type eventLog struct {
	mu      sync.RWMutex
	all     []*record
	streams map[string][]*record
	end     uint64        // the next prepare position
	changed chan struct{} // closed and replaced after every append
}

func newEventLog() *eventLog {
	return &eventLog{streams: map[string][]*record{}, end: firstPosition, changed: make(chan struct{})}
}

// lastRevisionLocked returns the stream's last revision, or -1 when it has none.
func (l *eventLog) lastRevisionLocked(stream string) int64 {
	return int64(len(l.streams[stream])) - 1
}

// appendLocked appends ps as one transaction. The caller holds l.mu for writing.
func (l *eventLog) appendLocked(ps []proposal) []*record {
	commit := l.end
	out := make([]*record, len(ps))
	for i := range ps {
		p := &ps[i]
		r := &record{
			stream:   p.stream,
			revision: uint64(len(l.streams[p.stream])),
			id:       p.id,
			metadata: p.metadata,
			custom:   p.custom,
			data:     p.data,
			commit:   commit,
			prepare:  l.end,
		}
		l.end += uint64(64 + len(p.stream) + p.size())
		l.all = append(l.all, r)
		l.streams[p.stream] = append(l.streams[p.stream], r)
		out[i] = r
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return out
}

// wait returns a channel closed by the next append.
func (l *eventLog) wait() <-chan struct{} {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.changed
}

// stream returns a copy of the stream's records (nil when it has none).
func (l *eventLog) stream(name string) []*record {
	l.mu.RLock()
	defer l.mu.RUnlock()
	rs := l.streams[name]
	if rs == nil {
		return nil
	}
	return rs[:len(rs):len(rs)]
}

// allFrom returns up to limit records of $all starting at index i, and the
// number of records in the log.
func (l *eventLog) allFrom(i, limit int) ([]*record, int) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := len(l.all)
	if i >= n {
		return nil, n
	}
	j := min(n, i+limit)
	return l.all[i:j:j], n
}

// indexOf returns the index of the first record at or after (commit, prepare),
// or, when exclusive, strictly after it.
func (l *eventLog) indexOf(commit, prepare uint64, exclusive bool) int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return sort.Search(len(l.all), func(i int) bool {
		r := l.all[i]
		if exclusive {
			return r.after(commit, prepare)
		}
		return r.commit > commit || r.commit == commit && r.prepare >= prepare
	})
}

// length returns the number of records in $all.
func (l *eventLog) length() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.all)
}

// last returns the last record of $all, or nil.
func (l *eventLog) last() *record {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if len(l.all) == 0 {
		return nil
	}
	return l.all[len(l.all)-1]
}
