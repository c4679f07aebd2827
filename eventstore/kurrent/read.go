package kurrent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
)

// A stream is read a page at a time: up to pageSize events, cut short once it
// holds pageBytes of data, so that a stream of large events is not held in
// memory whole.
const (
	pageSize  = 512
	pageBytes = 4 << 20
)

// ReadStream implements eventstore.Store: a forward read of the stream's
// KurrentDB stream, from revision from-1, a page at a time.
func (s *Store) ReadStream(ctx context.Context, stream string, from uint64) iter.Seq2[domain.Event, error] {
	return func(yield func(domain.Event, error) bool) {
		if err := s.usable(ctx); err != nil {
			yield(domain.Event{}, err)
			return
		}
		revision := max(from, 1) - 1
		for {
			var page []domain.Event
			var more bool
			err := s.retry(ctx, s.opts.RetryTimeout, func(ctx context.Context) error {
				var err error
				page, more, err = s.readPage(ctx, stream, revision)
				return err
			})
			for _, e := range page {
				if !yield(e, nil) {
					return
				}
			}
			if err != nil {
				yield(domain.Event{}, s.iterErr(ctx, err))
				return
			}
			if !more {
				return
			}
			revision += uint64(len(page))
		}
	}
}

// readPage reads a page of a stream from a revision; more reports that the
// stream may go on. On a corrupt event it returns the events before it with the
// error; on any other error, none.
func (s *Store) readPage(ctx context.Context, stream string, revision uint64) (page []domain.Event, more bool, err error) {
	var corrupt error
	err = s.conn.call(ctx, func(ctx context.Context, c *kurrentdb.Client) error {
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		rs, err := c.ReadStream(rctx, s.stream(stream), kurrentdb.ReadStreamOptions{From: kurrentdb.Revision(revision)}, pageSize)
		if err != nil {
			return err
		}
		defer rs.Close()
		var out []domain.Event
		size := 0
		for {
			re, err := rs.Recv()
			switch {
			case errors.Is(err, io.EOF) || isNotFound(err):
				page, more = out, len(out) == pageSize
				return nil
			case err != nil:
				return err
			}
			want := revision + uint64(len(out)) + 1
			e, err := s.decode(re.Event, 0)
			if err == nil && e.Version != want {
				err = &eventstore.CorruptError{Position: e.Position, Err: fmt.Errorf("stream %q: version %d where %d belongs", stream, e.Version, want)}
			}
			if err != nil {
				page, corrupt = out, err
				return nil
			}
			out = append(out, e)
			if size += len(re.Event.Data); size >= pageBytes && len(out) < pageSize {
				page, more = out, true
				return nil // the deferred cancel ends the read
			}
		}
	})
	if err != nil {
		return nil, false, err
	}
	return page, more, corrupt
}

// ReadAll implements eventstore.Store. It reads the last commit record (the
// head), then $all from the commit before position from (see startFor) up to
// the head.
func (s *Store) ReadAll(ctx context.Context, from uint64) iter.Seq2[domain.Event, error] {
	return func(yield func(domain.Event, error) bool) {
		if err := s.usable(ctx); err != nil {
			yield(domain.Event{}, err)
			return
		}
		head, found, err := s.headCommit(ctx)
		if err != nil {
			yield(domain.Event{}, err)
			return
		}
		if !found || max(from, 1) > head.last {
			return
		}
		s.scan(ctx, max(from, 1), &head, yield)
	}
}

// Follow implements eventstore.Store: a catch-up subscription to $all, filtered
// on the server to this ledger's prefix, that resubscribes after a connection
// loss from the last commit it has fully delivered.
func (s *Store) Follow(ctx context.Context, from uint64) iter.Seq2[domain.Event, error] {
	return func(yield func(domain.Event, error) bool) {
		if err := s.usable(ctx); err != nil {
			yield(domain.Event{}, err)
			return
		}
		s.scan(ctx, max(from, 1), nil, yield)
	}
}

// scan yields the events from position next on, in order, and stops after the
// last position of head (nil: never; a follow). Every event's position comes
// from its own bytes; scan checks they run on without a gap, so a lost or
// foreign event is an error, never a silent skip.
func (s *Store) scan(ctx context.Context, next uint64, head *commit, yield func(domain.Event, error) bool) {
	var stop uint64
	if head != nil {
		stop = head.last
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	fail := func(err error) { yield(domain.Event{}, s.iterErr(ctx, err)) }

	budget := s.opts.RetryTimeout // ReadAll gives up; Follow does not
	if stop == 0 {
		budget = 0
	}
	var resume kurrentdb.AllPosition
	err := s.retry(ctx, budget, func(ctx context.Context) error {
		var err error
		resume, err = s.startFor(ctx, next, head)
		return err
	})
	if err != nil {
		fail(err)
		return
	}
	filter := &kurrentdb.SubscriptionFilter{Type: kurrentdb.StreamFilterType, Prefixes: []string{s.prefix}}
	b := backoff{min: s.opts.MinBackoff, max: s.opts.MaxBackoff}
	lastProgress := time.Now()
	// The last commit record seen: once every event it announces is yielded,
	// it is where a new subscription resumes.
	var last commit
	seen := false
	for {
		var deadline time.Time
		if budget > 0 {
			deadline = lastProgress.Add(budget)
		}
		sub, g, err := s.subscribe(ctx, deadline, resume, filter)
		if err != nil {
			switch {
			case ctx.Err() != nil || !isConnErr(err):
				fail(err)
				return
			case budget > 0 && time.Now().After(deadline):
				fail(fmt.Errorf("kurrent: gave up after %v: %w", budget, err))
				return
			}
			select {
			case <-time.After(b.next()):
			case <-ctx.Done():
			}
			continue
		}
		var dropped error
	events:
		for {
			ev := sub.Recv()
			switch {
			case ev.SubscriptionDropped != nil:
				dropped = ev.SubscriptionDropped.Error
				break events
			case ev.CaughtUp != nil && stop != 0 && next <= stop:
				// Everything committed before the head was read has been sent.
				sub.Close()
				s.conn.release(g, nil, ctx)
				fail(&eventstore.CorruptError{Position: next, Err: errors.New("event is missing")})
				return
			case ev.EventAppeared == nil:
				continue
			}
			rec := ev.EventAppeared.Event
			lastProgress = time.Now()
			b.reset()
			var e domain.Event
			var err error
			switch {
			case rec.StreamID == s.commits:
				var c commit
				if c, err = readCommit(rec); err != nil {
					err = &eventstore.CorruptError{Position: next, Err: err}
					break
				}
				if c.first > next {
					err = &eventstore.CorruptError{Position: next, Err: fmt.Errorf("event is missing (next commit starts at %d)", c.first)}
					break
				}
				last, seen = c, true
				if next > c.last {
					resume = c.position
				}
				continue
			case !strings.HasPrefix(rec.StreamID, s.prefix):
				continue // the server filters; this is a second line
			default:
				if e, err = s.decode(rec, next); err == nil && e.Position > next {
					err = &eventstore.CorruptError{Position: next, Err: errors.New("event is missing")}
				}
			}
			if err != nil {
				sub.Close()
				s.conn.release(g, nil, ctx)
				fail(err)
				return
			}
			if e.Position < next {
				continue // before from, or sent again after a resubscription
			}
			if !yield(e, nil) {
				sub.Close()
				s.conn.release(g, nil, ctx)
				return
			}
			next++
			if seen && next > last.last {
				resume = last.position
			}
			if stop != 0 && e.Position >= stop {
				sub.Close()
				s.conn.release(g, nil, ctx)
				return
			}
		}
		sub.Close()
		s.conn.release(g, dropped, ctx)
		if ctx.Err() != nil {
			fail(ctx.Err())
			return
		}
		if !isConnErr(dropped) {
			fail(fmt.Errorf("kurrent: subscription dropped: %w", dropped))
			return
		}
		if budget > 0 && time.Since(lastProgress) > budget {
			fail(fmt.Errorf("kurrent: gave up after %v: %w", budget, dropped))
			return
		}
		s.log.Info("kurrent: subscription dropped; resubscribing", "err", dropped)
		select {
		case <-time.After(b.next()):
		case <-ctx.Done():
		}
	}
}

// subscribe opens a filtered $all subscription after position from, waiting
// for a connection until deadline (zero: ctx's end). The subscription lives
// until ctx ends or it is closed, and holds its client until released.
func (s *Store) subscribe(ctx context.Context, deadline time.Time, from kurrentdb.AllPosition, filter *kurrentdb.SubscriptionFilter) (*kurrentdb.Subscription, *generation, error) {
	actx, cancel := ctx, context.CancelFunc(func() {})
	if !deadline.IsZero() {
		actx, cancel = context.WithDeadline(ctx, deadline)
	}
	g, err := s.conn.acquire(actx)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	type result struct {
		sub *kurrentdb.Subscription
		err error
	}
	ch := make(chan result, 1)
	go func() {
		sub, err := g.client.SubscribeToAll(leader(ctx), kurrentdb.SubscribeToAllOptions{From: from, Filter: filter})
		ch <- result{sub, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			s.conn.release(g, r.err, ctx)
			return nil, nil, r.err
		}
		return r.sub, g, nil
	case <-ctx.Done():
		go func() {
			r := <-ch
			if r.sub != nil {
				r.sub.Close()
			}
			s.conn.release(g, r.err, ctx)
		}()
		return nil, nil, ctx.Err()
	}
}

// startFor returns where in $all to subscribe from to see position next: after
// the last commit record whose events all come before next. Commit records
// have contiguous revisions and growing positions, so a binary search over the
// commit stream finds it in log₂(commits) reads; every event of later commits
// comes after it in $all. last is the last commit record when the caller has
// just read it (ReadAll), nil to read it here.
func (s *Store) startFor(ctx context.Context, next uint64, last *commit) (kurrentdb.AllPosition, error) {
	if next <= 1 {
		return kurrentdb.Start{}, nil
	}
	if last == nil {
		c, found, err := s.lastCommit(ctx)
		if err != nil || !found {
			return kurrentdb.Start{}, err
		}
		last = &c
	}
	lastC := *last
	if lastC.last < next {
		return lastC.position, nil
	}
	// Find the largest revision r < lastC.revision with last < next.
	lo, hi := uint64(0), lastC.revision // commit hi has last >= next
	var best *commit
	for lo < hi {
		mid := lo + (hi-lo)/2
		c, found, err := s.commitAt(ctx, mid)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, &eventstore.CorruptError{Position: next, Err: fmt.Errorf("commit stream revision %d is missing", mid)}
		}
		if c.last < next {
			best, lo = &c, mid+1
		} else {
			hi = mid
		}
	}
	if best == nil {
		return kurrentdb.Start{}, nil
	}
	return best.position, nil
}
