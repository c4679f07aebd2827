package sqlite

import (
	"encoding/binary"
	"fmt"
)

// A chunk is one row of ledger.db's events table: the events of consecutive
// positions first..last, each as a 4-byte big-endian length followed by the
// event's canonical encoding. The writer packs every commit into chunks of at most
// maxChunkBytes (a larger event gets a chunk of its own).
//
// Why chunks: with one event per row, reading back cost about 3 µs per event in
// SQLite and its Go driver (one step, two copies), capping ReadAll near 300k
// events/s; writing cost one INSERT per event. A chunk of 1 KiB events holds
// about 60 of them, so both costs are paid once per 60 events. The price is that a
// single event is read by fetching its chunk (at most 64 KiB from the page cache).
const maxChunkBytes = 64 << 10

// chunkFull reports whether a chunk holding size bytes so far must be closed
// before an event of n bytes: a chunk ends before it would pass maxChunkBytes,
// except that an event always goes into an empty one.
func chunkFull(size, n int) bool { return size > 0 && size+4+n > maxChunkBytes }

// appendFramed appends one event to a chunk under construction.
func appendFramed(chunk, event []byte) []byte {
	chunk = binary.BigEndian.AppendUint32(chunk, uint32(len(event)))
	return append(chunk, event...)
}

// chunkEvents calls fn with the position and bytes of each event in a chunk,
// stopping early if fn returns false. The bytes alias data. It fails if the framing
// does not hold exactly last-first+1 events.
func chunkEvents(first, last uint64, data []byte, fn func(position uint64, event []byte) bool) error {
	if last < first {
		return fmt.Errorf("chunk %d ends at %d", first, last)
	}
	position := first
	for off := 0; off < len(data); position++ {
		if position > last {
			return fmt.Errorf("chunk %d-%d holds more than %d events", first, last, last-first+1)
		}
		if len(data)-off < 4 {
			return fmt.Errorf("chunk %d-%d: truncated length at event %d", first, last, position)
		}
		n := int(binary.BigEndian.Uint32(data[off:]))
		off += 4
		if n > len(data)-off {
			return fmt.Errorf("chunk %d-%d: event %d runs past the chunk", first, last, position)
		}
		if !fn(position, data[off:off+n:off+n]) {
			return nil
		}
		off += n
	}
	if position != last+1 {
		return fmt.Errorf("chunk %d-%d holds %d events", first, last, position-first)
	}
	return nil
}
