// Package revocation publishes certificate status: it builds signed CRLs and
// answers OCSP requests for the CAs it is given.
//
// # CRL encoder
//
// BuildCRL writes the DER by hand instead of calling x509.CreateRevocationList.
// The standard library marshals through encoding/asn1 reflection and builds a
// pkix.RevokedCertificate, with its extension slice, per entry: measured here it
// took 4 to 7 s, 28 million allocations and 1 GB for 1,000,000 entries, over
// the 3 s budget; this encoder takes about 0.2 s and one 47 MB buffer. The
// encoder makes two passes: the first checks every entry and adds up the exact
// encoded sizes, the second writes the TBSCertList into one buffer of that size
// (serials with big.Int.FillBytes, times with a digit writer), leaving room in
// front for the CertificateList header, which is written once the signature's
// length is known. Nothing is copied or allocated per entry.
//
// The output follows RFC 5280: version 2, UTCTime for dates through 2049 and
// GeneralizedTime from 2050 (and before 1950), seconds and "Z" always present,
// no revokedCertificates field when the list is empty, a reasonCode entry
// extension only for a reason other than unspecified, and the authority key
// identifier and CRL number extensions, in the order and byte-for-byte form
// x509.CreateRevocationList produces (a test holds the two TBSCertLists equal).
// The signature is checked with the issuer's public key before the CRL is
// returned, which catches a signer that is not the issuer's key or that faults.
//
// # OCSP responses, caching and nonces
//
// Responses are signed by the CA key itself and name it by key hash; they carry
// no certificates. Responder.Delegate hands a CA's responses to a delegated
// responder (RFC 6960 section 4.2.2.2): a key with a certificate the CA issued
// for OCSP signing, which every response then names by key hash and carries in
// its certs field, so that an HSM-held CA key signs one certificate instead of
// every nonce response. Requests are parsed here rather than with
// golang.org/x/crypto/ocsp.ParseRequest, which drops request extensions, and
// responses are encoded here rather than with ocsp.CreateResponse, which puts
// its ExtraExtensions in singleExtensions, where OpenSSL and RFC 6960 section
// 4.4.1 do not look for a nonce, and stamps producedAt from the wall clock.
// One Request per OCSPRequest is answered (the RFC 5019 profile); more is a
// malformedRequest.
//
// A request with a nonce gets a freshly signed response echoing the nonce's
// extnValue in responseExtensions. Nonces of 1 to 128 octets are accepted and
// others refused with malformedRequest: the rule of RFC 8954 with the limit of
// RFC 9654, which obsoletes it and raised the maximum from 32 octets.
//
// A response to a request without a nonce is cached under the request's CertID
// (so per issuer, CertID hash and serial) together with the Answer it states,
// and served again until half its validity has passed. Lookup is still called
// for every request: a changed Answer (a revocation) is never hidden by the
// cache, it only saves the signature. The cache keeps at most
// Options.CacheEntries responses in two generations, so clients asking for
// many serials cannot grow it without bound.
package revocation
