package api

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

// erasedSubject is an Eraser whose every subject is erased whole.
type erasedSubject struct{ Eraser }

func (erasedSubject) Erased(context.Context, domain.SubjectID) (domain.Erased, error) {
	return domain.Erased{All: true, At: 7}, nil
}

// keysDestroyed is the ErasureState of an embedded vault that destroyed the
// keys.
func keysDestroyed(context.Context, domain.SubjectID, bool, []string) (string, time.Time, []uint32, error) {
	return "keys-destroyed", time.Time{}, nil, nil
}

// provingLedger is a Ledger whose Prove runs prove.
type provingLedger struct {
	Ledger
	prove func(ctx context.Context) ([]Evidence, error)
}

func (l provingLedger) Prove(ctx context.Context, _, _ string) ([]Evidence, error) {
	return l.prove(ctx)
}

// TestErasureWaitsSideBySide checks that an erasure's receipt waits for the
// directory and for the ledger's evidence at the same time, not one after the
// other, so the answer takes at most the longer of the two waits: each fake
// below returns only once the other has started. Run one after the other,
// the first would give up (after a safety timeout far beyond the real
// waits), and the receipt would say "pending".
func TestErasureWaitsSideBySide(t *testing.T) {
	const safety = 10 * time.Second
	dirStarted, proveStarted := make(chan struct{}), make(chan struct{})
	meet := func(ctx context.Context, mine, other chan struct{}) error {
		close(mine)
		select {
		case <-other:
			return nil
		case <-time.After(safety):
			return errors.New("the other wait never started")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s := &server{logger: slog.New(slog.DiscardHandler), cfg: Config{
		Eraser:       erasedSubject{},
		ErasureState: keysDestroyed,
		DirectoryErasure: func(ctx context.Context, at uint64, wait time.Duration) (bool, error) {
			if wait != directoryWait || at != 7 {
				t.Errorf("directory wait %v for position %d, want %v for 7", wait, at, directoryWait)
			}
			err := meet(ctx, dirStarted, proveStarted)
			return err == nil, err
		},
		Ledger: provingLedger{prove: func(ctx context.Context) ([]Evidence, error) {
			if err := meet(ctx, proveStarted, dirStarted); err != nil {
				return nil, err
			}
			return []Evidence{{Position: 7}}, nil
		}},
	}}
	r, err := s.erasureState(t.Context(), "s1", directoryWait)
	if err != nil {
		t.Fatal(err)
	}
	if r.Directory != "removed" || len(r.Evidence) != 1 || r.Status != "keys-destroyed" {
		t.Fatalf("receipt %+v, want the directory removed, one evidence and keys-destroyed", r)
	}
	if r.Evidence[0].Inclusion == nil {
		t.Error("the evidence's inclusion proof is null, want an empty list")
	}
}

// TestErasureDirectoryState checks the directory field of a receipt: absent
// without a directory, "pending" when the directory is behind or its state is
// unknown, "removed" once it caught up.
func TestErasureDirectoryState(t *testing.T) {
	for _, tt := range []struct {
		name    string
		dir     DirectoryErasure
		want    string
		wantLog bool
	}{
		{"no directory", nil, "", false},
		{"caught up", func(context.Context, uint64, time.Duration) (bool, error) { return true, nil }, "removed", false},
		{"behind", func(context.Context, uint64, time.Duration) (bool, error) { return false, nil }, "pending", false},
		{"unknown", func(context.Context, uint64, time.Duration) (bool, error) {
			return true, errors.New("ldap down")
		}, "pending", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logs := &syncBuffer{}
			s := &server{logger: slog.New(slog.NewTextHandler(logs, nil)), cfg: Config{
				Eraser:           erasedSubject{},
				ErasureState:     keysDestroyed,
				DirectoryErasure: tt.dir,
			}}
			r, err := s.erasureState(t.Context(), "s1", 0)
			if err != nil {
				t.Fatal(err)
			}
			if r.Directory != tt.want {
				t.Errorf("directory %q, want %q", r.Directory, tt.want)
			}
			if got := strings.Contains(logs.String(), "directory's state is unknown"); got != tt.wantLog {
				t.Errorf("logged the unknown state: %v, want %v; log:\n%s", got, tt.wantLog, logs)
			}
		})
	}
}
