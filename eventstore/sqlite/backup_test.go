package sqlite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/storetest"
)

// TestBackupReplaysCommitLog: a store no process has open, whose last 40
// events only the commit log holds (a process killed before its drain), is
// backed up whole: Backup replays the log first.
func TestBackupReplaysCommitLog(t *testing.T) {
	ctx := context.Background()
	dir := logStore(t, 80)
	sqlExec(t, dir, `DELETE FROM events WHERE first > 40`)
	dst := filepath.Join(t.TempDir(), "restored", ledgerFile)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	opts := Options{LogFileBytes: minLogBytes}
	head, err := Backup(ctx, dir, dst, opts)
	if err != nil {
		t.Fatal(err)
	}
	if head != 80 {
		t.Fatalf("backup head %d, want 80", head)
	}
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("backup mode %v, want 0600", st.Mode().Perm())
	}
	if logIDOf(t, dir) == logIDOf(t, filepath.Dir(dst)) {
		t.Error("the copy keeps the source's log id")
	}
	checkReplayed(t, filepath.Dir(dst), opts, 80)
	sameEvents(t, openEvents(t, dir, opts), openEvents(t, filepath.Dir(dst), opts), 80)
}

// TestBackupWhileOpen: with the store open (as in a running server), Backup
// copies a prefix of the ledger while appends go on, and the copy opens as a
// store of its own that takes appends after its head.
func TestBackupWhileOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := Options{LogFileBytes: minLogBytes}
	s, err := Open(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	appendN := func(n int) {
		for range n {
			if _, err := s.Append(ctx, "a", domain.Any, storetest.NewEvent(t, "t", []byte(`{}`))); err != nil {
				t.Error(err)
				return
			}
		}
	}
	appendN(50)
	// Everything acknowledged is drained within the drain interval.
	for deadline := time.Now().Add(5 * time.Second); s.durable.Load() < 50; {
		if time.Now().After(deadline) {
			t.Fatal("the drainer did not reach position 50")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := Open(ctx, dir, opts); !errors.Is(err, ErrInUse) {
		t.Fatalf("a second Open gave %v, want ErrInUse: the backup below would not take the live path", err)
	}
	// Appends go on until the backup returns; it starts after the first.
	events := make([]domain.Event, 5000)
	for i := range events {
		events[i] = storetest.NewEvent(t, "t", []byte(`{}`))
	}
	var wg sync.WaitGroup
	var stop atomic.Bool
	started := make(chan struct{})
	wg.Go(func() {
		for i, e := range events {
			if _, err := s.Append(ctx, "a", domain.Any, e); err != nil {
				t.Error(err)
				break
			}
			if i == 0 {
				close(started)
			}
			if stop.Load() {
				break
			}
		}
	})
	<-started
	restored := filepath.Join(t.TempDir(), "restored")
	if err := os.MkdirAll(restored, 0o700); err != nil {
		t.Fatal(err)
	}
	head, err := Backup(ctx, dir, filepath.Join(restored, ledgerFile), opts)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if head < 50 || head > 50+uint64(len(events)) {
		t.Fatalf("backup head %d, want 50..%d", head, 50+len(events))
	}
	sameEvents(t, readEvents(t, s), openEvents(t, restored, opts), int(head))

	r, err := Open(ctx, restored, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a, err := r.Append(ctx, "a", domain.Exact(head), storetest.NewEvent(t, "t", []byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	if a.LastPosition != head+1 {
		t.Fatalf("the restored store appended at %d, want %d", a.LastPosition, head+1)
	}
}

func TestBackupRefuses(t *testing.T) {
	ctx := context.Background()
	opts := Options{LogFileBytes: minLogBytes}
	dir := logStore(t, 3)
	dst := filepath.Join(t.TempDir(), ledgerFile)
	if err := os.WriteFile(dst, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Backup(ctx, dir, dst, opts); err == nil {
		t.Fatal("Backup over an existing file succeeded")
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep" {
		t.Fatalf("Backup changed the existing file: %q", b)
	}
	empty := t.TempDir()
	if _, err := Backup(ctx, empty, filepath.Join(t.TempDir(), ledgerFile), opts); err == nil {
		t.Fatal("Backup of a directory with no ledger succeeded")
	}
	if names, _ := os.ReadDir(empty); len(names) != 0 {
		t.Fatalf("Backup of an empty directory created %d files in it", len(names))
	}
}

// readEvents returns every event of s.
func readEvents(t *testing.T, s *Store) []domain.Event {
	t.Helper()
	var es []domain.Event
	for e, err := range s.ReadAll(context.Background(), 1) {
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	return es
}

// openEvents returns every event of the store in dir, which no one has open.
func openEvents(t *testing.T, dir string, opts Options) []domain.Event {
	t.Helper()
	s, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return readEvents(t, s)
}

// sameEvents checks that copy holds exactly the first len(copy) events of
// src, and n of them.
func sameEvents(t *testing.T, src, copy []domain.Event, n int) {
	t.Helper()
	if len(copy) != n || len(src) < n {
		t.Fatalf("the copy holds %d events, the source %d; want a copy of %d", len(copy), len(src), n)
	}
	if !reflect.DeepEqual(src[:n], copy) {
		t.Fatal("the copy's events differ from the source's")
	}
}
