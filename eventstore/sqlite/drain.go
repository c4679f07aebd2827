package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/caledger/caledger/eventstore"
)

// The drainer moves chunks from the tail (durable in the commit log) into
// ledger.db, many commits per transaction, on the ledger's write connection.
// That connection runs synchronous=FULL, so when a drain returns its chunks are
// durable in ledger.db; that is what lets the writer reuse a log file. A lone
// appender's commits thus cost SQLite one transaction per drainInterval instead of
// one per commit, and SQLite's checkpoints run here, never inside a commit.
const (
	drainInterval = 20 * time.Millisecond
	drainBytes    = 4 << 20  // a tail this large wakes the drainer early
	drainTxBytes  = 16 << 20 // the most one drain transaction writes
)

func (s *Store) drainLoop() {
	defer close(s.drainDone)
	tick := time.NewTicker(drainInterval)
	defer tick.Stop()
	ctx := context.Background()
	for {
		stop := false
		select {
		case <-s.drainStop:
			stop = true // the writer has stopped: drain everything, once more
		case <-tick.C:
		case <-s.drainNow:
		}
		var err error
		for {
			var n int
			if n, err = s.drain(ctx); err != nil {
				if s.failed.Load() == nil {
					s.fail(fmt.Errorf("drain into %s: %w", ledgerFile, err))
				}
				s.drained.wake()
				break
			}
			if n == 0 || (!stop && s.tail.size() < drainBytes) {
				break
			}
		}
		if stop {
			if err != nil {
				// Close reports it; the commit log still holds what was not drained,
				// and the next Open replays it.
				s.drainErr = fmt.Errorf("event store: final drain into %s: %w", ledgerFile, err)
			}
			return
		}
	}
}

// drain writes the oldest waiting chunks to ledger.db and forgets them from the
// tail. It returns how many it wrote.
func (s *Store) drain(ctx context.Context) (int, error) {
	cs := s.tail.pending(drainTxBytes)
	if len(cs) == 0 {
		return 0, nil
	}
	if err := s.insertChunks(ctx, cs); err != nil {
		return 0, err
	}
	last := cs[len(cs)-1].last
	s.durable.Store(last)
	s.tail.drop(last)
	s.drained.wake()
	return len(cs), nil
}

// insertChunks writes chunks to ledger.db in one transaction. The statement is
// INSERT OR REPLACE: a drain retried after a COMMIT that reported an error (and
// may have committed) writes the same chunks again.
func (s *Store) insertChunks(ctx context.Context, cs []chunk) error {
	conn := s.wconn
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	for _, c := range cs {
		// The driver copies the blob while binding.
		if _, err := s.insertStmt.ExecContext(ctx, int64(c.first), int64(c.last), c.data); err != nil {
			if _, rbErr := conn.ExecContext(ctx, "ROLLBACK"); rbErr != nil {
				return fmt.Errorf("insert: %v; rollback: %w", err, rbErr)
			}
			return fmt.Errorf("insert: %w", err)
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		// SQLite may keep the transaction open after a failed COMMIT (SQLITE_BUSY);
		// end it so that a later drain can begin. After an I/O error SQLite has
		// rolled back already and this ROLLBACK fails harmlessly.
		_, _ = conn.ExecContext(ctx, "ROLLBACK")
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// awaitDurable returns once ledger.db durably holds every position up to
// position, waking the drainer if needed.
func (s *Store) awaitDurable(position uint64) error {
	for {
		wake := s.drained.wait()
		if s.durable.Load() >= position {
			return nil
		}
		if p := s.failed.Load(); p != nil {
			return fmt.Errorf("%w: %v", eventstore.ErrFailed, *p)
		}
		select {
		case s.drainNow <- struct{}{}:
		default:
		}
		select {
		case <-wake:
		case <-s.drainDone:
			return eventstore.ErrClosed
		}
	}
}
