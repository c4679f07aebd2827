// Package handoff passes items from one producer goroutine to one consumer in
// chunks: the consumer takes everything produced so far at once, so the two
// goroutines wake each other about once per chunk rather than once per item.
// The views and the ledger's Merkle tree read the ledger ahead of their writers
// through it; a channel of events cost a views rebuild about a tenth of its
// speed, one wake-up per event.
package handoff

import (
	"context"
	"sync"
)

// Queue holds at most max items the consumer has not taken.
type Queue[T any] struct {
	max   int
	mu    sync.Mutex
	items []T
	spare []T           // the slice the consumer gave back, for reuse
	done  bool          // the producer has finished; items holds all it put
	ready chan struct{} // signalled when items turns non-empty or done is set
	full  chan struct{} // signalled when items reaches max or done is set
	space chan struct{} // signalled when the consumer takes items
}

// New returns a queue of at most max items.
func New[T any](max int) *Queue[T] {
	return &Queue[T]{max: max, ready: make(chan struct{}, 1), full: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Put adds item, waiting while max items wait to be taken. It reports false,
// having added nothing, when ctx ends first.
func (q *Queue[T]) Put(ctx context.Context, item T) bool {
	q.mu.Lock()
	for len(q.items) >= q.max {
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-ctx.Done():
			return false
		}
		q.mu.Lock()
	}
	wasEmpty := len(q.items) == 0
	q.items = append(q.items, item)
	full := len(q.items) >= q.max
	q.mu.Unlock()
	if wasEmpty {
		signal(q.ready)
	}
	if full {
		signal(q.full)
	}
	return true
}

// Finish tells the consumer the producer will put nothing more.
func (q *Queue[T]) Finish() {
	q.mu.Lock()
	q.done = true
	q.mu.Unlock()
	signal(q.ready)
	signal(q.full)
}

// Take returns what was put since the last Take (nothing if nothing is
// ready), and whether the producer has finished. The returned slice is the
// caller's until its next Take.
func (q *Queue[T]) Take() ([]T, bool) {
	q.mu.Lock()
	items, done := q.items, q.done
	if len(items) > 0 {
		clear(q.spare) // the consumer is done with it: let its items go
		q.items, q.spare = q.spare[:0], items
	}
	q.mu.Unlock()
	if len(items) > 0 {
		signal(q.space)
	}
	return items, done
}

// Ready is signalled when Take may have something new.
func (q *Queue[T]) Ready() <-chan struct{} { return q.ready }

// Full is signalled when max items wait, or the producer has finished. A
// signal may be stale: the items may have been taken since.
func (q *Queue[T]) Full() <-chan struct{} { return q.full }
