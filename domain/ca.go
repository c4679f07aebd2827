package domain

import (
	"fmt"
	"time"
)

// CA kinds.
const (
	CAKindRoot    = "root"
	CAKindIssuing = "issuing"
)

// CAStream names the stream of one certificate authority: its creation and the
// CRLs it published.
func CAStream(id string) string { return "ca-" + id }

// CAKey is the public reference to a CA's signing key: which provider holds it and
// under which label. It never holds key material.
type CAKey struct {
	Provider  string `json:"provider"` // "software" or "pkcs11"
	Label     string `json:"label"`
	Algorithm string `json:"algorithm"` // "P-256", "P-384", "Ed25519"
}

// CACreated: a certificate authority was set up. Its certificate is public: a CA
// certificate names an organisation, never a person.
type CACreated struct {
	CAID        string `json:"ca_id"`
	Kind        string `json:"kind"` // CAKindRoot or CAKindIssuing
	ParentID    string `json:"parent_id,omitempty"`
	Certificate []byte `json:"certificate"` // DER
	Key         CAKey  `json:"key"`
	// RetainUntilExpiry is the CA's retention policy: its certificates may be
	// deleted only once they have expired, revoked or not.
	RetainUntilExpiry bool `json:"retain_until_expiry"`
}

// CRLPublished: a CA signed a CRL. Numbers increase by one per CA, which the
// ledger enforces by appending at the CA stream's exact version.
type CRLPublished struct {
	CAID       string    `json:"ca_id"`
	Number     uint64    `json:"number"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update"`
	Entries    int       `json:"entries"`
	// SHA256 is the hex SHA-256 of the DER CRL, so auditors can match a CRL
	// they were served to the ledger.
	SHA256 string `json:"sha256"`
}

// OCSPResponderIssued: a CA issued a delegated OCSP responder certificate
// (RFC 6960 section 4.2.2.2) for a key that a server holds in memory only,
// and that signs the CA's OCSP responses until the certificate expires. The
// certificate is public: it names the CA's organisation, never a person.
type OCSPResponderIssued struct {
	CAID        string    `json:"ca_id"`
	Serial      Serial    `json:"serial"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Certificate []byte    `json:"certificate"` // DER
}

// CertificateRejected: the signer refused a certificate because pre-issuance
// linting found errors. Nothing was issued; the serial is never used.
type CertificateRejected struct {
	Serial    Serial    `json:"serial"`
	CAID      string    `json:"ca_id"`
	SubjectID SubjectID `json:"subject_id"`
	Profile   string    `json:"profile"`
	Lints     []string  `json:"lints"`
}

func (CACreated) EventType() string           { return TypeCACreated }
func (CRLPublished) EventType() string        { return TypeCRLPublished }
func (OCSPResponderIssued) EventType() string { return TypeOCSPResponderIssued }
func (CertificateRejected) EventType() string { return TypeCertificateRejected }

func (CACreated) SchemaVersion() uint16           { return 1 }
func (CRLPublished) SchemaVersion() uint16        { return 1 }
func (OCSPResponderIssued) SchemaVersion() uint16 { return 1 }
func (CertificateRejected) SchemaVersion() uint16 { return 1 }

// CA is the aggregate of one certificate authority, rebuilt from its stream.
type CA struct {
	Created CACreated
	Version uint64
	// CRLNumber is the number of the last CRL published, 0 if none.
	CRLNumber uint64
	// CRLThisUpdate is the thisUpdate of the last CRL published, zero if
	// none.
	CRLThisUpdate time.Time
}

// Exists reports whether the CA was created.
func (c *CA) Exists() bool { return c.Version > 0 }

// Apply folds one event of the CA's stream into c.
func (c *CA) Apply(e *Event) error {
	if e.Version != c.Version+1 {
		return fmt.Errorf("CA stream %s: version %d after %d", e.Stream, e.Version, c.Version)
	}
	switch e.Type {
	case TypeCACreated:
		if err := UnmarshalPublic(e, &c.Created); err != nil {
			return err
		}
	case TypeCRLPublished:
		var p CRLPublished
		if err := UnmarshalPublic(e, &p); err != nil {
			return err
		}
		c.CRLNumber, c.CRLThisUpdate = p.Number, p.ThisUpdate
	case TypeOCSPResponderIssued:
		// Nothing of the CA's state depends on its responders: the event is
		// for auditors and relying parties matching a responder certificate.
	default:
		return fmt.Errorf("CA stream %s: unexpected event type %q", e.Stream, e.Type)
	}
	c.Version = e.Version
	return nil
}

// Create decides the creation of a CA.
func (c *CA) Create(p CACreated) ([]Change, error) {
	if c.Exists() {
		return nil, errorf(KindConflict, "ca-exists", "CA %s already exists", c.Created.CAID)
	}
	switch {
	case !ValidSlug(p.CAID):
		return nil, errorf(KindInvalid, "bad-ca-id", "a CA id is 1 to 64 lower-case letters, digits and hyphens")
	case p.Kind != CAKindRoot && p.Kind != CAKindIssuing:
		return nil, errorf(KindInvalid, "bad-ca-kind", "a CA is %s or %s", CAKindRoot, CAKindIssuing)
	case p.Kind == CAKindIssuing && !ValidSlug(p.ParentID):
		return nil, errorf(KindInvalid, "bad-parent", "an issuing CA names its parent CA")
	case len(p.Certificate) == 0:
		return nil, errorf(KindInvalid, "no-certificate", "a CA needs its certificate")
	case !ValidSlug(p.Key.Label) || p.Key.Provider == "":
		return nil, errorf(KindInvalid, "bad-key", "a CA key names its provider and a slug label")
	}
	return []Change{{Payload: p}}, nil
}

// PublishCRL decides the record of a CRL. p.Number must be the next number,
// and p.ThisUpdate must not come before the last CRL's: a relying party that
// takes the CRL with the highest number must not get an older one.
func (c *CA) PublishCRL(p CRLPublished) ([]Change, error) {
	if !c.Exists() {
		return nil, errorf(KindNotFound, "no-ca", "no such CA")
	}
	if p.Number != c.CRLNumber+1 {
		return nil, errorf(KindConflict, "crl-number", "CRL number %d does not follow %d", p.Number, c.CRLNumber)
	}
	if !p.NextUpdate.After(p.ThisUpdate) {
		return nil, errorf(KindInvalid, "bad-crl-dates", "a CRL's next update must follow its this update")
	}
	if p.ThisUpdate.Before(c.CRLThisUpdate) {
		return nil, errorf(KindInvalid, "bad-crl-dates", "CRL %d's this update comes before CRL %d's", p.Number, c.CRLNumber)
	}
	p.CAID = c.Created.CAID
	return []Change{{Payload: p}}, nil
}

// RecordOCSPResponder decides the record of a delegated OCSP responder
// certificate of the CA.
func (c *CA) RecordOCSPResponder(p OCSPResponderIssued) ([]Change, error) {
	if !c.Exists() {
		return nil, errorf(KindNotFound, "no-ca", "no such CA")
	}
	switch {
	case !p.Serial.Valid():
		return nil, errorf(KindInvalid, "bad-serial", "an OCSP responder certificate needs a serial")
	case !p.NotAfter.After(p.NotBefore):
		return nil, errorf(KindInvalid, "bad-validity", "an OCSP responder certificate must end after it starts")
	case len(p.Certificate) == 0:
		return nil, errorf(KindInvalid, "no-certificate", "an OCSP responder needs its certificate")
	}
	p.CAID = c.Created.CAID
	return []Change{{Payload: p}}, nil
}
