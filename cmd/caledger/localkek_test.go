package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"github.com/caledger/caledger/crypto/hsm/softhsmtest"
	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/crypto/signer"
)

// pkcs11KEKData runs "caledger init" with the KEK on a new SoftHSM2 token and
// returns the data directory, the environment with the token's PIN, and the
// token.
func pkcs11KEKData(t *testing.T) (string, map[string]string, softhsmtest.Config) {
	t.Helper()
	tok := softhsmtest.NewToken(t)
	env := map[string]string{kekPINEnv: tok.PIN}
	data := filepath.Join(t.TempDir(), "data")
	args := []string{"init", "--data", data, "--kek-provider", "pkcs11", "--kek-pkcs11-library", tok.Library, "--kek-pkcs11-token", tok.TokenLabel}
	// Without the PIN, init refuses before it makes anything.
	if err := run(t.Context(), args, noEnv, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), kekPINEnv) {
		t.Fatalf("init without the KEK's PIN: %v", err)
	}
	if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("init without the KEK's PIN left %s: %v", data, err)
	}
	if err := run(t.Context(), args, func(k string) string { return env[k] }, io.Discard, io.Discard); err != nil {
		t.Fatalf("init: %v", err)
	}
	return data, env, tok
}

// currentKEK returns the ID of the KEK data's config names.
func currentKEK(t *testing.T, data string) string {
	t.Helper()
	cfg, err := readConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	home, err := kekHomeFor(data, cfg, noPIN)
	if err != nil {
		t.Fatal(err)
	}
	id, err := home.id(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// tokenHasKey reports whether the token holds the KEK id names.
func tokenHasKey(t *testing.T, tok softhsmtest.Config, id string) bool {
	t.Helper()
	label, ok := strings.CutPrefix(id, kek.PKCS11ID(tok.TokenLabel, ""))
	if !ok {
		t.Fatalf("%s is not a key on token %s", id, tok.TokenLabel)
	}
	k, err := kek.OpenPKCS11(t.Context(), kek.PKCS11Config{Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN, KeyLabel: label})
	if errors.Is(err, kek.ErrKeyNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	return true
}

// tokenKEKs returns the IDs of the secret keys on the token.
func tokenKEKs(t *testing.T, tok softhsmtest.Config) []string {
	t.Helper()
	p11, err := crypto11.Configure(&crypto11.Config{Path: tok.Library, TokenLabel: tok.TokenLabel, Pin: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	defer p11.Close()
	keys, err := p11.FindAllKeys()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range keys {
		a, err := p11.GetAttribute(k, crypto11.CkaLabel)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, kek.PKCS11ID(tok.TokenLabel, string(a.Value)))
	}
	slices.Sort(ids)
	return ids
}

// keysUnderOnly fails the test unless every data key and CA key file of data
// names the KEK id, and there are both.
func keysUnderOnly(t *testing.T, data, id string) {
	t.Helper()
	vault, err := keyvault.KEKCounts(t.Context(), filepath.Join(data, vaultFile))
	if err != nil {
		t.Fatal(err)
	}
	files, err := signer.KeyFileKEKs(filepath.Join(data, caKeysDir))
	if err != nil {
		t.Fatal(err)
	}
	if len(vault) != 1 || vault[id] == 0 || len(files) != 1 || files[id] == 0 {
		t.Fatalf("data keys per KEK %v, CA key files per KEK %v, want all under %s", vault, files, id)
	}
}

// TestPKCS11KEK runs a data directory whose KEK is an AES key on a SoftHSM2
// token. No KEK file exists; the vault's keys and the software CA keys name
// the token's key; serve needs the PIN; a backup restores with the token
// alone; a rotation deletes the old key from the token, after which personal
// data still opens, the CA still signs, and the backup taken before no longer
// restores.
func TestPKCS11KEK(t *testing.T) {
	data, env, tok := pkcs11KEKData(t)
	getenv := func(k string) string { return env[k] }
	if _, err := os.Lstat(filepath.Join(data, kekFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s exists with a PKCS#11 KEK: %v", kekFile, err)
	}
	b := readFile(t, filepath.Join(data, configFile))
	if bytes.Contains(b, []byte(tok.PIN)) {
		t.Fatal("the PIN was written to the config")
	}
	first := currentKEK(t, data)
	if !strings.HasPrefix(first, "pkcs11:"+tok.TokenLabel+"/caledger-kek@") || !tokenHasKey(t, tok, first) {
		t.Fatalf("KEK %s", first)
	}
	keysUnderOnly(t, data, first)
	if got := tokenKEKs(t, tok); !slices.Equal(got, []string{first}) {
		t.Fatalf("token keys after init %q, want %q", got, first)
	}

	serveArgs := []string{"serve", "--data", data, "--addr", "127.0.0.1:0"}
	if err := run(t.Context(), serveArgs, noEnv, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), kekPINEnv) {
		t.Fatalf("serve without the KEK's PIN: %v", err)
	}
	var kept, erased string
	served := func(check func(admin *apiClient)) {
		t.Helper()
		s := startServe(t, serveArgs, env)
		admin := mtlsClient(t, data, "https://"+s.addr, filepath.Join(data, adminDir, "admin.pem"), filepath.Join(data, adminDir, "admin-key.pem"))
		check(admin)
		// A certificate proves that the CA key opens under the KEK.
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		admin.json("POST", "/v1/certificates", map[string]string{"subject_id": kept, "profile": "tls-client",
			"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, http.StatusCreated, nil)
		if err := s.stop(t); err != nil {
			t.Fatal(err)
		}
	}
	served(func(admin *apiClient) {
		var s struct{ ID string }
		admin.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"common_name": "Token Person Kept"}}, http.StatusCreated, &s)
		kept = s.ID
		admin.json("POST", "/v1/subjects", map[string]any{"attributes": map[string]string{"common_name": "Token Person Erased"}}, http.StatusCreated, &s)
		erased = s.ID
		admin.json("POST", "/v1/subjects/"+erased+"/erasure", map[string]any{"basis": "gdpr-art17"}, http.StatusOK, nil)
	})
	keysUnderOnly(t, data, first)

	// A backup seals its manifest under the token's key, so it needs the
	// PIN; it restores with the token alone.
	bk := filepath.Join(t.TempDir(), "backup")
	if err := run(t.Context(), []string{"backup", "--data", data, "--out", bk}, noEnv, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), kekPINEnv) {
		t.Errorf("backup without the PIN: %v", err)
	}
	var backedUp bytes.Buffer
	if err := run(t.Context(), []string{"backup", "--data", data, "--out", bk}, getenv, &backedUp, io.Discard); err != nil {
		t.Fatalf("backup: %v", err)
	}
	if out := backedUp.String(); !strings.Contains(out, "PKCS#11 token") || !strings.Contains(out, "a KEK rotation deletes it") {
		t.Errorf("backup output does not say where the KEK is:\n%s", out)
	}
	restoreArgs := func(target string, extra ...string) []string {
		return append([]string{"restore", "--from", bk, "--data", target}, extra...)
	}
	target := filepath.Join(t.TempDir(), "restored")
	if err := run(t.Context(), restoreArgs(target, "--kek", filepath.Join(t.TempDir(), "kek.json")), getenv, io.Discard, io.Discard); !isUsage(err) || !strings.Contains(err.Error(), "drop --kek") {
		t.Errorf("restore with --kek: %v", err)
	}
	if err := run(t.Context(), restoreArgs(target), noEnv, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), kekPINEnv) {
		t.Errorf("restore without the PIN: %v", err)
	}
	if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed restore left %s: %v", target, err)
	}
	var restored bytes.Buffer
	if err := run(t.Context(), restoreArgs(target), getenv, &restored, io.Discard); err != nil {
		t.Fatalf("restore: %v", err)
	}
	keysUnderOnly(t, target, first)
	if !strings.Contains(restored.String(), "runs on the same KEK as the data directory the backup was taken from") {
		t.Errorf("restore does not warn that both directories share the token's key:\n%s", &restored)
	}

	// The rotation: without the PIN it refuses before it records anything.
	rotate := []string{"kek", "rotate", "--data", data}
	if err := run(t.Context(), rotate, noEnv, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), kekPINEnv) {
		t.Fatalf("kek rotate without the PIN: %v", err)
	}
	if got := kekEvents(t, data); len(got) != 0 {
		t.Fatalf("kek rotate without the PIN recorded %q", got)
	}
	var out bytes.Buffer
	if err := run(t.Context(), rotate, getenv, &out, io.Discard); err != nil {
		t.Fatalf("kek rotate: %v", err)
	}
	second := currentKEK(t, data)
	if second == first || !strings.HasPrefix(second, "pkcs11:"+tok.TokenLabel+"/caledger-kek@") {
		t.Fatalf("KEK after the rotation: %s (before: %s)", second, first)
	}
	if !strings.Contains(out.String(), "rotated the KEK from "+first+" to "+second) || !strings.Contains(out.String(), "deleted from the token") {
		t.Errorf("kek rotate output:\n%s", &out)
	}
	if got := tokenKEKs(t, tok); !slices.Equal(got, []string{second}) {
		t.Errorf("token keys after the rotation %q, want only %q", got, second)
	}
	keysUnderOnly(t, data, second)
	rotation := fmt.Sprintf(`{"from":%q,"to":%q}`, first, second)
	if got, want := kekEvents(t, data), []string{typeKEKRotationStarted + " " + rotation, typeKEKRetired + " " + rotation}; !slices.Equal(got, want) {
		t.Errorf("ledger records %q, want %q", got, want)
	}
	for _, f := range []string{kekMarkerFile, kekNextFile, kekFile} {
		if _, err := os.Lstat(filepath.Join(data, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after the rotation: %v", f, err)
		}
	}
	served(func(admin *apiClient) {
		var s struct{ Attributes map[string]string }
		admin.json("GET", "/v1/subjects/"+kept, nil, http.StatusOK, &s, "Caledger-Reason", "rotation check")
		if s.Attributes["common_name"] != "Token Person Kept" {
			t.Errorf("subject after the rotation: %+v", s)
		}
		admin.json("GET", "/v1/subjects/"+erased, nil, http.StatusGone, nil, "Caledger-Reason", "rotation check")
	})

	// The backup from before the rotation: its KEK is gone from the token.
	target = filepath.Join(t.TempDir(), "restored-after")
	if err := run(t.Context(), restoreArgs(target), getenv, io.Discard, io.Discard); !errors.Is(err, kek.ErrKeyNotFound) || !strings.Contains(err.Error(), "this backup cannot be restored") {
		t.Errorf("restore of a backup whose KEK was deleted: %v, want ErrKeyNotFound", err)
	}

	// A second rotation starts from the label the first one made.
	out.Reset()
	if err := run(t.Context(), rotate, getenv, &out, io.Discard); err != nil {
		t.Fatalf("second kek rotate: %v", err)
	}
	if third := currentKEK(t, data); third == second || tokenHasKey(t, tok, second) || !tokenHasKey(t, tok, third) {
		t.Errorf("second rotation: %s to %s, old key kept %v", second, third, tokenHasKey(t, tok, second))
	}
}

// TestPKCS11KEKRotateResumes stops a rotation of a PKCS#11 KEK where the
// token's state differs from the file KEK's: before the new key is recorded,
// after the ledger's record with the new key deleted by hand, and after the
// config names the new key but before the old one is deleted.
func TestPKCS11KEKRotateResumes(t *testing.T) {
	// start runs rotateKEK's first steps by hand: the marker, the new key
	// (home.next), and with record the ledger's record. It returns the home
	// and both KEKs.
	start := func(t *testing.T, data string, env map[string]string, record bool) (kekHome, openedKEK, openedKEK) {
		t.Helper()
		ctx := t.Context()
		cfg, err := readConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		home, err := kekHomeFor(data, cfg, func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		cur, err := home.open(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cur.Close() })
		if err := writeFileAtomic(filepath.Join(data, kekMarkerFile), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		next, err := home.next(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { next.Close() })
		if record {
			recordKEKStart(t, data, cur.ID(), next.ID())
		}
		return home, cur, next
	}
	rotate := func(t *testing.T, data string, env map[string]string) string {
		t.Helper()
		out, err := rotateKEKCmd(t, data, env)
		if err != nil {
			t.Fatalf("kek rotate: %v", err)
		}
		return out
	}

	t.Run("the new key made, nothing recorded", func(t *testing.T) {
		data, env, tok := pkcs11KEKData(t)
		_, cur, next := start(t, data, env, false)
		from, to := cur.ID(), next.ID()
		if out := rotate(t, data, env); !strings.Contains(out, "rotated the KEK from "+from+" to "+to) {
			t.Errorf("kek rotate did not take the key the stopped run made:\n%s", out)
		}
		if currentKEK(t, data) != to || tokenHasKey(t, tok, from) {
			t.Errorf("after the rotation: KEK %s, old key on the token %v", currentKEK(t, data), tokenHasKey(t, tok, from))
		}
		keysUnderOnly(t, data, to)
	})

	t.Run("the new key deleted after the record", func(t *testing.T) {
		data, env, tok := pkcs11KEKData(t)
		_, cur, next := start(t, data, env, true)
		from, lost := cur.ID(), next.ID()
		next.Close()
		label, _ := strings.CutPrefix(lost, "pkcs11:"+tok.TokenLabel+"/")
		if err := kek.DestroyPKCS11(t.Context(), kek.PKCS11Config{Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN, KeyLabel: label}); err != nil {
			t.Fatal(err)
		}
		out := rotate(t, data, env)
		to := currentKEK(t, data)
		if to == lost || to == from || !strings.Contains(out, "abandoned the rotation to KEK "+lost) {
			t.Errorf("KEK %s after abandoning %s:\n%s", to, lost, out)
		}
		abandoned := fmt.Sprintf(`{"from":%q,"to":%q}`, from, lost)
		rotation := fmt.Sprintf(`{"from":%q,"to":%q}`, from, to)
		want := []string{typeKEKRotationStarted + " " + abandoned, typeKEKRotationAbandoned + " " + abandoned,
			typeKEKRotationStarted + " " + rotation, typeKEKRetired + " " + rotation}
		if got := kekEvents(t, data); !slices.Equal(got, want) {
			t.Errorf("ledger records %q, want %q", got, want)
		}
		if tokenHasKey(t, tok, from) {
			t.Error("the old key is still on the token")
		}
		keysUnderOnly(t, data, to)
	})

	t.Run("the retirement recorded, the marker left", func(t *testing.T) {
		data, env, tok := pkcs11KEKData(t)
		rotate(t, data, env)
		cur := currentKEK(t, data)
		// A stop before the marker's removal leaves it naming the key that
		// is now in use.
		if err := writeFileAtomic(filepath.Join(data, kekMarkerFile), []byte(cur), 0o600); err != nil {
			t.Fatal(err)
		}
		out := rotate(t, data, env)
		next := currentKEK(t, data)
		if next == cur || !strings.Contains(out, "rotated the KEK from "+cur+" to "+next) || tokenHasKey(t, tok, cur) {
			t.Errorf("rotation after a left marker: %s to %s, old key on the token %v:\n%s", cur, next, tokenHasKey(t, tok, cur), out)
		}
		keysUnderOnly(t, data, next)
	})

	t.Run("the config edited by hand to the new key before the re-wrap", func(t *testing.T) {
		data, env, tok := pkcs11KEKData(t)
		_, cur, next := start(t, data, env, true)
		from, to := cur.ID(), next.ID()
		cfg, err := readConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		cfg.KEK.Label = strings.TrimPrefix(to, kek.PKCS11ID(tok.TokenLabel, ""))
		if err := writeConfig(data, cfg); err != nil {
			t.Fatal(err)
		}
		_, err = rotateKEKCmd(t, data, env)
		if err == nil || !strings.Contains(err.Error(), "keys are still wrapped under KEK "+from) {
			t.Errorf("kek rotate after the config was edited: %v", err)
		}
		if !tokenHasKey(t, tok, from) {
			t.Error("the old key, which still wraps every key, was deleted")
		}
	})

	t.Run("the config moved to the new key, the old one not yet deleted", func(t *testing.T) {
		data, env, tok := pkcs11KEKData(t)
		ctx := t.Context()
		home, cur, next := start(t, data, env, true)
		from, to := cur.ID(), next.ID()
		if _, err := keyvault.Rewrap(ctx, filepath.Join(data, vaultFile), cur, next, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := signer.NewSoftware(filepath.Join(data, caKeysDir), cur).Rewrap(ctx, next); err != nil {
			t.Fatal(err)
		}
		if err := home.promote(ctx, cur, next); err != nil {
			t.Fatal(err)
		}
		next.Close()
		if currentKEK(t, data) != to || !tokenHasKey(t, tok, from) {
			t.Fatal("the steps by hand did not stop where this case needs")
		}
		// A node refuses to start on the half-rotated directory.
		err := usable(t, data, env)
		if err == nil || !strings.Contains(err.Error(), "unfinished: run 'caledger kek rotate'") {
			t.Errorf("a node on a half-rotated directory: %v", err)
		}
		if out := rotate(t, data, env); !strings.Contains(out, "completed the interrupted rotation from KEK "+from+" to "+to) {
			t.Errorf("kek rotate output:\n%s", out)
		}
		if tokenHasKey(t, tok, from) {
			t.Error("the old key is still on the token")
		}
		keysUnderOnly(t, data, to)
		if _, err := os.Lstat(filepath.Join(data, kekMarkerFile)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("marker after the rotation: %v", err)
		}
	})
}

// TestPKCS11KEKInitFails: an init that fails after it made the KEK deletes
// it from the token, and leaves the other keys there alone, whether it fails
// while the backends open or later.
func TestPKCS11KEKInitFails(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	other, err := kek.OpenPKCS11(t.Context(), kek.PKCS11Config{Library: tok.Library, TokenLabel: tok.TokenLabel, PIN: tok.PIN, KeyLabel: "someone-else", Generate: true})
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	data := filepath.Join(t.TempDir(), "data")
	// A file where init writes the admin credential's directory.
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, adminDir), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(t.Context(), []string{"init", "--data", data, "--kek-provider", "pkcs11", "--kek-pkcs11-library", tok.Library, "--kek-pkcs11-token", tok.TokenLabel},
		func(k string) string { return map[string]string{kekPINEnv: tok.PIN}[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "admin credential") {
		t.Fatalf("init: %v, want the admin credential's failure", err)
	}
	if got, want := tokenKEKs(t, tok), []string{kek.PKCS11ID(tok.TokenLabel, "someone-else")}; !slices.Equal(got, want) {
		t.Errorf("token keys after the failed init %q, want %q", got, want)
	}

	// A failure while the backends open, after the KEK was made: the
	// KurrentDB store without its URL.
	err = run(t.Context(), []string{"init", "--data", filepath.Join(t.TempDir(), "data"), "--store", "kurrent", "--kek-provider", "pkcs11", "--kek-pkcs11-library", tok.Library, "--kek-pkcs11-token", tok.TokenLabel},
		func(k string) string { return map[string]string{kekPINEnv: tok.PIN}[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "KURRENTDB_URL") {
		t.Fatalf("init: %v, want the missing KURRENTDB_URL", err)
	}
	if got, want := tokenKEKs(t, tok), []string{kek.PKCS11ID(tok.TokenLabel, "someone-else")}; !slices.Equal(got, want) {
		t.Errorf("token keys after the init that failed to open its backends %q, want %q", got, want)
	}
}

// TestKEKConfigAbsent: a config written before the KEK's provider was
// recorded (no "kek" field) means the KEK file.
func TestKEKConfigAbsent(t *testing.T) {
	data := initData(t)
	cfg, err := readConfig(data)
	if err != nil || cfg.KEK == nil || cfg.KEK.Provider != "file" {
		t.Fatalf("init's config KEK %+v (%v), want provider file", cfg.KEK, err)
	}
	setConfig(t, data, "kek", nil)
	if err := usable(t, data, nil); err != nil {
		t.Fatalf("a node on a config without the KEK field: %v", err)
	}
	setConfig(t, data, "kek", map[string]string{"provider": "vault"})
	if err := usable(t, data, nil); err == nil || !strings.Contains(err.Error(), `unknown KEK provider "vault"`) {
		t.Errorf("a node on an unknown KEK provider: %v", err)
	}
}
