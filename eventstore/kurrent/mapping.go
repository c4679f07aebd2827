package kurrent

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
)

// This file is the mapping between caledger events and KurrentDB events; it is
// what BenchmarkMapping measures.

// commitType is the KurrentDB event type of commit records.
const commitType = "caledger.commit"

// commitsStream is appended to the prefix to name the commit stream. Caledger
// stream names cannot start with '$', so no caledger stream maps to it.
const commitsStream = "$commits"

// naming maps caledger stream names to KurrentDB stream names.
type naming struct {
	prefix  string // prepended to every caledger stream name
	commits string // the commit stream: prefix + "$commits"
}

func newNaming(prefix string) naming {
	return naming{prefix: prefix, commits: prefix + commitsStream}
}

func (n naming) stream(caledger string) string { return n.prefix + caledger }

// checkPrefix accepts what KurrentDB and caledger both accept in a stream name:
// printable ASCII without spaces, not starting with '$' (KurrentDB's system
// streams).
func checkPrefix(p string) error {
	if p == "" {
		return errors.New("kurrent: the stream prefix is empty")
	}
	if p[0] == '$' {
		return fmt.Errorf("kurrent: stream prefix %q starts with '$', which KurrentDB reserves for system streams", p)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("kurrent: stream prefix %q has a byte outside printable ASCII at offset %d", p, i)
		}
	}
	return nil
}

// eventData is the KurrentDB event for one encoded caledger event: the canonical
// bytes as binary data, the caledger type as event type, the caledger id as
// event id, no metadata.
func eventData(id domain.EventID, typ string, encoded []byte) kurrentdb.EventData {
	d := kurrentdb.EventData{EventType: typ, ContentType: kurrentdb.ContentTypeBinary, Data: encoded}
	copy(d.EventID[:], id[:])
	return d
}

// decode turns a recorded KurrentDB event of a caledger stream back into the
// caledger event and checks that it sits where its own bytes say: its stream,
// its version (KurrentDB revision + 1) and its id. want is the position the
// caller expects, for the error (0 when unknown).
func (n naming) decode(r *kurrentdb.RecordedEvent, want uint64) (domain.Event, error) {
	e, err := domain.Decode(r.Data)
	if err != nil {
		return e, &eventstore.CorruptError{Position: want, Err: err}
	}
	stream, ok := strings.CutPrefix(r.StreamID, n.prefix)
	switch {
	case !ok || stream != e.Stream:
		err = fmt.Errorf("event of stream %q is stored in KurrentDB stream %q", e.Stream, r.StreamID)
	case e.Version != r.EventNumber+1:
		err = fmt.Errorf("event of version %d is stored at revision %d", e.Version, r.EventNumber)
	case e.ID != domain.EventID(r.EventID):
		err = fmt.Errorf("event %v is stored under KurrentDB event id %v", e.ID, domain.EventID(r.EventID))
	}
	if err != nil {
		return e, &eventstore.CorruptError{Position: e.Position, Err: err}
	}
	return e, nil
}

// stateFor is the KurrentDB stream state that holds exactly when a caledger
// stream is at version v: version v is revision v-1, version 0 is no stream.
func stateFor(v uint64) kurrentdb.StreamState {
	if v == 0 {
		return kurrentdb.NoStream{}
	}
	return kurrentdb.StreamRevision{Value: v - 1}
}

// versionOf is the inverse of stateFor, for the actual states KurrentDB reports.
// A state that is neither (a deleted stream) gives false.
func versionOf(s kurrentdb.StreamState) (uint64, bool) {
	switch s := s.(type) {
	case kurrentdb.NoStream:
		return 0, true
	case kurrentdb.StreamRevision:
		if s.Value < 1<<63 {
			return s.Value + 1, true
		}
	}
	return 0, false
}

// A commit record is the one event every successful append writes to the
// commit stream, first in its transaction: the global positions the append's
// events take, first..last, and a random nonce that tells this attempt from any
// other (it is also the record's event id, but the store does not rely on the
// server keeping that). A fence (see writer.go) has last = first - 1.
//
//	offset  size
//	0       1     format (1)
//	1       8     first position, big-endian
//	9       8     last position, big-endian
//	17      16    nonce
type commitRecord struct {
	first, last uint64
	nonce       domain.EventID
}

const commitLen = 33

func (c commitRecord) encode() []byte {
	b := make([]byte, commitLen)
	b[0] = 1
	binary.BigEndian.PutUint64(b[1:], c.first)
	binary.BigEndian.PutUint64(b[9:], c.last)
	copy(b[17:], c.nonce[:])
	return b
}

func decodeCommit(b []byte) (commitRecord, error) {
	if len(b) != commitLen || b[0] != 1 {
		return commitRecord{}, fmt.Errorf("commit record of %d bytes is not format 1", len(b))
	}
	c := commitRecord{first: binary.BigEndian.Uint64(b[1:]), last: binary.BigEndian.Uint64(b[9:])}
	copy(c.nonce[:], b[17:])
	if c.first == 0 || c.last+1 < c.first {
		return commitRecord{}, fmt.Errorf("commit record claims positions %d..%d", c.first, c.last)
	}
	return c, nil
}

// commit is a commit record as read back, with where it sits.
type commit struct {
	commitRecord
	revision uint64             // in the commit stream
	position kurrentdb.Position // in $all
}

func readCommit(r *kurrentdb.RecordedEvent) (commit, error) {
	if r.EventType != commitType {
		return commit{}, fmt.Errorf("commit stream holds an event of type %q", r.EventType)
	}
	c, err := decodeCommit(r.Data)
	if err != nil {
		return commit{}, err
	}
	return commit{commitRecord: c, revision: r.EventNumber, position: r.Position}, nil
}

// newID returns a random version 4 UUID for a commit record.
func newID() domain.EventID {
	id, err := domain.NewEventID(rand.Reader)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return id
}
