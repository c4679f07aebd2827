package revocation

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"math/big"
	"time"
)

// Entry is one revoked certificate on a CRL.
type Entry struct {
	// Serial is the certificate's serial number. It MUST NOT be nil or negative.
	Serial *big.Int
	// RevokedAt is written in UTC, truncated to the second.
	RevokedAt time.Time
	// Reason is the RFC 5280 CRLReason: 1 to 10 except 7. 0 (unspecified)
	// leaves out the reasonCode extension, as RFC 5280 section 5.3.1 asks.
	Reason int
}

// CRL is the content of a full (not delta) CRL.
type CRL struct {
	// Number goes in the CRL number extension: 0 or more, at most 20 octets.
	Number *big.Int
	// ThisUpdate and NextUpdate are written in UTC, truncated to the second.
	// Both are required and NextUpdate must be after ThisUpdate.
	ThisUpdate, NextUpdate time.Time
	// Entries are written in this order. An empty list leaves out the
	// revokedCertificates field, as RFC 5280 section 5.1.2.6 requires.
	Entries []Entry
}

// ctxEvery is how many entries BuildCRL encodes between checks of its context.
const ctxEvery = 1 << 14

// Fixed DER pieces of the TBSCertList.
var (
	derVersion2 = []byte{tagInteger, 1, 1}
	// reasonCodePrefix is crlEntryExtensions holding one non-critical
	// reasonCode (2.5.29.21) extension, less the final ENUMERATED octet.
	reasonCodePrefix = []byte{
		tagSequence, 12, // Extensions
		tagSequence, 10, // Extension
		0x06, 3, 0x55, 0x1d, 0x15, // extnID id-ce-cRLReasons
		tagOctetString, 3, tagEnumerated, 1, // extnValue: ENUMERATED (value follows)
	}
	oidAuthorityKeyID = []byte{0x06, 3, 0x55, 0x1d, 0x23}
	oidCRLNumber      = []byte{0x06, 3, 0x55, 0x1d, 0x14}
)

// BuildCRL returns the DER of a signed RFC 5280 version 2 CRL issued by issuer,
// with the authority key identifier (the issuer's subject key identifier) and
// CRL number extensions. key MUST be the issuer certificate's key; it signs
// with ECDSA P-256/P-384/P-521 and SHA-256/384/512, pure Ed25519, or RSA
// PKCS #1 v1.5 with SHA-256. The issuer certificate must carry the cRLSign key
// usage and a subject key identifier.
//
// Errors caused by the arguments match ErrInvalid and name the offending
// entry's index. BuildCRL checks ctx while encoding and returns its error once
// it is done. The signature is verified with the issuer's public key before
// the CRL is returned.
func BuildCRL(ctx context.Context, issuer *x509.Certificate, key crypto.Signer, c CRL) ([]byte, error) {
	alg, err := checkKeyPair(issuer, key)
	if err != nil {
		return nil, err
	}
	switch {
	case issuer.KeyUsage&x509.KeyUsageCRLSign == 0:
		return nil, fmt.Errorf("%w: issuer certificate lacks the cRLSign key usage", ErrInvalid)
	case len(issuer.SubjectKeyId) == 0:
		return nil, fmt.Errorf("%w: issuer certificate has no subject key identifier", ErrInvalid)
	case len(issuer.RawSubject) == 0:
		return nil, fmt.Errorf("%w: issuer certificate has no raw subject (parse it from DER)", ErrInvalid)
	case c.Number == nil || c.Number.Sign() < 0 || uintContentLen(c.Number) > 20:
		return nil, fmt.Errorf("%w: CRL number must be 0 or more and fit in 20 octets", ErrInvalid)
	}
	thisUpdate, nextUpdate := c.ThisUpdate.UTC(), c.NextUpdate.UTC()
	if !encodable(thisUpdate) || !encodable(nextUpdate) {
		return nil, fmt.Errorf("%w: thisUpdate and nextUpdate must be set, in years 1 to 9999", ErrInvalid)
	}
	if !nextUpdate.Truncate(time.Second).After(thisUpdate.Truncate(time.Second)) {
		return nil, fmt.Errorf("%w: nextUpdate must be after thisUpdate", ErrInvalid)
	}

	// Pass 1: check every entry and add up the encoded sizes, so that pass 2
	// writes the whole CRL into one buffer of the right size, in place.
	entriesLen := 0
	for i := range c.Entries {
		if i%ctxEvery == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		e := &c.Entries[i]
		switch {
		case e.Serial == nil || e.Serial.Sign() < 0:
			return nil, fmt.Errorf("%w: entry %d: serial is nil or negative", ErrInvalid, i)
		case !encodable(e.RevokedAt.UTC()):
			return nil, fmt.Errorf("%w: entry %d: revocation time must be set, in years 1 to 9999", ErrInvalid, i)
		case !validReason(e.Reason):
			return nil, fmt.Errorf("%w: entry %d: reason %d is not an RFC 5280 CRLReason", ErrInvalid, i, e.Reason)
		}
		entriesLen += tlvLen(entryLen(e))
	}

	exts := crlExtensions(issuer.SubjectKeyId, c.Number)
	tbsContent := len(derVersion2) + len(alg.algID) + len(issuer.RawSubject) +
		timeLen(thisUpdate) + timeLen(nextUpdate) + tlvLen(len(exts))
	if len(c.Entries) > 0 {
		tbsContent += tlvLen(entriesLen)
	}
	tbsLen := tlvLen(tbsContent)
	maxContent := tbsLen + len(alg.algID) + tlvLen(1+alg.maxSig)
	// The CertificateList header goes in front of the TBS once the signature,
	// and so the exact length, is known; reserve room for its longest form.
	reserve := 1 + lenOfLen(maxContent)
	b := make([]byte, reserve, reserve+maxContent)

	// Pass 2: TBSCertList.
	b = appendHeader(b, tagSequence, tbsContent)
	b = append(b, derVersion2...)
	b = append(b, alg.algID...)
	b = append(b, issuer.RawSubject...)
	b = appendTime(b, thisUpdate)
	b = appendTime(b, nextUpdate)
	if len(c.Entries) > 0 {
		b = appendHeader(b, tagSequence, entriesLen)
		for i := range c.Entries {
			if i%ctxEvery == 0 {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
			}
			b = appendEntry(b, &c.Entries[i])
		}
	}
	b = appendTLV(b, tagContext0, exts)
	if len(b) != reserve+tbsLen {
		return nil, fmt.Errorf("revocation: internal error: TBSCertList is %d bytes, expected %d", len(b)-reserve, tbsLen)
	}

	sig, digest, err := alg.sign(key, b[reserve:])
	if err != nil {
		return nil, err
	}
	if len(sig) > alg.maxSig || !alg.verify(digest, sig) {
		return nil, fmt.Errorf("revocation: the signer's CRL signature does not verify with the issuer's key")
	}
	b = append(b, alg.algID...)
	b = appendHeader(b, tagBitString, 1+len(sig))
	b = append(b, 0) // no unused bits
	b = append(b, sig...)

	hdr := appendHeader(make([]byte, 0, 8), tagSequence, len(b)-reserve)
	start := reserve - len(hdr)
	copy(b[start:], hdr)
	return b[start:], nil
}

// encodable reports whether t (UTC) is set and fits an RFC 5280 Time.
func encodable(t time.Time) bool {
	return !t.IsZero() && t.Year() >= 1 && t.Year() <= 9999
}

// validReason reports whether r is an RFC 5280 CRLReason (value 7 is unused).
func validReason(r int) bool { return r >= 0 && r <= 10 && r != 7 }

// entryLen is the content size of the revokedCertificates element for e.
func entryLen(e *Entry) int {
	n := tlvLen(uintContentLen(e.Serial)) + timeLen(e.RevokedAt.UTC())
	if e.Reason != 0 {
		n += len(reasonCodePrefix) + 1
	}
	return n
}

func appendEntry(b []byte, e *Entry) []byte {
	b = appendHeader(b, tagSequence, entryLen(e))
	b = appendUint(b, e.Serial)
	b = appendTime(b, e.RevokedAt.UTC())
	if e.Reason != 0 {
		b = append(b, reasonCodePrefix...)
		b = append(b, byte(e.Reason))
	}
	return b
}

// crlExtensions returns the crlExtensions SEQUENCE: authority key identifier
// then CRL number, both non-critical, in the order x509.CreateRevocationList
// uses.
func crlExtensions(ski []byte, number *big.Int) []byte {
	var aki []byte
	aki = appendHeader(aki, 0x80, len(ski)) // [0] IMPLICIT KeyIdentifier
	aki = append(aki, ski...)
	aki = appendTLV(nil, tagSequence, aki)

	var ext1 []byte
	ext1 = append(ext1, oidAuthorityKeyID...)
	ext1 = appendTLV(ext1, tagOctetString, aki)

	var ext2 []byte
	ext2 = append(ext2, oidCRLNumber...)
	ext2 = appendTLV(ext2, tagOctetString, appendUint(nil, number))

	var exts []byte
	exts = appendTLV(exts, tagSequence, ext1)
	exts = appendTLV(exts, tagSequence, ext2)
	return appendTLV(nil, tagSequence, exts)
}
