package authority_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/caledger/caledger/crypto/authority"
	"github.com/caledger/caledger/crypto/revocation"
	"github.com/caledger/caledger/domain"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// streamEvents reads the stream of CA id.
func streamEvents(r *rig, id string) ([]domain.Event, error) {
	var out []domain.Event
	for e, err := range r.store.ReadStream(context.Background(), domain.CAStream(id), 0) {
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// recordedFirst is a Delegates that checks, before handing each delegate on,
// that the CA stream's last event records exactly that certificate.
type recordedFirst struct {
	t    *testing.T
	r    *rig
	next authority.Delegates
	got  chan *x509.Certificate
}

func (d *recordedFirst) CheckDelegate(caID string, cert *x509.Certificate, key crypto.Signer) error {
	return d.next.CheckDelegate(caID, cert, key)
}

func (d *recordedFirst) Delegate(caID string, cert *x509.Certificate, key crypto.Signer) error {
	events, err := streamEvents(d.r, caID)
	if err != nil {
		return err
	}
	last := events[len(events)-1]
	var p domain.OCSPResponderIssued
	if last.Type != domain.TypeOCSPResponderIssued || domain.UnmarshalPublic(&last, &p) != nil ||
		string(p.Certificate) != string(cert.Raw) || p.CAID != caID || p.Serial != domain.Serial(cert.SerialNumber.Text(16)) ||
		!p.NotAfter.Equal(cert.NotAfter) || last.Actor.Role != "system" {
		d.t.Errorf("CA %s: a delegate whose record is not the stream's last event (%s, %+v)", caID, last.Type, p)
	}
	if err := d.next.Delegate(caID, cert, key); err != nil {
		return err
	}
	d.got <- cert
	return nil
}

// TestOCSPResponders: every CA gets a delegate recorded in the ledger before
// it signs, responses carry it, and each is renewed at half its validity.
func TestOCSPResponders(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRigWith(t, func(o *authority.Options) { o.Now = clk.Now })
	authority.SetResponderPoll(r.a, 10*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.views.Run(ctx, r.store)
	cred := r.credential(t, "tls-client")
	head, _ := r.store.Head(ctx)
	if err := r.views.WaitFor(ctx, head); err != nil {
		t.Fatal(err)
	}
	responder, err := revocation.NewResponder(r.a.OCSPIssuers(), r.a.Lookup, revocation.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	d := &recordedFirst{t: t, r: r, next: responder, got: make(chan *x509.Certificate, 4)}
	done := make(chan error, 1)
	const validity = 6 * time.Hour
	go func() {
		done <- r.a.RunOCSPResponders(ctx, d, authority.OCSPResponders{Validity: validity,
			Failed: func(id string, err error) { t.Errorf("CA %s: %v", id, err) }})
	}()
	round := func() map[string]*x509.Certificate {
		t.Helper()
		certs := map[string]*x509.Certificate{}
		for range 2 {
			select {
			case c := <-d.got:
				certs[c.Issuer.CommonName] = c
			case err := <-done:
				t.Fatalf("RunOCSPResponders stopped: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("no delegate within 10 s")
			}
		}
		return certs
	}
	first := round()
	issuing := first["Test Issuing"]
	if issuing == nil || first["Test Root"] == nil {
		t.Fatalf("delegates for %v, want the root and the issuing CA", first)
	}
	if want := clk.Now().Add(-time.Minute).UTC().Truncate(time.Second).Add(validity); !issuing.NotAfter.Equal(want) {
		t.Errorf("delegate NotAfter %v, want %v", issuing.NotAfter, want)
	}

	query := func() *ocsp.Response {
		t.Helper()
		issuingCA, _ := r.a.CA("issuing")
		req, err := ocsp.CreateRequest(cred, issuingCA.Certificate, nil)
		if err != nil {
			t.Fatal(err)
		}
		der, err := responder.Respond(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ocsp.ParseResponseForCert(der, cred, issuingCA.Certificate)
		if err != nil || resp.Status != ocsp.Good {
			t.Fatalf("response: %+v, %v", resp, err)
		}
		return resp
	}
	if resp := query(); resp.Certificate == nil || !resp.Certificate.Equal(issuing) {
		t.Fatalf("the response carries %v, want the delegate", resp.Certificate)
	}

	// Nothing is renewed before half the validity; then both are.
	clk.Add(validity/2 - 2*time.Minute)
	time.Sleep(100 * time.Millisecond)
	if len(d.got) != 0 {
		t.Fatal("a delegate was renewed before half its validity")
	}
	clk.Add(2 * time.Minute)
	second := round()
	renewed := second["Test Issuing"]
	if renewed.SerialNumber.Cmp(issuing.SerialNumber) == 0 || !renewed.NotAfter.After(issuing.NotAfter) {
		t.Fatalf("renewal gave serial %v until %v, after %v until %v", renewed.SerialNumber, renewed.NotAfter, issuing.SerialNumber, issuing.NotAfter)
	}
	if resp := query(); !resp.Certificate.Equal(renewed) {
		t.Fatal("responses still carry the old delegate")
	}
	// The responder reports the renewed delegates' ends (Delegate ran
	// before each was handed to round).
	if got := responder.DelegateExpiries(); len(got) != 2 || !got["issuing"].Equal(renewed.NotAfter) || !got["root"].Equal(second["Test Root"].NotAfter) {
		t.Fatalf("DelegateExpiries %v, want the renewed delegates'", got)
	}
	for _, id := range []string{"root", "issuing"} {
		var n int
		events, err := streamEvents(r, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if e.Type == domain.TypeOCSPResponderIssued {
				n++
			}
		}
		if n != 2 {
			t.Errorf("CA %s: %d responder records, want 2", id, n)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("RunOCSPResponders after the cancel: %v", err)
	}
}

// TestOCSPRespondersRefusesShortValidity: a validity that leaves no room for
// an hour's responses at renewal is refused.
func TestOCSPRespondersRefusesShortValidity(t *testing.T) {
	r := newRig(t)
	responder, err := revocation.NewResponder(r.a.OCSPIssuers(), r.a.Lookup, revocation.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.a.RunOCSPResponders(t.Context(), responder, authority.OCSPResponders{Validity: time.Hour}); err == nil {
		t.Fatal("a one-hour responder validity was accepted")
	}
}

// refusing is a Delegates that refuses the delegates of one CA, at the check
// before the record as Delegate would.
type refusing struct {
	next   authority.Delegates
	refuse string
}

func (d refusing) CheckDelegate(caID string, cert *x509.Certificate, key crypto.Signer) error {
	if caID == d.refuse {
		return errors.New("refused")
	}
	return d.next.CheckDelegate(caID, cert, key)
}

func (d refusing) Delegate(caID string, cert *x509.Certificate, key crypto.Signer) error {
	if caID == d.refuse {
		return errors.New("refused")
	}
	return d.next.Delegate(caID, cert, key)
}

// TestOCSPRespondersRetryOneCA: a CA whose delegate keeps being refused is
// retried alone, with a growing wait; the refused delegates are never recorded,
// and the other CA records no more responders.
func TestOCSPRespondersRetryOneCA(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRigWith(t, func(o *authority.Options) { o.Now = clk.Now })
	authority.SetResponderPoll(r.a, 10*time.Millisecond)
	responder, err := revocation.NewResponder(r.a.OCSPIssuers(), r.a.Lookup, revocation.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	failures := make(chan time.Time, 100)
	done := make(chan error, 1)
	go func() {
		done <- r.a.RunOCSPResponders(ctx, refusing{next: responder, refuse: "root"}, authority.OCSPResponders{Validity: 6 * time.Hour,
			Failed: func(id string, err error) {
				if id != "root" {
					t.Errorf("CA %s failed: %v", id, err)
				}
				failures <- clk.Now()
			}})
	}()
	next := func() time.Time {
		t.Helper()
		select {
		case f := <-failures:
			return f
		case <-time.After(10 * time.Second):
			t.Fatal("no failure within 10 s")
		}
		return time.Time{}
	}
	quiet := func() {
		t.Helper()
		select {
		case f := <-failures:
			t.Fatalf("an attempt at %v, before its wait was over", f)
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Waits of 1 s, then 2 s, then 4 s.
	at := []time.Time{next()}
	clk.Add(500 * time.Millisecond)
	quiet()
	clk.Add(time.Second)
	at = append(at, next())
	clk.Add(1500 * time.Millisecond)
	quiet()
	clk.Add(time.Second)
	at = append(at, next())
	clk.Add(3500 * time.Millisecond)
	quiet()
	clk.Add(time.Second)
	at = append(at, next())
	for i, want := range []time.Duration{1500 * time.Millisecond, 2500 * time.Millisecond, 4500 * time.Millisecond} {
		if d := at[i+1].Sub(at[i]); d != want {
			t.Errorf("attempt %d came %v after the one before, want %v", i+2, d, want)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	// A refused delegate is never recorded.
	for id, want := range map[string]int{"root": 0, "issuing": 1} {
		events, err := streamEvents(r, id)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range events {
			if e.Type == domain.TypeOCSPResponderIssued {
				n++
			}
		}
		if n != want {
			t.Errorf("CA %s: %d responder records, want %d", id, n, want)
		}
	}
}
