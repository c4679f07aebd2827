package authority

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
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
type Delegates interface {
	Delegate(caID string, cert *x509.Certificate, key crypto.Signer) error
}

// RunOCSPResponders gives every loaded CA a delegated OCSP responder of the
// given validity and renews each at half its validity, until ctx ends or a
// renewal fails (its error is returned: the caller restarts it with backoff,
// and until then the responses of a CA whose delegate ran out are signed by
// the CA key again). Each responder's key is a P-256 key made here and held
// in memory only; its certificate is made by issuer.NewOCSPResponder, signed
// by the CA key (one signature, on an HSM too) and recorded in the ledger
// (ca.ocsp-responder-issued) before it signs any response. A CA whose own
// certificate ends within MinOCSPResponderValidity gets none. expiry, if not
// nil, learns each new delegate's NotAfter.
func (a *Authority) RunOCSPResponders(ctx context.Context, d Delegates, validity time.Duration, expiry func(caID string, notAfter time.Time)) error {
	if validity < MinOCSPResponderValidity {
		return fmt.Errorf("OCSP responder validity %v is below %v", validity, MinOCSPResponderValidity)
	}
	renew := make(map[string]time.Time, len(a.order)) // when each CA's delegate is due; zero: now
	for {
		now := a.opts.Now()
		next := now.Add(validity)
		for _, id := range a.order {
			if a.cas[id].Info.Certificate.NotAfter.Sub(now) < MinOCSPResponderValidity {
				continue // too close to the CA's end for a delegate: the CA key signs
			}
			if due := renew[id]; !due.After(now) {
				cert, err := a.newOCSPResponder(ctx, d, id, validity)
				if err != nil {
					return err
				}
				renew[id] = cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 2)
				if expiry != nil {
					expiry(id, cert.NotAfter)
				}
			}
			if renew[id].Before(next) {
				next = renew[id]
			}
		}
		// Woken at least every responderPoll: the wait is on the monotonic
		// clock, and a suspended machine or a stepped wall clock must not
		// leave a delegate past its renewal.
		t := time.NewTimer(min(max(next.Sub(a.opts.Now()), time.Second), a.responderPoll))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// newOCSPResponder makes, records and installs one delegate of CA id.
func (a *Authority) newOCSPResponder(ctx context.Context, d Delegates, id string, validity time.Duration) (*x509.Certificate, error) {
	c := a.cas[id]
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	var cert *x509.Certificate
	_, err = a.ledger.IssueOCSPResponder(ctx, systemActor, id, func(serial domain.Serial) (domain.OCSPResponderIssued, error) {
		n, ok := new(big.Int).SetString(string(serial), 16)
		if !ok {
			return domain.OCSPResponderIssued{}, fmt.Errorf("serial %q is not hexadecimal", serial)
		}
		cert, err = issuer.NewOCSPResponder(ctx, issuer.CA{ID: id, Certificate: c.Info.Certificate, Key: c.Key}, key.Public(), validity, n, a.opts.Now())
		if err != nil {
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
