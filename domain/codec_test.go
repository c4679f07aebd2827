package domain_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/events (only for a new format)")

// goldenEvents are the events behind testdata/events. Once written, a golden file
// MUST NOT change: it stands for events already in ledgers. A new format adds new
// files; the old ones keep decoding.
func goldenEvents() map[string]domain.Event {
	id := domain.EventID{0x3f, 0x2a, 0x91, 0x0c, 0x5e, 0x77, 0x4b, 0x1d, 0x8a, 0x02, 0x6c, 0x33, 0xd4, 0xe5, 0xf6, 0x07}
	t := time.Date(2026, 11, 22, 9, 30, 0, 123456789, time.UTC)
	return map[string]domain.Event{
		"v1-public": {
			Position: 1, Stream: "cert-1f2e3d4c5b6a7988", Version: 1, ID: id,
			Type: domain.TypeCertificateRevoked, Schema: 1, Time: t,
			Actor:  domain.Actor{ID: "cert:4a5b6c", Role: "officer"},
			Public: []byte(`{"serial":"1f2e3d4c5b6a7988","ca_id":"issuing","reason":1,"revoked_at":"2026-11-22T09:30:00Z"}`),
		},
		"v1-sealed": {
			Position: 4294967297, Stream: "subject-00112233445566778899aabbccddeeff", Version: 2, ID: id,
			Type: domain.TypeSubjectCorrected, Schema: 1, Time: t,
			Actor:  domain.Actor{ID: "cert:4a5b6c", Role: "officer"},
			Public: []byte(`{"subject_id":"00112233445566778899aabbccddeeff","attributes":["email"],"key_group":"identity"}`),
			Sealed: &domain.Sealed{SubjectID: "00112233445566778899aabbccddeeff", KeyGroup: "identity", KeyID: 3141592653,
				Ciphertext: []byte{0x01, 0xbb, 0x2c, 0xd4, 0x4d, 0x00, 0xff, 0x10}},
		},
		"v1-minimal": {
			Position: 18446744073709551615, Stream: "a", Version: 18446744073709551615, ID: domain.EventID{},
			Type: "t", Schema: 0, Time: time.Date(1969, 7, 20, 20, 17, 40, 0, time.UTC),
		},
		"v1-unicode-actor": {
			Position: 7, Stream: "ca-root", Version: 3, ID: id, Type: "ca.created", Schema: 65535, Time: t,
			Actor:  domain.Actor{ID: "système:Ω", Role: ""},
			Public: []byte(`{}`),
		},
	}
}

func TestGoldenEvents(t *testing.T) {
	dir := filepath.Join("testdata", "events")
	for name, want := range goldenEvents() {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".bin")
			if *update {
				b, err := domain.Encode(&want)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update once to create a new golden file)", err)
			}
			got, err := domain.Decode(b)
			if err != nil {
				t.Fatalf("golden event no longer decodes: %v", err)
			}
			assertEqual(t, got, want)
			again, err := domain.Encode(&got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, b) {
				t.Fatal("re-encoding a golden event gives different bytes: the encoding is no longer canonical or stable")
			}
		})
	}
	// Every golden file on disk is covered above.
	files, _ := filepath.Glob(filepath.Join(dir, "*.bin"))
	if len(files) != len(goldenEvents()) {
		t.Fatalf("%d golden files but %d golden events", len(files), len(goldenEvents()))
	}
}

func assertEqual(t *testing.T, got, want domain.Event) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) || !got.Time.Equal(want.Time) {
		t.Fatalf("decoded event differs:\n got  %s\n want %s", g, w)
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	base := goldenEvents()["v1-sealed"]
	cases := map[string]func(e *domain.Event){
		"empty stream":        func(e *domain.Event) { e.Stream = "" },
		"stream with newline": func(e *domain.Event) { e.Stream = "a\nb" },
		"dollar stream":       func(e *domain.Event) { e.Stream = "$all" },
		"long stream":         func(e *domain.Event) { e.Stream = strings.Repeat("s", domain.MaxNameLen+1) },
		"empty type":          func(e *domain.Event) { e.Type = "" },
		"zero time":           func(e *domain.Event) { e.Time = time.Time{} },
		"time out of range":   func(e *domain.Event) { e.Time = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) },
		"actor not utf-8":     func(e *domain.Event) { e.Actor.ID = "\xff" },
		"sealed no subject":   func(e *domain.Event) { e.Sealed = &domain.Sealed{KeyGroup: "g", Ciphertext: []byte{1}} },
		"sealed no group":     func(e *domain.Event) { e.Sealed = &domain.Sealed{SubjectID: "s", Ciphertext: []byte{1}} },
		"sealed no text":      func(e *domain.Event) { e.Sealed = &domain.Sealed{SubjectID: "s", KeyGroup: "g"} },
		"payload too large":   func(e *domain.Event) { e.Public = make([]byte, domain.MaxPayload+1) },
		"sum too large": func(e *domain.Event) {
			e.Public = make([]byte, domain.MaxPayload/2+1)
			e.Sealed = &domain.Sealed{SubjectID: "s", KeyGroup: "g", Ciphertext: make([]byte, domain.MaxPayload/2)}
		},
	}
	for name, mutate := range cases {
		e := base
		mutate(&e)
		if _, err := domain.Encode(&e); err == nil {
			t.Errorf("%s: Encode accepted an invalid event", name)
		}
	}
	e := base
	e.Public = make([]byte, domain.MaxPayload+1)
	if _, err := domain.Encode(&e); !errors.Is(err, domain.ErrTooLarge) {
		t.Errorf("oversized payload: %v, want ErrTooLarge", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("testdata", "events", "v1-sealed.bin"))
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string][]byte{
		"empty":          nil,
		"short header":   good[:20],
		"unknown format": mutate(func(b []byte) []byte { b[0] = 2; return b }),
		"unknown flag":   mutate(func(b []byte) []byte { b[43] |= 2; return b }),
		"trailing byte":  append(bytes.Clone(good), 0),
		"truncated":      good[:len(good)-1],
		"zero position":  mutate(func(b []byte) []byte { copy(b[1:9], make([]byte, 8)); return b }),
		"zero version":   mutate(func(b []byte) []byte { copy(b[9:17], make([]byte, 8)); return b }),
		"huge length":    mutate(func(b []byte) []byte { copy(b[44:48], []byte{0xff, 0xff, 0xff, 0xff}); return b }),
		"flag without sealed part": mutate(func(b []byte) []byte {
			e, _ := domain.Decode(b)
			e.Sealed = nil
			out, _ := domain.Encode(&e)
			out[43] = 1
			return out
		}),
	}
	for name, b := range cases {
		_, err := domain.Decode(b)
		var de *domain.DecodeError
		if !errors.Is(err, domain.ErrMalformed) || !errors.As(err, &de) {
			t.Errorf("%s: Decode error %v, want a DecodeError", name, err)
		}
	}
}

func TestPlacement(t *testing.T) {
	e := goldenEvents()["v1-public"]
	b, err := domain.Encode(&e)
	if err != nil {
		t.Fatal(err)
	}
	domain.SetPlacement(b, 99, 5)
	got, err := domain.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Position != 99 || got.Version != 5 {
		t.Fatalf("placement %d/%d, want 99/5", got.Position, got.Version)
	}
}

// FuzzDecode feeds arbitrary bytes to Decode: it must never panic, and whatever it
// accepts must re-encode to exactly the same bytes (the encoding is canonical,
// which the Merkle log relies on).
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "events", "*.bin"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := domain.Decode(b)
		if err != nil {
			if !errors.Is(err, domain.ErrMalformed) {
				t.Fatalf("Decode error %v does not match ErrMalformed", err)
			}
			return
		}
		again, err := domain.Encode(&e)
		if err != nil {
			t.Fatalf("Decode accepted bytes that do not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("non-canonical: %x re-encodes as %x", b, again)
		}
	})
}

func TestSealedADBindsTheEvent(t *testing.T) {
	base := goldenEvents()["v1-sealed"]
	ad := domain.SealedAD(&base)
	changes := map[string]func(e *domain.Event){
		"id":      func(e *domain.Event) { e.ID[0] ^= 1 },
		"stream":  func(e *domain.Event) { e.Stream += "x" },
		"version": func(e *domain.Event) { e.Version++ },
		"type":    func(e *domain.Event) { e.Type += "x" },
		"subject": func(e *domain.Event) { s := *e.Sealed; s.SubjectID = "other"; e.Sealed = &s },
		"group":   func(e *domain.Event) { s := *e.Sealed; s.KeyGroup = "other"; e.Sealed = &s },
	}
	for name, change := range changes {
		e := base
		change(&e)
		if bytes.Equal(domain.SealedAD(&e), ad) {
			t.Errorf("changing the %s does not change the associated data", name)
		}
	}
	e := base
	e.Position, e.Time, e.Actor, e.Public = 12345, e.Time.Add(time.Hour), domain.Actor{}, nil
	if !bytes.Equal(domain.SealedAD(&e), ad) {
		t.Error("associated data depends on fields outside its binding")
	}
}

// TestDecodedFieldsDoNotShareCapacity: Public and Ciphertext alias the input, but
// appending to one must not write into the other.
func TestDecodedFieldsDoNotShareCapacity(t *testing.T) {
	e := goldenEvents()["v1-sealed"]
	b, err := domain.Encode(&e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := domain.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(got.Sealed.Ciphertext)
	// Exactly the bytes that follow Public in the encoding: an append that fits the
	// slice's capacity would write over them instead of reallocating.
	after := len(b) - bytes.Index(b, e.Public) - len(e.Public)
	_ = append(got.Public, bytes.Repeat([]byte("Z"), after)...)
	if !bytes.Equal(got.Sealed.Ciphertext, want) {
		t.Fatal("appending to Public overwrote the ciphertext")
	}
}

// TestJSONProblemQuotesNothing: what JSONProblem says of a value that did not
// decode holds none of the value, though encoding/json's own message does.
func TestJSONProblemQuotesNothing(t *testing.T) {
	var v struct {
		Name string `json:"name"`
		N    int8   `json:"n"`
	}
	for _, in := range []string{`{"name":612345678}`, `{"n":"Ada Lovelace"}`, `{"n":612345678}`, `{"name":"Ada Lovelace"`, `Ada`} {
		err := json.Unmarshal([]byte(in), &v)
		if err == nil {
			t.Fatalf("%s decoded", in)
		}
		got := domain.JSONProblem(err)
		for _, secret := range []string{"612345678", "Ada", "Lovelace"} {
			if strings.Contains(got, secret) {
				t.Errorf("%s: %q quotes %q", in, got, secret)
			}
		}
	}
}
