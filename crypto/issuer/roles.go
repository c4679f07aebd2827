package issuer

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// OIDArc is caledger's private OID arc, derived without registration from the
// random UUID 4ec35918-a156-431f-9f64-c8ef87d08f80.
//
// The natural home of a UUID-based OID is 2.25.<the UUID as one 128-bit decimal
// arc> (ITU-T X.667), but Go's crypto/x509 (and hence crypto/tls) refuses to parse
// a certificate whose extension OIDs have an arc of 2^31 or more ("x509: malformed
// extension OID field"), so a client certificate carrying such an extension could
// not log in to caledger's own API. The arc is therefore the same UUID under
// Microsoft's arc for GUID-derived OIDs, 1.2.840.113556.1.8000.2554, split into
// 16, 16, 16, 16, 16, 24 and 24-bit arcs; every arc fits in 31 bits.
var OIDArc = asn1.ObjectIdentifier{1, 2, 840, 113556, 1, 8000, 2554, 20163, 22808, 41302, 17183, 40804, 13168519, 13668224}

// OIDRoles identifies the roles extension: non-critical, its value a DER
// SEQUENCE OF UTF8String naming the API roles the certificate's holder has.
var OIDRoles = asn1.ObjectIdentifier{1, 2, 840, 113556, 1, 8000, 2554, 20163, 22808, 41302, 17183, 40804, 13168519, 13668224, 1}

// rolesExtension returns the roles extension naming rs.
func rolesExtension(rs ...string) (pkix.Extension, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, r := range rs {
			b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(r)) })
		}
	})
	v, err := b.Bytes()
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: OIDRoles, Value: v}, nil
}

// RolesOf returns the roles named in cert's roles extension, or nil if it has none
// or the extension is malformed (then it grants nothing). It does not check who
// issued cert: that is the caller's chain verification.
func RolesOf(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(OIDRoles) {
			continue
		}
		return parseRoles(ext.Value)
	}
	return nil
}

func parseRoles(v []byte) []string {
	in := cryptobyte.String(v)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil
	}
	var out []string
	for !seq.Empty() {
		var r cryptobyte.String
		if !seq.ReadASN1(&r, cbasn1.UTF8String) || !utf8.Valid(r) {
			return nil
		}
		out = append(out, string(r))
	}
	return out
}
