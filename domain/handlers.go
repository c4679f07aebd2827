package domain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"time"
)

// Handlers run commands: they load an aggregate from its stream, let it decide,
// seal the personal parts of the resulting events and append them. Every method
// returns only after its events are durable; nothing personal is returned before.
//
// All exported fields are required. A Handlers must not be copied after first
// use.
type Handlers struct {
	Events Events
	Vault  Sealer
	Signer CertificateSigner
	Now    func() time.Time
	Rand   io.Reader

	// subjects caches subject aggregates, so that a command on a subject with
	// a long history (every issuance appends a link) reads only what is new.
	// It holds public parts and sealed events, never plaintext.
	subjects subjectCache
}

// maxAttempts bounds the retries of a command that lost an optimistic-concurrency
// race: each retry reloads the aggregate and decides again.
const maxAttempts = 8

// RegisterSubject registers a new subject and returns its id.
func (h *Handlers) RegisterSubject(ctx context.Context, actor Actor, attrs map[string]string) (SubjectID, error) {
	id, err := NewSubjectID(h.Rand)
	if err != nil {
		return "", unavailable("random source", err)
	}
	var s Subject
	changes, err := s.Register(id, attrs)
	if err != nil {
		return "", err
	}
	if _, err := h.commit(ctx, actor, SubjectStream(id), 0, changes); err != nil {
		return "", err
	}
	return id, nil
}

// CorrectSubject records corrected attributes of subject id under key group group.
func (h *Handlers) CorrectSubject(ctx context.Context, actor Actor, id SubjectID, attrs map[string]string, group string) error {
	return h.retry(ctx, func() error {
		s, _, err := h.loadSubject(ctx, id)
		if err != nil {
			return err
		}
		changes, err := s.Correct(attrs, group)
		if err != nil {
			return err
		}
		_, err = h.commit(ctx, actor, SubjectStream(id), s.Version, changes)
		return err
	})
}

// EraseSubject records the erasure of subject id (all of it, or the given key
// groups), then destroys the data keys. Erasing what is already erased records
// nothing, destroys the keys again and answers the conflict "already-erased":
// that is how an erasure whose key destruction failed ("shred-pending") is
// completed (so is domain.ReapplyErasures, which caledger serve runs at
// start), and how one of two concurrent erasures learns the other won. An
// erasure is never given up for losing races to other commands: it retries
// until ctx ends. Once recorded, its key destruction runs though ctx ends.
func (h *Handlers) EraseSubject(ctx context.Context, actor Actor, id SubjectID, groups []string, basis string) error {
	recorded := false
	err := h.retryPatiently(ctx, func() error {
		s, _, err := h.loadSubject(ctx, id)
		if err != nil {
			return err
		}
		if s.ErasureRecorded(groups) {
			return nil // only the key destruction below may still be due
		}
		changes, err := s.Erase(groups, basis)
		if err != nil {
			return err
		}
		_, err = h.commit(ctx, actor, SubjectStream(id), s.Version, changes)
		recorded = err == nil
		return err
	})
	if err != nil {
		return err
	}
	// Recorded, the erasure is owed its key destruction though the caller
	// goes away.
	if err := h.Vault.Shred(context.WithoutCancel(ctx), id, groups...); err != nil {
		return &Error{Kind: KindUnavailable, Code: "shred-pending",
			Detail: fmt.Sprintf("erasure of subject %s is recorded but its keys are not yet destroyed; repeat the erasure", id), Err: err}
	}
	if !recorded {
		// Another erasure (here or on another node) recorded it first; the
		// keys are destroyed all the same.
		return &Error{Kind: KindConflict, Code: "already-erased",
			Detail: fmt.Sprintf("subject %s was already erased; its data keys are destroyed", id)}
	}
	return nil
}

// IssueRequest asks for a certificate for a registered subject.
type IssueRequest struct {
	SubjectID SubjectID
	CAID      string
	Profile   string
	CSR       []byte // DER PKCS#10
	// KeyGenerated says caledger generated the CSR's key pair for a soft
	// token; certificate.issued records it publicly.
	KeyGenerated bool
}

// Issued is the outcome of an issuance.
type Issued struct {
	Serial      Serial
	CAID        string
	Certificate []byte // DER
	Position    uint64 // of the certificate.issued event
}

// IssueCertificate has the signer sign a certificate from the subject's current
// attributes, links it to the subject at the exact version those attributes were
// read at, and records it. An erasure or correction recorded meanwhile makes the
// link fail and the issuance start over (with the new data, or refused). The
// certificate is returned only once its events are durable, and not at all if the
// subject was erased before then.
func (h *Handlers) IssueCertificate(ctx context.Context, actor Actor, req IssueRequest) (Issued, error) {
	if !ValidSlug(req.Profile) {
		return Issued{}, errorf(KindInvalid, "bad-profile", "a profile name is 1 to 64 lower-case letters, digits and hyphens")
	}
	var out Issued
	err := h.retry(ctx, func() error {
		s, events, err := h.loadSubject(ctx, req.SubjectID)
		if err != nil {
			return err
		}
		serial, err := h.newSerial()
		if err != nil {
			return err
		}
		link, err := s.LinkCertificate(serial, req.CAID)
		if err != nil {
			return err
		}
		attrs, err := h.attributes(ctx, &s, events)
		if err != nil {
			return err
		}
		signed, err := h.Signer.SignCertificate(ctx, SignRequest{
			CAID: req.CAID, Serial: serial, Profile: req.Profile, Attributes: attrs, CSR: req.CSR, Now: h.Now(),
		})
		if err != nil {
			var lint *LintFailure
			if errors.As(err, &lint) {
				return h.reject(ctx, actor, req, serial, lint, err)
			}
			return signerError("signer", err)
		}
		if signed.Serial != serial {
			return unavailable("signer", fmt.Errorf("certificate has serial %s, want %s", signed.Serial, serial))
		}
		var c Certificate
		changes, err := c.Issue(CertificateIssued{
			Serial: serial, CAID: req.CAID, SubjectID: req.SubjectID, Profile: req.Profile,
			NotBefore: signed.NotBefore.UTC(), NotAfter: signed.NotAfter.UTC(), SPKISHA256: signed.SPKISHA256,
			KeyGenerated: req.KeyGenerated,
		}, CertificateMaterial{Certificate: signed.DER, CSR: req.CSR})
		if err != nil {
			return err
		}
		// Sealed before the link: a key destroyed by now fails here, not after it.
		issued, err := h.prepare(ctx, actor, CertificateStream(serial), 0, changes)
		if err != nil {
			return err
		}
		if _, err := h.commit(ctx, actor, SubjectStream(req.SubjectID), s.Version, link); err != nil {
			return err // a conflict starts over
		}
		// NoStream: a serial is recorded at most once, whatever the random source does.
		appended, err := h.append(ctx, CertificateStream(serial), 0, issued)
		if errors.Is(err, ErrWrongVersion) {
			return &Error{Kind: KindUnavailable, Code: "serial-collision", Detail: fmt.Sprintf("serial %s is already recorded", serial), Err: err}
		}
		if err != nil {
			return err
		}
		out = Issued{Serial: serial, CAID: req.CAID, Certificate: signed.DER, Position: appended.LastPosition}
		return nil
	})
	if err != nil {
		return Issued{}, err
	}
	// An erasure recorded between the link and now erased a subject that had this
	// certificate; its data must not leave the process after that.
	s, _, err := h.loadSubject(ctx, req.SubjectID)
	if err != nil {
		return Issued{}, err
	}
	if err := s.CheckIdentity(); err != nil {
		return Issued{}, err
	}
	return out, nil
}

// reject records that linting refused the certificate with serial, then returns
// cause: the caller learns that nothing was issued, and auditors see why.
func (h *Handlers) reject(ctx context.Context, actor Actor, req IssueRequest, serial Serial, lint *LintFailure, cause error) error {
	change := []Change{{Payload: CertificateRejected{Serial: serial, CAID: req.CAID, SubjectID: req.SubjectID,
		Profile: req.Profile, Lints: lint.Lints}}}
	if _, err := h.commit(ctx, actor, CertificateStream(serial), 0, change); err != nil {
		if errors.Is(err, ErrWrongVersion) {
			return &Error{Kind: KindUnavailable, Code: "serial-collision", Detail: fmt.Sprintf("serial %s is already recorded", serial), Err: err}
		}
		return err
	}
	return cause
}

// Erased is what of a subject was erased.
type Erased struct {
	// All: every key group; otherwise Groups lists those erased on their own.
	All    bool
	Groups []string
	// At is the ledger position of the latest erasure (0: none).
	At uint64
}

// Erased reports what of subject id was erased. It reads only public facts.
func (h *Handlers) Erased(ctx context.Context, id SubjectID) (Erased, error) {
	s, _, err := h.loadSubject(ctx, id)
	if err != nil {
		return Erased{}, err
	}
	return Erased{All: s.Erased, Groups: s.ErasedGroups, At: s.ErasedAt}, nil
}

// Reissued pairs a certificate superseded by a correction with its replacement.
type Reissued struct {
	Old Serial
	New Issued
}

// CorrectAndReissue records a correction like CorrectSubject, then reissues every
// certificate of the subject that is still valid (issued, not revoked, deleted or
// expired) with the corrected data: the same CA, profile and CSR, hence the same
// public key (a replacement of a soft token's certificate is marked
// key_generated too). Each replacement is issued before its predecessor is revoked with
// reason superseded, so the subject is never left without a valid certificate.
//
// allow, when set, is asked about the profile of every certificate to reissue
// before anything is recorded, and an error from it refuses the command with
// nothing written (the API refuses an officer the reissue of a client
// credential, which is the administrators' to issue). It is asked again before
// each reissue, for a certificate linked to the subject meanwhile.
//
// Once the correction is recorded, the reissues run to the end though ctx
// ends: a caller that goes away does not leave some certificates replaced and
// others not. On an error, the correction is recorded and the returned list
// holds the reissues that completed: the caller must still deliver those
// certificates.
func (h *Handlers) CorrectAndReissue(ctx context.Context, actor Actor, id SubjectID, attrs map[string]string, group string, allow func(profile string) error) ([]Reissued, error) {
	if allow == nil {
		allow = func(string) error { return nil }
	}
	if err := h.allowReissue(ctx, id, allow); err != nil {
		return nil, err
	}
	if err := h.CorrectSubject(ctx, actor, id, attrs, group); err != nil {
		return nil, err
	}
	ctx = context.WithoutCancel(ctx)
	s, _, err := h.loadSubject(ctx, id)
	if err != nil {
		return nil, err
	}
	var out []Reissued
	for _, serial := range s.Serials {
		c, events, err := h.loadCertificateEvents(ctx, serial)
		if errors.Is(err, ErrNotFound) {
			continue // a link whose issuance failed
		}
		if err != nil {
			return out, err
		}
		if !h.reissuable(c) {
			continue
		}
		if err := allow(c.Profile); err != nil {
			return out, err
		}
		var material CertificateMaterial
		if err := h.open(ctx, &events[0], &material); err != nil {
			if errors.Is(err, ErrShredded) {
				return out, &Error{Kind: KindGone, Code: "subject-erased", Detail: fmt.Sprintf("subject %s was erased", id), Err: err}
			}
			return out, err
		}
		if len(material.CSR) == 0 {
			return out, errorf(KindConflict, "no-csr", "certificate %s has no recorded CSR to reissue from", serial)
		}
		issued, err := h.IssueCertificate(ctx, actor, IssueRequest{SubjectID: id, CAID: c.CAID, Profile: c.Profile, CSR: material.CSR,
			KeyGenerated: c.KeyGenerated})
		if err != nil {
			return out, err
		}
		// Supersede the old certificate at the version read above. If anything
		// changed it since (a concurrent reissue or revocation), that one won:
		// the replacement just issued is withdrawn, so one old certificate never
		// ends up with two valid replacements.
		changes, err := c.Supersede(issued.Serial, h.Now())
		if err == nil {
			_, err = h.commit(ctx, actor, CertificateStream(serial), c.Version, changes)
		}
		if errors.Is(err, ErrWrongVersion) {
			if werr := h.withdraw(ctx, actor, issued.Serial); werr != nil {
				return out, werr
			}
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, Reissued{Old: serial, New: issued})
	}
	return out, nil
}

// reissuable reports whether a correction reissues c: it is still valid
// (issued, and not revoked, deleted or expired).
func (h *Handlers) reissuable(c Certificate) bool {
	return !c.Revoked && !c.Deleted && h.Now().Before(c.NotAfter)
}

// allowReissue asks allow about the profile of every certificate of subject
// id that a correction would reissue now.
func (h *Handlers) allowReissue(ctx context.Context, id SubjectID, allow func(profile string) error) error {
	s, _, err := h.loadSubject(ctx, id)
	if err != nil || s.Erased {
		return err // an erased subject: the correction answers that
	}
	for _, serial := range s.Serials {
		c, err := h.loadCertificate(ctx, serial)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if h.reissuable(c) {
			if err := allow(c.Profile); err != nil {
				return err
			}
		}
	}
	return nil
}

// maxWithdrawals bounds the certificates withdraw revokes or reads again.
const maxWithdrawals = 64

// withdraw revokes (reason superseded) serial, a replacement that a reissue
// issued and then lost: another reissue superseded the old certificate first.
// Until it is revoked here, serial is valid, so a concurrent reissue may
// already have superseded it in turn; the replacement that one issued
// (ReplacedBy) is withdrawn then, and so on along the chain. Otherwise that
// replacement would stay valid beside the winner's, two certificates where
// the subject had one.
func (h *Handlers) withdraw(ctx context.Context, actor Actor, serial Serial) error {
	for range maxWithdrawals {
		c, err := h.loadCertificate(ctx, serial)
		if err != nil {
			return err
		}
		if c.Revoked {
			if c.ReplacedBy == "" {
				return nil
			}
			serial = c.ReplacedBy
			continue
		}
		if c.Deleted || !h.Now().Before(c.NotAfter) {
			return nil // expired: valid no longer
		}
		changes, err := c.Revoke(ReasonSuperseded, h.Now())
		if err != nil {
			return err
		}
		_, err = h.commit(ctx, actor, CertificateStream(serial), c.Version, changes)
		if !errors.Is(err, ErrWrongVersion) {
			return err
		}
		// Changed meanwhile (superseded, perhaps): read it again.
	}
	return &Error{Kind: KindConflict, Code: "concurrent-change",
		Detail: fmt.Sprintf("certificate %s, reissued by a correction that lost to another, kept changing concurrently and may still be valid: revoke it", serial)}
}

// CreateCA records the creation of a certificate authority.
func (h *Handlers) CreateCA(ctx context.Context, actor Actor, p CACreated) error {
	var c CA
	changes, err := c.Create(p)
	if err != nil {
		return err
	}
	_, err = h.commit(ctx, actor, CAStream(p.CAID), 0, changes)
	if errors.Is(err, ErrWrongVersion) {
		return errorf(KindConflict, "ca-exists", "CA %s already exists", p.CAID)
	}
	return err
}

// LoadCA rebuilds the CA id from its stream.
func (h *Handlers) LoadCA(ctx context.Context, id string) (CA, error) {
	var c CA
	if !ValidSlug(id) {
		return c, errorf(KindNotFound, "no-ca", "no such CA")
	}
	events, err := h.read(ctx, CAStream(id))
	if err != nil {
		return c, err
	}
	for i := range events {
		if err := c.Apply(&events[i]); err != nil {
			return c, unavailable("CA stream", err)
		}
	}
	if !c.Exists() {
		return c, errorf(KindNotFound, "no-ca", "no such CA")
	}
	return c, nil
}

// PublishCRL has sign build the next CRL of CA id and records it; the CRL is
// returned only once its record is durable. sign receives the CRL number and
// the thisUpdate of the CA's last CRL (zero if none), and returns the record
// and the DER. Another publisher winning the number makes sign run again with
// the next one, and that publisher's CRL as the last.
func (h *Handlers) PublishCRL(ctx context.Context, actor Actor, id string, sign func(number uint64, last time.Time) (CRLPublished, []byte, error)) ([]byte, CRLPublished, error) {
	var der []byte
	var rec CRLPublished
	err := h.retry(ctx, func() error {
		c, err := h.LoadCA(ctx, id)
		if err != nil {
			return err
		}
		p, crl, err := sign(c.CRLNumber+1, c.CRLThisUpdate)
		if err != nil {
			return signerError("CRL signer", err)
		}
		changes, err := c.PublishCRL(p)
		if err != nil {
			return err
		}
		if _, err := h.commit(ctx, actor, CAStream(id), c.Version, changes); err != nil {
			return err
		}
		der, rec = crl, changes[0].Payload.(CRLPublished)
		return nil
	})
	return der, rec, err
}

// IssueOCSPResponder has sign make a delegated OCSP responder certificate of
// CA id with a new serial, and records it; the record is returned only once it
// is durable, and only then may the certificate sign responses. sign is
// called once: a concurrent change of the CA's stream (a CRL, perhaps on
// another node) retries the record, patiently, not the signature.
func (h *Handlers) IssueOCSPResponder(ctx context.Context, actor Actor, id string, sign func(serial Serial) (OCSPResponderIssued, error)) (OCSPResponderIssued, error) {
	if _, err := h.LoadCA(ctx, id); err != nil {
		return OCSPResponderIssued{}, err
	}
	serial, err := h.newSerial()
	if err != nil {
		return OCSPResponderIssued{}, err
	}
	p, err := sign(serial)
	if err != nil {
		return OCSPResponderIssued{}, signerError("OCSP responder signer", err)
	}
	if p.Serial != serial {
		return OCSPResponderIssued{}, errorf(KindInvalid, "bad-serial", "the OCSP responder certificate does not carry the serial drawn for it")
	}
	var rec OCSPResponderIssued
	err = h.retryPatiently(ctx, func() error {
		c, err := h.LoadCA(ctx, id)
		if err != nil {
			return err
		}
		changes, err := c.RecordOCSPResponder(p)
		if err != nil {
			return err
		}
		if _, err := h.commit(ctx, actor, CAStream(id), c.Version, changes); err != nil {
			return err
		}
		rec = changes[0].Payload.(OCSPResponderIssued)
		return nil
	})
	return rec, err
}

// RevokeCertificate revokes certificate serial for reason.
func (h *Handlers) RevokeCertificate(ctx context.Context, actor Actor, serial Serial, reason RevocationReason) error {
	return h.retry(ctx, func() error {
		c, err := h.loadCertificate(ctx, serial)
		if err != nil {
			return err
		}
		changes, err := c.Revoke(reason, h.Now())
		if err != nil {
			return err
		}
		_, err = h.commit(ctx, actor, CertificateStream(serial), c.Version, changes)
		return err
	})
}

// DeleteCertificate deletes a revoked or expired certificate; retainUntilExpiry is
// the issuing CA's retention policy.
func (h *Handlers) DeleteCertificate(ctx context.Context, actor Actor, serial Serial, retainUntilExpiry bool) error {
	return h.retry(ctx, func() error {
		c, err := h.loadCertificate(ctx, serial)
		if err != nil {
			return err
		}
		changes, err := c.Delete(h.Now(), retainUntilExpiry)
		if err != nil {
			return err
		}
		_, err = h.commit(ctx, actor, CertificateStream(serial), c.Version, changes)
		return err
	})
}

// ReadSubject returns the current attributes of subject id. It first records who
// read them and why (personal-data.accessed, with the reason sealed); the data is
// returned only once that record is durable.
func (h *Handlers) ReadSubject(ctx context.Context, actor Actor, id SubjectID, operation, reason string) (map[string]string, error) {
	s, events, err := h.loadSubject(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.CheckReadable(); err != nil {
		return nil, err
	}
	if err := h.recordAccess(ctx, actor, id, operation, reason); err != nil {
		return nil, err
	}
	return h.attributes(ctx, &s, events)
}

// RecordAccess appends a personal-data.accessed event for subject id, for reads
// of its data made elsewhere (a report, an export). The subject must exist and
// not be erased.
func (h *Handlers) RecordAccess(ctx context.Context, actor Actor, id SubjectID, operation, reason string) error {
	s, _, err := h.loadSubject(ctx, id)
	if err != nil {
		return err
	}
	if err := s.CheckReadable(); err != nil {
		return err
	}
	return h.recordAccess(ctx, actor, id, operation, reason)
}

func (h *Handlers) recordAccess(ctx context.Context, actor Actor, id SubjectID, operation, reason string) error {
	switch operation {
	case "read", "search", "report", "export":
	default:
		return errorf(KindInvalid, "bad-operation", "access operation must be read, search, report or export")
	}
	switch {
	case reason == "":
		return errorf(KindInvalid, "no-reason", "reading personal data requires a reason")
	case len(reason) > MaxAttributeLen:
		return errorf(KindInvalid, "reason-too-long", "an access reason is at most %d bytes", MaxAttributeLen)
	}
	change := []Change{{
		Payload:  PersonalDataAccessed{SubjectID: id, Operation: operation},
		Personal: AccessReason{Reason: reason},
		Subject:  id,
		KeyGroup: GroupIdentity,
	}}
	// The sealed reason is bound to an exact stream version, so appends name one.
	// A conflict reports the actual version: retry at it.
	version := uint64(0)
	for range maxAttempts {
		_, err := h.commit(ctx, actor, AccessStream(id), version, change)
		var wv *WrongVersionError
		if !errors.As(err, &wv) {
			return err
		}
		version = wv.Actual
	}
	return &Error{Kind: KindConflict, Code: "concurrent-change", Detail: "the access log changed concurrently; try again"}
}

// SubjectAttributes returns the current attributes of subject id without recording
// an access: for the caller's own processing (issuance, reports), never for display.
func (h *Handlers) SubjectAttributes(ctx context.Context, id SubjectID) (map[string]string, error) {
	s, events, err := h.loadSubject(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.CheckReadable(); err != nil {
		return nil, err
	}
	return h.attributes(ctx, &s, events)
}

// attributes folds the sealed attributes of a subject's events. Attributes in
// erased key groups are skipped: they no longer exist.
func (h *Handlers) attributes(ctx context.Context, s *Subject, events []Event) (map[string]string, error) {
	attrs := map[string]string{}
	for i := range events {
		e := &events[i]
		if e.Type != TypeSubjectRegistered && e.Type != TypeSubjectCorrected {
			continue
		}
		// An erased group is skipped from the subject's own history, not only
		// because its key fails to open: a node whose vault has not yet heard
		// of the erasure must not use a cached key for it.
		if e.Sealed != nil && slices.Contains(s.ErasedGroups, e.Sealed.KeyGroup) {
			continue
		}
		var a SubjectAttributes
		if err := h.open(ctx, e, &a); err != nil {
			if errors.Is(err, ErrShredded) {
				continue
			}
			return nil, err
		}
		for k, v := range a.Attributes {
			if v == "" {
				delete(attrs, k)
			} else {
				attrs[k] = v
			}
		}
	}
	return attrs, nil
}

func (h *Handlers) loadSubject(ctx context.Context, id SubjectID) (Subject, []Event, error) {
	var s Subject
	if !id.Valid() {
		return s, nil, errorf(KindNotFound, "no-subject", "no such subject")
	}
	// The cache holds a prefix of the stream; the store has the rest. Events
	// never change, so the prefix is never stale, only short.
	var attrs []Event
	if c, ok := h.subjects.get(id); ok {
		s, attrs = c.s, c.attrs
	}
	for e, err := range h.Events.ReadStream(ctx, SubjectStream(id), s.Version+1) {
		if err != nil {
			return Subject{}, nil, unavailable("event store", err)
		}
		if err := s.Apply(&e); err != nil {
			return Subject{}, nil, unavailable("subject stream", err)
		}
		if e.Type == TypeSubjectRegistered || e.Type == TypeSubjectCorrected {
			attrs = append(attrs, e)
		}
	}
	if !s.Registered {
		return s, nil, errorf(KindNotFound, "no-subject", "no such subject")
	}
	h.subjects.put(id, s, attrs)
	return s, attrs, nil
}

// CertificateState rebuilds certificate serial from the ledger: its public
// facts and status, never its sealed material. It is the authority when a view
// has not caught up.
func (h *Handlers) CertificateState(ctx context.Context, serial Serial) (Certificate, error) {
	return h.loadCertificate(ctx, serial)
}

func (h *Handlers) loadCertificate(ctx context.Context, serial Serial) (Certificate, error) {
	c, _, err := h.loadCertificateEvents(ctx, serial)
	return c, err
}

// loadCertificateEvents is loadCertificate that also returns the stream, whose
// first event is then certificate.issued.
func (h *Handlers) loadCertificateEvents(ctx context.Context, serial Serial) (Certificate, []Event, error) {
	var c Certificate
	if !serial.Valid() {
		return c, nil, errorf(KindNotFound, "no-certificate", "no such certificate")
	}
	events, err := h.read(ctx, CertificateStream(serial))
	if err != nil {
		return c, nil, err
	}
	for i := range events {
		if err := c.Apply(&events[i]); err != nil {
			return c, nil, unavailable("certificate stream", err)
		}
	}
	if !c.Issued {
		return c, nil, errorf(KindNotFound, "no-certificate", "no such certificate")
	}
	return c, events, nil
}

func (h *Handlers) read(ctx context.Context, stream string) ([]Event, error) {
	var events []Event
	for e, err := range h.Events.ReadStream(ctx, stream, 1) {
		if err != nil {
			return nil, unavailable("event store", err)
		}
		events = append(events, e)
	}
	return events, nil
}

// commit gives changes their envelopes, seals them and appends them at expected
// version v.
func (h *Handlers) commit(ctx context.Context, actor Actor, stream string, v uint64, changes []Change) (Appended, error) {
	events, err := h.prepare(ctx, actor, stream, v, changes)
	if err != nil {
		return Appended{}, err
	}
	return h.append(ctx, stream, v, events)
}

// prepare gives changes their envelopes for versions v+1, v+2, ... and seals them.
func (h *Handlers) prepare(ctx context.Context, actor Actor, stream string, v uint64, changes []Change) ([]Event, error) {
	now := h.Now().UTC()
	events := make([]Event, len(changes))
	for i, c := range changes {
		id, err := NewEventID(h.Rand)
		if err != nil {
			return nil, unavailable("random source", err)
		}
		public, err := MarshalPublic(c.Payload)
		if err != nil {
			return nil, err
		}
		e := &events[i]
		*e = Event{Stream: stream, Version: v + uint64(i) + 1, ID: id, Type: c.Payload.EventType(),
			Schema: c.Payload.SchemaVersion(), Time: now, Actor: actor, Public: public}
		if c.Personal != nil {
			if err := h.seal(ctx, e, c); err != nil {
				return nil, err
			}
		}
	}
	return events, nil
}

// append appends prepared events at expected version v. A version conflict is
// returned as is, for the caller to retry; other failures become domain errors.
func (h *Handlers) append(ctx context.Context, stream string, v uint64, events []Event) (Appended, error) {
	appended, err := h.Events.Append(ctx, stream, Exact(v), events...)
	switch {
	case err == nil:
		return appended, nil
	case errors.Is(err, ErrWrongVersion):
		return appended, err
	case errors.Is(err, ErrTooLarge):
		return appended, &Error{Kind: KindTooLarge, Code: "too-large", Detail: "the request is too large to record", Err: err}
	}
	return appended, unavailable("event store", err)
}

func (h *Handlers) seal(ctx context.Context, e *Event, c Change) error {
	plaintext, err := json.Marshal(c.Personal)
	if err != nil {
		return fmt.Errorf("encode sealed part of %s: %w", e.Type, err)
	}
	e.Sealed = &Sealed{SubjectID: c.Subject, KeyGroup: c.KeyGroup}
	sealed, err := h.Vault.Seal(ctx, c.Subject, c.KeyGroup, plaintext, SealedAD(e))
	if err != nil {
		if errors.Is(err, ErrShredded) {
			return &Error{Kind: KindGone, Code: "subject-erased", Detail: fmt.Sprintf("subject %s was erased", c.Subject), Err: err}
		}
		return unavailable("key vault", err)
	}
	e.Sealed = &sealed
	return nil
}

// open decrypts e's sealed part into v. A destroyed key gives an error matching
// ErrShredded.
func (h *Handlers) open(ctx context.Context, e *Event, v any) error {
	if e.Sealed == nil {
		return fmt.Errorf("event %d has no sealed part", e.Position)
	}
	plaintext, err := h.Vault.Open(ctx, e.Sealed, SealedAD(e))
	if err != nil {
		if errors.Is(err, ErrShredded) {
			return err
		}
		return unavailable("key vault", err)
	}
	if err := json.Unmarshal(plaintext, v); err != nil {
		// The decoder's message may quote the plaintext.
		return unavailable("sealed part", fmt.Errorf("event %d: %s", e.Position, JSONProblem(err)))
	}
	return nil
}

// retry runs f again while it loses optimistic-concurrency races, up to
// maxAttempts times.
func (h *Handlers) retry(ctx context.Context, f func() error) error {
	var err error
	for range maxAttempts {
		if err = f(); !errors.Is(err, ErrWrongVersion) {
			return err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return &Error{Kind: KindConflict, Code: "concurrent-change", Detail: "the record changed concurrently; try again", Err: err}
}

// retryPatiently is retry for commands that must not be given up, such as an
// erasure racing a stream of issuances: it backs off (1 ms doubling to 100 ms)
// and keeps trying until ctx ends.
func (h *Handlers) retryPatiently(ctx context.Context, f func() error) error {
	backoff := time.Millisecond
	for {
		err := f()
		if !errors.Is(err, ErrWrongVersion) {
			return err
		}
		select {
		case <-ctx.Done():
			return &Error{Kind: KindConflict, Code: "concurrent-change", Detail: "the record kept changing until the request ended; try again", Err: err}
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// newSerial draws a positive serial of 127 random bits (RFC 5280 allows 20 octets;
// CA/Browser Forum rules ask for at least 64 bits from a CSPRNG).
func (h *Handlers) newSerial() (Serial, error) {
	var b [16]byte
	for {
		if _, err := io.ReadFull(h.Rand, b[:]); err != nil {
			return "", unavailable("random source", err)
		}
		b[0] &= 0x7f
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return Serial(n.Text(16)), nil
		}
	}
}

func unavailable(what string, err error) *Error {
	return &Error{Kind: KindUnavailable, Code: "unavailable", Detail: what + " failed", Err: err}
}

// signerError is the error of a signer (what names it) that failed with err:
// err itself when it is an *Error, which the signer chose for the caller (a
// CSR refused, say); otherwise unavailable.
func signerError(what string, err error) error {
	if _, ok := errors.AsType[*Error](err); ok {
		return err
	}
	return unavailable(what, err)
}
