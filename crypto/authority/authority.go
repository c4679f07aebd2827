package authority

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"math/big"
	"sync"
	"time"

	"github.com/caledger/caledger/api"
	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/crypto/revocation"
	"github.com/caledger/caledger/crypto/signer"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/projections"
)

// Ledger is what the authority needs of the command handlers.
type Ledger interface {
	LoadCA(ctx context.Context, id string) (domain.CA, error)
	CertificateState(ctx context.Context, serial domain.Serial) (domain.Certificate, error)
	PublishCRL(ctx context.Context, actor domain.Actor, id string, sign func(number uint64, last time.Time) (domain.CRLPublished, []byte, error)) ([]byte, domain.CRLPublished, error)
	IssueOCSPResponder(ctx context.Context, actor domain.Actor, id string, sign func(serial domain.Serial) (domain.OCSPResponderIssued, error)) (domain.OCSPResponderIssued, error)
}

// Revocations is what the authority reads of the views.
type Revocations interface {
	Certificate(ctx context.Context, serial domain.Serial) (projections.CertificateRow, error)
	CertificateStatus(ctx context.Context, caID string, serial domain.Serial) (projections.CertificateStatus, error)
	Revoked(ctx context.Context, caID string, now time.Time) iter.Seq2[projections.RevocationRow, error]
	RevocationRevision(ctx context.Context, caID string) (uint64, error)
	WaitFor(ctx context.Context, position uint64) error
}

// Keys finds CA signing keys by their ledger reference; one per provider name.
type Keys map[string]signer.Provider

// Options tune an Authority.
type Options struct {
	// CRLValidity is the time from a CRL's thisUpdate to its nextUpdate
	// (default 24h).
	CRLValidity time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Head returns the ledger's head position. When set, a CRL is built only
	// once the revocations view has reached the head (within CRLWait), so a
	// view still catching up after a start never yields a CRL missing entries.
	Head func(ctx context.Context) (uint64, error)
	// CRLWait bounds that wait (default 2s); past it, CRL fails as unavailable.
	CRLWait time.Duration
}

// CA is one loaded certificate authority.
type CA struct {
	Info api.CAInfo
	Key  crypto.Signer
}

// Authority holds the loaded CAs. It is safe for concurrent use.
type Authority struct {
	ledger  Ledger
	views   Revocations
	opts    Options
	order   []string
	cas     map[string]*ca
	deflt   string
	issuers []issuer.CA

	responderPoll time.Duration // the longest wait of RunOCSPResponders
}

type ca struct {
	CA
	mu  sync.Mutex // serialises CRL builds
	crl *cachedCRL
}

type cachedCRL struct {
	revision   uint64
	der        []byte
	thisUpdate time.Time
}

// Load loads the CAs ids from the ledger, with their keys. defaultIssuer names
// the CA that issues when a request names none.
func Load(ctx context.Context, ledger Ledger, views Revocations, keys Keys, ids []string, defaultIssuer string, opts Options) (*Authority, error) {
	if opts.CRLValidity <= 0 {
		opts.CRLValidity = 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CRLWait <= 0 {
		opts.CRLWait = 2 * time.Second
	}
	a := &Authority{ledger: ledger, views: views, opts: opts, cas: map[string]*ca{}, deflt: defaultIssuer, responderPoll: time.Minute}
	for _, id := range ids {
		rec, err := ledger.LoadCA(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("CA %s: %w", id, err)
		}
		cert, err := x509.ParseCertificate(rec.Created.Certificate)
		if err != nil {
			return nil, fmt.Errorf("CA %s: certificate in the ledger: %w", id, err)
		}
		p, ok := keys[rec.Created.Key.Provider]
		if !ok {
			return nil, fmt.Errorf("CA %s: its key is in provider %q, which is not configured", id, rec.Created.Key.Provider)
		}
		key, err := p.Load(ctx, signer.Ref{Provider: rec.Created.Key.Provider, Label: rec.Created.Key.Label, Algorithm: signer.Algorithm(rec.Created.Key.Algorithm)})
		if err != nil {
			return nil, fmt.Errorf("CA %s: load its key: %w", id, err)
		}
		if !samePublicKey(key.Public(), cert.PublicKey) {
			return nil, fmt.Errorf("CA %s: the key %s does not match the CA certificate", id, rec.Created.Key.Label)
		}
		a.cas[id] = &ca{CA: CA{Key: key, Info: api.CAInfo{ID: id, Kind: rec.Created.Kind, ParentID: rec.Created.ParentID,
			Certificate: cert, RetainUntilExpiry: rec.Created.RetainUntilExpiry}}}
		a.order = append(a.order, id)
	}
	if c, ok := a.cas[defaultIssuer]; !ok || c.Info.Kind != domain.CAKindIssuing {
		return nil, fmt.Errorf("default issuer %q is not a loaded issuing CA", defaultIssuer)
	}
	for _, id := range a.order {
		c := a.cas[id]
		if c.Info.Kind != domain.CAKindIssuing {
			continue
		}
		var chain []*x509.Certificate
		for p := c.Info.ParentID; p != ""; {
			parent, ok := a.cas[p]
			if !ok {
				return nil, fmt.Errorf("CA %s: parent CA %s is not loaded", id, p)
			}
			chain = append(chain, parent.Info.Certificate)
			p = parent.Info.ParentID
		}
		a.issuers = append(a.issuers, issuer.CA{ID: id, Certificate: c.Info.Certificate, Key: c.Key, Chain: chain})
	}
	return a, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// Issuers returns the issuing CAs, for issuer.New.
func (a *Authority) Issuers() []issuer.CA { return a.issuers }

// List implements api.CAs.
func (a *Authority) List() []api.CAInfo {
	out := make([]api.CAInfo, 0, len(a.order))
	for _, id := range a.order {
		out = append(out, a.cas[id].Info)
	}
	return out
}

// CA implements api.CAs.
func (a *Authority) CA(id string) (api.CAInfo, bool) {
	c, ok := a.cas[id]
	if !ok {
		return api.CAInfo{}, false
	}
	return c.Info, true
}

// DefaultIssuer implements api.CAs.
func (a *Authority) DefaultIssuer() string { return a.deflt }

// Pool returns the CA certificates as a pool: the roots client certificates
// must chain to.
func (a *Authority) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, id := range a.order {
		if c := a.cas[id]; c.Info.Kind == domain.CAKindRoot {
			pool.AddCert(c.Info.Certificate)
		}
	}
	return pool
}

// Intermediates returns the issuing CAs' certificates.
func (a *Authority) Intermediates() []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range a.issuers {
		out = append(out, c.Certificate)
	}
	return out
}

// systemActor is recorded as the actor of CRLs and delegated OCSP
// responders, which no client asks for.
var systemActor = domain.Actor{ID: "caledger", Role: "system"}

// CRL implements api.CAs.
func (a *Authority) CRL(ctx context.Context, id string) ([]byte, error) {
	c, ok := a.cas[id]
	if !ok {
		return nil, &domain.Error{Kind: domain.KindNotFound, Code: "no-ca", Detail: "no such CA"}
	}
	// The wait needs no lock: requests wait side by side, and only the build
	// below is serialised.
	if a.opts.Head != nil {
		if err := a.caughtUp(ctx); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rev, err := a.views.RevocationRevision(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("revocations view: %w", err)
	}
	if cached := c.crl; cached != nil && cached.revision == rev && a.opts.Now().Before(cached.thisUpdate.Add(a.opts.CRLValidity/2)) {
		return cached.der, nil
	}
	var thisUpdate time.Time
	der, _, err := a.ledger.PublishCRL(ctx, systemActor, id, func(number uint64, last time.Time) (domain.CRLPublished, []byte, error) {
		// The last CRL (perhaps another node's, published after this
		// request's wait above) was built from views that reached the ledger
		// as it was then: this one must hold at least what that one did, so
		// it waits for the views to reach the head again, a head read after
		// that CRL was recorded, and reads them anew on every attempt.
		if a.opts.Head != nil {
			if err := a.caughtUp(ctx); err != nil {
				return domain.CRLPublished{}, nil, err
			}
		}
		var err error
		if rev, err = a.views.RevocationRevision(ctx, id); err != nil {
			return domain.CRLPublished{}, nil, fmt.Errorf("revocations view: %w", err)
		}
		// Never older than the CRL it follows (another node's clock may
		// run ahead of this one's).
		now := a.opts.Now().UTC().Truncate(time.Second)
		thisUpdate = now
		since := last
		if now.Before(last) {
			// The last CRL is dated ahead of this clock (this node's runs
			// behind, or the other's ran fast): this one takes its date, but
			// drops no certificate that is still valid now.
			thisUpdate, since = last, now
		}
		nextUpdate := thisUpdate.Add(a.opts.CRLValidity)
		entries, err := a.crlEntries(ctx, id, since)
		if err != nil {
			return domain.CRLPublished{}, nil, err
		}
		der, err := revocation.BuildCRL(ctx, c.Info.Certificate, c.Key, revocation.CRL{
			Number: new(big.Int).SetUint64(number), ThisUpdate: thisUpdate, NextUpdate: nextUpdate, Entries: entries})
		if err != nil {
			return domain.CRLPublished{}, nil, err
		}
		sum := sha256.Sum256(der)
		return domain.CRLPublished{Number: number, ThisUpdate: thisUpdate, NextUpdate: nextUpdate,
			Entries: len(entries), SHA256: hex.EncodeToString(sum[:])}, der, nil
	})
	if err != nil {
		return nil, err
	}
	c.crl = &cachedCRL{revision: rev, der: der, thisUpdate: thisUpdate}
	return der, nil
}

// crlEntries returns the entries of CA id's next CRL: its revoked
// certificates (deleted ones included) that had not expired when its last CRL
// was issued (all of them when last is zero). RFC 5280 section 3.3 keeps an
// entry until it has appeared on one CRL issued after its certificate
// expired; the first CRL built after the expiry follows one issued before it,
// so it holds the entry, and the next one drops it.
func (a *Authority) crlEntries(ctx context.Context, id string, last time.Time) ([]revocation.Entry, error) {
	var entries []revocation.Entry
	for row, err := range a.views.Revoked(ctx, id, last) {
		if err != nil {
			return nil, fmt.Errorf("revocations view: %w", err)
		}
		serial, ok := row.Serial.Int()
		if !ok {
			return nil, fmt.Errorf("revocations view: bad serial %q", row.Serial)
		}
		entries = append(entries, revocation.Entry{Serial: serial, RevokedAt: row.RevokedAt, Reason: int(row.Reason)})
	}
	return entries, nil
}

// caughtUp waits, at most CRLWait, for the views to reach the ledger's head.
func (a *Authority) caughtUp(ctx context.Context) error {
	head, err := a.opts.Head(ctx)
	if err != nil {
		return fmt.Errorf("ledger head: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, a.opts.CRLWait)
	defer cancel()
	if err := a.views.WaitFor(wctx, head); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &domain.Error{Kind: domain.KindUnavailable, Code: "views-behind",
			Detail: "the revocations view is catching up with the ledger; try again shortly", Err: err}
	}
	return nil
}

// OCSPIssuers returns the CAs for revocation.NewResponder.
func (a *Authority) OCSPIssuers() []revocation.Issuer {
	var out []revocation.Issuer
	for _, id := range a.order {
		c := a.cas[id]
		out = append(out, revocation.Issuer{ID: id, Certificate: c.Info.Certificate, Key: c.Key})
	}
	return out
}

// Lookup answers OCSP: revoked for a certificate either view knows as revoked,
// unknown for a serial this CA never issued, good otherwise. A view error is an
// error (the responder answers internalError), never a false "good".
func (a *Authority) Lookup(ctx context.Context, caID string, serial *big.Int) (revocation.Answer, error) {
	s := domain.Serial(serial.Text(16))
	if serial.Sign() <= 0 || !s.Valid() {
		return revocation.Answer{Status: revocation.Unknown}, nil
	}
	st, err := a.views.CertificateStatus(ctx, caID, s)
	switch {
	case err != nil:
		return revocation.Answer{}, err
	case st.Revoked:
		return revocation.Answer{Status: revocation.Revoked, RevokedAt: st.RevokedAt, Reason: int(st.Reason)}, nil
	case !st.Issued:
		return revocation.Answer{Status: revocation.Unknown}, nil
	}
	return revocation.Answer{Status: revocation.Good}, nil
}

// Authenticate implements api.Authenticator for client certificates the TLS
// layer verified against Pool: the certificate must carry a role and must not
// be revoked or deleted.
func (a *Authority) Authenticate(ctx context.Context, cert *x509.Certificate) (api.Principal, error) {
	roles := issuer.RolesOf(cert)
	if len(roles) == 0 {
		return api.Principal{}, fmt.Errorf("it carries no role")
	}
	serial := domain.Serial(cert.SerialNumber.Text(16))
	row, err := a.views.Certificate(ctx, serial)
	switch {
	case err == nil:
		if row.Status != projections.StatusValid {
			return api.Principal{}, fmt.Errorf("it is %s", row.Status)
		}
	case isNotFound(err):
		// The view has not caught up (a first start, a rebuild, a new node):
		// the ledger decides, so a revoked credential is never let in.
		c, lerr := a.ledger.CertificateState(ctx, serial)
		switch {
		case errors.Is(lerr, domain.ErrNotFound):
			return api.Principal{}, fmt.Errorf("the ledger does not record it")
		case lerr != nil:
			return api.Principal{}, statusUnavailable(lerr)
		case c.Revoked:
			return api.Principal{}, fmt.Errorf("it is revoked")
		case c.Deleted:
			return api.Principal{}, fmt.Errorf("it is deleted")
		}
	default:
		return api.Principal{}, statusUnavailable(err)
	}
	return api.Principal{Actor: domain.Actor{ID: "cert:" + string(serial), Role: roles[0]}, Roles: roles}, nil
}

func isNotFound(err error) bool { return errors.Is(err, projections.ErrNotFound) }

// statusUnavailable is Authenticate's error when a credential's status cannot
// be read (the views or the ledger failing): the API answers 503, not 401, so
// that the client keeps a credential that may well be good.
func statusUnavailable(err error) error {
	return &domain.Error{Kind: domain.KindUnavailable, Code: "credential-status-unavailable",
		Detail: "the client certificate's status cannot be read now; try again", Err: err}
}
