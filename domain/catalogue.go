package domain

import (
	"encoding/json"
	"fmt"
	"time"
)

// Event types. The public payload of each is the struct below with the same name;
// docs/events.md is the reference table of every field and whether it is sealed.
const (
	TypeSubjectRegistered        = "subject.registered"
	TypeSubjectCorrected         = "subject.corrected"
	TypeSubjectErased            = "subject.erased"
	TypeSubjectCertificateLinked = "subject.certificate-linked"
	TypeCertificateIssued        = "certificate.issued"
	TypeCertificateRevoked       = "certificate.revoked"
	TypeCertificateDeleted       = "certificate.deleted"
	TypePersonalDataAccessed     = "personal-data.accessed"
	TypeCertificateRejected      = "certificate.rejected"
	TypeCACreated                = "ca.created"
	TypeCRLPublished             = "ca.crl-published"
	TypeOCSPResponderIssued      = "ca.ocsp-responder-issued"
)

// Key groups. A subject's personal data is sealed under one data key per group, so
// that a group can be destroyed alone (for example a national id kept under consent).
// Group names are public: they are a fixed list, never caller text.
const (
	// GroupIdentity holds the subject's attributes, certificates and CSRs.
	GroupIdentity = "identity"
	// GroupNationalID holds a national identity number kept under consent.
	GroupNationalID = "national-id"
)

// KnownKeyGroup reports whether g is one of the key groups above.
func KnownKeyGroup(g string) bool { return g == GroupIdentity || g == GroupNationalID }

// Legal grounds of an erasure, recorded publicly in subject.erased.
const (
	BasisErasureRequest   = "gdpr-art17"        // the subject asked (GDPR article 17)
	BasisConsentWithdrawn = "consent-withdrawn" // the consent the data was kept under ended
	BasisRetentionExpired = "retention-expired" // the retention period ran out
	BasisCourtOrder       = "court-order"
)

// KnownErasureBasis reports whether b is one of the bases above.
func KnownErasureBasis(b string) bool {
	switch b {
	case BasisErasureRequest, BasisConsentWithdrawn, BasisRetentionExpired, BasisCourtOrder:
		return true
	}
	return false
}

// Payload is the public part of an event type.
type Payload interface {
	EventType() string
	SchemaVersion() uint16
}

// SubjectRegistered: a data subject was registered. Its attributes are sealed as
// SubjectAttributes under GroupIdentity.
type SubjectRegistered struct {
	SubjectID SubjectID `json:"subject_id"`
	// Attributes names the attributes held (e.g. "email"), not their values.
	Attributes []string `json:"attributes"`
}

// SubjectCorrected: some of a subject's attributes were corrected. The new values are
// sealed as SubjectAttributes under KeyGroup; an empty value removes the attribute.
type SubjectCorrected struct {
	SubjectID  SubjectID `json:"subject_id"`
	Attributes []string  `json:"attributes"`
	KeyGroup   string    `json:"key_group"`
}

// SubjectErased: the subject's data keys were destroyed. KeyGroups lists the groups
// erased; empty means all of them, and then the subject accepts no further commands.
type SubjectErased struct {
	SubjectID SubjectID `json:"subject_id"`
	KeyGroups []string  `json:"key_groups,omitempty"`
	// Basis is the legal ground, e.g. "gdpr-art17" or "consent-withdrawn".
	Basis string `json:"basis"`
}

// SubjectCertificateLinked: a certificate was signed for this subject. It is
// appended at the exact subject version whose attributes went into the certificate,
// after signing and before certificate.issued, so an erasure (or a correction)
// recorded meanwhile makes the issuance fail and start over: no certificate is
// issued from a subject's data after its erasure. A link with no certificate.issued
// records an issuance that failed between the two appends.
type SubjectCertificateLinked struct {
	SubjectID SubjectID `json:"subject_id"`
	Serial    Serial    `json:"serial"`
	CAID      string    `json:"ca_id"`
}

// CertificateIssued: a certificate was signed. The DER certificate and the CSR are
// sealed as CertificateMaterial under the subject's GroupIdentity: both carry the
// subject's name.
type CertificateIssued struct {
	Serial    Serial    `json:"serial"`
	CAID      string    `json:"ca_id"`
	SubjectID SubjectID `json:"subject_id"`
	Profile   string    `json:"profile"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// SPKISHA256 is the hex SHA-256 of the certificate's SubjectPublicKeyInfo.
	SPKISHA256 string `json:"spki_sha256"`
	// KeyGenerated is set when caledger generated the key pair and handed it
	// out in a password-protected PKCS#12 file (a soft token) instead of
	// certifying a key from the subject's own CSR. The private key is never
	// stored; auditors see which certificates had keys that left the CA.
	// Absent (false) in the events of certificates issued from a CSR, so
	// their canonical bytes are what they were before the field existed.
	KeyGenerated bool `json:"key_generated,omitempty"`
}

// CertificateRevoked: a certificate was revoked.
type CertificateRevoked struct {
	Serial    Serial           `json:"serial"`
	CAID      string           `json:"ca_id"`
	Reason    RevocationReason `json:"reason"`
	RevokedAt time.Time        `json:"revoked_at"`
	// ReplacedBy names the certificate a correction reissued this one as
	// (reason superseded); empty for any other revocation.
	ReplacedBy Serial `json:"replaced_by,omitempty"`
}

// CertificateDeleted: a revoked or expired certificate was removed from the views.
// Its events stay in the ledger; its sealed DER stays unreadable once the subject is
// erased.
type CertificateDeleted struct {
	Serial Serial `json:"serial"`
	CAID   string `json:"ca_id"`
}

// PersonalDataAccessed: someone read a subject's personal data. The free-text reason
// is sealed as AccessReason, since people write names into it.
type PersonalDataAccessed struct {
	SubjectID SubjectID `json:"subject_id"`
	// Operation is "read", "search", "report" or "export".
	Operation string `json:"operation"`
}

func (SubjectRegistered) EventType() string        { return TypeSubjectRegistered }
func (SubjectCorrected) EventType() string         { return TypeSubjectCorrected }
func (SubjectErased) EventType() string            { return TypeSubjectErased }
func (SubjectCertificateLinked) EventType() string { return TypeSubjectCertificateLinked }
func (CertificateIssued) EventType() string        { return TypeCertificateIssued }
func (CertificateRevoked) EventType() string       { return TypeCertificateRevoked }
func (CertificateDeleted) EventType() string       { return TypeCertificateDeleted }
func (PersonalDataAccessed) EventType() string     { return TypePersonalDataAccessed }

func (SubjectRegistered) SchemaVersion() uint16        { return 1 }
func (SubjectCorrected) SchemaVersion() uint16         { return 1 }
func (SubjectErased) SchemaVersion() uint16            { return 1 }
func (SubjectCertificateLinked) SchemaVersion() uint16 { return 1 }
func (CertificateIssued) SchemaVersion() uint16        { return 1 }
func (CertificateRevoked) SchemaVersion() uint16       { return 1 }
func (CertificateDeleted) SchemaVersion() uint16       { return 1 }
func (PersonalDataAccessed) SchemaVersion() uint16     { return 1 }

// Sealed plaintexts, JSON-encoded before sealing.

// SubjectAttributes is the sealed part of subject.registered and subject.corrected.
// Keys are attribute names (AttributeNames); values are personal data.
type SubjectAttributes struct {
	Attributes map[string]string `json:"attributes"`
}

// CertificateMaterial is the sealed part of certificate.issued.
type CertificateMaterial struct {
	Certificate []byte `json:"certificate"` // DER
	CSR         []byte `json:"csr,omitempty"`
}

// AccessReason is the sealed part of personal-data.accessed.
type AccessReason struct {
	Reason string `json:"reason"`
}

// KnownAttribute reports whether name is a subject attribute caledger holds. The
// names follow the X.520 attribute types a certificate subject can carry, plus
// dns_names and ip_addresses: comma-separated lists for the subject alternative
// names of a server certificate.
func KnownAttribute(name string) bool {
	switch name {
	case "common_name", "given_name", "surname", "email", "organization",
		"organizational_unit", "country", "locality", "serial_number",
		"dns_names", "ip_addresses":
		return true
	}
	return false
}

// RevocationReason is an RFC 5280 CRLReason code. 7 is unused in RFC 5280.
type RevocationReason int

const (
	ReasonUnspecified          RevocationReason = 0
	ReasonKeyCompromise        RevocationReason = 1
	ReasonCACompromise         RevocationReason = 2
	ReasonAffiliationChanged   RevocationReason = 3
	ReasonSuperseded           RevocationReason = 4
	ReasonCessationOfOperation RevocationReason = 5
	ReasonCertificateHold      RevocationReason = 6
	ReasonRemoveFromCRL        RevocationReason = 8
	ReasonPrivilegeWithdrawn   RevocationReason = 9
	ReasonAACompromise         RevocationReason = 10
)

// Valid reports whether r is a reason a CA may put on a revocation. removeFromCRL
// only appears in delta CRLs and certificateHold is not supported (revocation here
// is final).
func (r RevocationReason) Valid() bool {
	switch r {
	case ReasonUnspecified, ReasonKeyCompromise, ReasonCACompromise, ReasonAffiliationChanged,
		ReasonSuperseded, ReasonCessationOfOperation, ReasonPrivilegeWithdrawn, ReasonAACompromise:
		return true
	}
	return false
}

// MarshalPublic returns the canonical JSON of p. encoding/json writes struct fields
// in declaration order and sorts map keys, so the same payload always gives the same
// bytes.
func MarshalPublic(p Payload) ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", p.EventType(), err)
	}
	return b, nil
}

// UnmarshalPublic decodes e's public part into p, checking the type and schema.
func UnmarshalPublic(e *Event, p Payload) error {
	if e.Type != p.EventType() {
		return fmt.Errorf("event %d is %q, not %q", e.Position, e.Type, p.EventType())
	}
	if e.Schema != p.SchemaVersion() {
		return fmt.Errorf("event %d: %s schema %d is not known", e.Position, e.Type, e.Schema)
	}
	if err := json.Unmarshal(e.Public, p); err != nil {
		// JSONProblem: encoding/json's own error may quote the bytes.
		return fmt.Errorf("event %d: %s public part: %s", e.Position, e.Type, JSONProblem(err))
	}
	return nil
}
