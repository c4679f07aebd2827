package revocation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ocsp"
)

// Status is a certificate's status as an OCSP response states it.
type Status int

const (
	// Unknown is the zero value: the responder knows nothing of the serial.
	// A Lookup that returns a zero Answer therefore never vouches for a
	// certificate.
	Unknown Status = iota
	// Good means the certificate is not revoked.
	Good
	// Revoked means the certificate is revoked, permanently or on hold.
	Revoked
)

func (s Status) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Good:
		return "good"
	case Revoked:
		return "revoked"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Answer is what a Lookup knows of one certificate.
type Answer struct {
	Status Status
	// RevokedAt is required when Status is Revoked; it is sent in UTC,
	// truncated to the second.
	RevokedAt time.Time
	// Reason is the RFC 5280 CRLReason when Status is Revoked: 1 to 10 except 7.
	// 0 (unspecified) leaves out revocationReason.
	Reason int
}

// Lookup returns the status of the certificate with the given serial issued by
// the CA whose Issuer.ID is caID. It is called for every request that names a
// configured CA, cached response or not, so a revocation shows at once; it
// should be a read of a local view. It MUST return promptly once ctx is done.
// Its error is never sent to the client (who gets internalError).
type Lookup func(ctx context.Context, caID string, serial *big.Int) (Answer, error)

// Issuer is a CA the responder answers for. Its key signs the responses
// (RFC 6960 section 4.2.2.2, no delegated responder certificate).
type Issuer struct {
	// ID is passed to Lookup. It must be non-empty and unique.
	ID          string
	Certificate *x509.Certificate
	// Key MUST be Certificate's key.
	Key crypto.Signer
}

// Defaults for the zero fields of Options.
const (
	DefaultValidity        = time.Hour
	DefaultMaxRequestBytes = 4096
	DefaultCacheEntries    = 100_000
)

// Options tune a Responder. The zero value is the defaults.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Validity is nextUpdate - thisUpdate of each response, a whole number of
	// seconds; 0 means DefaultValidity.
	Validity time.Duration
	// MaxRequestBytes bounds the DER request; 0 means DefaultMaxRequestBytes.
	MaxRequestBytes int
	// CacheEntries bounds the cache of signed responses to requests without a
	// nonce; 0 means DefaultCacheEntries and a negative value turns it off.
	CacheEntries int
	// Logger receives ServeHTTP's internal errors; nil means no logs.
	Logger *slog.Logger
}

// Responder answers RFC 6960 OCSP requests for a fixed set of CAs. It is safe
// for concurrent use.
type Responder struct {
	issuers    map[string]*issuer // by issuerKey
	byID       map[string]*issuer // by Issuer.ID
	lookup     Lookup
	now        func() time.Time
	validity   time.Duration
	maxRequest int
	cache      *cache // nil when caching is off
	log        *slog.Logger
}

// issuer is an Issuer with what every response needs computed once.
type issuer struct {
	id       string
	cert     *x509.Certificate
	own      *responseSigner                // the CA key
	delegate atomic.Pointer[responseSigner] // a delegated responder, if one is set
}

// responseSigner is a key that signs responses, with what every response
// needs of it computed once.
type responseSigner struct {
	key         crypto.Signer
	alg         sigAlg
	responderID []byte // ResponderID byKey: [2] EXPLICIT OCTET STRING (SHA-1 of the key)
	certs       []byte // the certs field, [0] EXPLICIT SEQUENCE OF Certificate; nil for the CA key
	notAfter    time.Time
}

// newResponseSigner returns the signer for key, whose certificate is cert
// with subjectPublicKey bits keyBits; certs, when not nil, is sent in every
// response.
func newResponseSigner(cert *x509.Certificate, keyBits []byte, key crypto.Signer, alg sigAlg, certs [][]byte) *responseSigner {
	s := &responseSigner{key: key, alg: alg, notAfter: cert.NotAfter}
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(asn1.Tag(2).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
		b.AddASN1OctetString(hashSum(crypto.SHA1, keyBits))
	})
	s.responderID = b.BytesOrPanic()
	if certs != nil {
		b := cryptobyte.NewBuilder(nil)
		b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, c := range certs {
					b.AddBytes(c)
				}
			})
		})
		s.certs = b.BytesOrPanic()
	}
	return s
}

// subjectKeyBits returns the subjectPublicKey bits of cert, which a ResponderID
// and a CertID hash.
func subjectKeyBits(cert *x509.Certificate) ([]byte, error) {
	spki := cryptobyte.String(cert.RawSubjectPublicKeyInfo)
	var seq cryptobyte.String
	var keyBits []byte
	if len(cert.RawSubject) == 0 ||
		!spki.ReadASN1(&seq, asn1.SEQUENCE) || !seq.SkipASN1(asn1.SEQUENCE) ||
		!seq.ReadASN1BitStringAsBytes(&keyBits) {
		return nil, fmt.Errorf("%w: certificate lacks its raw subject or key (parse it from DER)", ErrInvalid)
	}
	return keyBits, nil
}

// signer returns the key that signs a response valid until nextUpdate: the
// delegated responder's while its certificate outlasts the response,
// otherwise the CA's.
func (iss *issuer) signer(nextUpdate time.Time) *responseSigner {
	if d := iss.delegate.Load(); d != nil && !nextUpdate.After(d.notAfter) {
		return d
	}
	return iss.own
}

// certIDHashes are the CertID hash algorithms matched (RFC 6960 section 4.1.1
// leaves the choice to the client; SHA-1 is what nearly all of them send).
var certIDHashes = []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512}

// issuerKey is the map key of a CertID's issuer: hash, name hash, key hash.
func issuerKey(h crypto.Hash, nameHash, keyHash []byte) string {
	k := make([]byte, 0, 2+len(nameHash)+len(keyHash))
	k = append(k, byte(h), byte(len(nameHash)))
	k = append(k, nameHash...)
	return string(append(k, keyHash...))
}

func hashSum(h crypto.Hash, b []byte) []byte {
	switch h {
	case crypto.SHA1:
		s := sha1.Sum(b)
		return s[:]
	case crypto.SHA256:
		s := sha256.Sum256(b)
		return s[:]
	case crypto.SHA384:
		s := sha512.Sum384(b)
		return s[:]
	case crypto.SHA512:
		s := sha512.Sum512(b)
		return s[:]
	}
	panic("revocation: unexpected hash")
}

// NewResponder returns a Responder for issuers that asks lookup for the
// status of each certificate. Errors caused by the arguments match ErrInvalid.
func NewResponder(issuers []Issuer, lookup Lookup, opts Options) (*Responder, error) {
	if len(issuers) == 0 || lookup == nil {
		return nil, fmt.Errorf("%w: a responder needs issuers and a lookup", ErrInvalid)
	}
	r := &Responder{
		issuers:    make(map[string]*issuer, len(issuers)*len(certIDHashes)),
		lookup:     lookup,
		now:        opts.Now,
		validity:   opts.Validity,
		maxRequest: opts.MaxRequestBytes,
		log:        opts.Logger,
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.validity == 0 {
		r.validity = DefaultValidity
	}
	if r.validity < time.Second || r.validity%time.Second != 0 {
		return nil, fmt.Errorf("%w: validity must be a whole number of seconds", ErrInvalid)
	}
	switch {
	case r.maxRequest == 0:
		r.maxRequest = DefaultMaxRequestBytes
	case r.maxRequest < 0:
		return nil, fmt.Errorf("%w: negative MaxRequestBytes", ErrInvalid)
	}
	switch {
	case opts.CacheEntries == 0:
		r.cache = newCache(DefaultCacheEntries)
	case opts.CacheEntries > 0:
		r.cache = newCache(opts.CacheEntries)
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}

	r.byID = make(map[string]*issuer, len(issuers))
	for _, in := range issuers {
		if in.ID == "" || r.byID[in.ID] != nil {
			return nil, fmt.Errorf("%w: issuer IDs must be non-empty and unique", ErrInvalid)
		}
		alg, err := checkKeyPair(in.Certificate, in.Key)
		if err != nil {
			return nil, fmt.Errorf("issuer %q: %w", in.ID, err)
		}
		keyBits, err := subjectKeyBits(in.Certificate)
		if err != nil {
			return nil, fmt.Errorf("issuer %q: %w", in.ID, err)
		}
		own := newResponseSigner(in.Certificate, keyBits, in.Key, alg, nil)
		iss := &issuer{id: in.ID, cert: in.Certificate, own: own}
		r.byID[in.ID] = iss
		for _, h := range certIDHashes {
			k := issuerKey(h, hashSum(h, in.Certificate.RawSubject), hashSum(h, keyBits))
			if other, dup := r.issuers[k]; dup {
				return nil, fmt.Errorf("%w: issuers %q and %q have the same name and key", ErrInvalid, other.id, in.ID)
			}
			r.issuers[k] = iss
		}
	}
	return r, nil
}

// Delegate has the CA whose Issuer.ID is caID answer through a delegated
// responder (RFC 6960 section 4.2.2.2): from now on its responses are signed
// by key, name cert's key as the responder, and carry cert. cert must be
// issued by the CA, include the id-kp-OCSPSigning extended key usage, allow
// digitalSignature, not be a CA certificate and be valid now; key must be its
// key. A response is signed by the CA key again
// whenever cert would expire before the response's nextUpdate, so a delegate
// that is not renewed in time stops being used rather than making responses
// that no client accepts. Errors caused by the arguments match ErrInvalid.
func (r *Responder) Delegate(caID string, cert *x509.Certificate, key crypto.Signer) error {
	iss, signer, err := r.delegate(caID, cert, key)
	if err != nil {
		return err
	}
	iss.delegate.Store(signer)
	return nil
}

// CheckDelegate returns the error Delegate would return for these arguments,
// and changes nothing: a caller that records a delegate before installing it
// checks first, so that no record names a delegate that is then refused.
func (r *Responder) CheckDelegate(caID string, cert *x509.Certificate, key crypto.Signer) error {
	_, _, err := r.delegate(caID, cert, key)
	return err
}

// delegate checks a delegated responder for Delegate and CheckDelegate and
// returns the CA it answers for and its signer.
func (r *Responder) delegate(caID string, cert *x509.Certificate, key crypto.Signer) (*issuer, *responseSigner, error) {
	iss := r.byID[caID]
	if iss == nil {
		return nil, nil, fmt.Errorf("%w: no issuer %q", ErrInvalid, caID)
	}
	alg, err := checkKeyPair(cert, key)
	if err != nil {
		return nil, nil, fmt.Errorf("issuer %q: delegated responder: %w", caID, err)
	}
	if err := cert.CheckSignatureFrom(iss.cert); err != nil {
		return nil, nil, fmt.Errorf("%w: issuer %q: the delegated responder's certificate is not issued by the CA: %v", ErrInvalid, caID, err)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return nil, nil, fmt.Errorf("%w: issuer %q: the delegated responder's certificate lacks the OCSP signing extended key usage", ErrInvalid, caID)
	}
	if cert.IsCA || (cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageDigitalSignature == 0) {
		return nil, nil, fmt.Errorf("%w: issuer %q: the delegated responder's certificate is a CA certificate or lacks digitalSignature", ErrInvalid, caID)
	}
	if now := r.now(); now.Before(cert.NotBefore) || !now.Before(cert.NotAfter) {
		return nil, nil, fmt.Errorf("%w: issuer %q: the delegated responder's certificate is not valid now", ErrInvalid, caID)
	}
	keyBits, err := subjectKeyBits(cert)
	if err != nil {
		return nil, nil, fmt.Errorf("issuer %q: delegated responder: %w", caID, err)
	}
	return iss, newResponseSigner(cert, keyBits, key, alg, [][]byte{cert.Raw}), nil
}

// DelegateExpiries returns, for each CA with a delegated responder installed
// by Delegate, when the delegate's certificate ends: past that (and from a
// response's validity before it) the CA key signs again.
func (r *Responder) DelegateExpiries() map[string]time.Time {
	out := make(map[string]time.Time, len(r.byID))
	for id, iss := range r.byID {
		if d := iss.delegate.Load(); d != nil {
			out[id] = d.notAfter
		}
	}
	return out
}

// result is a response with what ServeHTTP needs for its caching headers.
type result struct {
	der                    []byte
	thisUpdate, nextUpdate time.Time
	signed                 bool // a successful response, not an error status
}

// Pre-encoded error responses (RFC 6960 section 4.2.1), copied per use so that
// no caller can change them for the others.
func errorResult(status []byte) result { return result{der: append([]byte(nil), status...)} }

// Respond returns the DER OCSPResponse to send for the DER OCSPRequest der:
// a signed response, or an error response: malformedRequest for a request it
// cannot parse or will not answer (more than one certificate, a nonce outside
// 1 to 128 octets, an unknown critical extension, more than MaxRequestBytes),
// unauthorized for a CA it does not serve, internalError when the lookup or the
// signer fails.
//
// The error is nil except along with internalError, and then says what failed;
// it never quotes the request. Bad input is never an error. The returned slice
// is the caller's (cached responses are copied).
func (r *Responder) Respond(ctx context.Context, der []byte) ([]byte, error) {
	res, err := r.respond(ctx, der)
	return bytes.Clone(res.der), err
}

func (r *Responder) respond(ctx context.Context, der []byte) (result, error) {
	if len(der) > r.maxRequest {
		return errorResult(ocsp.MalformedRequestErrorResponse), nil
	}
	req, err := parseRequest(der)
	if err != nil {
		return errorResult(ocsp.MalformedRequestErrorResponse), nil
	}
	iss := r.issuers[issuerKey(req.hash, req.nameHash, req.keyHash)]
	if iss == nil || req.hash == 0 {
		return errorResult(ocsp.UnauthorizedErrorResponse), nil
	}
	ans, err := r.lookup(ctx, iss.id, req.serial)
	if err != nil {
		return errorResult(ocsp.InternalErrorErrorResponse), fmt.Errorf("revocation: OCSP lookup for CA %q: %w", iss.id, err)
	}
	ans, err = normalize(ans)
	if err != nil {
		return errorResult(ocsp.InternalErrorErrorResponse), fmt.Errorf("revocation: OCSP lookup for CA %q: %w", iss.id, err)
	}

	now := r.now().UTC().Truncate(time.Second)
	res := result{thisUpdate: now, nextUpdate: now.Add(r.validity), signed: true}
	signer := iss.signer(res.nextUpdate)
	cacheable := req.nonce == nil && r.cache != nil
	if cacheable {
		if c, ok := r.cache.get(string(req.certID)); ok && sameAnswer(c.ans, ans) && c.signer == signer &&
			!now.Before(c.res.thisUpdate) && now.Before(c.res.thisUpdate.Add(r.validity/2)) {
			return c.res, nil
		}
	}
	res.der, err = signer.response(&req, ans, res.thisUpdate, res.nextUpdate)
	if err != nil {
		return errorResult(ocsp.InternalErrorErrorResponse), fmt.Errorf("revocation: OCSP response for CA %q: %w", iss.id, err)
	}
	if cacheable {
		r.cache.put(string(req.certID), cached{ans: ans, res: res, signer: signer})
	}
	return res, nil
}

// normalize checks a and puts it in the form responses and the cache compare:
// UTC to the second, and no revocation details unless revoked.
func normalize(a Answer) (Answer, error) {
	switch a.Status {
	case Good, Unknown:
		return Answer{Status: a.Status}, nil
	case Revoked:
		t := a.RevokedAt.UTC().Truncate(time.Second)
		if !encodable(t) {
			return Answer{}, fmt.Errorf("revoked answer without a revocation time in years 1 to 9999")
		}
		if !validReason(a.Reason) {
			return Answer{}, fmt.Errorf("reason %d is not an RFC 5280 CRLReason", a.Reason)
		}
		return Answer{Status: Revoked, RevokedAt: t, Reason: a.Reason}, nil
	}
	return Answer{}, fmt.Errorf("answer has invalid status %d", int(a.Status))
}

// sameAnswer compares normalized answers.
func sameAnswer(a, b Answer) bool {
	return a.Status == b.Status && a.Reason == b.Reason && a.RevokedAt.Equal(b.RevokedAt)
}

// DER pieces of a successful response.
var (
	oidBasicResponse = []byte{0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01} // id-pkix-ocsp-basic
	tagExplicit0     = asn1.Tag(0).ContextSpecific().Constructed()
	tagExplicit1     = asn1.Tag(1).ContextSpecific().Constructed()
)

// response builds and signs the OCSPResponse (RFC 6960 section 4.2.1) for one
// request: a BasicOCSPResponse with the signer's certificates (none for the
// CA key), the request's CertID echoed, and its nonce, if any, among the
// responseExtensions.
func (s *responseSigner) response(req *request, ans Answer, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	b := cryptobyte.NewBuilder(make([]byte, 0, 256))
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // ResponseData; version v1 is the DEFAULT, left out
		b.AddBytes(s.responderID)
		b.AddASN1GeneralizedTime(thisUpdate) // producedAt
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // SingleResponse
				b.AddBytes(req.certID)
				switch ans.Status {
				case Good:
					b.AddASN1(asn1.Tag(0).ContextSpecific(), func(*cryptobyte.Builder) {})
				case Revoked:
					b.AddASN1(asn1.Tag(1).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { // [1] IMPLICIT RevokedInfo
						b.AddASN1GeneralizedTime(ans.RevokedAt)
						if ans.Reason != 0 {
							b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { b.AddASN1Enum(int64(ans.Reason)) })
						}
					})
				default:
					b.AddASN1(asn1.Tag(2).ContextSpecific(), func(*cryptobyte.Builder) {})
				}
				b.AddASN1GeneralizedTime(thisUpdate)
				b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) { b.AddASN1GeneralizedTime(nextUpdate) })
			})
		})
		if req.nonce != nil {
			b.AddASN1(tagExplicit1, func(b *cryptobyte.Builder) {
				b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidNonce)
						b.AddASN1OctetString(req.nonce)
					})
				})
			})
		}
	})
	tbs, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	sig, _, err := s.alg.sign(s.key, tbs)
	if err != nil {
		return nil, err
	}
	out := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(sig)+64))
	out.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // OCSPResponse
		b.AddASN1Enum(0) // successful
		b.AddASN1(tagExplicit0, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // ResponseBytes
				b.AddBytes(oidBasicResponse)
				b.AddASN1(asn1.OCTET_STRING, func(b *cryptobyte.Builder) {
					b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { // BasicOCSPResponse
						b.AddBytes(tbs)
						b.AddBytes(s.alg.algID)
						b.AddASN1BitString(sig)
						b.AddBytes(s.certs)
					})
				})
			})
		})
	})
	return out.Bytes()
}
