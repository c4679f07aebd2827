package audit

import (
	"encoding/hex"
	"strings"
	"time"

	"github.com/caledger/caledger/domain"
)

// The replay remembers something of every stream and every certificate, so
// its maps are most of its memory. A ledger's streams are almost all of one
// subject (subject-, access- and vault-<pseudonym>) or of one certificate
// (cert-<serial>): those are keyed by their pseudonym's or serial's bytes
// rather than by their names, and a certificate is kept by value: a replay
// of issuances holds 136 bytes a certificate, against 278 with both maps
// keyed by names (BenchmarkReplayMemory).

// serialKey is a serial as a 20-octet big-endian number: every Valid serial
// fits (at most 159 bits).
type serialKey [20]byte

// keyOfSerial returns the key of s, which must be Valid.
func keyOfSerial(s domain.Serial) serialKey {
	var digits [2 * len(serialKey{})]byte
	for i := range digits {
		digits[i] = '0'
	}
	copy(digits[len(digits)-len(s):], s)
	var k serialKey
	_, _ = hex.Decode(k[:], digits[:]) // Valid: lower-case hex digits only
	return k
}

// serial returns the serial k is the key of.
func (k serialKey) serial() domain.Serial {
	return domain.Serial(strings.TrimLeft(hex.EncodeToString(k[:]), "0"))
}

// The kinds of streams keyed by an id's bytes.
const (
	kindSubject byte = iota + 1 // domain.SubjectStream
	kindAccess                  // domain.AccessStream
	kindVault                   // a shared vault's keys of one subject: vault-<pseudonym>
	kindCert                    // domain.CertificateStream
)

// streamID is a stream of one subject or certificate: its kind, and the
// subject's pseudonym (16 octets) or the certificate's serialKey.
type streamID struct {
	kind byte
	id   serialKey
}

// parseStreamID returns the streamID of stream, if it has one.
func parseStreamID(stream string) (streamID, bool) {
	prefix, rest, ok := strings.Cut(stream, "-")
	if !ok {
		return streamID{}, false
	}
	var k streamID
	switch prefix {
	case "subject":
		k.kind = kindSubject
	case "access":
		k.kind = kindAccess
	case "vault":
		k.kind = kindVault
	case "cert":
		if !domain.Serial(rest).Valid() {
			return streamID{}, false
		}
		return streamID{kind: kindCert, id: keyOfSerial(domain.Serial(rest))}, true
	default:
		return streamID{}, false
	}
	if !domain.SubjectID(rest).Valid() {
		return streamID{}, false
	}
	_, _ = hex.Decode(k.id[:16], []byte(rest)) // Valid: 32 lower-case hex digits
	return k, true
}

// name returns the stream's name.
func (k streamID) name() string {
	id := domain.SubjectID(hex.EncodeToString(k.id[:16]))
	switch k.kind {
	case kindSubject:
		return domain.SubjectStream(id)
	case kindAccess:
		return domain.AccessStream(id)
	case kindVault:
		return "vault-" + string(id)
	}
	return domain.CertificateStream(k.id.serial())
}

// versions holds each stream's last version: by streamID where the stream
// has one, by streamKey otherwise.
type versions struct {
	byID   map[streamID]uint64
	byName map[string]uint64
}

func newVersions() versions {
	return versions{byID: make(map[streamID]uint64), byName: make(map[string]uint64)}
}

// streamRef is a stream as versions keys it: by its streamID when it has
// one, otherwise (id.kind 0) by its streamKey.
type streamRef struct {
	id   streamID
	name string
}

func refOf(stream string) streamRef {
	if k, ok := parseStreamID(stream); ok {
		return streamRef{id: k}
	}
	return streamRef{name: streamKey(stream)}
}

// get returns the last version of the stream seen (0: none).
func (v versions) get(r streamRef) uint64 {
	if r.id.kind != 0 {
		return v.byID[r.id]
	}
	return v.byName[r.name]
}

func (v versions) set(r streamRef, n uint64) {
	if r.id.kind != 0 {
		v.byID[r.id] = n
	} else {
		v.byName[r.name] = n
	}
}

func (v versions) len() int { return len(v.byID) + len(v.byName) }

// names returns the versions by streamKey, as a kept state holds them.
func (v versions) names() map[string]uint64 {
	out := make(map[string]uint64, v.len())
	for k, n := range v.byID {
		out[k.name()] = n
	}
	for name, n := range v.byName {
		out[name] = n
	}
	return out
}

// certificate is what the rules need of an issued certificate: its
// not-after, and the positions of its revocation and deletion (0: none).
type certificate struct {
	notAfterSec  int64 // Unix seconds
	notAfterNsec int32
	revoked      uint64
	deleted      uint64
}

func newCertificate(notAfter time.Time) certificate {
	return certificate{notAfterSec: notAfter.Unix(), notAfterNsec: int32(notAfter.Nanosecond())}
}

func (c certificate) notAfter() time.Time {
	return time.Unix(c.notAfterSec, int64(c.notAfterNsec)).UTC()
}
