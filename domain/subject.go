package domain

import (
	"fmt"
	"slices"
	"unicode"
	"unicode/utf8"
)

// Subject is the aggregate of one data subject, rebuilt from the public parts of
// its stream. It knows which attributes and certificates the subject has, never
// their values.
type Subject struct {
	ID      SubjectID
	Version uint64
	// Registered is set by subject.registered.
	Registered bool
	// Erased is set when every key group was erased; the subject then accepts no
	// further commands.
	Erased bool
	// ErasedGroups lists groups erased on their own.
	ErasedGroups []string
	// Attributes names the attributes held, sorted.
	Attributes []string
	// Serials lists the certificates linked to the subject, in order.
	Serials []Serial
	// SerialsBeforeErasure counts the Serials linked before the subject's
	// latest erasure of key groups: those certificates may carry values the
	// erasure covers.
	SerialsBeforeErasure int
	// ErasedAt is the ledger position of the subject's latest erasure (0:
	// none).
	ErasedAt uint64
}

// Change is an event an aggregate decided on, before a handler gives it an envelope
// and seals its personal part.
type Change struct {
	Payload Payload
	// Personal, when not nil, is JSON-encoded and sealed under (Subject, KeyGroup).
	Personal any
	Subject  SubjectID
	KeyGroup string
}

// Apply folds one event of the subject's stream into s.
func (s *Subject) Apply(e *Event) error {
	if e.Version != s.Version+1 {
		return fmt.Errorf("subject stream %s: version %d after %d", e.Stream, e.Version, s.Version)
	}
	switch e.Type {
	case TypeSubjectRegistered:
		var p SubjectRegistered
		if err := UnmarshalPublic(e, &p); err != nil {
			return err
		}
		s.ID, s.Registered = p.SubjectID, true
		s.Attributes = mergeNames(nil, p.Attributes)
	case TypeSubjectCorrected:
		var p SubjectCorrected
		if err := UnmarshalPublic(e, &p); err != nil {
			return err
		}
		s.Attributes = mergeNames(s.Attributes, p.Attributes)
	case TypeSubjectErased:
		var p SubjectErased
		if err := UnmarshalPublic(e, &p); err != nil {
			return err
		}
		if len(p.KeyGroups) == 0 {
			s.Erased, s.Attributes = true, nil
		} else {
			s.ErasedGroups = mergeNames(s.ErasedGroups, p.KeyGroups)
		}
		s.SerialsBeforeErasure, s.ErasedAt = len(s.Serials), e.Position
	case TypeSubjectCertificateLinked:
		var p SubjectCertificateLinked
		if err := UnmarshalPublic(e, &p); err != nil {
			return err
		}
		s.Serials = append(s.Serials, p.Serial)
	default:
		return fmt.Errorf("subject stream %s: unexpected event type %q", e.Stream, e.Type)
	}
	s.Version = e.Version
	return nil
}

func mergeNames(have, add []string) []string {
	out := append(slices.Clone(have), add...)
	slices.Sort(out)
	return slices.Compact(out)
}

// Register decides the registration of a new subject with id and attributes.
func (s *Subject) Register(id SubjectID, attrs map[string]string) ([]Change, error) {
	if s.Registered {
		return nil, errorf(KindConflict, "already-registered", "subject %s is already registered", s.ID)
	}
	if !id.Valid() {
		return nil, errorf(KindInvalid, "bad-subject-id", "a subject id is 32 lower-case hex digits")
	}
	if len(attrs) == 0 {
		return nil, errorf(KindInvalid, "no-attributes", "a subject needs at least one attribute")
	}
	names, err := checkAttributes(attrs, false)
	if err != nil {
		return nil, err
	}
	return []Change{{
		Payload:  SubjectRegistered{SubjectID: id, Attributes: names},
		Personal: SubjectAttributes{Attributes: attrs},
		Subject:  id,
		KeyGroup: GroupIdentity,
	}}, nil
}

// Correct decides a correction of some attributes; an empty value removes one.
func (s *Subject) Correct(attrs map[string]string, group string) ([]Change, error) {
	if err := s.active(); err != nil {
		return nil, err
	}
	if !KnownKeyGroup(group) {
		return nil, errorf(KindInvalid, "bad-key-group", "unknown key group; known groups are %s and %s", GroupIdentity, GroupNationalID)
	}
	if slices.Contains(s.ErasedGroups, group) {
		return nil, errorf(KindGone, "group-erased", "key group %q of subject %s was erased", group, s.ID)
	}
	if len(attrs) == 0 {
		return nil, errorf(KindInvalid, "no-attributes", "a correction needs at least one attribute")
	}
	names, err := checkAttributes(attrs, true)
	if err != nil {
		return nil, err
	}
	return []Change{{
		Payload:  SubjectCorrected{SubjectID: s.ID, Attributes: names, KeyGroup: group},
		Personal: SubjectAttributes{Attributes: attrs},
		Subject:  s.ID,
		KeyGroup: group,
	}}, nil
}

// Erase decides the erasure of the given key groups, or of the whole subject when
// groups is empty. basis names the legal ground.
func (s *Subject) Erase(groups []string, basis string) ([]Change, error) {
	if err := s.active(); err != nil {
		return nil, err
	}
	if !KnownErasureBasis(basis) {
		return nil, errorf(KindInvalid, "bad-basis", "unknown erasure basis; known bases are %s, %s, %s and %s",
			BasisErasureRequest, BasisConsentWithdrawn, BasisRetentionExpired, BasisCourtOrder)
	}
	for _, g := range groups {
		if !KnownKeyGroup(g) {
			return nil, errorf(KindInvalid, "bad-key-group", "unknown key group; known groups are %s and %s", GroupIdentity, GroupNationalID)
		}
	}
	groups = mergeNames(nil, groups)
	if len(groups) == 0 {
		groups = nil
	}
	return []Change{{Payload: SubjectErased{SubjectID: s.ID, KeyGroups: groups, Basis: basis}}}, nil
}

// ErasureRecorded reports whether an erasure of groups (all when empty) is already
// in the subject's history, so that only its key destruction may still be due.
func (s *Subject) ErasureRecorded(groups []string) bool {
	if s.Erased {
		return true
	}
	if len(groups) == 0 {
		return false
	}
	for _, g := range groups {
		if !slices.Contains(s.ErasedGroups, g) {
			return false
		}
	}
	return true
}

// LinkCertificate decides the link of a certificate signed by caID with serial to
// the subject. The subject's identity data must still exist.
func (s *Subject) LinkCertificate(serial Serial, caID string) ([]Change, error) {
	if err := s.CheckIdentity(); err != nil {
		return nil, err
	}
	if !ValidSlug(caID) {
		return nil, errorf(KindInvalid, "bad-ca-id", "a CA id is 1 to 64 lower-case letters, digits and hyphens")
	}
	if !serial.Valid() {
		return nil, errorf(KindInvalid, "bad-serial", "serial %q is not positive lower-case hex of at most 20 octets", serial)
	}
	return []Change{{Payload: SubjectCertificateLinked{SubjectID: s.ID, Serial: serial, CAID: caID}}}, nil
}

// ValidSlug reports whether s is 1 to 64 lower-case ASCII letters, digits and
// hyphens: the form of CA ids and profile names, which are public and therefore
// never free text.
func ValidSlug(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// CheckReadable reports whether the subject's personal data may be read: it exists
// and is not erased.
func (s *Subject) CheckReadable() error { return s.active() }

// CheckIdentity reports whether a certificate may carry the subject's identity:
// the subject exists, is not erased, and its identity group was not erased alone.
func (s *Subject) CheckIdentity() error {
	if err := s.active(); err != nil {
		return err
	}
	if slices.Contains(s.ErasedGroups, GroupIdentity) {
		return errorf(KindGone, "identity-erased", "the identity data of subject %s was erased", s.ID)
	}
	return nil
}

func (s *Subject) active() error {
	switch {
	case !s.Registered:
		return errorf(KindNotFound, "no-subject", "no such subject")
	case s.Erased:
		return errorf(KindGone, "subject-erased", "subject %s was erased", s.ID)
	}
	return nil
}

const attributeList = "common_name, given_name, surname, email, organization, organizational_unit, country, locality, serial_number, dns_names, ip_addresses"

// MaxAttributeLen bounds an attribute value, in bytes. X.520 upper bounds are 64 to
// 128 characters; 1024 bytes leaves room for any of them in UTF-8.
const MaxAttributeLen = 1024

// CheckRegistration checks the attributes of a subject to register as
// Register will (known names, values neither empty, too long, nor holding
// control characters), for a caller with costly work to do before it
// registers, such as generating a key. Errors name the attribute, never its
// value.
func CheckRegistration(attrs map[string]string) error {
	if len(attrs) == 0 {
		return errorf(KindInvalid, "no-attributes", "a subject needs at least one attribute")
	}
	_, err := checkAttributes(attrs, false)
	return err
}

// checkAttributes validates attribute names and values and returns the sorted names.
// Errors name the attribute, never its value.
func checkAttributes(attrs map[string]string, allowEmpty bool) ([]string, error) {
	names := make([]string, 0, len(attrs))
	for name, v := range attrs {
		if !KnownAttribute(name) {
			// The name is caller input and may itself be personal data: not echoed.
			return nil, errorf(KindInvalid, "unknown-attribute", "unknown attribute name; known names are %s", attributeList)
		}
		switch {
		case v == "" && !allowEmpty:
			return nil, errorf(KindInvalid, "empty-attribute", "attribute %q is empty", name)
		case len(v) > MaxAttributeLen:
			return nil, errorf(KindInvalid, "attribute-too-long", "attribute %q is longer than %d bytes", name, MaxAttributeLen)
		case !utf8.ValidString(v):
			return nil, errorf(KindInvalid, "attribute-not-utf8", "attribute %q is not valid UTF-8", name)
		case containsControl(v):
			return nil, errorf(KindInvalid, "attribute-control-character", "attribute %q contains a control character", name)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

func containsControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}
