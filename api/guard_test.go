package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/projections"
)

// guardViews answers Certificate from rows; a serial not there is not found.
type guardViews struct {
	Views
	rows map[domain.Serial]CertificateRow
	err  error
}

func (v guardViews) Certificate(_ context.Context, serial domain.Serial) (CertificateRow, error) {
	if v.err != nil {
		return CertificateRow{}, v.err
	}
	r, ok := v.rows[serial]
	if !ok {
		return CertificateRow{}, projections.ErrNotFound
	}
	return r, nil
}

// guardLedger answers CertificateState from certs, as the ledger would.
type guardLedger struct {
	Commands
	certs map[domain.Serial]domain.Certificate
}

func (l guardLedger) CertificateState(_ context.Context, serial domain.Serial) (domain.Certificate, error) {
	c, ok := l.certs[serial]
	if !ok {
		return domain.Certificate{}, &domain.Error{Kind: domain.KindNotFound, Code: "no-certificate", Detail: "no such certificate"}
	}
	return c, nil
}

// TestCredentialGuardSerial: an officer may revoke an ordinary certificate but
// not a client credential, whether the views have the credential yet or only
// the ledger does; a view failure refuses rather than lets the request
// through.
func TestCredentialGuardSerial(t *testing.T) {
	officer := Principal{Actor: domain.Actor{ID: "cert:0a"}, Roles: []string{RoleOfficer}}
	ctx := context.WithValue(context.Background(), principalKey{}, officer)
	ledger := guardLedger{certs: map[domain.Serial]domain.Certificate{
		"a1": {Serial: "a1", Profile: "tls-client"},
		"a2": {Serial: "a2", Profile: "officer"}, // issued, not yet in the views
		"a3": {Serial: "a3", Profile: "officer"},
	}}
	views := guardViews{rows: map[domain.Serial]CertificateRow{
		"a1": {Serial: "a1", Profile: "tls-client"},
		"a3": {Serial: "a3", Profile: "officer"},
	}}
	role := func(p string) string {
		if p == "officer" {
			return RoleOfficer
		}
		return ""
	}
	for _, tt := range []struct {
		name   string
		views  guardViews
		serial domain.Serial
		status int // 0: allowed
	}{
		{"ordinary certificate in the views", views, "a1", 0},
		{"credential in the views", views, "a3", http.StatusForbidden},
		{"credential only in the ledger", views, "a2", http.StatusForbidden},
		{"serial nobody knows: the command answers 404", views, "ff", 0},
		{"views failing", guardViews{err: errors.New("disk I/O error")}, "a1", http.StatusInternalServerError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &server{cfg: Config{Views: tt.views, Commands: ledger, ProfileRole: role}, logger: slog.New(slog.DiscardHandler)}
			_, err := s.credentialGuardSerial(ctx, officer.Actor, tt.serial)
			var p *problem
			switch {
			case tt.status == 0 && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.status != 0 && (!errors.As(err, &p) || p.Status != tt.status):
				t.Fatalf("err = %v, want a %d problem", err, tt.status)
			}
		})
	}
}

// revokingLedger is guardLedger that records revocations in its certificates.
type revokingLedger struct{ guardLedger }

func (l revokingLedger) RevokeCertificate(_ context.Context, _ domain.Actor, serial domain.Serial, reason domain.RevocationReason) error {
	c := l.certs[serial]
	c.Revoked, c.Reason, c.RevokedAt = true, reason, time.Unix(1700000000, 0).UTC()
	l.certs[serial] = c
	return nil
}

// TestRevocationAnswersFromTheLedger: a revocation whose views are behind
// (the row still valid, or no row yet) answers what the ledger recorded, not
// 404 or "valid"; and a revocation without a body is reason unspecified.
func TestRevocationAnswersFromTheLedger(t *testing.T) {
	ledger := revokingLedger{guardLedger{certs: map[domain.Serial]domain.Certificate{
		"a1": {Serial: "a1", CAID: "issuing", Profile: "tls-client"},
		"a2": {Serial: "a2", CAID: "issuing", Profile: "tls-client", NotBefore: time.Unix(1600000000, 0).UTC(), SPKISHA256: "cd"},
	}}}
	views := guardViews{rows: map[domain.Serial]CertificateRow{
		"a1": {Serial: "a1", CAID: "issuing", Profile: "tls-client", Status: projections.StatusValid, SPKISHA256: "ab"},
	}}
	router, _ := newAPI(Config{CAs: oneCA{}, Commands: ledger, Views: views})
	officer := Principal{Actor: domain.Actor{ID: "cert:0a"}, Roles: []string{RoleOfficer}}
	for _, tt := range []struct {
		serial, body, reason string
	}{
		{"a1", `{"reason": "keyCompromise"}`, "keyCompromise"},
		{"a2", "", "unspecified"},
	} {
		req := httptest.NewRequest(http.MethodPost, "/v1/certificates/"+tt.serial+"/revocation", strings.NewReader(tt.body))
		if tt.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		req = req.WithContext(context.WithValue(req.Context(), principalKey{}, officer))
		w := httptest.NewRecorder()
		router.ServeHTTP(w, req)
		var info CertificateInfo
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &info) != nil {
			t.Fatalf("revoke %s: %d %s", tt.serial, w.Code, w.Body)
		}
		if info.Status != "revoked" || info.Reason != tt.reason || info.RevokedAt == nil || info.CA != "issuing" ||
			tt.serial == "a2" && (info.NotBefore.IsZero() || info.SPKISHA256 == "") {
			t.Errorf("revoke %s answered %+v, want revoked (%s)", tt.serial, info, tt.reason)
		}
	}
}
