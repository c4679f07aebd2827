package sqlite

import (
	"bytes"
	"testing"
)

func TestChunkEvents(t *testing.T) {
	var chunk []byte
	events := [][]byte{[]byte("a"), {}, bytes.Repeat([]byte("c"), 300)}
	for _, e := range events {
		chunk = appendFramed(chunk, e)
	}
	var got [][]byte
	err := chunkEvents(10, 12, chunk, func(p uint64, b []byte) bool {
		if p != uint64(10+len(got)) {
			t.Fatalf("position %d at index %d", p, len(got))
		}
		got = append(got, b)
		return true
	})
	if err != nil || len(got) != 3 || !bytes.Equal(got[2], events[2]) {
		t.Fatalf("chunkEvents: %d events, %v", len(got), err)
	}
	// Stopping early is not an error.
	if err := chunkEvents(10, 12, chunk, func(uint64, []byte) bool { return false }); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		first, last uint64
		data        []byte
	}{
		"too few events":    {10, 13, chunk},
		"too many events":   {10, 11, chunk},
		"last before first": {10, 9, chunk},
		"truncated length":  {10, 12, append(bytes.Clone(chunk), 0, 0)},
		"truncated event":   {10, 12, chunk[:len(chunk)-1]},
		"empty":             {10, 10, nil},
	} {
		if err := chunkEvents(c.first, c.last, c.data, func(uint64, []byte) bool { return true }); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// FuzzChunkEvents feeds arbitrary bytes, as read from a damaged file, to the chunk
// parser: it must never panic or hand out bytes outside the chunk.
func FuzzChunkEvents(f *testing.F) {
	f.Add(uint64(1), uint64(2), appendFramed(appendFramed(nil, []byte("x")), []byte("yz")))
	f.Add(uint64(5), uint64(5), []byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, first, last uint64, data []byte) {
		if last-first > 1<<20 {
			return
		}
		total := 0
		chunkEvents(first, last, data, func(p uint64, b []byte) bool {
			if p < first || p > last {
				t.Fatalf("position %d outside %d-%d", p, first, last)
			}
			total += len(b) + 4
			return true
		})
		if total > len(data) {
			t.Fatalf("handed out %d bytes of a %d-byte chunk", total, len(data))
		}
	})
}
