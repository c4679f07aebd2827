package domain

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The canonical encoding of an event (format 1). All integers are big-endian; a
// string or byte field is a 4-byte length followed by its bytes.
//
//	offset  size  field
//	0       1     format (1)
//	1       8     position
//	9       8     version
//	17      16    event id
//	33      8     time, nanoseconds since the Unix epoch (signed)
//	41      2     schema
//	43      1     flags: bit 0 set when a sealed part follows; other bits zero
//	44      ...   stream, type, actor id, actor role, public
//	              if sealed: subject id, key group, key id (4 bytes), ciphertext
//
// The encoding is canonical: Decode accepts exactly the bytes Encode produces, so an
// event has one encoding and Encode(Decode(b)) == b. The Merkle log hashes these
// bytes, ciphertexts included. A new layout gets a new format byte; Decode keeps
// accepting every earlier format (testdata/ holds golden files for each).
const (
	formatV1       = 1
	flagSealed     = 1
	headerLen      = 44
	positionOffset = 1
	versionOffset  = 9
)

// ErrMalformed is matched (errors.Is) by every decoding error.
var ErrMalformed = errors.New("malformed event")

// DecodeError says where and why bytes are not a canonical event.
type DecodeError struct {
	Offset int
	Reason string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("malformed event at byte %d: %s", e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrMalformed) true.
func (e *DecodeError) Is(target error) bool { return target == ErrMalformed }

// EncodedLen returns the length of e's encoding.
func EncodedLen(e *Event) int {
	n := headerLen + 5*4 + len(e.Stream) + len(e.Type) + len(e.Actor.ID) + len(e.Actor.Role) + len(e.Public)
	if s := e.Sealed; s != nil {
		n += 4 + len(s.SubjectID) + 4 + len(s.KeyGroup) + 4 + 4 + len(s.Ciphertext)
	}
	return n
}

// Encode returns the canonical encoding of e. It fails if e does not Validate.
func Encode(e *Event) ([]byte, error) {
	return AppendEncoded(make([]byte, 0, EncodedLen(e)), e)
}

// AppendEncoded appends the canonical encoding of e to dst.
func AppendEncoded(dst []byte, e *Event) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return dst, err
	}
	nanos, _ := unixNano(e.Time)
	var flags byte
	if e.Sealed != nil {
		flags = flagSealed
	}
	dst = append(dst, formatV1)
	dst = binary.BigEndian.AppendUint64(dst, e.Position)
	dst = binary.BigEndian.AppendUint64(dst, e.Version)
	dst = append(dst, e.ID[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(nanos))
	dst = binary.BigEndian.AppendUint16(dst, e.Schema)
	dst = append(dst, flags)
	dst = appendField(dst, e.Stream)
	dst = appendField(dst, e.Type)
	dst = appendField(dst, e.Actor.ID)
	dst = appendField(dst, e.Actor.Role)
	dst = appendField(dst, e.Public)
	if s := e.Sealed; s != nil {
		dst = appendField(dst, s.SubjectID)
		dst = appendField(dst, s.KeyGroup)
		dst = binary.BigEndian.AppendUint32(dst, s.KeyID)
		dst = appendField(dst, s.Ciphertext)
	}
	return dst, nil
}

func appendField[T string | []byte | SubjectID](dst []byte, v T) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
	return append(dst, v...)
}

// SetPlacement writes position and version into an encoded event in place. Stores
// use it to encode outside their commit path and fill in the placement at commit.
func SetPlacement(encoded []byte, position, version uint64) {
	binary.BigEndian.PutUint64(encoded[positionOffset:], position)
	binary.BigEndian.PutUint64(encoded[versionOffset:], version)
}

// Decode parses a canonical encoding. The returned event's Public and
// Sealed.Ciphertext alias b: a caller that reuses b must copy them first. Decode
// never panics; any input that is not exactly an encoding of a valid event gives an
// error matching ErrMalformed.
func Decode(b []byte) (Event, error) {
	var e Event
	if len(b) < headerLen {
		return e, &DecodeError{len(b), fmt.Sprintf("%d bytes is shorter than the %d-byte header", len(b), headerLen)}
	}
	if b[0] != formatV1 {
		return e, &DecodeError{0, fmt.Sprintf("unknown format %d", b[0])}
	}
	e.Position = binary.BigEndian.Uint64(b[positionOffset:])
	e.Version = binary.BigEndian.Uint64(b[versionOffset:])
	copy(e.ID[:], b[17:33])
	e.Time = time.Unix(0, int64(binary.BigEndian.Uint64(b[33:]))).UTC()
	e.Schema = binary.BigEndian.Uint16(b[41:])
	flags := b[43]
	if flags&^flagSealed != 0 {
		return e, &DecodeError{43, fmt.Sprintf("unknown flags %#x", flags)}
	}
	r := reader{b: b, off: headerLen}
	// Stream, type, actor id and actor role are contiguous: convert them with one
	// allocation and slice the result.
	start := r.off
	var ends [4]int
	for i := range ends {
		if _, ok := r.field(); !ok {
			return e, r.err
		}
		ends[i] = r.off
	}
	names := string(b[start:ends[3]])
	at := func(i int) string { // field i's bytes, skipping its length prefix
		from := start
		if i > 0 {
			from = ends[i-1]
		}
		return names[from-start+4 : ends[i]-start]
	}
	e.Stream, e.Type, e.Actor.ID, e.Actor.Role = at(0), at(1), at(2), at(3)
	pub, ok := r.field()
	if !ok {
		return e, r.err
	}
	if len(pub) > 0 {
		e.Public = pub
	}
	if flags&flagSealed != 0 {
		var s Sealed
		subject, ok1 := r.field()
		group, ok2 := r.field()
		if !ok1 || !ok2 {
			return e, r.err
		}
		s.SubjectID, s.KeyGroup = SubjectID(subject), string(group)
		if r.off+4 > len(b) {
			return e, &DecodeError{r.off, "truncated key id"}
		}
		s.KeyID = binary.BigEndian.Uint32(b[r.off:])
		r.off += 4
		if s.Ciphertext, ok = r.field(); !ok {
			return e, r.err
		}
		e.Sealed = &s
	}
	if r.off != len(b) {
		return e, &DecodeError{r.off, fmt.Sprintf("%d trailing bytes", len(b)-r.off)}
	}
	if e.Position == 0 || e.Version == 0 {
		return e, &DecodeError{positionOffset, "position and version must be at least 1"}
	}
	if err := e.Validate(); err != nil {
		return e, &DecodeError{headerLen, err.Error()}
	}
	return e, nil
}

type reader struct {
	b   []byte
	off int
	err error
}

// field reads one length-prefixed field.
func (r *reader) field() ([]byte, bool) {
	if r.off+4 > len(r.b) {
		r.err = &DecodeError{r.off, "truncated length"}
		return nil, false
	}
	n := binary.BigEndian.Uint32(r.b[r.off:])
	if uint64(n) > uint64(len(r.b)-r.off-4) {
		r.err = &DecodeError{r.off, fmt.Sprintf("length %d runs past the end", n)}
		return nil, false
	}
	// Capped at its own length: appending to one field must not overwrite the next.
	v := r.b[r.off+4 : r.off+4+int(n) : r.off+4+int(n)]
	r.off += 4 + int(n)
	return v, true
}

// SealedAD returns the associated data that binds a sealed part to its event: the
// event id, stream, version and type, and the key's subject and group. A ciphertext
// copied into another event, stream position or subject fails to open.
func SealedAD(e *Event) []byte {
	const label = "caledger sealed v1\x00"
	var subject SubjectID
	var group string
	if e.Sealed != nil {
		subject, group = e.Sealed.SubjectID, e.Sealed.KeyGroup
	}
	ad := make([]byte, 0, len(label)+16+8+5*4+len(e.Stream)+len(e.Type)+len(subject)+len(group))
	ad = append(ad, label...)
	ad = append(ad, e.ID[:]...)
	ad = appendField(ad, e.Stream)
	ad = binary.BigEndian.AppendUint64(ad, e.Version)
	ad = appendField(ad, e.Type)
	ad = appendField(ad, subject)
	ad = appendField(ad, group)
	return ad
}

// JSONProblem says what is wrong with JSON that did not decode, without
// quoting it: encoding/json's own messages may quote the input (a string or
// number value), and a sealed part's input is personal data, a public part's
// may be whatever a faulty server put there.
func JSONProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("not JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		// Value is the JSON kind, and for a number out of range also the
		// number as given: only the kind is printed.
		kind, _, _ := strings.Cut(typ.Value, " ")
		return fmt.Sprintf("field %s holds a JSON %s", typ.Field, kind)
	default:
		return "not the type's layout"
	}
}
