package revocation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"

	"golang.org/x/crypto/ocsp"
)

func fuzzSeeds(f *testing.F, ca *testCA) {
	f.Helper()
	cid := certIDFor(f, ca, crypto.SHA1, big.NewInt(1))
	for _, seed := range [][]byte{
		nil,
		[]byte("garbage"),
		{0x30, 0x00},
		{0x30, 0x80, 0x00, 0x00},
		simpleRequest(f, ca, crypto.SHA1, big.NewInt(0)),
		simpleRequest(f, ca, crypto.SHA1, big.NewInt(1)),
		simpleRequest(f, ca, crypto.SHA256, big.NewInt(2)),
		simpleRequest(f, ca, crypto.SHA384, big.NewInt(3), nonceExt(f, []byte("0123456789abcdef"))),
		simpleRequest(f, ca, crypto.SHA512, big.NewInt(-4)),
		simpleRequest(f, ca, crypto.SHA1, big.NewInt(5), nonceExt(f, make([]byte, 129))),
		simpleRequest(f, ca, crypto.SHA1, big.NewInt(1), pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3}, Critical: true, Value: []byte{5, 0}}),
		simpleRequest(f, newTestCA(f, newP256(f), "Other"), crypto.SHA1, big.NewInt(1)),
		marshalRequest(f, reqOCSP{TBS: reqTBS{List: []reqSingle{{Cert: cid}, {Cert: cid}}}}),
		marshalRequest(f, reqOCSP{TBS: reqTBS{List: []reqSingle{{Cert: cid}}}, Sig: asn1.RawValue{FullBytes: []byte{0xa0, 0x02, 0x30, 0x00}}}),
	} {
		f.Add(seed)
	}
}

// FuzzRespond feeds arbitrary bytes to Respond: it must not panic, must return
// an error only with internalError, and its output must always be a valid
// OCSPResponse, signed by the CA when successful.
func FuzzRespond(f *testing.F) {
	ca := newTestCA(f, newP256(f), "Fuzz CA")
	lookup := func(_ context.Context, _ string, serial *big.Int) (Answer, error) {
		switch new(big.Int).Mod(serial, big.NewInt(5)).Int64() {
		case 0:
			return Answer{Status: Good}, nil
		case 1:
			return Answer{Status: Revoked, RevokedAt: testRevokedAt, Reason: 1}, nil
		case 2:
			return Answer{}, errors.New("lookup failed")
		case 3:
			return Answer{Status: Revoked, RevokedAt: testRevokedAt}, nil
		}
		return Answer{Status: Unknown}, nil
	}
	r, err := NewResponder([]Issuer{{ID: "fuzz", Certificate: ca.cert, Key: ca.key}}, lookup, Options{CacheEntries: 64})
	if err != nil {
		f.Fatal(err)
	}
	fuzzSeeds(f, ca)
	f.Fuzz(func(t *testing.T, req []byte) {
		der, err := r.Respond(t.Context(), req)
		resp, perr := ocsp.ParseResponse(der, ca.cert)
		var re ocsp.ResponseError
		switch {
		case errors.As(perr, &re):
			if (re.Status == ocsp.InternalError) != (err != nil) {
				t.Fatalf("status %v with error %v", re.Status, err)
			}
			if re.Status != ocsp.Malformed && re.Status != ocsp.Unauthorized && re.Status != ocsp.InternalError {
				t.Fatalf("unexpected status %v", re.Status)
			}
		case perr != nil:
			t.Fatalf("output is not a valid OCSP response: %v (%x)", perr, der)
		default:
			if err != nil {
				t.Fatalf("signed response with error %v", err)
			}
			// A signed response answers the certificate asked about.
			parsed, perr := parseRequest(req)
			if perr != nil || resp.SerialNumber.Cmp(parsed.serial) != 0 {
				t.Fatalf("signed response for serial %v to request %v (%v)", resp.SerialNumber, parsed.serial, perr)
			}
		}
	})
}

// FuzzParseRequest checks the request parser against x/crypto/ocsp: whatever
// it accepts (unsigned), ocsp.ParseRequest accepts with the same CertID.
func FuzzParseRequest(f *testing.F) {
	ca := newTestCA(f, newP256(f), "Fuzz CA")
	fuzzSeeds(f, ca)
	f.Fuzz(func(t *testing.T, der []byte) {
		req, err := parseRequest(der)
		if err != nil {
			return
		}
		theirs, terr := ocsp.ParseRequest(der)
		if terr != nil {
			var tbs struct {
				TBS asn1.RawValue
				Sig asn1.RawValue `asn1:"explicit,tag:0,optional"`
			}
			if _, err := asn1.Unmarshal(der, &tbs); err == nil && len(tbs.Sig.FullBytes) > 0 {
				return // x/crypto refuses signed requests; this package ignores the signature
			}
			if req.hash == 0 {
				return // x/crypto refuses hashes it does not know; this package answers unauthorized
			}
			t.Fatalf("accepted here, refused by x/crypto: %v", terr)
		}
		if theirs.HashAlgorithm != req.hash || !bytes.Equal(theirs.IssuerNameHash, req.nameHash) ||
			!bytes.Equal(theirs.IssuerKeyHash, req.keyHash) || theirs.SerialNumber.Cmp(req.serial) != 0 {
			t.Fatalf("CertID differs: ours %v %x %x %v, x/crypto %v %x %x %v", req.hash, req.nameHash, req.keyHash, req.serial,
				theirs.HashAlgorithm, theirs.IssuerNameHash, theirs.IssuerKeyHash, theirs.SerialNumber)
		}
	})
}
