package sharedvault

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/aead/aesgcm"
	"github.com/tink-crypto/tink-go/v2/insecuresecretdataaccess"
	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/domain"
)

// A wrapped keyset unwraps only under the (subject, group, epoch) it was wrapped for.
func TestWrapADBinding(t *testing.T) {
	ctx := context.Background()
	k, err := OpenFileKEK(ctx, filepath.Join(t.TempDir(), "kek.json"), true)
	if err != nil {
		t.Fatal(err)
	}
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	const subject, group = domain.SubjectID("0123456789abcdef0123456789abcdef"), "identity"
	wrapped, err := wrapKey(ctx, h, k, subject, group, 3)
	if err != nil {
		t.Fatal(err)
	}
	unwrap := func(s domain.SubjectID, g string, ep uint32) error {
		_, err := datakey.Unwrap(ctx, wrapped, k, wrapAD(s, g, ep))
		return err
	}
	if err := unwrap(subject, group, 3); err != nil {
		t.Fatalf("unwrap with the right associated data: %v", err)
	}
	for name, tc := range map[string]struct {
		s  domain.SubjectID
		g  string
		ep uint32
	}{
		"other subject": {"fedcba9876543210fedcba9876543210", group, 3},
		"other group":   {subject, "national-id", 3},
		"other epoch":   {subject, group, 4},
		// The length prefixes keep "ab"+"c" and "a"+"bc" apart.
		"shifted boundary": {subject + "i", "dentity", 3},
	} {
		if err := unwrap(tc.s, tc.g, tc.ep); err == nil {
			t.Errorf("%s: a wrapped key unwrapped under another binding", name)
		}
	}
	// Key material never shows in the wrapped form.
	raw := rawKey(t, h)
	for i := 0; i+16 <= len(raw); i++ {
		if bytes.Contains(wrapped, raw[i:i+16]) {
			t.Fatal("the wrapped keyset contains the raw key")
		}
	}
}

func rawKey(t *testing.T, h *keyset.Handle) []byte {
	t.Helper()
	e, err := h.Primary()
	if err != nil {
		t.Fatal(err)
	}
	raw := e.Key().(*aesgcm.Key).KeyBytes().Data(insecuresecretdataaccess.Token{})
	if len(raw) != 32 {
		t.Fatalf("raw key is %d bytes", len(raw))
	}
	return raw
}

func keyEvent(t testing.TB, v uint64, typ string, public string) *domain.Event {
	t.Helper()
	return &domain.Event{Position: v, Version: v, Stream: "vault-s", Type: typ, Schema: schema,
		Time: time.Unix(int64(v), 0).UTC(), Public: []byte(public)}
}

// The fold of a key stream refuses what the vault never writes.
func TestSubjectKeysRules(t *testing.T) {
	created := `{"group":"g","epoch":1,"key_id":5,"wrapped":"AAAA"}`
	for name, tc := range map[string]struct {
		events [][2]string // type, payload
		ok     bool
	}{
		"create":                    {[][2]string{{TypeKeyCreated, created}}, true},
		"create, rewrap":            {[][2]string{{TypeKeyCreated, created}, {TypeKeyRewrapped, `{"group":"g","epoch":2,"key_id":5,"wrapped":"AAAA"}`}}, true},
		"rewrap of another key":     {[][2]string{{TypeKeyCreated, created}, {TypeKeyRewrapped, `{"group":"g","epoch":2,"key_id":6,"wrapped":"AAAA"}`}}, false},
		"rewrap without a key":      {[][2]string{{TypeKeyRewrapped, created}}, false},
		"create after tombstone":    {[][2]string{{TypeKeysShredded, `{"groups":["g"]}`}, {TypeKeyCreated, created}}, false},
		"create after shred all":    {[][2]string{{TypeKeysShredded, `{"groups":["*"]}`}, {TypeKeyCreated, created}}, false},
		"rewrap after tombstone":    {[][2]string{{TypeKeyCreated, created}, {TypeKeysShredded, `{"groups":["g"]}`}, {TypeKeyRewrapped, created}}, false},
		"star with others":          {[][2]string{{TypeKeysShredded, `{"groups":["*","g"]}`}}, false},
		"no groups":                 {[][2]string{{TypeKeysShredded, `{"groups":[]}`}}, false},
		"unknown field":             {[][2]string{{TypeKeyCreated, `{"group":"g","epoch":1,"key_id":5,"wrapped":"AAAA","x":1}`}}, false},
		"epoch 0":                   {[][2]string{{TypeKeyCreated, `{"group":"g","epoch":0,"key_id":5,"wrapped":"AAAA"}`}}, false},
		"no wrapped key":            {[][2]string{{TypeKeyCreated, `{"group":"g","epoch":1,"key_id":5}`}}, false},
		"trailing data":             {[][2]string{{TypeKeyCreated, created + `{}`}}, false},
		"unknown type":              {[][2]string{{"vault.something", `{}`}}, false},
		"epoch event in key stream": {[][2]string{{TypeEpochStarted, `{"epoch":1,"kek":"x"}`}}, false},
	} {
		t.Run(name, func(t *testing.T) {
			var s subjectKeys
			var err error
			for i, ev := range tc.events {
				if err = s.apply(keyEvent(t, uint64(i+1), ev[0], ev[1])); err != nil {
					break
				}
			}
			if (err == nil) != tc.ok {
				t.Fatalf("got %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not match ErrCorrupt", err)
			}
			if err != nil && strings.Contains(err.Error(), "AAAA") {
				t.Fatal("error quotes the payload")
			}
		})
	}
}

func TestEpochRules(t *testing.T) {
	started := func(n, kek string) [2]string {
		return [2]string{TypeEpochStarted, `{"epoch":` + n + `,"kek":"` + kek + `"}`}
	}
	step := func(typ, n string) [2]string { return [2]string{typ, `{"epoch":` + n + `}`} }
	for name, tc := range map[string]struct {
		events [][2]string
		ok     bool
	}{
		"life cycle":          {[][2]string{started("1", "a"), started("2", "b"), step(TypeEpochRetiring, "1"), step(TypeEpochRetired, "1"), step(TypeEpochDestroyed, "1")}, true},
		"skipped epoch":       {[][2]string{started("2", "a")}, false},
		"reused KEK":          {[][2]string{started("1", "a"), started("2", "a")}, false},
		"retire current":      {[][2]string{started("1", "a"), step(TypeEpochRetiring, "1")}, false},
		"retired too early":   {[][2]string{started("1", "a"), started("2", "b"), step(TypeEpochRetired, "1")}, false},
		"destroyed too early": {[][2]string{started("1", "a"), started("2", "b"), step(TypeEpochRetiring, "1"), step(TypeEpochDestroyed, "1")}, false},
		"unknown epoch":       {[][2]string{started("1", "a"), step(TypeEpochRetiring, "5")}, false},
		"start without KEK":   {[][2]string{{TypeEpochStarted, `{"epoch":1}`}}, false},
	} {
		t.Run(name, func(t *testing.T) {
			var s epochs
			var err error
			for i, ev := range tc.events {
				if err = s.apply(keyEvent(t, uint64(i+1), ev[0], ev[1])); err != nil {
					break
				}
			}
			if (err == nil) != tc.ok {
				t.Fatalf("got %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// FuzzKeyStream feeds arbitrary vault events to the folds: they never panic, and
// whatever they accept obeys the rules Open relies on.
func FuzzKeyStream(f *testing.F) {
	f.Add(TypeKeyCreated, []byte(`{"group":"g","epoch":1,"key_id":5,"wrapped":"AAAA"}`), TypeKeysShredded, []byte(`{"groups":["*"]}`))
	f.Add(TypeKeyCreated, []byte(`{"group":"g","epoch":1,"key_id":5,"wrapped":"AAAA"}`), TypeKeyRewrapped, []byte(`{"group":"g","epoch":2,"key_id":5,"wrapped":"AAAA"}`))
	f.Add(TypeEpochStarted, []byte(`{"epoch":1,"kek":"a"}`), TypeEpochRetiring, []byte(`{"epoch":1}`))
	f.Fuzz(func(t *testing.T, t1 string, p1 []byte, t2 string, p2 []byte) {
		var s subjectKeys
		var ep epochs
		keysOK := true
		for _, ev := range []*domain.Event{keyEvent(t, 1, t1, string(p1)), keyEvent(t, 2, t2, string(p2))} {
			// The same events fed to the epoch fold: a refused event leaves it
			// as it was, an accepted one moves it to the event's version.
			version, list := ep.version, slices.Clone(ep.list)
			if err := ep.apply(ev); err != nil {
				if ep.version != version || !slices.Equal(ep.list, list) {
					t.Fatalf("a refused epoch event (%v) changed the fold", err)
				}
			} else if ep.version != ev.Version {
				t.Fatalf("an accepted epoch event left the fold at version %d, not %d", ep.version, ev.Version)
			}
			if keysOK {
				keysOK = s.apply(ev) == nil
			}
		}
		for n := uint32(1); n <= ep.current(); n++ {
			i, _ := ep.info(n)
			if !i.destroyed.IsZero() && i.retired.IsZero() || !i.retired.IsZero() && i.retiring.IsZero() {
				t.Fatalf("epoch %d skipped a phase: %+v", n, i)
			}
			for m := uint32(1); m < n; m++ {
				if j, _ := ep.info(m); j.kekID == i.kekID {
					t.Fatalf("epochs %d and %d share a KEK", m, n)
				}
			}
		}
		if !keysOK {
			return
		}
		for name, g := range s.groups {
			if s.shredded(name) && g.wrapped != nil {
				t.Fatal("a shredded group kept its wrapped key")
			}
			if !s.shredded(name) && (g.epoch == 0 || len(g.wrapped) == 0) {
				t.Fatal("a live group without a wrapped key")
			}
		}
	})
}
