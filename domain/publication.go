package domain

import (
	"context"
	"errors"
	"time"
)

// Publication is what a directory may hold of one subject now: its current
// attributes and its certificates in force. A directory publisher makes its entry
// for the subject match it.
type Publication struct {
	SubjectID SubjectID
	// Erased: every key group of the subject was erased (or the subject is
	// unknown); nothing of it may be published, and Attributes and
	// Certificates are empty.
	Erased bool
	// Attributes are the current values, without those of erased key groups;
	// nil when Certificates is empty: a directory then holds no entry for the
	// subject, so its personal data is not read.
	Attributes map[string]string
	// Certificates are the subject's certificates that are issued, neither
	// revoked nor deleted, and not expired, in the order they were linked,
	// and were linked after the subject's latest erasure of key groups: a
	// certificate carries the attributes the subject had when it was signed,
	// which may include values an erasure since covers (the national id of
	// the national-id group, or everything of the identity group).
	Certificates []PublishedCertificate
}

// PublishedCertificate is one certificate of a Publication.
type PublishedCertificate struct {
	Serial   Serial
	CAID     string
	Profile  string
	NotAfter time.Time
	DER      []byte
}

// Publication returns what a directory may hold of subject id now, for the
// certificates of the profiles publish accepts (nil: every profile). It reads
// the subject's personal data for the CA's own processing, like
// SubjectAttributes, and records no access: what is published follows from the
// ledger's events and the directory's configuration. It opens no sealed part
// it does not return: not the certificates of other profiles, and not the
// attributes when no certificate is published. A certificate whose sealed
// material can no longer be opened is left out too.
func (h *Handlers) Publication(ctx context.Context, id SubjectID, publish func(profile string) bool) (Publication, error) {
	p := Publication{SubjectID: id}
	s, events, err := h.loadSubject(ctx, id)
	if errors.Is(err, ErrNotFound) {
		p.Erased = true
		return p, nil
	}
	if err != nil {
		return p, err
	}
	if s.Erased {
		p.Erased = true
		return p, nil
	}
	now := h.Now()
	// Certificates linked before the latest erasure may carry what it covers.
	for _, serial := range s.Serials[s.SerialsBeforeErasure:] {
		c, cevents, err := h.loadCertificateEvents(ctx, serial)
		if errors.Is(err, ErrNotFound) {
			continue // a link whose issuance failed, or is not yet recorded
		}
		if err != nil {
			return Publication{SubjectID: id}, err
		}
		if c.Revoked || c.Deleted || !now.Before(c.NotAfter) || (publish != nil && !publish(c.Profile)) {
			continue
		}
		var m CertificateMaterial
		if err := h.open(ctx, &cevents[0], &m); err != nil {
			if errors.Is(err, ErrShredded) {
				continue
			}
			return Publication{SubjectID: id}, err
		}
		p.Certificates = append(p.Certificates, PublishedCertificate{
			Serial: serial, CAID: c.CAID, Profile: c.Profile, NotAfter: c.NotAfter, DER: m.Certificate,
		})
	}
	if len(p.Certificates) == 0 {
		return p, nil
	}
	if p.Attributes, err = h.attributes(ctx, &s, events); err != nil {
		return Publication{SubjectID: id}, err
	}
	return p, nil
}
