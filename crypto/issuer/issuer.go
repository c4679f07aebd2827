package issuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/caledger/caledger/domain"
)

// CA is an issuing certificate authority.
type CA struct {
	// ID names the CA in requests and URLs: a slug such as "issuing".
	ID string
	// Certificate is the CA's own certificate; it must have a subject key
	// identifier, which becomes its certificates' authority key identifier.
	Certificate *x509.Certificate
	// Key signs with the private key of Certificate. It may be an HSM key.
	Key crypto.Signer
	// Chain is the issuer's chain up to the root (Certificate's issuer first);
	// New checks that Certificate is signed by Chain[0]. It may be empty for a
	// root.
	Chain []*x509.Certificate
}

// Options tune an Issuer. The zero value is usable.
type Options struct {
	// BaseURL, when set (e.g. https://127.0.0.1:8443), makes every certificate
	// name where to check it: a CRL distribution point <BaseURL>/v1/cas/<id>/crl,
	// an OCSP responder <BaseURL>/ocsp and the issuer's certificate at
	// <BaseURL>/v1/cas/<id>/certificate.
	BaseURL string
	// Backdate is how far before the request's time a certificate's validity
	// starts, to absorb clock skew at relying parties. Zero means one minute.
	Backdate time.Duration
}

const defaultBackdate = time.Minute

// Issuer signs end-entity certificates for a fixed set of CAs and profiles. It
// implements domain.CertificateSigner and is safe for concurrent use.
type Issuer struct {
	cas      map[string]*caState
	profiles map[string]*profileState
	backdate time.Duration

	// mutate, when set, edits each template before it is encoded. Tests use it to
	// make certificates that only the lints would refuse.
	mutate func(*x509.Certificate)
}

// caState is a CA with what signing needs worked out once.
type caState struct {
	CA
	sig                 signature
	lintSig             []byte // a throwaway key's signature, of the CA key's type
	crlDP, ocsp, issuer []string
}

// profileState is a profile with what signing needs worked out once.
type profileState struct {
	Profile
	ku     map[string]x509.KeyUsage // by key type
	eku    []x509.ExtKeyUsage
	extra  []pkix.Extension // the roles extension, if any
	linter *linter
}

// New checks cas, profiles and opts and prepares an Issuer: it builds each
// profile's lint registry and makes one lint signature per CA key type.
func New(cas []CA, profiles []Profile, opts Options) (*Issuer, error) {
	if len(cas) == 0 {
		return nil, errors.New("issuer: no CA given")
	}
	ps, err := checkProfiles(profiles)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	base, err := checkBaseURL(opts.BaseURL)
	if err != nil {
		return nil, err
	}
	if opts.Backdate < 0 {
		return nil, errors.New("issuer: Backdate is negative")
	}
	iss := &Issuer{
		cas:      make(map[string]*caState, len(cas)),
		profiles: make(map[string]*profileState, len(ps)),
		backdate: opts.Backdate,
	}
	if iss.backdate == 0 {
		iss.backdate = defaultBackdate
	}
	lintSigs := map[string][]byte{}
	for _, ca := range cas {
		st, err := newCAState(ca, base, lintSigs)
		if err != nil {
			return nil, err
		}
		if iss.cas[ca.ID] != nil {
			return nil, fmt.Errorf("issuer: CA %q given twice", ca.ID)
		}
		iss.cas[ca.ID] = st
	}
	for i := range ps {
		p := &ps[i]
		st := &profileState{Profile: *p, ku: map[string]x509.KeyUsage{}}
		for _, kt := range p.KeyTypes {
			st.ku[kt] = KeyUsagesFor(*p, kt)
		}
		for _, n := range p.ExtKeyUsage {
			st.eku = append(st.eku, extKeyUsages[n])
		}
		if p.Role != "" {
			ext, err := rolesExtension(p.Role)
			if err != nil {
				return nil, fmt.Errorf("issuer: profile %q: %w", p.Name, err)
			}
			st.extra = []pkix.Extension{ext}
		}
		if st.linter, err = newLinter(p); err != nil {
			return nil, fmt.Errorf("issuer: %w", err)
		}
		iss.profiles[p.Name] = st
	}
	return iss, nil
}

func checkBaseURL(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", errors.New("issuer: BaseURL must be an http or https URL with a host and no query or fragment")
	}
	return strings.TrimRight(s, "/"), nil
}

func newCAState(ca CA, base string, lintSigs map[string][]byte) (*caState, error) {
	sig, kt, err := checkCA(ca)
	if err != nil {
		return nil, err
	}
	st := &caState{CA: ca, sig: sig}
	if st.lintSig = lintSigs[kt]; st.lintSig == nil {
		if st.lintSig, err = newLintSignature(kt, sig); err != nil {
			return nil, fmt.Errorf("issuer: CA %q: lint signature: %w", ca.ID, err)
		}
		lintSigs[kt] = st.lintSig
	}
	st.crlDP, st.ocsp, st.issuer = caURLs(base, ca.ID)
	return st, nil
}

// checkCA checks that ca can issue and returns how it signs and its key type.
func checkCA(ca CA) (signature, string, error) {
	if !domain.ValidSlug(ca.ID) {
		return signature{}, "", fmt.Errorf("issuer: CA id %q is not 1 to 64 lower-case letters, digits and hyphens", ca.ID)
	}
	c := ca.Certificate
	switch {
	case c == nil || ca.Key == nil:
		return signature{}, "", fmt.Errorf("issuer: CA %q needs a certificate and a key", ca.ID)
	case !c.BasicConstraintsValid || !c.IsCA:
		return signature{}, "", fmt.Errorf("issuer: CA %q: the certificate is not a CA certificate", ca.ID)
	case c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0:
		return signature{}, "", fmt.Errorf("issuer: CA %q: the certificate's key usage lacks keyCertSign", ca.ID)
	case len(c.SubjectKeyId) == 0:
		return signature{}, "", fmt.Errorf("issuer: CA %q: the certificate has no subject key identifier", ca.ID)
	case len(c.RawSubject) <= 2:
		return signature{}, "", fmt.Errorf("issuer: CA %q: the certificate has an empty subject", ca.ID)
	}
	pub, ok := ca.Key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(c.PublicKey) {
		return signature{}, "", fmt.Errorf("issuer: CA %q: the key is not the certificate's key", ca.ID)
	}
	if len(ca.Chain) > 0 {
		if err := c.CheckSignatureFrom(ca.Chain[0]); err != nil {
			return signature{}, "", fmt.Errorf("issuer: CA %q: the chain's first certificate did not issue the CA certificate: %w", ca.ID, err)
		}
	}
	sig, kt, err := signatureFor(c.PublicKey)
	if err != nil {
		return signature{}, "", fmt.Errorf("issuer: CA %q: %w", ca.ID, err)
	}
	return sig, kt, nil
}

// caURLs returns the CRL distribution point, OCSP responder and CA issuers URLs
// of certificates CA id issues, or nothing when base is empty.
func caURLs(base, id string) (crlDP, ocsp, issuer []string) {
	if base == "" {
		return nil, nil, nil
	}
	return []string{base + "/v1/cas/" + id + "/crl"}, []string{base + "/ocsp"}, []string{base + "/v1/cas/" + id + "/certificate"}
}

// newLintSignature makes the signature every lint certificate of a CA with key
// type kt carries: a real signature, made as the CA key signs, by a throwaway
// key of that type that is then dropped, over a fixed message. zlint never
// verifies a signature, but lints read its shape: e_mp_ecdsa_signature_encoding_correct
// infers the issuer's curve from its length. So lint certificates look signed
// by a key like the CA's, cost no signature each, and verify under no key at
// all should one ever leak.
func newLintSignature(kt string, sig signature) ([]byte, error) {
	key, err := GenerateKey(kt, defaultMinRSABits)
	if err != nil {
		return nil, err
	}
	return crypto.SignMessage(key, rand.Reader, []byte("caledger lint certificate"), sig.opts)
}

// GenerateKey makes a key pair of type kt (P-256, P-384, Ed25519 or RSA);
// rsaBits is the modulus of an RSA key.
func GenerateKey(kt string, rsaBits int) (crypto.Signer, error) {
	switch kt {
	case KeyP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case KeyRSA:
		return rsa.GenerateKey(rand.Reader, rsaBits)
	}
	return nil, fmt.Errorf("issuer: no key type %q", kt)
}

// ProfileRole returns the role a profile's certificates carry ("" for a profile
// without one, or an unknown profile). Issuing under a role profile creates a
// client credential, which callers reserve to administrators.
func (i *Issuer) ProfileRole(name string) string {
	if p := i.profiles[name]; p != nil {
		return p.Role
	}
	return ""
}

// HasProfile reports whether the issuer has a profile of that name.
func (i *Issuer) HasProfile(name string) bool { return i.profiles[name] != nil }

// CheckGenerated makes, before anything is recorded, the checks SignCertificate
// makes of a request whose key pair caledger is about to generate (a soft
// token) at now: the profile and the CA exist, the CA has not expired, the
// profile accepts keyType (one of P-256, P-384, Ed25519, RSA) and attrs
// satisfy the profile. A nil attrs
// skips the attribute check: a registered subject's attributes are checked
// when its certificate is signed, which records nothing when it refuses. It
// returns the smallest RSA modulus the profile accepts. Errors are
// *domain.Error of KindInvalid with the same codes as SignCertificate's and
// name no values.
func (i *Issuer) CheckGenerated(profile, caID, keyType string, attrs map[string]string, now time.Time) (minRSABits int, err error) {
	prof, _, _, _, err := i.lookup(profile, caID, now)
	if err != nil {
		return 0, err
	}
	// In SignCertificate's order: the attributes, then the key.
	if attrs != nil {
		if _, err := buildNames(&prof.Profile, attrs); err != nil {
			return 0, err
		}
	}
	if !slices.Contains(keyTypes, keyType) {
		return 0, invalid(CodeKeyTypeNotAllowed, "the key type is not one of %s", keyTypeList)
	}
	if _, err := prof.keyUsage(keyType); err != nil {
		return 0, err
	}
	return prof.MinRSABits, nil
}

// keyUsage is the key usage the profile grants keys of type kt, or the
// refusal of a type it does not accept.
func (p *profileState) keyUsage(kt string) (x509.KeyUsage, error) {
	ku, ok := p.ku[kt]
	if !ok {
		return 0, invalid(CodeKeyTypeNotAllowed, "profile %s does not accept %s keys; it accepts %s", p.Name, kt, strings.Join(p.KeyTypes, ", "))
	}
	return ku, nil
}

// lookup finds a request's profile and CA, and the validity of a certificate
// of that profile the CA would issue at now. The CA's own expiry caps it; a
// CA that expires before the certificate would start is refused.
func (i *Issuer) lookup(profile, caID string, now time.Time) (*profileState, *caState, time.Time, time.Time, error) {
	var zero time.Time
	prof := i.profiles[profile]
	if prof == nil {
		if domain.ValidSlug(profile) {
			return nil, nil, zero, zero, invalid(CodeUnknownProfile, "there is no profile %s", profile)
		}
		return nil, nil, zero, zero, invalid(CodeUnknownProfile, "the profile name is not a valid profile name")
	}
	ca := i.cas[caID]
	if ca == nil {
		if domain.ValidSlug(caID) {
			return nil, nil, zero, zero, invalid(CodeUnknownCA, "there is no CA %s", caID)
		}
		return nil, nil, zero, zero, invalid(CodeUnknownCA, "the CA id is not a valid CA id")
	}
	if now.IsZero() {
		return nil, nil, zero, zero, errors.New("issuer: the request has no issuance time")
	}
	nb := now.Add(-i.backdate).UTC().Truncate(time.Second)
	na := nb.Add(time.Duration(prof.Validity))
	if ca.Certificate.NotAfter.Before(na) {
		na = ca.Certificate.NotAfter
	}
	if !na.After(nb) {
		return nil, nil, zero, zero, invalid(CodeCAExpired, "CA %s's certificate expires before a new certificate would start", ca.ID)
	}
	return prof, ca, nb, na, nil
}

// SignCertificate issues a certificate to the public key of req.CSR for the
// subject req.Attributes describe, under profile req.Profile, from CA req.CAID.
// The cheap checks (profile, CA, serial, attributes) come first, then the CSR,
// then pre-issuance linting; only a certificate every lint passes is signed with
// the CA key. Every rejection is a *domain.Error of KindInvalid with one of the
// Code* codes and a Detail that holds no personal data; a failure of the CA key
// itself is a plain error.
func (i *Issuer) SignCertificate(ctx context.Context, req domain.SignRequest) (domain.Signed, error) {
	if err := ctx.Err(); err != nil {
		return domain.Signed{}, err
	}
	ca, prof, tmpl, pub, err := i.template(req)
	if err != nil {
		return domain.Signed{}, err
	}
	// The TBSCertificate is encoded once. The lint certificate and the issued
	// certificate carry the very same bytes, so what was linted is what is signed.
	tbs, err := buildTBS(tmpl, ca.Certificate, pub)
	if err != nil {
		return domain.Signed{}, err
	}
	zc, err := ca.lintCertificate(tbs)
	if err != nil {
		return domain.Signed{}, err
	}
	if failed := prof.linter.run(zc); len(failed) > 0 {
		return domain.Signed{}, &domain.Error{Kind: domain.KindInvalid, Code: CodeLintFailed,
			Detail: lintDetail(failed), Err: &domain.LintFailure{Lints: failed}}
	}
	if err := ctx.Err(); err != nil {
		return domain.Signed{}, err
	}
	der, err := ca.sign(tbs)
	if err != nil {
		return domain.Signed{}, err
	}
	spki := sha256.Sum256(zc.RawSubjectPublicKeyInfo)
	return domain.Signed{
		DER:        der,
		Serial:     req.Serial,
		NotBefore:  tmpl.NotBefore,
		NotAfter:   tmpl.NotAfter,
		SPKISHA256: hex.EncodeToString(spki[:]),
	}, nil
}

// template checks everything about req that needs no signature, then the CSR,
// and returns the certificate template and the subject's public key.
func (i *Issuer) template(req domain.SignRequest) (*caState, *profileState, *x509.Certificate, crypto.PublicKey, error) {
	prof, ca, nb, na, err := i.lookup(req.Profile, req.CAID, req.Now)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	serial, err := parseSerial(req.Serial)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	n, err := buildNames(&prof.Profile, req.Attributes)
	if err != nil {
		return nil, nil, nil, nil, err
	}

	csr, err := ParseCSR(req.CSR)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	kt, _ := keyType(csr.PublicKey) // ParseCSR accepted it
	ku, err := prof.keyUsage(kt)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if k, ok := csr.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() < prof.MinRSABits {
		return nil, nil, nil, nil, invalid(CodeWeakKey, "profile %s needs RSA keys of at least %d bits; the CSR's has %d", prof.Name, prof.MinRSABits, k.N.BitLen())
	}
	ski, err := subjectKeyID(csr.RawSubjectPublicKeyInfo)
	if err != nil {
		return nil, nil, nil, nil, invalid(CodeBadCSR, "the CSR's public key cannot be read")
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		SignatureAlgorithm:    ca.sig.alg,
		RawSubject:            n.subject,
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              ku,
		ExtKeyUsage:           prof.eku,
		BasicConstraintsValid: true,
		SubjectKeyId:          ski,
		DNSNames:              n.dns,
		IPAddresses:           n.ips,
		EmailAddresses:        n.emails,
		CRLDistributionPoints: ca.crlDP,
		OCSPServer:            ca.ocsp,
		IssuingCertificateURL: ca.issuer,
		ExtraExtensions:       prof.extra,
	}
	if i.mutate != nil {
		i.mutate(tmpl)
	}
	return ca, prof, tmpl, csr.PublicKey, nil
}

// lintCertificate assembles tbs with the CA's lint signature and parses the
// result for zlint.
func (ca *caState) lintCertificate(tbs []byte) (*zx509.Certificate, error) {
	der, err := assemble(tbs, ca.lintSig)
	if err != nil {
		return nil, err
	}
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issuer: the lint certificate does not parse: %w", err)
	}
	return zc, nil
}

// sign signs tbs with the CA key, checks the signature and returns the DER
// certificate.
func (ca *caState) sign(tbs []byte) ([]byte, error) {
	sig, err := crypto.SignMessage(ca.Key, rand.Reader, tbs, ca.sig.opts)
	if err != nil {
		return nil, fmt.Errorf("issuer: CA %s: sign: %w", ca.ID, err)
	}
	// As x509.CreateCertificate does: a faulty signer (an HSM, or an RSA-CRT
	// fault that would leak the key) must not produce a certificate.
	if err := ca.Certificate.CheckSignature(ca.sig.alg, tbs, sig); err != nil {
		return nil, fmt.Errorf("issuer: CA %s: the key produced an invalid signature: %w", ca.ID, err)
	}
	return assemble(tbs, sig)
}

// parseSerial turns a domain serial into the certificate's serial number, which
// must be positive and at most 20 octets once DER-encoded (RFC 5280 4.1.2.2).
func parseSerial(s domain.Serial) (*big.Int, error) {
	n, ok := s.Int()
	if !ok {
		return nil, invalid(CodeBadSerial, "the serial is not positive lower-case hex of at most 20 octets")
	}
	return n, nil
}

// subjectKeyID derives a subject key identifier from a DER SubjectPublicKeyInfo
// by RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the
// subjectPublicKey bits, as Go does for CA certificates.
func subjectKeyID(spki []byte) ([]byte, error) {
	in := cryptobyte.String(spki)
	var body cryptobyte.String
	var key []byte
	if !in.ReadASN1(&body, cbasn1.SEQUENCE) || !body.SkipASN1(cbasn1.SEQUENCE) || !body.ReadASN1BitStringAsBytes(&key) {
		return nil, errors.New("malformed SubjectPublicKeyInfo")
	}
	h := sha256.Sum256(key)
	return h[:20], nil
}
