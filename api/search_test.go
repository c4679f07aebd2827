package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

// accessLedger records accesses as the ledger would, slowly, and fails, panics
// or answers gone for the subjects named so.
type accessLedger struct {
	Commands
	calls atomic.Int64
}

func (l *accessLedger) RecordAccess(ctx context.Context, _ domain.Actor, id domain.SubjectID, _, _ string) error {
	l.calls.Add(1)
	switch id {
	case "gone":
		return &domain.Error{Kind: domain.KindGone, Code: "erased", Detail: "erased"}
	case "fail":
		return &domain.Error{Kind: domain.KindUnavailable, Code: "unavailable", Detail: "the ledger is down"}
	case "panic":
		panic("a bug")
	case "slow": // in flight until the search's context ends
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return nil
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Millisecond):
		return nil
	}
}

// TestRecordSearchAccesses checks the side-by-side access records of a search:
// each row gets its own outcome, a gone subject does not stop the others, and
// a failure or a panic stops further appends instead of ending the server.
func TestRecordSearchAccesses(t *testing.T) {
	ctx := context.Background()
	rows := func(ids ...domain.SubjectID) []SubjectRow {
		out := make([]SubjectRow, len(ids))
		for i, id := range ids {
			out[i] = SubjectRow{ID: id}
		}
		return out
	}
	many := func(bad domain.SubjectID) []SubjectRow {
		ids := []domain.SubjectID{bad}
		for i := range 99 {
			ids = append(ids, domain.SubjectID(fmt.Sprintf("s%d", i)))
		}
		return rows(ids...)
	}

	t.Run("gone", func(t *testing.T) {
		l := &accessLedger{}
		s := &server{cfg: Config{Commands: l}, logger: slog.New(slog.DiscardHandler)}
		got, failure := s.recordSearchAccesses(ctx, domain.Actor{}, rows("a", "gone", "b"), "why")
		if got[0] != nil || !isGoneOrMissing(got[1]) || got[2] != nil || l.calls.Load() != 3 {
			t.Fatalf("outcomes %v after %d calls", got, l.calls.Load())
		}
		if failure != nil {
			t.Errorf("a gone subject made the search fail: %v", failure)
		}
	})
	for _, bad := range []domain.SubjectID{"fail", "panic"} {
		t.Run(string(bad), func(t *testing.T) {
			l := &accessLedger{}
			s := &server{cfg: Config{Commands: l}, logger: slog.New(slog.DiscardHandler)}
			got, failure := s.recordSearchAccesses(ctx, domain.Actor{}, many(bad), "why")
			if got[0] == nil || isGoneOrMissing(got[0]) {
				t.Fatalf("the %s row's outcome: %v", bad, got[0])
			}
			if failure == nil || !errors.Is(got[0], failure) {
				t.Errorf("failure %v, want the %s row's %v", failure, bad, got[0])
			}
			if n := l.calls.Load(); n > 2*searchAppends {
				t.Errorf("%d appends started after the %s row; want no more than about %d", n, bad, searchAppends)
			}
			for i, err := range got[1:] {
				if err != nil && !errors.Is(err, got[0]) && !errors.Is(err, context.Canceled) {
					t.Errorf("row %d: %v", i+1, err)
				}
			}
		})
	}
	// A failing row after rows whose appends it cancels: the failure is still
	// the failing row's, not a cancellation.
	t.Run("fail in the middle", func(t *testing.T) {
		l := &accessLedger{}
		s := &server{cfg: Config{Commands: l}, logger: slog.New(slog.DiscardHandler)}
		ids := []domain.SubjectID{"slow"}
		for i := range 2 * searchAppends {
			ids = append(ids, domain.SubjectID(fmt.Sprintf("s%d", i)))
		}
		ids = append(ids, "fail")
		got, failure := s.recordSearchAccesses(ctx, domain.Actor{}, rows(ids...), "why")
		if !errors.Is(got[0], context.Canceled) {
			t.Fatalf("the slow first row's outcome: %v, want context.Canceled (else this case tests nothing)", got[0])
		}
		if failure == nil || errors.Is(failure, context.Canceled) || !errors.Is(failure, got[len(got)-1]) {
			t.Errorf("failure %v, want the failing row's %v", failure, got[len(got)-1])
		}
	})
}
