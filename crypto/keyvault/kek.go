package keyvault

import (
	"encoding/binary"

	"github.com/caledger/caledger/crypto/datakey"
)

// KEK is a key-encryption key: the vault stores data keys only as KEK.Wrap
// output. Its contract is datakey.KEK's. The vault stores the ID beside every
// wrapped key, so that keys can be re-wrapped under a new KEK and the vault can
// tell which rows still need the old one.
type KEK = datakey.KEK

// wrapAD is the associated data of a wrapped keyset. It binds the keyset to its
// (subject, group), so that a row copied to another subject fails to unwrap instead of
// silently handing one person's key to another. The KEK id is left out on purpose:
// re-wrapping under a new KEK must not need to know the old one's name.
func wrapAD(subject, group string) []byte {
	const label = "caledger keyvault data key v1\x00"
	ad := make([]byte, 0, len(label)+8+len(subject)+len(group))
	ad = append(ad, label...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(subject)))
	ad = append(ad, subject...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(group)))
	ad = append(ad, group...)
	return ad
}
