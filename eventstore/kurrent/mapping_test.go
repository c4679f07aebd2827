package kurrent

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
)

func testEvent(t testing.TB) domain.Event {
	t.Helper()
	return domain.Event{
		ID:     newID(),
		Stream: "cert-0a1b",
		Type:   "certificate.issued",
		Schema: 1,
		Time:   time.Date(2026, 11, 22, 10, 0, 0, 1, time.UTC),
		Actor:  domain.Actor{ID: "cert:01", Role: "officer"},
		Public: []byte(`{"serial":"0a1b"}`),
	}
}

// recorded is what KurrentDB gives back for an event appended as d to stream at
// revision.
func recorded(d kurrentdb.EventData, stream string, revision uint64) *kurrentdb.RecordedEvent {
	return &kurrentdb.RecordedEvent{EventID: d.EventID, EventType: d.EventType, ContentType: "application/octet-stream",
		StreamID: stream, EventNumber: revision, Data: d.Data}
}

func TestMappingRoundTrip(t *testing.T) {
	n := newNaming("caledger-")
	e := testEvent(t)
	b, err := domain.Encode(&e)
	if err != nil {
		t.Fatal(err)
	}
	domain.SetPlacement(b, 42, 3)
	d := eventData(e.ID, e.Type, b)
	if d.EventType != e.Type || d.ContentType != kurrentdb.ContentTypeBinary || domain.EventID(d.EventID) != e.ID || !bytes.Equal(d.Data, b) || d.Metadata != nil {
		t.Fatalf("event data %+v", d)
	}
	got, err := n.decode(recorded(d, "caledger-cert-0a1b", 2), 42)
	if err != nil {
		t.Fatal(err)
	}
	if got.Position != 42 || got.Version != 3 || got.ID != e.ID || got.Stream != e.Stream || !bytes.Equal(got.Public, e.Public) {
		t.Fatalf("decoded %+v", got)
	}
	for name, r := range map[string]*kurrentdb.RecordedEvent{
		"wrong stream":   recorded(d, "caledger-cert-ffff", 2),
		"no prefix":      recorded(d, "cert-0a1b", 2),
		"wrong revision": recorded(d, "caledger-cert-0a1b", 3),
		"wrong id":       recorded(eventData(newID(), e.Type, b), "caledger-cert-0a1b", 2),
		"not an event":   recorded(eventData(e.ID, e.Type, []byte("{}")), "caledger-cert-0a1b", 2),
	} {
		var ce *eventstore.CorruptError
		if _, err := n.decode(r, 42); !errors.As(err, &ce) || !errors.Is(err, eventstore.ErrCorrupt) {
			t.Errorf("%s: %v, want a CorruptError", name, err)
		}
	}
}

func TestStates(t *testing.T) {
	for _, v := range []uint64{0, 1, 2, 1 << 40} {
		s := stateFor(v)
		if back, ok := versionOf(s); !ok || back != v {
			t.Errorf("version %d -> %#v -> %d %v", v, s, back, ok)
		}
	}
	if stateFor(0) != (kurrentdb.NoStream{}) || stateFor(5) != (kurrentdb.StreamRevision{Value: 4}) {
		t.Error("version 0 must be no stream, version v revision v-1")
	}
	for _, s := range []kurrentdb.StreamState{kurrentdb.Any{}, kurrentdb.StreamExists{}, kurrentdb.StreamRevision{Value: 1 << 63}} {
		if _, ok := versionOf(s); ok {
			t.Errorf("%#v mapped to a version", s)
		}
	}
}

func TestCommitRecord(t *testing.T) {
	for _, c := range []commitRecord{{1, 1, newID()}, {1, 64, newID()}, {10, 9, newID()}, {1 << 40, 1<<40 + 4095, domain.EventID{}}} {
		got, err := decodeCommit(c.encode())
		if err != nil || got != c {
			t.Errorf("%+v -> %+v %v", c, got, err)
		}
	}
	for _, b := range [][]byte{nil, {1}, make([]byte, commitLen), append([]byte{2}, make([]byte, commitLen-1)...),
		commitRecord{first: 5, last: 3}.encode(), append(commitRecord{first: 1, last: 1}.encode(), 0)} {
		if _, err := decodeCommit(b); err == nil {
			t.Errorf("%x decoded", b)
		}
	}
}

func TestCheckPrefix(t *testing.T) {
	for _, p := range []string{"caledger-", "tenant.a/", "x"} {
		if err := checkPrefix(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	for _, p := range []string{"", "$caledger-", "cal edger-", "café-", "a\x00"} {
		if err := checkPrefix(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}

// FuzzCommitRecord: decoding never panics, and whatever decodes encodes back to
// the same bytes.
func FuzzCommitRecord(f *testing.F) {
	f.Add(commitRecord{first: 1, last: 10, nonce: newID()}.encode())
	f.Add(commitRecord{first: 7, last: 6}.encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCommit(b)
		if err != nil {
			return
		}
		if !bytes.Equal(c.encode(), b) {
			t.Fatalf("%x decodes to %+v, which encodes to %x", b, c, c.encode())
		}
	})
}

// BenchmarkMapping measures the adapter's own work per event, without I/O: on
// the way in, the canonical encoding, placing position and version in it and
// building the KurrentDB event; on the way out, decoding and checking it. The
// budget is 5 µs per event.
func BenchmarkMapping(b *testing.B) {
	n := newNaming("caledger-")
	e := testEvent(b)
	e.Public = bytes.Repeat([]byte("x"), 1024)
	b.Run("in", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			enc, err := domain.Encode(&e)
			if err != nil {
				b.Fatal(err)
			}
			domain.SetPlacement(enc, uint64(i+1), 1)
			d := eventData(e.ID, e.Type, enc)
			_ = kurrentdb.StreamStateCheck{Stream: n.stream(e.Stream), ExpectedState: stateFor(uint64(i))}
			if len(d.Data) == 0 {
				b.Fatal("no data")
			}
		}
	})
	b.Run("out", func(b *testing.B) {
		enc, _ := domain.Encode(&e)
		domain.SetPlacement(enc, 7, 1)
		r := recorded(eventData(e.ID, e.Type, enc), n.stream(e.Stream), 0)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, err := n.decode(r, 7); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("commit-record", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			c := commitRecord{first: uint64(i + 1), last: uint64(i + 64), nonce: e.ID}
			if _, err := decodeCommit(c.encode()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
