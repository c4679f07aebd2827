package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/caledger/caledger/domain"
)

// TestFromErrorKinds checks that every domain error kind has its own status,
// and that a cause reaches the logs only for server errors, never the client.
func TestFromErrorKinds(t *testing.T) {
	want := map[domain.Kind]int{
		domain.KindInvalid:     http.StatusBadRequest,
		domain.KindNotFound:    http.StatusNotFound,
		domain.KindConflict:    http.StatusConflict,
		domain.KindGone:        http.StatusGone,
		domain.KindUnavailable: http.StatusServiceUnavailable,
		domain.KindTooLarge:    http.StatusRequestEntityTooLarge,
	}
	if len(kindStatus) != len(want) {
		t.Errorf("kindStatus maps %d kinds, this test knows %d", len(kindStatus), len(want))
	}
	// A kind added to the domain (and to Kind.String) without a status in
	// kindStatus fails here with 500.
	for k := domain.Kind(1); !strings.HasPrefix(k.String(), "kind("); k++ {
		var logs strings.Builder
		logger := slog.New(slog.NewTextHandler(&logs, nil))
		err := fromError(context.Background(), logger, &domain.Error{Kind: k, Code: "some-code", Detail: "a detail", Err: errors.New("secret cause")})
		var p *problem
		if !errors.As(err, &p) {
			t.Fatalf("kind %s: %T", k, err)
		}
		if p.Status != want[k] || p.Code != "some-code" || p.Detail != "a detail" {
			t.Errorf("kind %s: %+v, want status %d", k, p, want[k])
		}
		if strings.Contains(p.Detail+p.Title, "secret") {
			t.Errorf("kind %s: the cause reached the client: %+v", k, p)
		}
		if logged := strings.Contains(logs.String(), "secret cause"); logged != (p.Status >= 500) {
			t.Errorf("kind %s: cause logged = %v for status %d", k, logged, p.Status)
		}
	}
}
