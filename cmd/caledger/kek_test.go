package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/crypto/signer"
	"github.com/caledger/caledger/eventstore/sqlite"
)

// rotateKEKCmd runs "caledger kek rotate" and returns its output and error.
func rotateKEKCmd(t *testing.T, data string) (string, error) {
	t.Helper()
	var stdout bytes.Buffer
	err := run(t.Context(), []string{"kek", "rotate", "--data", data}, noEnv, &stdout, io.Discard)
	return stdout.String(), err
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
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(data, vaultFile)+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT kek_id, COUNT(*) FROM data_keys GROUP BY kek_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		out[id] = n
	}
	return out
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

	if _, err := rotateKEKCmd(t, r.data); err == nil || !strings.Contains(err.Error(), "stop the server first") {
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

	out, err := rotateKEKCmd(t, r.data)
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
	if got, want := kekEvents(t, r.data), []string{typeKEKRotationStarted + " " + rotation, typeKEKRetired + " " + rotation}; !equalStrings(got, want) {
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

	// The backup from before opens only with the old KEK's copy.
	if _, err := restore(t, oldBackup, kekPath, filepath.Join(t.TempDir(), "restored")); !errors.Is(err, keyvault.ErrWrongKEK) {
		t.Errorf("restore of the older backup with the new KEK: %v, want ErrWrongKEK", err)
	}
	if _, err := restore(t, oldBackup, oldCopy, filepath.Join(t.TempDir(), "restored")); err != nil {
		t.Errorf("restore of the older backup with the old KEK's copy: %v", err)
	}
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

// TestKEKRotateResumes stops a rotation after each of its steps, by doing
// the steps up to there by hand, and checks that the server, the backup and
// the command see the state for what it is and that the command completes it.
func TestKEKRotateResumes(t *testing.T) {
	// steps runs the rotation's steps 1 to n (rotateKEK's list) on data.
	steps := func(t *testing.T, data string, n int) (from, to string) {
		t.Helper()
		ctx := t.Context()
		cur, err := kek.OpenFile(ctx, filepath.Join(data, kekFile))
		if err != nil {
			t.Fatal(err)
		}
		next, err := kek.OpenOrCreateFile(ctx, filepath.Join(data, kekNextFile))
		if err != nil {
			t.Fatal(err)
		}
		if n >= 2 {
			store, err := sqlite.Open(ctx, filepath.Join(data, ledgerDir), sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			err = appendKEKEvent(ctx, store, typeKEKRotationStarted, kekRotation{From: cur.ID(), To: next.ID()}, 0)
			if cerr := store.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if n >= 3 {
			if _, err := keyvault.Rewrap(ctx, filepath.Join(data, vaultFile), cur, next, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := signer.NewSoftware(filepath.Join(data, caKeysDir), cur).Rewrap(ctx, next); err != nil {
				t.Fatal(err)
			}
		}
		if n >= 4 {
			if err := kek.ReplaceFile(ctx, filepath.Join(data, kekFile), filepath.Join(data, kekNextFile)); err != nil {
				t.Fatal(err)
			}
		}
		return cur.ID(), next.ID()
	}
	// usable checks that the data directory opens and its CAs sign.
	usable := func(t *testing.T, data string) error {
		return run(t.Context(), []string{"officer", "add", "--data", data, "--role", "auditor", "--name", "Check Auditor", "--out", filepath.Join(t.TempDir(), "cred")}, noEnv, io.Discard, io.Discard)
	}

	for _, tc := range []struct {
		name    string
		steps   int
		resumed bool
	}{
		{"the new KEK made, nothing recorded", 1, false},
		{"the rotation recorded", 2, true},
		{"every key re-wrapped", 3, true},
		{"the new KEK in place", 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := initData(t)
			from, to := steps(t, data, tc.steps)
			if tc.steps == 3 {
				// The vault's keys are under the new KEK, the KEK file is the old.
				if err := usable(t, data); err == nil || !strings.Contains(err.Error(), "caledger kek rotate") {
					t.Errorf("a node on a half-rotated directory: %v, want the hint to complete the rotation", err)
				}
			}
			if tc.steps < 4 {
				if _, err := noKEKRotation(data, nil); err == nil || !strings.Contains(err.Error(), "unfinished") {
					t.Errorf("backup of a half-rotated directory: %v", err)
				}
			}
			out, err := rotateKEKCmd(t, data)
			if err != nil {
				t.Fatalf("kek rotate: %v", err)
			}
			if got := strings.Contains(out, "completed the interrupted rotation from KEK "+from+" to "+to); got != tc.resumed {
				t.Errorf("resumed %v, want %v:\n%s", got, tc.resumed, out)
			}
			if !tc.resumed && !strings.Contains(out, "rotated the KEK from "+from+" to "+to) {
				t.Errorf("kek rotate did not use the KEK the stopped run made:\n%s", out)
			}
			if id := kekID(t, filepath.Join(data, kekFile)); id != to {
				t.Errorf("KEK after the rotation is %s, want %s", id, to)
			}
			rotation := fmt.Sprintf(`{"from":%q,"to":%q}`, from, to)
			if got, want := kekEvents(t, data), []string{typeKEKRotationStarted + " " + rotation, typeKEKRetired + " " + rotation}; !equalStrings(got, want) {
				t.Errorf("ledger records %q, want %q", got, want)
			}
			if err := usable(t, data); err != nil {
				t.Errorf("the data directory after the rotation: %v", err)
			}
		})
	}

	t.Run("the ledger names other KEKs", func(t *testing.T) {
		data := initData(t)
		store, err := sqlite.Open(context.Background(), filepath.Join(data, ledgerDir), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = appendKEKEvent(t.Context(), store, typeKEKRotationStarted, kekRotation{From: "file:00000001", To: "file:00000002"}, 0)
		store.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rotateKEKCmd(t, data); err == nil || !strings.Contains(err.Error(), "the ledger records a rotation from KEK file:00000001") {
			t.Errorf("kek rotate: %v", err)
		}
	})
}
