package directory

import (
	"context"
	"errors"
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
// was revoked, or a CA published a CRL.
func (p *Publisher) kickCAs() {
	select {
	case p.caKick <- struct{}{}:
	default:
	}
}

// caLoop publishes every CA's entry at start, after each kickCAs, and every
// SweepInterval (every hour when the sweep runs at start only), so that the
// directory's CRL is renewed long before it expires (the CAs renew theirs
// halfway through its validity, a day by default) even when nothing is
// revoked. It runs beside Run's event
// loop rather than in it: a CRL the directory refuses (too large for its
// request limit, say) is retried with backoff, and must not hold up the
// subjects' entries, erasures above all.
func (p *Publisher) caLoop(ctx context.Context) {
	delay := firstRetry
	for {
		err := p.PublishCAs(ctx)
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
			refresh := p.opts.SweepInterval
			if refresh <= 0 {
				refresh = time.Hour
			}
			timer = time.After(refresh)
		}
		select {
		case <-timer:
		case <-p.caKick:
		case <-ctx.Done():
			return
		}
	}
}

// PublishCAs makes every CA's entry hold its certificate and its current CRL,
// adding the entry when it is missing. It returns the errors of the CAs it
// could not publish.
func (p *Publisher) PublishCAs(ctx context.Context) error {
	var errs []error
	for _, ca := range p.opts.CAs {
		crl, err := ca.CRL(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		values := map[string][]string{
			"cn":                   {ca.ID},
			caCertificateAttribute: {string(ca.Certificate)},
			crlAttribute:           {string(crl)},
		}
		dn := p.caDN(ca.ID)
		errs = append(errs, p.withConn(ctx, func(conn *ldap.Conn) error {
			mod := ldap.NewModifyRequest(dn, nil)
			mod.Replace(caCertificateAttribute, values[caCertificateAttribute])
			mod.Replace(crlAttribute, values[crlAttribute])
			err := conn.Modify(mod)
			if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
				return err
			}
			add := ldap.NewAddRequest(dn, nil)
			add.Attribute("objectClass", caObjectClasses)
			for _, name := range []string{"cn", caCertificateAttribute, crlAttribute} {
				add.Attribute(name, values[name])
			}
			return conn.Add(add)
		}))
	}
	return errors.Join(errs...)
}
