package domain

import (
	"slices"
	"sync"
)

// subjectCacheSize bounds the subjects a Handlers keeps in memory. Beyond it, an
// arbitrary entry is dropped: a miss costs one stream read, not correctness.
const subjectCacheSize = 8192

type subjectCache struct {
	mu sync.Mutex
	m  map[SubjectID]cachedSubject
}

type cachedSubject struct {
	s     Subject
	attrs []Event // the subject.registered and subject.corrected events, in order
}

// get returns a copy the caller may extend: appends to its slices reallocate
// instead of writing into the cached arrays.
func (c *subjectCache) get(id SubjectID) (cachedSubject, bool) {
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if !ok {
		return e, false
	}
	e.s.Serials = slices.Clip(e.s.Serials)
	e.s.Attributes = slices.Clip(e.s.Attributes)
	e.s.ErasedGroups = slices.Clip(e.s.ErasedGroups)
	e.attrs = slices.Clip(e.attrs)
	return e, true
}

// put stores s unless a later version of the subject is cached already.
func (c *subjectCache) put(id SubjectID, s Subject, attrs []Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[id]; ok && old.s.Version >= s.Version {
		return
	}
	if c.m == nil {
		c.m = make(map[SubjectID]cachedSubject)
	}
	if _, ok := c.m[id]; !ok && len(c.m) >= subjectCacheSize {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[id] = cachedSubject{s: s, attrs: slices.Clip(attrs)}
}
