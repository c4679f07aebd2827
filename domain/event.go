package domain

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Event is one entry of the ledger: an envelope, a public part and an optional sealed
// part.
//
// The zero Event is not valid. Before an append, Position is zero and Version is
// either zero (the store assigns it) or the version the event will get; handlers that
// seal set Version, because the sealed part's associated data binds it (see SealedAD).
// After an append, Position and Version are set by the store.
type Event struct {
	// Position is the event's global position in the ledger, starting at 1, with no
	// gaps. It is also the event's leaf index + 1 in the Merkle log.
	Position uint64
	// Stream names the event's stream, e.g. "subject-<id>". Stream names carry no
	// personal data: ids in them are random pseudonyms or serial numbers.
	Stream string
	// Version is the event's position in its stream, starting at 1, with no gaps.
	Version uint64
	// ID is random and unique across the ledger.
	ID EventID
	// Type names the event's kind, e.g. "certificate.issued"; see catalogue.go.
	Type string
	// Schema is the version of the Type's payload layout.
	Schema uint16
	// Time is when the event was recorded, in UTC, with nanosecond precision.
	Time time.Time
	// Actor is the authenticated identity that caused the event.
	Actor Actor
	// Public holds the non-personal facts as canonical JSON (see Payload).
	Public []byte
	// Sealed holds the personal facts, encrypted; nil when the event has none.
	Sealed *Sealed
}

// Actor is who caused an event. ID is an identifier of the authenticated client
// (for example "cert:<serial>"), never a name.
type Actor struct {
	ID   string
	Role string
}

// Sealed is the encrypted part of an event. The ciphertext opens only with the data
// key of (SubjectID, KeyGroup) and only with the associated data of the event it was
// sealed for (SealedAD).
type Sealed struct {
	SubjectID SubjectID
	KeyGroup  string
	// KeyID identifies the data key within the (subject, group) keyset.
	KeyID      uint32
	Ciphertext []byte
}

// Limits on event fields, enforced by Encode and Decode alike so that anything that
// encodes also decodes.
const (
	// MaxPayload bounds len(Public) + len(Sealed.Ciphertext).
	MaxPayload = 1 << 20
	// MaxNameLen bounds Stream, Type, Actor.ID, Actor.Role, Sealed.SubjectID and
	// Sealed.KeyGroup.
	MaxNameLen = 255
)

// ErrTooLarge reports an event whose payload exceeds MaxPayload.
var ErrTooLarge = errors.New("event payload exceeds 1 MiB")

// Validate reports whether e can be encoded, ignoring Position and Version (which a
// store assigns). It is what stores call before they write anything.
func (e *Event) Validate() error {
	n := len(e.Public)
	if e.Sealed != nil {
		n += len(e.Sealed.Ciphertext)
	}
	if n > MaxPayload {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, n)
	}
	if err := checkName("stream", e.Stream, true); err != nil {
		return err
	}
	if err := checkName("type", e.Type, true); err != nil {
		return err
	}
	if err := checkText("actor id", e.Actor.ID); err != nil {
		return err
	}
	if err := checkText("actor role", e.Actor.Role); err != nil {
		return err
	}
	if _, ok := unixNano(e.Time); !ok {
		return fmt.Errorf("event time %v is outside the encodable range", e.Time)
	}
	if s := e.Sealed; s != nil {
		if err := checkName("sealed subject id", string(s.SubjectID), true); err != nil {
			return err
		}
		if err := checkName("sealed key group", s.KeyGroup, true); err != nil {
			return err
		}
		if len(s.Ciphertext) == 0 {
			return errors.New("sealed part has no ciphertext")
		}
	}
	return nil
}

// checkName accepts printable ASCII without spaces, not starting with '$' (reserved
// for store-internal names, as in KurrentDB).
func checkName(what, s string, required bool) error {
	if s == "" {
		if required {
			return fmt.Errorf("%s is empty", what)
		}
		return nil
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%s is longer than %d bytes", what, MaxNameLen)
	}
	if s[0] == '$' {
		return fmt.Errorf("%s starts with '$'", what)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%s has a byte outside printable ASCII at offset %d", what, i)
		}
	}
	return nil
}

// checkText accepts any valid UTF-8 up to MaxNameLen bytes, including empty.
func checkText(what, s string) error {
	if len(s) > MaxNameLen {
		return fmt.Errorf("%s is longer than %d bytes", what, MaxNameLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	return nil
}

// unixNano returns t as nanoseconds since the Unix epoch, and false when t is outside
// the range an int64 of nanoseconds can hold (years 1678 to 2262) or is the zero time.
func unixNano(t time.Time) (int64, bool) {
	if t.IsZero() {
		return 0, false
	}
	n := t.UnixNano()
	return n, time.Unix(0, n).Equal(t)
}

// Expected is the stream version an append expects to find: an exact version, or one
// of NoStream, Any and StreamExists.
type Expected int64

const (
	// NoStream expects the stream to have no events. It equals Exact(0).
	NoStream Expected = 0
	// Any appends whatever the stream's version.
	Any Expected = -1
	// StreamExists expects the stream to have at least one event.
	StreamExists Expected = -2
)

// Exact expects the stream's last event to have version v (0: no events).
func Exact(v uint64) Expected { return Expected(v) }

// Allows reports whether a stream at version current satisfies e.
func (e Expected) Allows(current uint64) bool {
	switch {
	case e == Any:
		return true
	case e == StreamExists:
		return current > 0
	case e >= 0:
		return uint64(e) == current
	}
	return false
}

func (e Expected) String() string {
	switch e {
	case Any:
		return "any"
	case StreamExists:
		return "stream exists"
	case NoStream:
		return "no stream"
	}
	if e < 0 {
		return fmt.Sprintf("invalid(%d)", int64(e))
	}
	return fmt.Sprintf("version %d", int64(e))
}

// Valid reports whether e is one of the defined values.
func (e Expected) Valid() bool { return e >= StreamExists }

// Appended is what a store reports after a successful append.
type Appended struct {
	// FirstPosition and LastPosition are the global positions of the first and last
	// appended events.
	FirstPosition, LastPosition uint64
	// Version is the stream's version after the append.
	Version uint64
}

// ErrWrongVersion is the sentinel for an append whose expected version did not match.
// Stores return a *WrongVersionError, which matches it with errors.Is.
var ErrWrongVersion = errors.New("wrong expected version")

// WrongVersionError reports an optimistic concurrency conflict. Actual lets a caller
// retry without another read.
type WrongVersionError struct {
	Stream   string
	Expected Expected
	Actual   uint64
}

func (e *WrongVersionError) Error() string {
	return fmt.Sprintf("stream %q: expected %v, found version %d", e.Stream, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrWrongVersion) true.
func (e *WrongVersionError) Is(target error) bool { return target == ErrWrongVersion }
