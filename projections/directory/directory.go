// Package directory publishes subjects' certificates to an LDAP directory (an
// X.500 directory such as OpenLDAP, whose schema has inetOrgPerson entries named
// by uid), where mail clients and other relying parties look up a person's
// certificate, and removes them again.
//
// # What is published
//
// Each subject with at least one certificate in force (issued, neither revoked
// nor deleted, not expired) of a published profile has one entry,
// uid=<subject id>,<base DN>, of object class inetOrgPerson. It holds the
// certificates as userCertificate;binary and the subject's current values of the
// published attributes (by default only common_name as cn and email as mail;
// sn, which the schema requires, repeats cn unless surname is published). The
// subject id is a random pseudonym, so the entry's name carries no personal data.
//
// A subject with no such certificate has no entry: revocation, deletion and
// expiry remove the certificate, and the entry goes with the last one. An
// erasure removes the entry; a key group erased alone removes its attributes
// and every certificate signed before it, which may carry them. A correction
// replaces the published values, so the directory never keeps what the CA
// itself no longer holds (GDPR articles 16, 17 and 19).
//
// # How
//
// The Publisher follows the ledger like a view. For each event about a subject
// (subject.corrected, subject.erased, certificate.issued, .revoked, .deleted)
// it reads what the subject's entry should be now (domain.Handlers.Publication)
// and makes the entry match: one modify, or an add when the entry is missing,
// or a delete. Making an entry match is idempotent, so the checkpoint (the
// position of the last event published) may lag behind the directory, and a
// replay from position 1 converges to the same directory. A failure (the
// directory down, a write it refuses for a reason that may pass) is logged and
// retried with backoff; the checkpoint does not pass an event until its entry
// matched, so no removal is ever skipped. Values the directory refuses for
// good (schema, constraints) are dropped down to cn, sn and the certificates,
// and, if even those are refused, the entry is removed. When what may be
// published cannot be read (the vault fails) maxAttempts times in a row, the
// entry is removed, since publishing less is always safe, and the sweep
// retries the subject with backoff until it can be read.
//
// A sweep, at start and then every Options.SweepInterval, makes every entry of
// the base DN named by a subject id match too: it removes expired certificates
// (expiry is not an event) and entries added, or whose managed attributes
// were changed, behind the CA's back.
// The base DN belongs to caledger: entries under it whose uid is not a subject
// id are left alone, every other one is made to match the ledger.
//
// With Options.CAs, each CA's certificate and current CRL are published too,
// as cn=<CA id>,<base DN> (RFC 4523 pkiCA), at start, after revocations and
// at least hourly, beside the subjects' publication (caLoop).
//
// Nothing personal is logged: errors from the directory are kept by their LDAP
// result code only (withConn drops the diagnostic message, which may quote a
// value).
//
// One publisher per directory: in a cluster of caledger nodes, configure the
// directory on one node only.
package directory

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/caledger/caledger/domain"
)

// Subjects is the part of the command handlers the publisher reads.
// domain.Handlers implements it.
type Subjects interface {
	Publication(ctx context.Context, id domain.SubjectID, publish func(profile string) bool) (domain.Publication, error)
	CertificateState(ctx context.Context, serial domain.Serial) (domain.Certificate, error)
}

// Checkpoint is the publisher's progress, kept by a CheckpointStore.
type Checkpoint struct {
	// Target names the directory, base DN, profiles and attributes published;
	// a checkpoint of another target is ignored, and publication starts over
	// from position 1.
	Target string `json:"target"`
	// Position and EventID are those of the last event published.
	Position uint64         `json:"position"`
	EventID  domain.EventID `json:"event_id"`
}

// CheckpointStore keeps the checkpoint durably. Load returns the zero
// Checkpoint when none was saved.
type CheckpointStore interface {
	Load(ctx context.Context) (Checkpoint, error)
	Save(ctx context.Context, c Checkpoint) error
}

// Options configure New. URL, BaseDN and Checkpoints are required.
type Options struct {
	// URL is the directory: ldap://host[:port], ldaps://host[:port] or
	// ldapi://<escaped socket path>.
	URL string
	// BindDN and Password authenticate a simple bind; empty BindDN: no bind.
	BindDN   string
	Password string
	// StartTLS upgrades an ldap:// connection with StartTLS before the bind.
	StartTLS bool
	// TLS is the client configuration for ldaps:// and StartTLS (default: the
	// system roots, TLS 1.2 at least).
	TLS *tls.Config
	// BaseDN is the parent of the entries, e.g. ou=people,dc=example,dc=org. It
	// must exist and should hold nothing but caledger's entries.
	BaseDN string
	// Profiles are the certificate profiles published (default: email-protection).
	Profiles []string
	// Attributes are the subject attributes published, by caledger name (default:
	// common_name and email). Published can be: common_name, given_name,
	// surname, email, organization, organizational_unit and locality.
	Attributes []string
	// Checkpoints keeps the checkpoint.
	Checkpoints CheckpointStore
	// SweepInterval is how often every entry is checked (default 1 hour; negative:
	// only at start).
	SweepInterval time.Duration
	// CAs are the certificate authorities whose certificate and CRL are
	// published, each as cn=<ID>,<BaseDN> (RFC 4523 pkiCA); none: no CA
	// entries. A revocation brings the CRL's publication forward.
	CAs []CA
	// Timeout bounds one directory request (default 10 seconds).
	Timeout time.Duration
	// Logger receives failures and progress, never personal data. Default:
	// discarded.
	Logger *slog.Logger
}

// ldapNames maps the publishable subject attributes to their LDAP attributes
// (RFC 4519, RFC 2798).
var ldapNames = map[string]string{
	"common_name":         "cn",
	"given_name":          "givenName",
	"surname":             "sn",
	"email":               "mail",
	"organization":        "o",
	"organizational_unit": "ou",
	"locality":            "l",
}

// certificateAttribute holds the DER certificates (RFC 4523 section 2.1).
const certificateAttribute = "userCertificate;binary"

// managed are the attributes of an entry the publisher sets; a modify replaces
// them all, so a value the subject no longer has is removed.
var managed = append(slices.Sorted(maps.Values(ldapNames)), certificateAttribute)

var objectClasses = []string{"top", "person", "organizationalPerson", "inetOrgPerson"}

// Publisher keeps a directory in step with the ledger.
type Publisher struct {
	opts     Options
	subjects Subjects
	log      *slog.Logger
	base     *ldap.DN
	profiles map[string]bool
	attrs    map[string]bool
	target   string
	pageSize uint32 // entries in a page of the sweep's listing: pageSize, but tests page smaller

	reconcileMu sync.Mutex // held by each Reconcile
	conn        *ldap.Conn // guarded by connMu
	connMu      sync.Mutex

	mu       sync.Mutex // guards the fields below
	failures uint64     // failed attempts
	applied  uint64
	// unpublished are subjects whose entry was removed because what may be
	// published of them could not be read; the sweeps retry them.
	unpublished map[domain.SubjectID]bool
	// sinceListing are the subjects whose entry this publisher wrote or
	// removed since the running sweep's listing began (nil outside a
	// sweep): their listed digest says nothing of the entry now.
	sinceListing map[domain.SubjectID]bool
	kick         chan struct{} // signalled when a subject is left unpublished
	caKick       chan struct{} // signalled when a certificate is revoked
	notify       chan struct{} // closed and replaced when applied changes
}

// New checks opts and returns a publisher; it does not contact the directory.
func New(opts Options, subjects Subjects) (*Publisher, error) {
	if opts.URL == "" {
		return nil, errors.New("directory: no URL")
	}
	if !strings.HasPrefix(opts.URL, "ldap://") && !strings.HasPrefix(opts.URL, "ldaps://") && !strings.HasPrefix(opts.URL, "ldapi://") {
		return nil, fmt.Errorf("directory: URL %q is not ldap://, ldaps:// or ldapi://", opts.URL)
	}
	if opts.StartTLS && !strings.HasPrefix(opts.URL, "ldap://") {
		return nil, errors.New("directory: StartTLS applies to ldap:// URLs only")
	}
	base, err := ldap.ParseDN(opts.BaseDN)
	if err != nil || len(base.RDNs) == 0 {
		return nil, fmt.Errorf("directory: base DN %q is not a distinguished name", opts.BaseDN)
	}
	if opts.BindDN != "" && opts.Password == "" {
		return nil, errors.New("directory: a bind DN needs a password")
	}
	if opts.Checkpoints == nil {
		return nil, errors.New("directory: Options.Checkpoints is required")
	}
	if subjects == nil {
		return nil, errors.New("directory: no subjects")
	}
	if len(opts.Profiles) == 0 {
		opts.Profiles = DefaultProfiles()
	}
	if len(opts.Attributes) == 0 {
		opts.Attributes = []string{"common_name", "email"}
	}
	p := &Publisher{opts: opts, subjects: subjects, log: opts.Logger, base: base, pageSize: pageSize,
		profiles: map[string]bool{}, attrs: map[string]bool{}, notify: make(chan struct{}),
		unpublished: map[domain.SubjectID]bool{}, kick: make(chan struct{}, 1), caKick: make(chan struct{}, 1)}
	ids := map[string]bool{}
	for _, ca := range opts.CAs {
		if ca.ID == "" || len(ca.Certificate) == 0 || ca.CRL == nil || ids[ca.ID] {
			return nil, fmt.Errorf("directory: CA %q needs a unique ID, a certificate and a CRL source", ca.ID)
		}
		ids[ca.ID] = true
	}
	for _, name := range opts.Profiles {
		p.profiles[name] = true
	}
	for _, name := range opts.Attributes {
		if _, ok := ldapNames[name]; !ok {
			return nil, fmt.Errorf("directory: attribute %q cannot be published; choose from %s", name, strings.Join(Publishable(), ", "))
		}
		p.attrs[name] = true
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.opts.SweepInterval == 0 {
		p.opts.SweepInterval = time.Hour
	}
	if p.opts.Timeout <= 0 {
		p.opts.Timeout = 10 * time.Second
	}
	if p.opts.TLS == nil {
		p.opts.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	// Any change of what is published makes a new target, so publication
	// starts over and every subject's entry follows the new configuration.
	profiles, attrs := slices.Sorted(maps.Keys(p.profiles)), slices.Sorted(maps.Keys(p.attrs))
	p.target = fmt.Sprintf("%s %s profiles=%s attributes=%s", opts.URL, opts.BaseDN,
		strings.Join(profiles, ","), strings.Join(attrs, ","))
	return p, nil
}

// Publishable lists the subject attributes a directory may be given, sorted.
func Publishable() []string { return slices.Sorted(maps.Keys(ldapNames)) }

// DefaultProfiles are the profiles whose certificates are published when
// Options.Profiles is empty: S/MIME certificates, which correspondents look
// up in a directory.
func DefaultProfiles() []string { return []string{"email-protection"} }

// Applied returns the position of the last event published.
func (p *Publisher) Applied() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied
}

// Failures returns how many attempts to update the directory have failed.
func (p *Publisher) Failures() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failures
}

// WaitFor returns once the event at position pos is published, or ctx ends.
func (p *Publisher) WaitFor(ctx context.Context, pos uint64) error {
	for {
		p.mu.Lock()
		applied, notify := p.applied, p.notify
		p.mu.Unlock()
		if applied >= pos {
			return nil
		}
		select {
		case <-notify:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *Publisher) advance(pos uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pos > p.applied {
		p.setApplied(pos)
	}
}

// restart lowers applied to 0 when publication starts over.
func (p *Publisher) restart() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setApplied(0)
}

func (p *Publisher) setApplied(pos uint64) {
	p.applied = pos
	close(p.notify)
	p.notify = make(chan struct{})
}

func (p *Publisher) failed() {
	p.mu.Lock()
	p.failures++
	p.mu.Unlock()
}

// Close closes the connection to the directory. It does not stop Run, which
// would dial again: end Run's context first.
func (p *Publisher) Close() error {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	p.dropConn()
	return nil
}

// dn is the name of subject id's entry, under the base DN as configured.
func (p *Publisher) dn(id domain.SubjectID) string {
	return "uid=" + string(id) + "," + p.opts.BaseDN
}
