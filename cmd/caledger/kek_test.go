package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/crypto/signer"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
)

// rotateKEKCmd runs "caledger kek rotate" with the environment env (nil:
// none) and returns its output and error.
func rotateKEKCmd(t *testing.T, data string, env map[string]string) (string, error) {
	t.Helper()
	var stdout bytes.Buffer
	err := run(t.Context(), []string{"kek", "rotate", "--data", data}, func(k string) string { return env[k] }, &stdout, io.Discard)
	return stdout.String(), err
}

// usable runs a command that opens the data directory and loads its CAs
// (officer add), with the environment env, and returns its error.
func usable(t *testing.T, data string, env map[string]string) error {
	t.Helper()
	return run(t.Context(), []string{"officer", "add", "--data", data, "--role", "auditor", "--name", "Check Auditor", "--out", filepath.Join(t.TempDir(), "cred")}, func(k string) string { return env[k] }, io.Discard, io.Discard)
}

func kekID(t *testing.T, path string) string {
	t.Helper()
	k, err := kek.OpenFile(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	return k.ID()
}

// kekEvents returns "type from>to" for each event of the ledger's KEK stream.
func kekEvents(t *testing.T, data string) []string {
	t.Helper()
	store, err := sqlite.Open(t.Context(), filepath.Join(data, ledgerDir), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var out []string
	for e, err := range store.ReadStream(t.Context(), kekStream, 1) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Actor != kekActor {
			t.Errorf("%s recorded by %+v", e.Type, e.Actor)
		}
		out = append(out, fmt.Sprintf("%s %s", e.Type, e.Public))
	}
	return out
}

// vaultKEKs returns the count of the vault file's data keys per KEK id.
func vaultKEKs(t *testing.T, data string) map[string]int {
	t.Helper()
	counts, err := keyvault.KEKCounts(t.Context(), filepath.Join(data, vaultFile))
	if err != nil {
		t.Fatal(err)
	}
	return counts
}

// TestKEKRotate rotates the KEK of a data directory with subjects, an
// erasure and certificates: the server refuses nothing afterwards (personal
// data opens, the CA issues, the audit passes), the old KEK opens nothing in
// the data directory, and a backup from before the rotation restores only
// with a copy of the old KEK.
func TestKEKRotate(t *testing.T) {
	r := newAuditRig(t)
	kept, _ := r.issue("Secret Person Kept")
	erased, _ := r.issue("Secret Person Erased")
	r.admin.json("POST", "/v1/subjects/"+erased+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusOK, nil)
	oldBackup := filepath.Join(t.TempDir(), "backup")
	waitDrained(t, r)
	backup(t, r.data, oldBackup)
	kekPath := filepath.Join(r.data, kekFile)
	oldCopy := filepath.Join(t.TempDir(), "old-kek.json") // the copy kept apart
	if _, err := copyFile(t.Context(), kekPath, oldCopy, 0o600, -1); err != nil {
		t.Fatal(err)
	}
	oldID := kekID(t, kekPath)

	if _, err := rotateKEKCmd(t, r.data, nil); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("kek rotate beside a running server: %v", err)
	}
	r.settle()
	if out, err := r.audit(); err != nil {
		t.Fatalf("audit before the rotation: %v\n%s", err, out)
	}
	r.stop()
	before := vaultKEKs(t, r.data)
	if len(before) != 1 || before[oldID] == 0 {
		t.Fatalf("vault before the rotation: %v, want keys under %s only", before, oldID)
	}

	out, err := rotateKEKCmd(t, r.data, nil)
	if err != nil {
		t.Fatalf("kek rotate: %v", err)
	}
	newID := kekID(t, kekPath)
	if newID == oldID {
		t.Fatal("the KEK file holds the old KEK after the rotation")
	}
	caKeys, err := os.ReadDir(filepath.Join(r.data, caKeysDir))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("this run re-wrapped %d data keys and %d CA keys", before[oldID], len(caKeys))
	if !strings.Contains(out, "rotated the KEK from "+oldID+" to "+newID) || !strings.Contains(out, want) {
		t.Errorf("kek rotate output, want %q:\n%s", want, out)
	}
	if after := vaultKEKs(t, r.data); len(after) != 1 || after[newID] != before[oldID] {
		t.Errorf("vault after the rotation: %v, want %d keys under %s", after, before[oldID], newID)
	}
	if _, err := os.Stat(filepath.Join(r.data, kekNextFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after the rotation: %v", kekNextFile, err)
	}
	rotation := fmt.Sprintf(`{"from":%q,"to":%q}`, oldID, newID)
	if got, want := kekEvents(t, r.data), []string{typeKEKRotationStarted + " " + rotation, typeKEKRetired + " " + rotation}; !slices.Equal(got, want) {
		t.Errorf("ledger records %q, want %q", got, want)
	}

	// The old KEK opens nothing in the data directory.
	oldKEK, err := kek.OpenFile(t.Context(), oldCopy)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := keyvault.Open(t.Context(), filepath.Join(r.data, vaultFile), oldKEK); !errors.Is(err, keyvault.ErrWrongKEK) {
		if err == nil {
			v.Close()
		}
		t.Errorf("the vault with the old KEK: %v, want ErrWrongKEK", err)
	}
	for _, e := range caKeys {
		b, err := os.ReadFile(filepath.Join(r.data, caKeysDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(oldID)) || !bytes.Contains(b, []byte(newID)) {
			t.Errorf("CA key file %s does not name the new KEK only", e.Name())
		}
	}

	r.start()
	var subject struct{ Attributes map[string]string }
	r.admin.json("GET", "/v1/subjects/"+kept, nil, http.StatusOK, &subject, "Caledger-Reason", "rotation check")
	if subject.Attributes["common_name"] != "Secret Person Kept" {
		t.Errorf("subject after the rotation: %+v", subject)
	}
	r.admin.json("GET", "/v1/subjects/"+erased, nil, http.StatusGone, nil, "Caledger-Reason", "rotation check")
	r.issue("Secret Person New")
	r.settle()
	if out, err := r.audit(); err != nil {
		t.Fatalf("audit after the rotation: %v\n%s", err, out)
	}
	r.stop()
	// A backup that began before the rotation is refused at its end.
	if _, _, err := noKEKRotation(t.Context(), r.data, oldID); err == nil || !strings.Contains(err.Error(), "rotated while the backup ran") {
		t.Errorf("backup across a rotation: %v", err)
	}
	// A second rotation appends at the stream's next versions.
	if _, err := rotateKEKCmd(t, r.data, nil); err != nil {
		t.Fatalf("second kek rotate: %v", err)
	}
	if got := kekEvents(t, r.data); len(got) != 4 || !strings.HasPrefix(got[2], typeKEKRotationStarted+` {"from":"`+newID+`"`) || !strings.HasPrefix(got[3], typeKEKRetired) {
		t.Errorf("ledger after a second rotation: %q", got)
	}

	// The backup from before opens only with the old KEK's copy.
	if _, err := restore(t, oldBackup, kekPath, filepath.Join(t.TempDir(), "restored")); !errors.Is(err, keyvault.ErrWrongKEK) {
		t.Errorf("restore of the older backup with the new KEK: %v, want ErrWrongKEK", err)
	}
	if _, err := restore(t, oldBackup, oldCopy, filepath.Join(t.TempDir(), "restored")); err != nil {
		t.Errorf("restore of the older backup with the old KEK's copy: %v", err)
	}
}

// TestKEKRotateResumes stops a rotation after each of its steps, by doing
// the steps up to there by hand, and checks that the server, the backup and
// the command see the state for what it is and that the command completes it.
func TestKEKRotateResumes(t *testing.T) {
	// Steps as rotateKEK numbers them; 3 is split between the vault and the
	// CA keys, and 4 may stop after the rename (renamed) or not (done).
	const (
		made = iota + 1
		recorded
		vaultDone
		caDone
		renamed
		replaced
	)
	steps := func(t *testing.T, data string, n int) (from, to string) {
		t.Helper()
		ctx := t.Context()
		cur, err := kek.OpenFile(ctx, filepath.Join(data, kekFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := writeFileAtomic(filepath.Join(data, kekMarkerFile), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		next, err := kek.OpenOrCreateFile(ctx, filepath.Join(data, kekNextFile))
		if err != nil {
			t.Fatal(err)
		}
		if n >= recorded {
			recordKEKStart(t, data, cur.ID(), next.ID())
		}
		if n >= vaultDone {
			if _, err := keyvault.Rewrap(ctx, filepath.Join(data, vaultFile), cur, next, nil); err != nil {
				t.Fatal(err)
			}
		}
		if n >= caDone {
			if _, err := signer.NewSoftware(filepath.Join(data, caKeysDir), cur).Rewrap(ctx, next); err != nil {
				t.Fatal(err)
			}
		}
		switch n {
		case renamed:
			if err := os.Link(filepath.Join(data, kekFile), filepath.Join(data, kekRetiredFile)); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(data, kekNextFile), filepath.Join(data, kekFile)); err != nil {
				t.Fatal(err)
			}
		case replaced:
			if err := kek.ReplaceFile(ctx, filepath.Join(data, kekFile), filepath.Join(data, kekNextFile), filepath.Join(data, kekRetiredFile)); err != nil {
				t.Fatal(err)
			}
		}
		return cur.ID(), next.ID()
	}
	// wantRotation checks that the rotation finished under the KEK to.
	wantRotation := func(t *testing.T, data, to string) {
		t.Helper()
		if id := kekID(t, filepath.Join(data, kekFile)); id != to {
			t.Errorf("KEK after the rotation is %s, want %s", id, to)
		}
		for _, f := range []string{kekNextFile, kekRetiredFile, kekMarkerFile} {
			if _, err := os.Lstat(filepath.Join(data, f)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s after the rotation: %v", f, err)
			}
		}
		if err := usable(t, data, nil); err != nil {
			t.Errorf("the data directory after the rotation: %v", err)
		}
	}

	for _, tc := range []struct {
		name  string
		steps int
	}{
		{"the new KEK made, nothing recorded", made},
		{"the rotation recorded", recorded},
		{"the vault re-wrapped", vaultDone},
		{"every key re-wrapped", caDone},
		{"the new KEK renamed into place", renamed},
		{"the old KEK file destroyed", replaced},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := initData(t)
			oldFile := filepath.Join(t.TempDir(), "old-inode")
			if err := os.Link(filepath.Join(data, kekFile), oldFile); err != nil {
				t.Fatal(err)
			}
			oldSize := len(readFile(t, oldFile))
			from, to := steps(t, data, tc.steps)
			err := usable(t, data, nil)
			if tc.steps == made && err != nil {
				t.Errorf("a node before the rotation is recorded: %v", err)
			}
			if tc.steps > made && (err == nil || !strings.Contains(err.Error(), "unfinished: run 'caledger kek rotate'")) {
				t.Errorf("a node on a half-rotated directory: %v, want the hint to complete the rotation", err)
			}
			if _, _, err := noKEKRotation(t.Context(), data, ""); err == nil || !strings.Contains(err.Error(), "unfinished") {
				t.Errorf("backup of a half-rotated directory: %v", err)
			}
			out, err := rotateKEKCmd(t, data, nil)
			if err != nil {
				t.Fatalf("kek rotate: %v", err)
			}
			resumed := tc.steps > made
			if got := strings.Contains(out, "completed the interrupted rotation from KEK "+from+" to "+to); got != resumed {
				t.Errorf("resumed %v, want %v:\n%s", got, resumed, out)
			}
			if !resumed && !strings.Contains(out, "rotated the KEK from "+from+" to "+to) {
				t.Errorf("kek rotate did not use the KEK the stopped run made:\n%s", out)
			}
			rotation := fmt.Sprintf(`{"from":%q,"to":%q}`, from, to)
			if got, want := kekEvents(t, data), []string{typeKEKRotationStarted + " " + rotation, typeKEKRetired + " " + rotation}; !slices.Equal(got, want) {
				t.Errorf("ledger records %q, want %q", got, want)
			}
			if got := readFile(t, oldFile); !bytes.Equal(got, make([]byte, oldSize)) {
				t.Error("the old KEK file's bytes are not overwritten")
			}
			wantRotation(t, data, to)
		})
	}

	t.Run("the new KEK moved into place by hand", func(t *testing.T) {
		data := initData(t)
		steps(t, data, recorded)
		if err := os.Rename(filepath.Join(data, kekNextFile), filepath.Join(data, kekFile)); err != nil {
			t.Fatal(err)
		}
		if _, err := rotateKEKCmd(t, data, nil); err == nil || !strings.Contains(err.Error(), "still wrapped under KEK") {
			t.Errorf("kek rotate: %v, want a refusal to record the retirement", err)
		}
		if got := kekEvents(t, data); len(got) != 1 {
			t.Errorf("ledger records %q, want the start only", got)
		}
	})

	t.Run("the new KEK lost before any key used it", func(t *testing.T) {
		data := initData(t)
		from, lost := steps(t, data, recorded)
		if err := os.Remove(filepath.Join(data, kekNextFile)); err != nil {
			t.Fatal(err)
		}
		out, err := rotateKEKCmd(t, data, nil)
		if err != nil {
			t.Fatalf("kek rotate: %v", err)
		}
		to := kekID(t, filepath.Join(data, kekFile))
		if !strings.Contains(out, "abandoned the rotation to KEK "+lost) || !strings.Contains(out, "rotated the KEK from "+from+" to "+to) {
			t.Errorf("kek rotate output:\n%s", out)
		}
		abandoned, rotation := fmt.Sprintf(`{"from":%q,"to":%q}`, from, lost), fmt.Sprintf(`{"from":%q,"to":%q}`, from, to)
		want := []string{typeKEKRotationStarted + " " + abandoned, typeKEKRotationAbandoned + " " + abandoned,
			typeKEKRotationStarted + " " + rotation, typeKEKRetired + " " + rotation}
		if got := kekEvents(t, data); !slices.Equal(got, want) {
			t.Errorf("ledger records %q, want %q", got, want)
		}
		wantRotation(t, data, to)
	})

	t.Run("the new KEK lost after keys used it", func(t *testing.T) {
		data := initData(t)
		steps(t, data, vaultDone)
		if err := os.Remove(filepath.Join(data, kekNextFile)); err != nil {
			t.Fatal(err)
		}
		if _, err := rotateKEKCmd(t, data, nil); err == nil || !strings.Contains(err.Error(), "keys are wrapped under it, but the new KEK is missing") {
			t.Errorf("kek rotate: %v", err)
		}
	})

	t.Run("the ledger names other KEKs", func(t *testing.T) {
		data := initData(t)
		appendRaw(t, data, typeKEKRotationStarted, 1, `{"from":"file:00000001","to":"file:00000002"}`)
		if _, err := rotateKEKCmd(t, data, nil); err == nil || !strings.Contains(err.Error(), "the ledger records a rotation from KEK file:00000001") {
			t.Errorf("kek rotate: %v", err)
		}
	})

	for name, ev := range map[string]struct {
		typ     string
		schema  uint16
		payload string
	}{
		"a retirement never started": {typeKEKRetired, 1, `{"from":"file:00000001","to":"file:00000002"}`},
		"an unknown schema":          {typeKEKRotationStarted, 2, `{"from":"file:00000001","to":"file:00000002"}`},
		"a payload without KEKs":     {typeKEKRotationStarted, 1, `{}`},
	} {
		t.Run(name, func(t *testing.T) {
			data := initData(t)
			appendRaw(t, data, ev.typ, ev.schema, ev.payload)
			if _, err := rotateKEKCmd(t, data, nil); err == nil || !strings.Contains(err.Error(), kekStream+" version 1") {
				t.Errorf("kek rotate: %v", err)
			}
			if err := usable(t, data, nil); err == nil {
				t.Error("a node opened on a ledger with a damaged KEK record")
			}
		})
	}
}

// appendRaw appends one event to the ledger's KEK stream of data.
func appendRaw(t *testing.T, data, typ string, schema uint16, payload string) {
	t.Helper()
	store, err := sqlite.Open(t.Context(), filepath.Join(data, ledgerDir), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	id, err := domain.NewEventID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ev := domain.Event{ID: id, Type: typ, Schema: schema, Time: time.Now().UTC(), Actor: kekActor, Public: []byte(payload)}
	if _, err := store.Append(t.Context(), kekStream, domain.NoStream, ev); err != nil {
		t.Fatal(err)
	}
}

// recordKEKStart appends the first record of a rotation from one KEK to
// another to data's ledger, as rotateKEK does.
func recordKEKStart(t *testing.T, data, from, to string) {
	t.Helper()
	store, err := sqlite.Open(t.Context(), filepath.Join(data, ledgerDir), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = appendKEKEvent(t.Context(), store, typeKEKRotationStarted, kekRotation{From: from, To: to}, 0)
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
