package signer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Key file format, version 1 (see doc.go):
//
//	magic      16 bytes  "CALEDGER CA KEY\n"
//	version     1 byte   1
//	alg len     1 byte   n
//	algorithm   n bytes  e.g. "P-256"
//	kek id len  2 bytes  m, big-endian
//	kek id      m bytes  the Wrapper's ID
//	ciphertext  rest     Wrapper.Wrap(PKCS#8 DER, ad)
//
// ad is adPrefix, the label, a zero byte and the header (everything before the
// ciphertext), so the ciphertext opens only under its own label, algorithm and KEK id.
const (
	fileMagic    = "CALEDGER CA KEY\n"
	fileVersion  = 1
	adPrefix     = "caledger ca key v1\x00"
	maxKEKIDLen  = 1024
	maxAlgLen    = 32
	maxKeyFileSz = 64 << 10
)

// keyFile is a decoded key file.
type keyFile struct {
	alg        Algorithm
	kekID      string
	header     []byte // the encoded fields before the ciphertext
	ciphertext []byte
}

var errNotKeyFile = errors.New("not a caledger CA key file")

// newKeyFile builds the header of a key file; the caller fills in ciphertext.
func newKeyFile(alg Algorithm, kekID string) (*keyFile, error) {
	if len(alg) == 0 || len(alg) > maxAlgLen {
		return nil, fmt.Errorf("algorithm name of %d bytes", len(alg))
	}
	if len(kekID) == 0 || len(kekID) > maxKEKIDLen {
		return nil, fmt.Errorf("KEK id of %d bytes, want 1 to %d", len(kekID), maxKEKIDLen)
	}
	h := make([]byte, 0, len(fileMagic)+4+len(alg)+len(kekID))
	h = append(h, fileMagic...)
	h = append(h, fileVersion, byte(len(alg)))
	h = append(h, alg...)
	h = binary.BigEndian.AppendUint16(h, uint16(len(kekID)))
	h = append(h, kekID...)
	return &keyFile{alg: alg, kekID: kekID, header: h}, nil
}

// parseKeyFile decodes b. Errors describe the structure only, never the bytes.
func parseKeyFile(b []byte) (*keyFile, error) {
	if len(b) < len(fileMagic)+2 || !bytes.Equal(b[:len(fileMagic)], []byte(fileMagic)) {
		return nil, errNotKeyFile
	}
	rest := b[len(fileMagic):]
	if v := rest[0]; v != fileVersion {
		return nil, fmt.Errorf("key file version %d, this build reads %d", v, fileVersion)
	}
	n := int(rest[1])
	rest = rest[2:]
	if n == 0 || n > maxAlgLen || len(rest) < n+2 {
		return nil, fmt.Errorf("%w: bad algorithm field", errNotKeyFile)
	}
	alg := Algorithm(rest[:n])
	rest = rest[n:]
	m := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if m == 0 || m > maxKEKIDLen || len(rest) < m {
		return nil, fmt.Errorf("%w: bad KEK id field", errNotKeyFile)
	}
	kekID := string(rest[:m])
	rest = rest[m:]
	if len(rest) == 0 {
		return nil, fmt.Errorf("%w: no ciphertext", errNotKeyFile)
	}
	hlen := len(b) - len(rest)
	return &keyFile{alg: alg, kekID: kekID, header: b[:hlen:hlen], ciphertext: rest}, nil
}

// encode returns the file's bytes.
func (f *keyFile) encode() []byte {
	out := make([]byte, 0, len(f.header)+len(f.ciphertext))
	return append(append(out, f.header...), f.ciphertext...)
}

// ad returns the associated data binding the ciphertext to label and the header.
func (f *keyFile) ad(label string) []byte {
	ad := make([]byte, 0, len(adPrefix)+len(label)+1+len(f.header))
	ad = append(ad, adPrefix...)
	ad = append(ad, label...)
	ad = append(ad, 0)
	return append(ad, f.header...)
}
