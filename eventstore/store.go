package eventstore

import (
	"context"
	"errors"
	"fmt"
	"iter"

	"github.com/caledger/caledger/domain"
)

// Store is an append-only ledger of events grouped in streams.
//
// # Positions and versions
//
// Every event gets a global position (1, 2, 3, ... with no gaps, in commit order)
// and a stream version (1, 2, 3, ... with no gaps within its stream). Both are
// assigned by the store and never change.
//
// # Durability
//
// Append MUST NOT return success before the events are durable: after a crash or
// power loss at any later moment, they are read back exactly as written. Append MUST
// NOT leave part of an append behind: the events of one call are written all or
// none. An error matching ErrFailed leaves the outcome unknown: the events may or
// may not be written, the store refuses further appends (with ErrFailed) until it
// is reopened, and reopening recovers a state that contains every acknowledged
// append. Every other error means nothing was written.
//
// # Reading
//
// The iterators yield events in order, each followed by a nil error, or a single
// non-nil error and stop. They never yield an event twice or skip one. A yielded
// event's byte fields are owned by the caller.
type Store interface {
	// Append appends events to stream if the stream's version satisfies expected.
	// Each event's Stream must be empty or equal to stream, its Position zero and
	// its Version zero or the version it will get. On a conflict the error is a
	// *domain.WrongVersionError (errors.Is(err, ErrWrongVersion)) reporting the
	// stream's actual version.
	Append(ctx context.Context, stream string, expected domain.Expected, events ...domain.Event) (domain.Appended, error)

	// ReadStream yields the events of stream with version >= from, in version
	// order, then stops. A stream with no events yields nothing.
	ReadStream(ctx context.Context, stream string, from uint64) iter.Seq2[domain.Event, error]

	// ReadAll yields every event with position >= from, in position order, until it
	// reaches the head, then stops.
	ReadAll(ctx context.Context, from uint64) iter.Seq2[domain.Event, error]

	// Follow yields every event with position >= from like ReadAll, then keeps
	// waiting for and yielding new events as they are committed, with no gap and
	// no duplicate at the boundary, until ctx is done (then it yields ctx's error)
	// or the store is closed (ErrClosed).
	Follow(ctx context.Context, from uint64) iter.Seq2[domain.Event, error]

	// Head returns the position of the last committed event (0: empty ledger).
	Head(ctx context.Context) (uint64, error)

	// Close stops the store. Appends in flight finish or fail; later calls fail
	// with ErrClosed; running Follow iterators stop with ErrClosed.
	Close() error
}

// Errors. Stores wrap them with detail; match them with errors.Is.
var (
	// ErrWrongVersion: the stream's version did not satisfy the expected version.
	ErrWrongVersion = domain.ErrWrongVersion
	// ErrTooLarge: an event (or one append) exceeds the size limits.
	ErrTooLarge = domain.ErrTooLarge
	// ErrInvalid: an event is not valid (see domain.Event.Validate) or does not
	// fit the append (wrong stream, position set).
	ErrInvalid = errors.New("invalid event")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("event store closed")
	// ErrCorrupt: a stored event, or the index that finds it, cannot be read
	// back. For an event the error is a *CorruptError naming its position.
	ErrCorrupt = errors.New("corrupt event")
	// ErrFailed: this or an earlier write failed with an unknown outcome; reopen
	// the store.
	ErrFailed = errors.New("event store failed; reopen it to recover")
)

// MaxAppendBytes bounds the encoded size of one append: one event of the maximal
// payload fits, and so do many small ones, while a single transaction stays small
// enough to commit without stalling everyone else's.
const MaxAppendBytes = 16 << 20

// CorruptError reports a stored event that cannot be decoded or does not sit where
// the store put it.
type CorruptError struct {
	Position uint64
	Err      error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("event at position %d: %v", e.Position, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// EncodedEvent is one event of an append, checked and canonically encoded with its
// position and version still zero (domain.SetPlacement fills them in).
type EncodedEvent struct {
	Bytes   []byte
	ID      domain.EventID
	Type    string
	Version uint64 // the version the caller set in the event (0: none)
}

// VersionMismatch checks the versions the caller set in an append's events (0:
// none) against those they get when appended to stream at version current, the
// append expecting expected. It returns nil if every one matches, else a
// *domain.WrongVersionError wrapped with the first event that does not, which is
// how every Store reports it. The error is built only then: this runs for every
// append.
func VersionMismatch(versions []uint64, stream string, expected domain.Expected, current uint64) error {
	for i, v := range versions {
		if v != 0 && v != current+uint64(i)+1 {
			return fmt.Errorf("event %d was made for version %d: %w", i, v,
				&domain.WrongVersionError{Stream: stream, Expected: expected, Actual: current})
		}
	}
	return nil
}

// EncodeAppend applies the checks every Store makes to an Append before anything
// is written, and encodes the events. It fails with ErrInvalid for no events, an
// invalid expected version, an event naming another stream or carrying a
// position, or an event that does not encode; with ErrTooLarge for an event or an
// append over the size limits. The caller's events are not modified.
func EncodeAppend(stream string, expected domain.Expected, events []domain.Event) ([]EncodedEvent, int, error) {
	if len(events) == 0 {
		return nil, 0, fmt.Errorf("%w: append of no events", ErrInvalid)
	}
	if !expected.Valid() {
		return nil, 0, fmt.Errorf("%w: expected version %d", ErrInvalid, int64(expected))
	}
	out := make([]EncodedEvent, len(events))
	size := 0
	for i := range events {
		e := events[i] // a copy: the caller's events are not modified
		if e.Stream != "" && e.Stream != stream {
			return nil, 0, fmt.Errorf("%w: event %d names stream %q, appended to %q", ErrInvalid, i, e.Stream, stream)
		}
		if e.Position != 0 {
			return nil, 0, fmt.Errorf("%w: event %d has a position; the store assigns it", ErrInvalid, i)
		}
		e.Stream = stream
		version := e.Version
		e.Version = 0
		b, err := domain.Encode(&e)
		if err != nil {
			if errors.Is(err, domain.ErrTooLarge) {
				return nil, 0, fmt.Errorf("event %d: %w", i, err)
			}
			return nil, 0, fmt.Errorf("%w: event %d: %v", ErrInvalid, i, err)
		}
		size += len(b)
		if size > MaxAppendBytes {
			return nil, 0, fmt.Errorf("%w: the append is larger than %d bytes", ErrTooLarge, MaxAppendBytes)
		}
		out[i] = EncodedEvent{Bytes: b, ID: e.ID, Type: e.Type, Version: version}
	}
	return out, size, nil
}
