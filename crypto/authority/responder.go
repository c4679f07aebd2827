package authority

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/domain"
)

// MinOCSPResponderValidity is the shortest validity RunOCSPResponders takes:
// a delegate is renewed at half its validity and signs only responses that
// end before it does (an hour, revocation.DefaultValidity), so half the
// validity must leave room for them.
const MinOCSPResponderValidity = 4 * time.Hour

// Delegates receives the delegated responders: a *revocation.Responder.
// CheckDelegate returns the error Delegate would return, and changes nothing.
type Delegates interface {
	CheckDelegate(caID string, cert *x509.Certificate, key crypto.Signer) error
	Delegate(caID string, cert *x509.Certificate, key crypto.Signer) error
}

// OCSPResponders configures RunOCSPResponders.
type OCSPResponders struct {
	// Validity is each delegate certificate's validity, at least
	// MinOCSPResponderValidity.
	Validity time.Duration
	// Failed, if not nil, learns each failed attempt to give a CA a delegate;
	// the attempt is retried after 1 s, doubling up to 5 minutes.
	Failed func(caID string, err error)
}

// maxResponderRetry bounds the wait between failed attempts for one CA.
const maxResponderRetry = 5 * time.Minute

// RunOCSPResponders gives every loaded CA a delegated OCSP responder and
// renews each at half its validity, until ctx ends; it returns an error only
// for a validity below MinOCSPResponderValidity. Each responder's key is a
// P-256 key made here and held in memory only; its certificate is made by
// issuer.NewOCSPResponder, signed by the CA key (one signature, on an HSM too),
// checked by d.CheckDelegate and recorded in the ledger
// (ca.ocsp-responder-issued) before it signs any response. A failed attempt
// for one CA is retried for that CA alone, so a CA whose key keeps failing
// does not make the others record new responders;
// meanwhile its current delegate, if any, signs until it is within a
// response's validity of its end, and then the CA key does. A CA whose own
// certificate ends within MinOCSPResponderValidity gets none.
func (a *Authority) RunOCSPResponders(ctx context.Context, d Delegates, o OCSPResponders) error {
	if o.Validity < MinOCSPResponderValidity {
		return fmt.Errorf("OCSP responder validity %v is below %v", o.Validity, MinOCSPResponderValidity)
	}
	type state struct {
		due   time.Time     // when the CA's next attempt is due; zero: now
		retry time.Duration // the wait after the last failure; 0 after a success
	}
	states := make(map[string]*state, len(a.order))
	for _, id := range a.order {
		states[id] = &state{}
	}
	for {
		now := a.opts.Now()
		next := now.Add(o.Validity)
		for _, id := range a.order {
			if a.cas[id].Info.Certificate.NotAfter.Sub(now) < MinOCSPResponderValidity {
				continue // too close to the CA's end for a delegate: the CA key signs
			}
			st := states[id]
			if !st.due.After(now) {
				cert, err := a.newOCSPResponder(ctx, d, id, o.Validity)
				switch {
				case ctx.Err() != nil:
					return ctx.Err()
				case err != nil:
					st.retry = min(max(2*st.retry, time.Second), maxResponderRetry)
					st.due = now.Add(st.retry)
					if o.Failed != nil {
						o.Failed(id, err)
					}
				default:
					st.retry = 0
					st.due = cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 2)
				}
			}
			if st.due.Before(next) {
				next = st.due
			}
		}
		// Woken at least every responderPoll: the wait is on the monotonic
		// clock, and a suspended machine or a stepped wall clock must not
		// leave a delegate past its renewal.
		t := time.NewTimer(min(max(next.Sub(a.opts.Now()), 10*time.Millisecond), a.responderPoll))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// newOCSPResponder makes, checks, records and installs one delegate of CA id.
func (a *Authority) newOCSPResponder(ctx context.Context, d Delegates, id string, validity time.Duration) (*x509.Certificate, error) {
	c := a.cas[id]
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	var cert *x509.Certificate
	_, err = a.ledger.IssueOCSPResponder(ctx, systemActor, id, func(serial domain.Serial) (domain.OCSPResponderIssued, error) {
		n, ok := serial.Int()
		if !ok {
			return domain.OCSPResponderIssued{}, fmt.Errorf("serial %q is not a valid certificate serial", serial)
		}
		cert, err = issuer.NewOCSPResponder(ctx, issuer.CA{ID: id, Certificate: c.Info.Certificate, Key: c.Key}, key.Public(), validity, n, a.opts.Now())
		if err != nil {
			return domain.OCSPResponderIssued{}, err
		}
		// Checked before it is recorded, so that a record names a delegate
		// the responder takes (Delegate checks the time again after the
		// record: only a clock step in between could fail it then).
		if err := d.CheckDelegate(id, cert, key); err != nil {
			return domain.OCSPResponderIssued{}, err
		}
		return domain.OCSPResponderIssued{Serial: serial, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, Certificate: cert.Raw}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("CA %s: OCSP responder: %w", id, err)
	}
	if err := d.Delegate(id, cert, key); err != nil {
		return nil, fmt.Errorf("CA %s: OCSP responder: %w", id, err)
	}
	return cert, nil
}
