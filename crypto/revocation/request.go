package revocation

import (
	"bytes"
	"crypto"
	encasn1 "encoding/asn1"
	"errors"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Nonce lengths accepted in a request. RFC 8954 allowed 1 to 32 octets and
// had responders refuse other lengths with malformedRequest; RFC 9654, which
// obsoletes it, raises the maximum to 128 octets. Other lengths are refused.
const (
	minNonceLen = 1
	maxNonceLen = 128
)

var (
	oidNonce   = encasn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}
	oidSHA1    = encasn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256  = encasn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384  = encasn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512  = encasn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	derNULL    = []byte{0x05, 0x00}
	errRequest = errors.New("malformed OCSP request")
)

// request is the part of an OCSPRequest the responder uses.
type request struct {
	// certID is the DER of the CertID, echoed as is in the response (RFC 6960
	// section 4.2.1 matches responses to requests by it).
	certID []byte
	// hash is 0 for a hash algorithm this package does not know.
	hash              crypto.Hash
	nameHash, keyHash []byte
	serial            *big.Int
	// nonce is the extnValue of the nonce extension (the DER of an OCTET
	// STRING), or nil when the request has none.
	nonce []byte
}

// parseRequest parses a DER OCSPRequest (RFC 6960 section 4.1.1) holding
// exactly one Request. The signature of a signed request is not checked and
// does not change the answer. Its errors do not quote the request.
func parseRequest(der []byte) (request, error) {
	var req request
	in := cryptobyte.String(der)
	var ocspReq, tbs cryptobyte.String
	if !in.ReadASN1(&ocspReq, asn1.SEQUENCE) || !in.Empty() ||
		!ocspReq.ReadASN1(&tbs, asn1.SEQUENCE) ||
		!ocspReq.SkipOptionalASN1(asn1.Tag(0).ContextSpecific().Constructed()) || !ocspReq.Empty() {
		return req, errRequest
	}

	var version int64
	var list, one cryptobyte.String
	if !tbs.ReadOptionalASN1Integer(&version, asn1.Tag(0).ContextSpecific().Constructed(), int64(0)) || version != 0 ||
		!tbs.SkipOptionalASN1(asn1.Tag(1).ContextSpecific().Constructed()) ||
		!tbs.ReadASN1(&list, asn1.SEQUENCE) ||
		!list.ReadASN1(&one, asn1.SEQUENCE) {
		return req, errRequest
	}
	if !list.Empty() {
		// RFC 5019 section 2.1.1 profile: one Request per OCSPRequest.
		return req, errors.New("OCSP request asks for more than one certificate")
	}

	var certID cryptobyte.String
	if !one.ReadASN1Element(&certID, asn1.SEQUENCE) {
		return req, errRequest
	}
	req.certID = certID
	if !parseCertID(&req, certID) {
		return req, errRequest
	}
	var singleExts cryptobyte.String
	var hasSingleExts bool
	if !one.ReadOptionalASN1(&singleExts, &hasSingleExts, asn1.Tag(0).ContextSpecific().Constructed()) || !one.Empty() {
		return req, errRequest
	}
	if hasSingleExts {
		// None is understood; only a critical one stops the request.
		if err := parseExtensions(singleExts, nil); err != nil {
			return req, err
		}
	}

	var reqExts cryptobyte.String
	var hasReqExts bool
	if !tbs.ReadOptionalASN1(&reqExts, &hasReqExts, asn1.Tag(2).ContextSpecific().Constructed()) || !tbs.Empty() {
		return req, errRequest
	}
	if hasReqExts {
		if err := parseExtensions(reqExts, &req.nonce); err != nil {
			return req, err
		}
	}
	return req, nil
}

func parseCertID(req *request, s cryptobyte.String) bool {
	var certID, algID cryptobyte.String
	var oid encasn1.ObjectIdentifier
	if !s.ReadASN1(&certID, asn1.SEQUENCE) ||
		!certID.ReadASN1(&algID, asn1.SEQUENCE) ||
		!algID.ReadASN1ObjectIdentifier(&oid) {
		return false
	}
	// Parameters are absent or NULL; both are seen in the wild.
	if !algID.Empty() && !bytes.Equal(algID, derNULL) {
		return false
	}
	switch {
	case oid.Equal(oidSHA1):
		req.hash = crypto.SHA1
	case oid.Equal(oidSHA256):
		req.hash = crypto.SHA256
	case oid.Equal(oidSHA384):
		req.hash = crypto.SHA384
	case oid.Equal(oidSHA512):
		req.hash = crypto.SHA512
	}
	req.serial = new(big.Int)
	return certID.ReadASN1Bytes(&req.nameHash, asn1.OCTET_STRING) &&
		certID.ReadASN1Bytes(&req.keyHash, asn1.OCTET_STRING) &&
		certID.ReadASN1Integer(req.serial) &&
		certID.Empty()
}

// parseExtensions reads an [n] EXPLICIT Extensions. With nonce non-nil it
// stores the nonce extension's extnValue there. An unknown critical extension
// or a repeated extension is an error (RFC 5280 section 4.2).
func parseExtensions(explicit cryptobyte.String, nonce *[]byte) error {
	var exts cryptobyte.String
	if !explicit.ReadASN1(&exts, asn1.SEQUENCE) || !explicit.Empty() || exts.Empty() {
		return errRequest
	}
	var seen []encasn1.ObjectIdentifier
	for !exts.Empty() {
		var ext cryptobyte.String
		var oid encasn1.ObjectIdentifier
		var critical bool
		var value []byte
		if !exts.ReadASN1(&ext, asn1.SEQUENCE) ||
			!ext.ReadASN1ObjectIdentifier(&oid) ||
			ext.PeekASN1Tag(asn1.BOOLEAN) && !ext.ReadASN1Boolean(&critical) ||
			!ext.ReadASN1Bytes(&value, asn1.OCTET_STRING) ||
			!ext.Empty() {
			return errRequest
		}
		for _, o := range seen {
			if o.Equal(oid) {
				return errors.New("OCSP request repeats an extension")
			}
		}
		seen = append(seen, oid)
		switch {
		case nonce != nil && oid.Equal(oidNonce):
			if n := nonceLen(value); n < minNonceLen || n > maxNonceLen {
				return errors.New("OCSP request nonce is empty or longer than 128 octets")
			}
			*nonce = value
		case critical:
			return errors.New("OCSP request has an unknown critical extension")
		}
	}
	return nil
}

// nonceLen is the length of the nonce carried in extnValue: the content of the
// OCTET STRING it should be (RFC 6960 as updated by RFC 9654), or, for
// RFC 2560-era clients that put the raw bytes there, all of extnValue.
func nonceLen(extnValue []byte) int {
	v := cryptobyte.String(extnValue)
	var inner cryptobyte.String
	if v.ReadASN1(&inner, asn1.OCTET_STRING) && v.Empty() {
		return len(inner)
	}
	return len(extnValue)
}
