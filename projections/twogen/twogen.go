// Package twogen is a bounded map for caches: two generations of at most half
// its size each. When the current generation fills up it becomes the old one
// and the previous old one is dropped, so memory stays bounded however many
// keys are asked about, while an entry found in the old generation moves
// forward and survives the next turn. The OCSP responder's response cache and
// the views' status cache use it.
package twogen

// Map is not safe for concurrent use: its users hold their own lock, beside
// state of their own.
type Map[K comparable, V any] struct {
	half     int
	cur, old map[K]V
}

// New returns a map of at most entries entries (at least 2).
func New[K comparable, V any](entries int) *Map[K, V] {
	half := max(entries/2, 1)
	// The maps grow as entries come: a map sized to half up front would set
	// aside megabytes for a cache that may stay nearly empty.
	return &Map[K, V]{half: half, cur: make(map[K]V)}
}

// Get returns the entry for k; one found in the old generation moves forward.
func (m *Map[K, V]) Get(k K) (V, bool) {
	if v, ok := m.cur[k]; ok {
		return v, true
	}
	v, ok := m.old[k]
	if ok {
		m.Put(k, v)
	}
	return v, ok
}

// Put stores v for k in the current generation, turning the generations when
// it is full.
func (m *Map[K, V]) Put(k K, v V) {
	m.cur[k] = v
	if len(m.cur) >= m.half {
		m.old, m.cur = m.cur, make(map[K]V, m.half) // it filled once, so it will again
	}
}

// Delete forgets k in both generations.
func (m *Map[K, V]) Delete(k K) {
	delete(m.cur, k)
	delete(m.old, k)
}

// Clear forgets every entry.
func (m *Map[K, V]) Clear() {
	m.cur, m.old = make(map[K]V), nil
}

// Len is the number of entries held (a key moved forward from the old
// generation may count twice until the next turn).
func (m *Map[K, V]) Len() int { return len(m.cur) + len(m.old) }
