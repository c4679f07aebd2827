package domain

import (
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
)

// EventID identifies an event. It is a random (version 4) UUID.
type EventID [16]byte

// NewEventID reads a random EventID from rand.
func NewEventID(rand io.Reader) (EventID, error) {
	var id EventID
	if _, err := io.ReadFull(rand, id[:]); err != nil {
		return id, fmt.Errorf("event id: %w", err)
	}
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id, nil
}

// String formats the id as a UUID.
func (id EventID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return string(b[:])
}

// MarshalText implements encoding.TextMarshaler.
func (id EventID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; it accepts the form String writes.
func (id *EventID) UnmarshalText(b []byte) error {
	if len(b) != 36 || b[8] != '-' || b[13] != '-' || b[18] != '-' || b[23] != '-' {
		return fmt.Errorf("event id %q is not a UUID", b)
	}
	var h [32]byte
	copy(h[0:8], b[0:8])
	copy(h[8:12], b[9:13])
	copy(h[12:16], b[14:18])
	copy(h[16:20], b[19:23])
	copy(h[20:], b[24:])
	if _, err := hex.Decode(id[:], h[:]); err != nil {
		return fmt.Errorf("event id %q is not a UUID", b)
	}
	return nil
}

// SubjectID is a random pseudonym for a data subject: 32 lower-case hex digits. It is
// the only link from public event parts to a person, and it means nothing once the
// subject's keys are destroyed.
type SubjectID string

// NewSubjectID reads a random SubjectID from rand.
func NewSubjectID(rand io.Reader) (SubjectID, error) {
	var b [16]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return "", fmt.Errorf("subject id: %w", err)
	}
	return SubjectID(hex.EncodeToString(b[:])), nil
}

// Valid reports whether id has the form NewSubjectID produces.
func (id SubjectID) Valid() bool { return isLowerHex(string(id), 32, 32) }

// Serial is a certificate serial number as lower-case hex without leading zeros, as
// used in stream names ("cert-<serial>").
type Serial string

// Valid reports whether s is a positive serial whose DER encoding is at most
// 20 octets (RFC 5280 4.1.2.2): at most 159 bits, since a 160-bit number
// takes a leading zero octet to stay positive.
func (s Serial) Valid() bool {
	return isLowerHex(string(s), 1, 40) && s[0] != '0' && (len(s) < 40 || s[0] < '8')
}

// Int returns s as a certificate's serial number, and false when s is not
// Valid.
func (s Serial) Int() (*big.Int, bool) {
	if !s.Valid() {
		return nil, false
	}
	return new(big.Int).SetString(string(s), 16)
}

func isLowerHex(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Stream names. They hold only pseudonyms and serials, never personal data.
func SubjectStream(id SubjectID) string { return "subject-" + string(id) }

// CertificateStream names the stream of one certificate.
func CertificateStream(s Serial) string { return "cert-" + string(s) }

// AccessStream names the stream that records reads of one subject's personal data.
// One stream per subject keeps appends to it uncontended and lets the sealed part of
// each access event be bound to an exact stream version.
func AccessStream(id SubjectID) string { return "access-" + string(id) }
