package directory

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/projections"
	"github.com/caledger/caledger/projections/handoff"
)

const (
	firstRetry = 200 * time.Millisecond
	lastRetry  = 30 * time.Second
	// saveEvery bounds how long a checkpoint stays unsaved while events
	// arrive. Replays are idempotent, so a crash costs only their repetition.
	saveEvery = time.Second
	// maxChunk bounds how many events Run reads ahead of its reconciles.
	maxChunk = 1024
	// pageSize is how many entries a page of the sweep's listing holds (RFC
	// 2696 paged results): the listing reads each page's values, so this
	// bounds the memory it takes, not what it lists.
	pageSize = 500
	// maxAttempts is how many times in a row what may be published of a
	// subject can fail to be read before its entry is removed instead.
	maxAttempts = 5
)

// Run publishes the ledger's events from the checkpoint on until ctx ends (it
// then returns ctx's error) or reading the ledger fails. A directory failure
// does not end it: the event is retried with backoff until its entry matches.
// A sweep of every entry runs at start and every Options.SweepInterval, and
// the CAs' entries (Options.CAs) are published beside it (caLoop).
func (p *Publisher) Run(ctx context.Context, src projections.Source) error {
	from, err := p.start(ctx, src)
	if err != nil {
		return err
	}
	sweepCtx, stopSweep := context.WithCancel(ctx)
	var loops sync.WaitGroup
	loops.Go(func() { p.sweepLoop(sweepCtx) })
	if len(p.opts.CAs) > 0 {
		loops.Go(func() { p.caLoop(sweepCtx) })
	}
	defer func() {
		stopSweep()
		loops.Wait()
	}()

	var pending Checkpoint // published but not yet saved
	saved := time.Now()
	save := func(ctx context.Context) {
		if pending.Position == 0 {
			return
		}
		if err := p.opts.Checkpoints.Save(ctx, pending); err != nil {
			p.failed()
			p.log.Warn("directory: the checkpoint was not saved; publication will resume from the last one saved", "error", err)
			return
		}
		pending, saved = Checkpoint{}, time.Now()
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opts.Timeout)
		defer cancel()
		save(ctx)
	}()
	// A reader goroutine reads the ledger ahead; each turn takes every event
	// read so far and reconciles each subject they touch once, after the
	// last of them: Reconcile reads the subject as it is now, so one
	// reconcile covers all. A subject with many events (its certificates,
	// revocations, corrections) costs one directory write per turn on
	// catch-up, not one per event.
	rctx, stopReading := context.WithCancel(ctx)
	q := handoff.New[projections.Followed](maxChunk)
	var reader sync.WaitGroup
	reader.Go(func() { projections.ReadAhead(rctx, q, src, from) })
	defer reader.Wait()
	defer stopReading()
	var touched []domain.SubjectID
	seen := make(map[domain.SubjectID]bool)
	for {
		if ctx.Err() != nil {
			// Stop at once rather than go through what was read ahead.
			return ctx.Err()
		}
		items, done := q.Take()
		if len(items) == 0 {
			if done {
				return ctx.Err()
			}
			select {
			case <-q.Ready():
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		touched = touched[:0]
		clear(seen)
		var last Checkpoint
		var readErr error
		revoked := false
		for _, f := range items {
			if f.Err != nil {
				readErr = f.Err
				break
			}
			e := f.Event
			revoked = revoked || e.Type == domain.TypeCertificateRevoked
			var id domain.SubjectID
			var changes bool
			if err := p.retry(ctx, "", func() (err error) {
				id, changes, err = p.subjectOf(ctx, &e)
				return err
			}); err != nil {
				return err
			}
			if changes && !seen[id] {
				seen[id] = true
				touched = append(touched, id)
			}
			last = Checkpoint{Target: p.target, Position: e.Position, EventID: e.ID}
		}
		for _, id := range touched {
			if err := p.reconcileUntilDone(ctx, id, nil); err != nil {
				return err
			}
		}
		if revoked {
			p.kickCAs()
		}
		if last.Position != 0 {
			p.advance(last.Position)
			pending = last
			if time.Since(saved) >= saveEvery {
				save(ctx)
			}
		}
		if readErr != nil {
			return readErr
		}
	}
}

// start returns the position to publish from: after the checkpoint, or 1 when
// there is none, it names another target, or the ledger does not hold its
// event (a ledger restored from an older backup, or another ledger).
func (p *Publisher) start(ctx context.Context, src projections.Source) (uint64, error) {
	cp, err := p.opts.Checkpoints.Load(ctx)
	if err != nil {
		return 0, fmt.Errorf("directory: load the checkpoint: %w", err)
	}
	if cp.Position == 0 {
		p.restart()
		return 1, nil
	}
	if cp.Target != p.target {
		p.log.Info("directory: the directory, base DN, profiles or attributes changed; publishing from the start", "position", cp.Position)
		p.restart()
		return 1, nil
	}
	head, err := src.Head(ctx)
	if err != nil {
		return 0, err
	}
	if cp.Position > head {
		p.log.Warn("directory: the checkpoint is past the ledger's head; publishing from the start", "checkpoint", cp.Position, "head", head)
		p.restart()
		return 1, nil
	}
	e, err := projections.EventAt(ctx, src, cp.Position)
	if err != nil {
		return 0, err
	}
	if e.ID != cp.EventID {
		p.log.Warn("directory: the checkpoint names another event; publishing from the start", "checkpoint", cp.Position)
		p.restart()
		return 1, nil
	}
	p.advance(cp.Position)
	return cp.Position + 1, nil
}

// subjectOf returns the subject whose entry e may change.
func (p *Publisher) subjectOf(ctx context.Context, e *domain.Event) (domain.SubjectID, bool, error) {
	switch e.Type {
	case domain.TypeSubjectCorrected:
		var pl domain.SubjectCorrected
		err := domain.UnmarshalPublic(e, &pl)
		return pl.SubjectID, err == nil, err
	case domain.TypeSubjectErased:
		var pl domain.SubjectErased
		err := domain.UnmarshalPublic(e, &pl)
		return pl.SubjectID, err == nil, err
	case domain.TypeCertificateIssued:
		var pl domain.CertificateIssued
		err := domain.UnmarshalPublic(e, &pl)
		return pl.SubjectID, err == nil && p.profiles[pl.Profile], err
	case domain.TypeCertificateRevoked:
		var pl domain.CertificateRevoked
		err := domain.UnmarshalPublic(e, &pl)
		return p.certificateSubject(ctx, pl.Serial, err)
	case domain.TypeCertificateDeleted:
		var pl domain.CertificateDeleted
		err := domain.UnmarshalPublic(e, &pl)
		return p.certificateSubject(ctx, pl.Serial, err)
	}
	return "", false, nil
}

// certificateSubject returns the subject of certificate serial, and whether
// its profile is published: both are in the certificate's first event. err is
// that of decoding the event that named serial.
func (p *Publisher) certificateSubject(ctx context.Context, serial domain.Serial, err error) (domain.SubjectID, bool, error) {
	if err != nil {
		return "", false, err
	}
	c, err := p.subjects.CertificateState(ctx, serial)
	if err != nil {
		return "", false, err
	}
	return c.SubjectID, p.profiles[c.Profile], nil
}

// retry runs f until it succeeds or ctx ends, logging each failure by its LDAP
// result code only.
func (p *Publisher) retry(ctx context.Context, id domain.SubjectID, f func() error) error {
	delay := firstRetry
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		p.failed()
		attrs := []any{"error", describe(err), "retry_in", delay}
		if id != "" {
			attrs = append(attrs, "subject", id)
		}
		p.log.Warn("directory: publishing failed; retrying", attrs...)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		delay = min(2*delay, lastRetry)
	}
}

// reconcileUntilDone reconciles id (against the digest a sweep listed, when
// listed is set, see reconcile) until it succeeds or ctx ends. When what
// may be published of the subject cannot be read maxAttempts times in a row,
// its entry is removed instead, and the subject is kept for the sweeps, which
// reconcile it again until it is read.
func (p *Publisher) reconcileUntilDone(ctx context.Context, id domain.SubjectID, listed *[sha256.Size]byte) error {
	unreadableInARow := 0
	return p.retry(ctx, id, func() error {
		err := p.reconcile(ctx, id, listed)
		var u unreadable
		if !errors.As(err, &u) {
			unreadableInARow = 0
			if err == nil {
				p.setUnpublished(id, false)
			}
			return err
		}
		if unreadableInARow++; unreadableInARow < maxAttempts {
			return err
		}
		p.writing(id)
		if rerr := p.remove(ctx, p.dn(id)); rerr != nil {
			return errors.Join(err, rerr)
		}
		p.failed()
		p.setUnpublished(id, true)
		p.log.Warn("directory: what may be published of the subject could not be read; its entry is removed until it can be", "subject", id, "error", describe(err))
		return nil
	})
}

// writing records that this publisher is about to write or remove subject
// id's entry, for a sweep that listed it before (sinceListing).
func (p *Publisher) writing(id domain.SubjectID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sinceListing != nil {
		p.sinceListing[id] = true
	}
}

// writtenSinceListing reports whether this publisher wrote or removed subject
// id's entry since the running sweep's listing began.
func (p *Publisher) writtenSinceListing(id domain.SubjectID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sinceListing[id]
}

// setUnpublished records (or forgets) a subject whose entry was removed
// because what may be published of it could not be read. Only a subject new
// to the record brings the next sweep forward: one that a sweep still cannot
// read waits for the sweep loop's backoff, rather than restarting the sweep
// at once, over and over.
func (p *Publisher) setUnpublished(id domain.SubjectID, removed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if removed {
		if p.unpublished[id] {
			return
		}
		p.unpublished[id] = true
		select {
		case p.kick <- struct{}{}:
		default:
		}
	} else {
		delete(p.unpublished, id)
	}
}

// pendingUnpublished returns the subjects setUnpublished recorded, sorted.
func (p *Publisher) pendingUnpublished() []domain.SubjectID {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.unpublished))
}

// unreadable is a failure to read what may be published of a subject.
type unreadable struct{ err error }

func (u unreadable) Error() string { return "read the publication: " + u.err.Error() }
func (u unreadable) Unwrap() error { return u.err }

// Reconcile makes subject id's entry match what may be published of it now.
// Reconciles run one at a time, each reading the subject after the one before
// wrote, so the last write always reflects the latest read.
func (p *Publisher) Reconcile(ctx context.Context, id domain.SubjectID) error {
	return p.reconcile(ctx, id, nil)
}

// reconcile is Reconcile. When listed is set, it is the digest of the
// entry's managed attributes as a sweep listed them, and the entry is left
// alone when what would be written has the same digest: a sweep then writes
// only the entries that drifted, not every entry of the directory each time (a
// directory's write is a disk sync and, in a replicated directory, traffic to
// every replica), and reads none of them again.
//
// The listing may be older than the entry. An entry this publisher wrote or
// removed since the listing began is not judged by its listed digest
// (writtenSinceListing): it is written again. One changed behind the
// publisher's back since is found by the next sweep, as one changed after the
// sweep would be.
func (p *Publisher) reconcile(ctx context.Context, id domain.SubjectID, listed *[sha256.Size]byte) error {
	p.reconcileMu.Lock()
	defer p.reconcileMu.Unlock()
	published := func(profile string) bool { return p.profiles[profile] }
	pub, err := p.subjects.Publication(ctx, id, published)
	if err != nil {
		return unreadable{err}
	}
	var certs []string
	for _, c := range pub.Certificates {
		if published(c.Profile) { // Publication filters them too: a Subjects that did not must not publish more
			certs = append(certs, string(c.DER))
		}
	}
	dn := p.dn(id)
	if pub.Erased || len(certs) == 0 {
		p.writing(id)
		return p.remove(ctx, dn)
	}
	values := p.values(id, pub.Attributes, certs)
	if listed != nil && !p.writtenSinceListing(id) && *listed == digest(func(name string) []string { return values[name] }) {
		return nil
	}
	p.writing(id)
	minimal := map[string][]string{"cn": values["cn"], "sn": values["sn"], certificateAttribute: certs}
	// The directory may refuse values for good (its schema or a constraint):
	// retrying cannot help. Then the entry is written anew (an entry made by
	// someone else may have other object classes), then with cn, sn and the
	// certificates only, and if even that is refused it is removed: keeping
	// it would keep values the subject no longer has.
	attempts := []func(*ldap.Conn) error{
		func(conn *ldap.Conn) error { return put(conn, dn, id, values, true) },
		func(conn *ldap.Conn) error { return put(conn, dn, id, values, false) },
		func(conn *ldap.Conn) error { return put(conn, dn, id, minimal, false) },
	}
	for _, attempt := range attempts {
		err = p.withConn(ctx, attempt)
		if !refused(err) {
			return err
		}
		p.failed()
		p.log.Warn("directory: the directory refused the subject's entry", "subject", id, "error", describe(err))
	}
	p.log.Warn("directory: the subject's entry is removed", "subject", id)
	return p.remove(ctx, dn)
}

// digest sums the managed attributes of an entry, whose values get returns
// by name. Each attribute's values are taken in byte order, so two entries
// holding the same values have the same digest whatever order the directory
// lists them in; an attribute's values are counted and each is prefixed by
// its length, so no two different sets of values run together into one.
func digest(get func(name string) []string) [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	for _, name := range managed {
		values := slices.Sorted(slices.Values(get(name)))
		h.Write(binary.BigEndian.AppendUint64(n[:0], uint64(len(values))))
		for _, v := range values {
			h.Write(binary.BigEndian.AppendUint64(n[:0], uint64(len(v))))
			io.WriteString(h, v)
		}
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// entryDigest is the digest of the managed attributes an entry the directory
// listed holds.
func entryDigest(e *ldap.Entry) [sha256.Size]byte {
	return digest(func(name string) []string {
		raw := e.GetEqualFoldRawAttributeValues(name)
		values := make([]string, len(raw))
		for i, v := range raw {
			values[i] = string(v)
		}
		return values
	})
}

// put writes values to the entry dn: with modify, replacing every managed
// attribute (and adding the entry when it is missing), or by deleting any
// entry there and adding it anew.
func put(conn *ldap.Conn, dn string, id domain.SubjectID, values map[string][]string, modify bool) error {
	if modify {
		mod := ldap.NewModifyRequest(dn, nil)
		for _, name := range managed {
			mod.Replace(name, values[name])
		}
		err := conn.Modify(mod)
		if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			return err
		}
	} else if err := conn.Del(ldap.NewDelRequest(dn, nil)); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return err
	}
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", objectClasses)
	add.Attribute("uid", []string{string(id)})
	for _, name := range managed {
		if len(values[name]) > 0 {
			add.Attribute(name, values[name])
		}
	}
	return conn.Add(add)
}

// remove deletes the entry dn; a missing entry is no error.
func (p *Publisher) remove(ctx context.Context, dn string) error {
	return p.withConn(ctx, func(conn *ldap.Conn) error {
		err := conn.Del(ldap.NewDelRequest(dn, nil))
		if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			return nil
		}
		return err
	})
}

// values returns the managed attributes of a subject's entry. cn and sn are
// required by the person class: cn falls back to given and surname, then the
// e-mail address, then the subject id, all among the published attributes; sn
// falls back to cn.
func (p *Publisher) values(id domain.SubjectID, attrs map[string]string, certs []string) map[string][]string {
	get := func(name string) string {
		if p.attrs[name] {
			return attrs[name]
		}
		return ""
	}
	cn := get("common_name")
	if cn == "" {
		cn = strings.TrimSpace(get("given_name") + " " + get("surname"))
	}
	if cn == "" {
		cn = get("email")
	}
	if cn == "" {
		cn = string(id)
	}
	sn := get("surname")
	if sn == "" {
		sn = cn
	}
	v := map[string][]string{"cn": {cn}, "sn": {sn}, certificateAttribute: certs}
	for name, ldapName := range ldapNames {
		if name == "common_name" || name == "surname" {
			continue
		}
		if value := get(name); value != "" {
			v[ldapName] = []string{value}
		}
	}
	return v
}

// Sweep makes every entry of the base DN named by a subject id, and every
// subject whose entry was removed because it could not be read, match what
// may be published of its subject now, and returns how many it checked. The
// listing reads the entries' managed attributes, one page at a time, and keeps
// a digest of each (see reconcile). When the listing fails part way (a size
// limit of the bind DN, say) the entries listed are still checked, and the
// error is returned after.
func (p *Publisher) Sweep(ctx context.Context) (int, error) {
	type entry struct {
		id     domain.SubjectID
		listed *[sha256.Size]byte // nil: not listed, written whatever the directory holds
	}
	var entries []entry
	seen := make(map[domain.SubjectID]bool)
	p.mu.Lock()
	p.sinceListing = map[domain.SubjectID]bool{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.sinceListing = nil
		p.mu.Unlock()
	}()
	listErr := p.withConn(ctx, func(conn *ldap.Conn) error {
		paging := ldap.NewControlPaging(p.pageSize)
		req := ldap.NewSearchRequest(p.opts.BaseDN, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
			"(uid=*)", managed, []ldap.Control{paging})
		for {
			res, err := conn.Search(req)
			if res == nil {
				return err
			}
			for _, e := range res.Entries {
				if id, ok := p.subjectEntry(e); ok && !seen[id] {
					seen[id] = true
					sum := entryDigest(e)
					entries = append(entries, entry{id, &sum})
				}
			}
			if err != nil {
				return err
			}
			// No paging control back: the directory does not page, and
			// this was the whole listing. An empty cookie: the last page.
			next, _ := ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging)
			if next == nil || len(next.Cookie) == 0 {
				return nil
			}
			paging.SetCookie(next.Cookie)
		}
	})
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	for _, id := range p.pendingUnpublished() {
		if !seen[id] {
			entries = append(entries, entry{id, nil})
		}
	}
	for i, e := range entries {
		if err := p.reconcileUntilDone(ctx, e.id, e.listed); err != nil {
			return i, err
		}
	}
	return len(entries), listErr
}

// subjectEntry returns the subject e is the entry of: e must be named
// uid=<subject id> directly under the base DN.
func (p *Publisher) subjectEntry(e *ldap.Entry) (domain.SubjectID, bool) {
	dn, err := ldap.ParseDN(e.DN)
	if err != nil || len(dn.RDNs) != len(p.base.RDNs)+1 || len(dn.RDNs[0].Attributes) != 1 {
		return "", false
	}
	rdn := dn.RDNs[0].Attributes[0]
	id := domain.SubjectID(rdn.Value)
	if !strings.EqualFold(rdn.Type, "uid") || !id.Valid() || !(&ldap.DN{RDNs: dn.RDNs[1:]}).EqualFold(p.base) {
		return "", false
	}
	return id, true
}

// sweepLoop sweeps at start and every SweepInterval (or only at start, when it
// is negative); a failed sweep, or one that leaves subjects unpublished
// because they could not be read, is retried with backoff (up to the
// interval) until one succeeds, and a subject left unpublished meanwhile
// brings the next sweep forward.
func (p *Publisher) sweepLoop(ctx context.Context) {
	delay := firstRetry
	for {
		start := time.Now()
		n, err := p.Sweep(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := p.opts.SweepInterval
		if err == nil && len(p.pendingUnpublished()) > 0 {
			err = errors.New("subjects whose publication could not be read are still unpublished")
		}
		if err != nil {
			p.failed()
			if wait < 0 || delay < wait {
				wait = delay
			}
			delay = min(2*delay, lastRetry)
			p.log.Warn("directory: the sweep failed; retrying", "checked", n, "error", describe(err), "retry_in", wait)
		} else {
			delay = firstRetry
			p.log.Info("directory: swept", "entries", n, "took", time.Since(start).Round(time.Millisecond))
		}
		var timer <-chan time.Time
		if wait >= 0 {
			timer = time.After(wait)
		}
		select {
		case <-timer:
		case <-p.kick: // a subject left unpublished: sweep soon
			select {
			case <-time.After(firstRetry):
			case <-ctx.Done():
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// withConn runs f on the connection to the directory, dialling and binding
// first if there is none. A request still running when ctx ends is abandoned by
// closing the connection; a connection failure drops the connection, so the
// next call dials again.
func (p *Publisher) withConn(ctx context.Context, f func(*ldap.Conn) error) error {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if p.conn == nil {
		conn, err := p.dial(ctx)
		if err != nil {
			return sanitize(err)
		}
		p.conn = conn
	}
	conn := p.conn
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	err := sanitize(f(conn))
	if !stop() {
		p.conn = nil
		return errors.Join(err, ctx.Err())
	}
	var le *ldap.Error
	if err != nil && (!errors.As(err, &le) || le.ResultCode >= ldap.ErrorNetwork || le.ResultCode == ldap.LDAPResultUnavailable) {
		p.dropConn()
	}
	return err
}

// sanitize replaces an LDAP result by one that keeps only its code: the
// server's diagnostic message and matched DN may quote values.
func sanitize(err error) error {
	var le *ldap.Error
	if err == nil || !errors.As(err, &le) || le.ResultCode >= ldap.ErrorNetwork {
		return err
	}
	return &ldap.Error{ResultCode: le.ResultCode, Err: errors.New(ldap.LDAPResultCodeMap[le.ResultCode])}
}

func (p *Publisher) dropConn() {
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn = nil
	}
}

func (p *Publisher) dial(ctx context.Context) (*ldap.Conn, error) {
	// The TLS handshake of StartTLS has no deadline of its own.
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg := p.opts.TLS.Clone()
	if cfg.ServerName == "" {
		if u, err := url.Parse(p.opts.URL); err == nil {
			cfg.ServerName = u.Hostname()
		}
	}
	conn, err := ldap.DialURL(p.opts.URL, ldap.DialWithTLSConfig(cfg), ldap.DialWithDialer(&net.Dialer{Timeout: p.opts.Timeout}))
	if err != nil {
		return nil, err
	}
	conn.SetTimeout(p.opts.Timeout)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if p.opts.StartTLS {
		if err := conn.StartTLS(cfg); err != nil {
			conn.Close()
			return nil, err
		}
	}
	if p.opts.BindDN != "" {
		if err := conn.Bind(p.opts.BindDN, p.opts.Password); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

// refused reports whether err is the directory refusing an entry's values, a
// refusal that retrying cannot change.
func refused(err error) bool {
	var le *ldap.Error
	if !errors.As(err, &le) {
		return false
	}
	switch le.ResultCode {
	case ldap.LDAPResultUndefinedAttributeType, ldap.LDAPResultInappropriateMatching, ldap.LDAPResultConstraintViolation,
		ldap.LDAPResultAttributeOrValueExists, ldap.LDAPResultInvalidAttributeSyntax, ldap.LDAPResultObjectClassViolation:
		return true
	}
	return false
}

// describe returns err for the logs. An LDAP result is told by its code, not its
// diagnostic message, which may quote a value; errors of the connection and of
// the ledger carry no personal data.
func describe(err error) string {
	var le *ldap.Error
	if errors.As(err, &le) && le.ResultCode < ldap.ErrorNetwork {
		return fmt.Sprintf("LDAP result %d (%s)", le.ResultCode, ldap.LDAPResultCodeMap[le.ResultCode])
	}
	return err.Error()
}
