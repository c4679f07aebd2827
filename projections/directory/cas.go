package directory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// CA is a certificate authority whose certificate and current CRL the
// publisher keeps in the directory, for relying parties that look them up
// there (RFC 4523: a pkiCA entry's cACertificate and
// certificateRevocationList). Neither carries personal data: a CRL lists
// serial numbers, dates and reasons.
type CA struct {
	// ID names the entry, cn=<ID>,<base DN>.
	ID string
	// Certificate is the CA's certificate, DER.
	Certificate []byte
	// CRL returns the CA's current CRL, DER.
	CRL func(ctx context.Context) ([]byte, error)
}

// The attributes and object classes of a CA's entry. applicationProcess is the
// structural class (cn only); pkiCA adds the certificate and CRL attributes.
const (
	caCertificateAttribute = "cACertificate;binary"
	crlAttribute           = "certificateRevocationList;binary"
)

var caObjectClasses = []string{"top", "applicationProcess", "pkiCA"}

// caDN is the name of CA id's entry.
func (p *Publisher) caDN(id string) string {
	return "cn=" + ldap.EscapeDN(id) + "," + p.opts.BaseDN
}

// kickCAs asks caLoop to publish the CAs' entries again soon: a certificate
// was revoked.
func (p *Publisher) kickCAs() {
	select {
	case p.caKick <- struct{}{}:
	default:
	}
}

// caRefresh bounds how long the directory's CRLs go without a check: a CA
// renews its CRL halfway through its validity (12 hours by default), and the
// directory must get the new one well before the old one's nextUpdate.
const caRefresh = time.Hour

// caLoop publishes every CA's entry at start, after each kickCAs, and every
// SweepInterval or caRefresh, whichever is shorter, so that the directory's
// CRL is renewed long before it expires even when nothing is revoked. It runs
// beside Run's event loop rather than in it: a CRL the directory refuses (too
// large for its request limit, say) is retried with backoff, and must not
// hold up the subjects' entries, erasures above all.
//
// After a kick only the entries whose CRL changed are written; at start and
// on the timer every entry is, so an entry deleted behind the CA's back comes
// back.
func (p *Publisher) caLoop(ctx context.Context) {
	refresh := caRefresh
	if p.opts.SweepInterval > 0 && p.opts.SweepInterval < refresh {
		refresh = p.opts.SweepInterval
	}
	delay := firstRetry
	written := map[string][]byte{} // the CRL last written for each CA
	force := true
	for {
		err := p.publishCAs(ctx, written, force)
		if ctx.Err() != nil {
			return
		}
		var timer <-chan time.Time
		if err != nil {
			p.failed()
			p.log.Warn("directory: publishing the CA certificates and CRLs failed; retrying", "error", describe(err), "retry_in", delay)
			timer = time.After(delay)
			delay = min(2*delay, lastRetry)
		} else {
			delay = firstRetry
			timer = time.After(refresh)
		}
		select {
		case <-timer:
			force = true
		case <-p.caKick:
			force = err != nil
		case <-ctx.Done():
			return
		}
	}
}

// PublishCAs makes every CA's entry hold its certificate and its current CRL,
// adding the entry when it is missing. It returns the errors of the CAs it
// could not publish.
func (p *Publisher) PublishCAs(ctx context.Context) error {
	return p.publishCAs(ctx, map[string][]byte{}, true)
}

// publishCAs is PublishCAs. Unless force is set, a CA whose CRL is the one
// written records is skipped; written is updated with each CRL written.
func (p *Publisher) publishCAs(ctx context.Context, written map[string][]byte, force bool) error {
	var errs []error
	for _, ca := range p.opts.CAs {
		crl, err := ca.CRL(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("CA %s: %s", ca.ID, describe(err)))
			continue
		}
		if !force && bytes.Equal(written[ca.ID], crl) {
			continue
		}
		if err := p.putCA(ctx, ca, crl); err != nil {
			delete(written, ca.ID)
			// Described here, so that the log names the CA of each LDAP
			// result: describe of the joined errors would give the first
			// result's code alone.
			errs = append(errs, fmt.Errorf("CA %s: %s", ca.ID, describe(err)))
			continue
		}
		written[ca.ID] = crl
	}
	return errors.Join(errs...)
}

// putCA writes CA ca's entry with crl: a modify, an add when the entry is
// missing, and, when the entry is of another object class (someone else made
// it), a delete and an add: the base DN belongs to caledger. Any other refusal
// (a CRL over the directory's size limit, say) is returned and the entry kept
// as it is: a delete then would lose the CA certificate too.
func (p *Publisher) putCA(ctx context.Context, ca CA, crl []byte) error {
	dn := p.caDN(ca.ID)
	return p.withConn(ctx, func(conn *ldap.Conn) error {
		mod := ldap.NewModifyRequest(dn, nil)
		mod.Replace(caCertificateAttribute, []string{string(ca.Certificate)})
		mod.Replace(crlAttribute, []string{string(crl)})
		err := conn.Modify(mod)
		switch {
		case ldap.IsErrorWithCode(err, ldap.LDAPResultObjectClassViolation):
			if err := conn.Del(ldap.NewDelRequest(dn, nil)); err != nil {
				return err
			}
		case !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
			return err
		}
		add := ldap.NewAddRequest(dn, nil)
		add.Attribute("objectClass", caObjectClasses)
		add.Attribute("cn", []string{ca.ID})
		add.Attribute(caCertificateAttribute, []string{string(ca.Certificate)})
		add.Attribute(crlAttribute, []string{string(crl)})
		return conn.Add(add)
	})
}
