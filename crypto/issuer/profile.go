package issuer

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/caledger/caledger/domain"
)

// Profile describes one kind of end-entity certificate. The zero value is not a
// valid profile; LoadProfiles and New check every field and fill in MinRSABits.
type Profile struct {
	// Name is the slug callers ask for (1 to 64 lower-case letters, digits, hyphens).
	Name string `json:"name"`
	// Validity is the lifetime from NotBefore; the issuing CA's NotAfter caps it.
	Validity Duration `json:"validity"`
	// KeyUsage names the key usages to grant: digital_signature,
	// content_commitment, key_encipherment, data_encipherment, key_agreement. A
	// usage the subject's key algorithm cannot perform is left out of that
	// certificate (see KeyUsagesFor).
	KeyUsage []string `json:"key_usage"`
	// ExtKeyUsage names the extended key usages: server_auth, client_auth,
	// email_protection.
	ExtKeyUsage []string `json:"ext_key_usage"`
	// KeyTypes lists the subject key types accepted: P-256, P-384, Ed25519, RSA.
	KeyTypes []string `json:"key_types"`
	// MinRSABits is the smallest RSA modulus accepted; zero means 2048, and less
	// than 2048 is refused.
	MinRSABits int `json:"min_rsa_bits"`
	// Required names the attributes (domain.KnownAttribute) a subject must have.
	Required []string `json:"required"`
	// Allowed names further attributes that go into the certificate when the
	// subject has them. Attributes in neither list are ignored.
	Allowed []string `json:"allowed"`
	// Role, when set, puts that role (admin, officer, auditor, compliance,
	// officer-proxy) in the roles extension: the profile issues a credential
	// for the REST API.
	Role string `json:"role,omitempty"`
}

// Duration is a time.Duration written in JSON as a Go duration string ("2160h").
type Duration time.Duration

// MarshalJSON writes d in the shortest form ParseDuration reads back.
func (d Duration) MarshalJSON() ([]byte, error) {
	td := time.Duration(d)
	if td != 0 && td%time.Hour == 0 {
		return json.Marshal(fmt.Sprintf("%dh", td/time.Hour))
	}
	return json.Marshal(td.String())
}

// UnmarshalJSON reads a duration string such as "2160h" or "90m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`a duration is a string such as "2160h"`)
	}
	td, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: use hours, minutes or seconds such as \"2160h\"", s)
	}
	*d = Duration(td)
	return nil
}

// Key type names used in Profile.KeyTypes.
const (
	KeyP256    = "P-256"
	KeyP384    = "P-384"
	KeyEd25519 = "Ed25519"
	KeyRSA     = "RSA"
)

// Role names used in Profile.Role.
const (
	RoleAdmin      = "admin"
	RoleOfficer    = "officer"
	RoleAuditor    = "auditor"
	RoleCompliance = "compliance"
	// RoleOfficerProxy is a trusted front end (a single sign-on gateway) that
	// authenticates people itself and asks for soft tokens on their behalf,
	// passing their attributes in HTTP headers.
	RoleOfficerProxy = "officer-proxy"
)

const (
	defaultMinRSABits = 2048
	maxRSABits        = 8192
	maxValidity       = 10 * 365 * 24 * time.Hour
)

var keyUsages = map[string]x509.KeyUsage{
	"digital_signature":  x509.KeyUsageDigitalSignature,
	"content_commitment": x509.KeyUsageContentCommitment,
	"key_encipherment":   x509.KeyUsageKeyEncipherment,
	"data_encipherment":  x509.KeyUsageDataEncipherment,
	"key_agreement":      x509.KeyUsageKeyAgreement,
}

var extKeyUsages = map[string]x509.ExtKeyUsage{
	"server_auth":      x509.ExtKeyUsageServerAuth,
	"client_auth":      x509.ExtKeyUsageClientAuth,
	"email_protection": x509.ExtKeyUsageEmailProtection,
}

var keyTypes = []string{KeyP256, KeyP384, KeyEd25519, KeyRSA}

var roles = []string{RoleAdmin, RoleOfficer, RoleAuditor, RoleCompliance, RoleOfficerProxy}

// Roles returns the role names a profile may carry, a fresh copy on every
// call.
func Roles() []string { return slices.Clone(roles) }

// DefaultProfiles returns the built-in profiles, a fresh copy on every call.
// docs/profiles.md has them as a table.
func DefaultProfiles() []Profile {
	all := []string{KeyP256, KeyP384, KeyEd25519, KeyRSA}
	person := []string{"given_name", "surname", "email", "organization", "organizational_unit", "country", "locality", "serial_number"}
	staff := []string{"given_name", "surname", "email", "organization", "organizational_unit", "country", "serial_number"}
	role := func(name, r string, validity time.Duration) Profile {
		return Profile{
			Name: name, Validity: Duration(validity),
			KeyUsage: []string{"digital_signature"}, ExtKeyUsage: []string{"client_auth"},
			KeyTypes: slices.Clone(all), MinRSABits: 2048,
			Required: []string{"common_name"}, Allowed: slices.Clone(staff), Role: r,
		}
	}
	return []Profile{
		{
			Name: "tls-server", Validity: Duration(90 * 24 * time.Hour),
			KeyUsage: []string{"digital_signature"}, ExtKeyUsage: []string{"server_auth"},
			KeyTypes: slices.Clone(all), MinRSABits: 2048,
			Required: []string{},
			Allowed:  []string{"common_name", "dns_names", "ip_addresses", "organization", "organizational_unit", "country", "locality"},
		},
		{
			Name: "tls-client", Validity: Duration(365 * 24 * time.Hour),
			KeyUsage: []string{"digital_signature"}, ExtKeyUsage: []string{"client_auth"},
			KeyTypes: slices.Clone(all), MinRSABits: 2048,
			Required: []string{"common_name"}, Allowed: slices.Clone(person),
		},
		{
			Name: "email-protection", Validity: Duration(365 * 24 * time.Hour),
			KeyUsage: []string{"digital_signature", "key_agreement"}, ExtKeyUsage: []string{"email_protection"},
			KeyTypes: slices.Clone(all), MinRSABits: 2048,
			Required: []string{"email"},
			Allowed:  []string{"common_name", "given_name", "surname", "organization", "organizational_unit", "country", "locality", "serial_number"},
		},
		role("officer", RoleOfficer, 365*24*time.Hour),
		role("auditor", RoleAuditor, 365*24*time.Hour),
		role("compliance", RoleCompliance, 365*24*time.Hour),
		role("admin", RoleAdmin, 90*24*time.Hour),
		role("officer-proxy", RoleOfficerProxy, 365*24*time.Hour),
	}
}

// LoadProfiles reads profiles from JSON of the form {"profiles": [...]}, rejecting
// unknown fields, and checks them as New does. Errors name the profile and field.
func LoadProfiles(r io.Reader) ([]Profile, error) {
	var doc struct {
		Profiles []Profile `json:"profiles"`
	}
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("profiles: unexpected data after the JSON object")
	}
	return checkProfiles(doc.Profiles)
}

// checkProfiles validates ps and returns normalised copies (MinRSABits filled in).
func checkProfiles(ps []Profile) ([]Profile, error) {
	if len(ps) == 0 {
		return nil, errors.New("profiles: none given")
	}
	out := make([]Profile, 0, len(ps))
	seen := map[string]bool{}
	for i, p := range ps {
		if err := p.check(); err != nil {
			if domain.ValidSlug(p.Name) {
				return nil, fmt.Errorf("profile %q: %w", p.Name, err)
			}
			return nil, fmt.Errorf("profile %d: %w", i, err)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("profile %q: defined twice", p.Name)
		}
		seen[p.Name] = true
		if p.MinRSABits == 0 {
			p.MinRSABits = defaultMinRSABits
		}
		p.KeyUsage = slices.Clone(p.KeyUsage)
		p.ExtKeyUsage = slices.Clone(p.ExtKeyUsage)
		p.KeyTypes = slices.Clone(p.KeyTypes)
		p.Required = slices.Clone(p.Required)
		p.Allowed = slices.Clone(p.Allowed)
		out = append(out, p)
	}
	return out, nil
}

func (p *Profile) check() error {
	if !domain.ValidSlug(p.Name) {
		return errors.New("name: 1 to 64 lower-case letters, digits and hyphens")
	}
	if v := time.Duration(p.Validity); v <= 0 || v > maxValidity {
		return fmt.Errorf("validity: must be positive and at most %dh", maxValidity/time.Hour)
	}
	if err := checkNames("key_usage", p.KeyUsage, func(s string) bool { _, ok := keyUsages[s]; return ok }, mapKeys(keyUsages)); err != nil {
		return err
	}
	if len(p.ExtKeyUsage) == 0 {
		return fmt.Errorf("ext_key_usage: name at least one of %s", strings.Join(mapKeys(extKeyUsages), ", "))
	}
	if err := checkNames("ext_key_usage", p.ExtKeyUsage, func(s string) bool { _, ok := extKeyUsages[s]; return ok }, mapKeys(extKeyUsages)); err != nil {
		return err
	}
	if len(p.KeyTypes) == 0 {
		return fmt.Errorf("key_types: name at least one of %s", strings.Join(keyTypes, ", "))
	}
	if err := checkNames("key_types", p.KeyTypes, func(s string) bool { return slices.Contains(keyTypes, s) }, keyTypes); err != nil {
		return err
	}
	if p.MinRSABits != 0 && (p.MinRSABits < defaultMinRSABits || p.MinRSABits > maxRSABits) {
		return fmt.Errorf("min_rsa_bits: %d is outside %d to %d", p.MinRSABits, defaultMinRSABits, maxRSABits)
	}
	for _, kt := range p.KeyTypes {
		if KeyUsagesFor(*p, kt) == 0 {
			return fmt.Errorf("key_usage: gives %s keys no usage they can perform", kt)
		}
	}
	attrs := []string{"common_name", "given_name", "surname", "email", "organization", "organizational_unit", "country", "locality", "serial_number", "dns_names", "ip_addresses"}
	if err := checkNames("required", p.Required, domain.KnownAttribute, attrs); err != nil {
		return err
	}
	if err := checkNames("allowed", p.Allowed, domain.KnownAttribute, attrs); err != nil {
		return err
	}
	for _, a := range p.Allowed {
		if slices.Contains(p.Required, a) {
			return fmt.Errorf("allowed: %q is already required", a)
		}
	}
	if slices.Contains(p.ExtKeyUsage, "server_auth") && !p.permits("dns_names") && !p.permits("ip_addresses") {
		return errors.New("a server_auth profile must require or allow dns_names or ip_addresses")
	}
	if p.Role != "" {
		if !slices.Contains(roles, p.Role) {
			return fmt.Errorf("role: %q is not one of %s", p.Role, strings.Join(roles, ", "))
		}
		if !slices.Contains(p.ExtKeyUsage, "client_auth") {
			return errors.New("role: a role credential needs the client_auth extended key usage")
		}
	}
	return nil
}

// permits reports whether attribute name may go into the certificate.
func (p *Profile) permits(name string) bool {
	return slices.Contains(p.Required, name) || slices.Contains(p.Allowed, name)
}

func checkNames(field string, names []string, known func(string) bool, all []string) error {
	for i, n := range names {
		if !known(n) {
			return fmt.Errorf("%s: %q is not one of %s", field, n, strings.Join(all, ", "))
		}
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("%s: %q is listed twice", field, n)
		}
	}
	return nil
}

func mapKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// KeyUsagesFor returns the key usage bits p gives a subject key of type keyType.
// Usages the algorithm cannot perform are left out: key_encipherment and
// data_encipherment need RSA (RFC 8813 forbids them for ECDSA, RFC 8410 for
// Ed25519), and key_agreement needs an elliptic-curve Diffie-Hellman capable key,
// that is ECDSA (RFC 5480; Ed25519 cannot agree keys). An RSA key in a
// server_auth or email_protection profile also gets key_encipherment, which RSA
// key transport (TLS 1.2 RSA key exchange, S/MIME encryption) needs.
func KeyUsagesFor(p Profile, keyType string) x509.KeyUsage {
	var ku x509.KeyUsage
	for _, n := range p.KeyUsage {
		bit := keyUsages[n]
		switch bit {
		case x509.KeyUsageKeyEncipherment, x509.KeyUsageDataEncipherment:
			if keyType != KeyRSA {
				continue
			}
		case x509.KeyUsageKeyAgreement:
			if keyType != KeyP256 && keyType != KeyP384 {
				continue
			}
		}
		ku |= bit
	}
	if keyType == KeyRSA && (slices.Contains(p.ExtKeyUsage, "server_auth") || slices.Contains(p.ExtKeyUsage, "email_protection")) {
		ku |= x509.KeyUsageKeyEncipherment
	}
	return ku
}
