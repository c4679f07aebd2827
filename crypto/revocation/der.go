package revocation

import (
	"math/big"
	"time"
)

// DER tags used by the hand-written encoder.
const (
	tagInteger         = 0x02
	tagBitString       = 0x03
	tagOctetString     = 0x04
	tagEnumerated      = 0x0a
	tagUTCTime         = 0x17
	tagGeneralizedTime = 0x18
	tagSequence        = 0x30
	tagContext0        = 0xa0 // [0] constructed, for EXPLICIT tagging
)

// lenOfLen is the size of the DER length octets for n content bytes.
func lenOfLen(n int) int {
	if n < 0x80 {
		return 1
	}
	l := 1
	for ; n > 0; n >>= 8 {
		l++
	}
	return l
}

// tlvLen is the size of a whole DER element with n content bytes.
func tlvLen(n int) int { return 1 + lenOfLen(n) + n }

// appendHeader appends a DER tag and the definite, minimal length n.
func appendHeader(b []byte, tag byte, n int) []byte {
	b = append(b, tag)
	if n < 0x80 {
		return append(b, byte(n))
	}
	k := lenOfLen(n) - 1
	b = append(b, 0x80|byte(k))
	for i := k - 1; i >= 0; i-- {
		b = append(b, byte(n>>(8*i)))
	}
	return b
}

// appendTLV appends a whole element. For small elements only: content is copied.
func appendTLV(b []byte, tag byte, content []byte) []byte {
	return append(appendHeader(b, tag, len(content)), content...)
}

// uintContentLen is the content size of the DER INTEGER for x >= 0: the
// magnitude plus a leading zero octet when its high bit is set (or x is 0).
func uintContentLen(x *big.Int) int { return x.BitLen()/8 + 1 }

// appendUint appends the DER INTEGER for x >= 0 without allocating.
func appendUint(b []byte, x *big.Int) []byte {
	n := uintContentLen(x)
	b = appendHeader(b, tagInteger, n)
	start := len(b)
	b = grow(b, n)
	x.FillBytes(b[start:]) // zero-fills first, which gives the leading 0x00
	return b
}

// grow extends b by n bytes, reallocating only if its capacity is short.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// useUTCTime reports whether RFC 5280 section 4.1.2.5 wants UTCTime for t (years
// 1950 through 2049) rather than GeneralizedTime.
func useUTCTime(t time.Time) bool {
	y := t.Year()
	return y >= 1950 && y < 2050
}

// timeLen is the size of the whole Time element for t (UTC).
func timeLen(t time.Time) int {
	if useUTCTime(t) {
		return 2 + len("YYMMDDHHMMSSZ")
	}
	return 2 + len("YYYYMMDDHHMMSSZ")
}

// appendTime appends t (UTC, year 0 to 9999) as an RFC 5280 Time: UTCTime
// through 2049, GeneralizedTime from 2050 and before 1950, seconds always
// present, no fraction, "Z".
func appendTime(b []byte, t time.Time) []byte {
	year, month, day := t.Date()
	hour, minute, sec := t.Clock()
	if useUTCTime(t) {
		b = append(b, tagUTCTime, 13)
		b = append2(b, year%100)
	} else {
		b = append(b, tagGeneralizedTime, 15)
		b = append2(b, year/100)
		b = append2(b, year%100)
	}
	b = append2(b, int(month))
	b = append2(b, day)
	b = append2(b, hour)
	b = append2(b, minute)
	b = append2(b, sec)
	return append(b, 'Z')
}

func append2(b []byte, v int) []byte { return append(b, byte('0'+v/10), byte('0'+v%10)) }
