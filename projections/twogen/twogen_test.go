package twogen

import (
	"fmt"
	"testing"
)

// TestBounded checks the bound, that the newest entries are kept, and that an
// entry of the old generation moves forward and survives the next turn.
func TestBounded(t *testing.T) {
	m := New[string, int](8)
	for i := range 100 {
		m.Put(fmt.Sprint(i), i)
		if n := m.Len(); n > 8 {
			t.Fatalf("after %d puts the map holds %d, more than 8", i+1, n)
		}
	}
	if v, ok := m.Get("99"); !ok || v != 99 {
		t.Fatal("the newest entry is gone")
	}
	oldest := ""
	for k := range m.old {
		if k != "99" {
			oldest = k
		}
	}
	if _, ok := m.Get(oldest); !ok {
		t.Fatal("an entry of the old generation is not found")
	}
	for i := range 4 {
		m.Put(fmt.Sprint("new", i), i) // one turn of the generations
	}
	if _, ok := m.Get(oldest); !ok {
		t.Fatal("an entry moved forward did not survive the next turn")
	}
	m.Delete(oldest)
	if _, ok := m.Get(oldest); ok {
		t.Fatal("a deleted entry is still found")
	}
	m.Clear()
	if m.Len() != 0 {
		t.Fatalf("%d entries after Clear", m.Len())
	}
	if small := New[int, int](0); small.half != 1 {
		t.Fatalf("a map of size 0 has halves of %d, want 1", small.half)
	}
}
