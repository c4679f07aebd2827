package handoff_test

import (
	"context"
	"testing"

	"github.com/caledger/caledger/projections/handoff"
)

// TestQueue checks order, the bound, Finish and a Put that gives up when its
// context ends while the queue is full.
func TestQueue(t *testing.T) {
	const max, n = 8, 100
	q := handoff.New[int](max)
	go func() {
		defer q.Finish()
		for i := range n {
			if !q.Put(context.Background(), i) {
				return
			}
		}
	}()
	next := 0
	for {
		items, done := q.Take()
		if len(items) > max {
			t.Fatalf("took %d items at once; at most %d may wait", len(items), max)
		}
		for _, it := range items {
			if it != next {
				t.Fatalf("took %d, want %d", it, next)
			}
			next++
		}
		if done && len(items) == 0 {
			break
		}
		if len(items) == 0 {
			<-q.Ready()
		}
	}
	if next != n {
		t.Fatalf("took %d items, want %d", next, n)
	}

	q = handoff.New[int](2)
	ctx, cancel := context.WithCancel(context.Background())
	if !q.Put(ctx, 1) || !q.Put(ctx, 2) {
		t.Fatal("Put refused room it had")
	}
	<-q.Full()
	cancel()
	if q.Put(ctx, 3) {
		t.Fatal("Put into a full queue returned true after its context ended")
	}
	if items, done := q.Take(); len(items) != 2 || done {
		t.Fatalf("Take = %v, %v; want [1 2], false", items, done)
	}
}
