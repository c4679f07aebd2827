package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/crypto/secretfile"
	"github.com/caledger/caledger/crypto/signer"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/eventstore/sqlite"
)

// The ledger's record of the local KEK's rotations (docs/events.md). The
// stream is not a domain stream: the views skip "vault." streams, and the
// auditor's replay checks no rule on them.
const (
	kekStream = "vault.kek"
	// typeKEKRotationStarted is appended before the first key is wrapped
	// under the new KEK: a key under a KEK the ledger does not name never
	// exists.
	typeKEKRotationStarted = "vault.kek-rotation-started"
	// typeKEKRetired is appended once no key needs the old KEK and it has
	// been destroyed: its file replaced and overwritten, or its key deleted
	// from the token.
	typeKEKRetired = "vault.kek-retired"
	// typeKEKRotationAbandoned ends a started rotation whose new KEK (file
	// or token key) was lost before any key was wrapped under it.
	typeKEKRotationAbandoned = "vault.kek-rotation-abandoned"
	kekEventSchema           = 1

	// kekNextFile holds the new KEK while a rotation runs.
	kekNextFile = "keys/kek.next.json"
	// kekRetiredFile is a second name of the old KEK file from just before
	// the new one takes its place until its bytes are overwritten.
	kekRetiredFile = "keys/.kek.retired.json"
	// kekMarkerFile exists from a rotation's first step to its last; backup
	// refuses to run while it does.
	kekMarkerFile = "keys/kek.rotating"
)

// kekRotation is the public part of the three event types: the KEKs' ids,
// which are key ids, never key material.
type kekRotation struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// kekActor records the rotation: an operator with the data directory, as
// for init.
var kekActor = domain.Actor{ID: "caledger-kek-rotate", Role: "admin"}

func runKEK(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "rotate" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprintln(stdout, "Usage: caledger kek rotate [--data DIR]")
			return nil
		}
		return &usageError{msg: "kek: the only subcommand is 'rotate' (run 'caledger kek rotate -h')"}
	}
	fs := flag.NewFlagSet("kek rotate", flag.ContinueOnError)
	dataDir := fs.String("data", envOr(env, "CALEDGER_DATA", "./data"), "data `directory`; env CALEDGER_DATA")
	setUsage(fs, "kek rotate [--data DIR]", `Start a new KEK epoch: make a new key-encryption key, re-wrap under it every
data key of the key vault and every software CA key, then put it in place of
the old KEK and destroy that: keys/kek.json is replaced and the old file
overwritten, or, with a PKCS#11 KEK (init --kek-provider pkcs11), the config
names the new key and the old one is deleted from the token (its PIN comes
from env CALEDGER_KEK_PKCS11_PIN). Once every copy of the old KEK is
destroyed, no copy of the vault made before (a backup, freed disk blocks)
opens any key, so no erasure made before can be undone from one.

The ledger records the rotation's start and end. The server must be stopped.
A rotation that was interrupted is completed by running the command again;
until then the server refuses to start. docs/keyvault.md has the details.`)
	if help, err := parseFlags(fs, args[1:], stdout); help || err != nil {
		return err
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	cfg, err := readConfig(dir)
	if err != nil {
		return err
	}
	if !cfg.embedded() {
		return fmt.Errorf("kek rotate: the %s store's key vault is shared by the nodes: its KEKs rotate as epochs (docs/distributed.md)", cfg.Store)
	}
	store, err := sqlite.Open(ctx, filepath.Join(dir, ledgerDir), sqlite.Options{})
	if errors.Is(err, sqlite.ErrInUse) {
		return errors.New("kek rotate: the ledger is in use by another process (a server, or a backup of a stopped server): stop it first")
	}
	if err != nil {
		return fmt.Errorf("kek rotate: open the ledger: %w", err)
	}
	defer store.Close()
	home, err := kekHomeFor(dir, cfg, env)
	if err != nil {
		return fmt.Errorf("kek rotate: %w", err)
	}
	start := time.Now()
	r, err := rotateKEK(ctx, store, dir, home, stderr)
	if err != nil {
		return fmt.Errorf("kek rotate: %w", err)
	}
	if err := store.Close(); err != nil {
		return fmt.Errorf("kek rotate: %w", err)
	}
	if r.abandoned != nil {
		fmt.Fprintf(stdout, "abandoned the rotation to KEK %s, which was missing and wrapped no key\n", r.abandoned.To)
	}
	if r.resumed {
		fmt.Fprintf(stdout, "completed the interrupted rotation from KEK %s to %s in %s\n", r.From, r.To, time.Since(start).Round(time.Millisecond))
	} else {
		fmt.Fprintf(stdout, "rotated the KEK from %s to %s in %s\n", r.From, r.To, time.Since(start).Round(time.Millisecond))
	}
	if _, ok := home.(fileKEKHome); ok {
		fmt.Fprintf(stdout, "this run re-wrapped %d data keys and %d CA keys; %s holds the new KEK, and the old KEK file's bytes were overwritten\n", r.dataKeys, r.caKeys, home.describe())
		fmt.Fprintf(stdout, "backups taken before now open only with a copy of the old KEK %s: destroy every copy of it when the last of them expires; from then on no erasure before now can be undone from them\n", r.From)
		fmt.Fprintln(stdout, "keep a copy of the new KEK apart from the backups taken from now on, or they cannot be restored")
		return nil
	}
	fmt.Fprintf(stdout, "this run re-wrapped %d data keys and %d CA keys; the KEK is now %s, and the old key was deleted from the token\n", r.dataKeys, r.caKeys, home.describe())
	fmt.Fprintln(stdout, "backups taken before now no longer open (their keys were wrapped under the deleted key), unless the token itself was backed up with it: no erasure before now can be undone from them")
	return nil
}

// rotated is what rotateKEK did.
type rotated struct {
	kekRotation
	dataKeys, caKeys int
	// resumed is set when the rotation was started by an earlier run.
	resumed bool
	// abandoned is the started rotation this run gave up: its new KEK was
	// missing and no key was wrapped under it.
	abandoned *kekRotation
}

// rotateKEK runs or completes a rotation of the KEK of the data directory dir,
// whose ledger is store (opened, so no server runs). The steps, each of which
// a later run finds done or redoes:
//
//  1. kekMarkerFile is made, then the new KEK (home.next: the file
//     kekNextFile, or a key on the token; an unrecorded one from a run that
//     stopped before step 2 is taken: nothing is wrapped under it);
//  2. vault.kek-rotation-started {from, to} is appended;
//  3. the vault's data keys are re-wrapped (keyvault.Rewrap), then the CA key
//     files (signer.Software.Rewrap);
//  4. once no key names another KEK than the new one, the new KEK takes the
//     old one's place (home.promote: kekNextFile replaces kekFile, whose
//     bytes are overwritten, or the config names the new key's label), and
//     the old KEK is destroyed (home.destroy: what a stopped overwrite left,
//     or the old key on the token);
//  5. vault.kek-retired {from, to} is appended and kekMarkerFile removed.
//
// A later run tells where an earlier one stopped from the ledger's last record
// and the ID of the KEK in use (home.open): after step 4's promote, it is the
// new KEK.
func rotateKEK(ctx context.Context, store eventstore.Store, dir string, home kekHome, stderr io.Writer) (rotated, error) {
	var r rotated
	pending, version, err := readKEKRotations(ctx, store)
	if err != nil {
		return r, err
	}
	cur, err := home.open(ctx, false)
	if err != nil {
		return r, err
	}
	defer cur.Close()
	// The marker keeps what an earlier run wrote in it (a PKCS#11 home names
	// the new key there before it makes it).
	marker := filepath.Join(dir, kekMarkerFile)
	if _, err := os.Lstat(marker); errors.Is(err, fs.ErrNotExist) {
		if err := writeFileAtomic(marker, nil, 0o600); err != nil {
			return r, err
		}
	} else if err != nil {
		return r, err
	}
	var next openedKEK
	defer func() {
		if next != nil {
			next.Close()
		}
	}()
	switch {
	case pending != nil && cur.ID() == pending.To:
		// Stopped in step 4 after the new KEK took the old one's place, or
		// before step 5.
		r.kekRotation, r.resumed = *pending, true
	case pending != nil && cur.ID() == pending.From:
		next, err = home.next(ctx, pending.To)
		if errors.Is(err, errKEKLost) {
			// If nothing is wrapped under the lost KEK, the rotation is
			// abandoned and a new one starts.
			n, cerr := keysUnder(ctx, dir, pending.To)
			if cerr != nil {
				return r, cerr
			}
			if n > 0 {
				return r, fmt.Errorf("the ledger records a rotation to KEK %s, and %d keys are wrapped under it, but %v: put it back (from a copy) and run again; without it those keys cannot be opened", pending.To, n, err)
			}
			if err := appendKEKEvent(ctx, store, typeKEKRotationAbandoned, *pending, version); err != nil {
				return r, err
			}
			version++
			r.abandoned = pending
			// A PKCS#11 home named the lost key in the marker: the new
			// rotation's key gets a label of its own.
			if err := writeFileAtomic(marker, nil, 0o600); err != nil {
				return r, err
			}
			if next, version, err = startKEKRotation(ctx, store, home, cur, version); err != nil {
				return r, err
			}
			r.kekRotation = kekRotation{From: cur.ID(), To: next.ID()}
			break
		}
		if err != nil {
			return r, err
		}
		r.kekRotation, r.resumed = *pending, true
	case pending != nil:
		return r, fmt.Errorf("the ledger records a rotation from KEK %s to %s, but the KEK in use is %s (%s)", pending.From, pending.To, cur.ID(), home.describe())
	default:
		if next, version, err = startKEKRotation(ctx, store, home, cur, version); err != nil {
			return r, err
		}
		r.kekRotation = kekRotation{From: cur.ID(), To: next.ID()}
	}
	if next != nil {
		bar := &progressBar{w: stderr, unit: "data keys"}
		if r.dataKeys, err = keyvault.Rewrap(ctx, filepath.Join(dir, vaultFile), cur, next, func(done, total int) {
			bar.update(uint64(done), uint64(total))
		}); err != nil {
			if bar.total > 0 {
				// The bar shows work the failed transaction undid: end its line.
				fmt.Fprintln(stderr, " (undone: nothing was re-wrapped)")
			}
			return r, err
		}
		if bar.total > 0 {
			bar.done()
		}
		if r.caKeys, err = signer.NewSoftware(filepath.Join(dir, caKeysDir), cur).Rewrap(ctx, next); err != nil {
			return r, err
		}
	}
	// The KEK in use alone does not prove step 3 done (a file moved or a
	// config edited by hand would pass): the keys themselves must name the
	// new KEK only, before the old one is destroyed, which a file home's
	// promote does.
	if err := onlyUnder(ctx, dir, r.To); err != nil {
		return r, err
	}
	if next != nil {
		if err := home.promote(ctx, cur, next); err != nil {
			return r, err
		}
	}
	if err := home.destroy(ctx, r.From); err != nil {
		return r, err
	}
	if err := appendKEKEvent(ctx, store, typeKEKRetired, r.kekRotation, version); err != nil {
		return r, err
	}
	if err := os.Remove(marker); err != nil {
		return r, err
	}
	return r, secretfile.SyncDir(filepath.Dir(marker))
}

// startKEKRotation makes (or takes) the new KEK in home and records the
// rotation from cur to it at the stream version given; it returns the new
// KEK and the stream's version after the record.
func startKEKRotation(ctx context.Context, store eventstore.Store, home kekHome, cur openedKEK, version uint64) (openedKEK, uint64, error) {
	next, err := home.next(ctx, "")
	if err != nil {
		return nil, 0, err
	}
	if next.ID() == cur.ID() {
		next.Close()
		return nil, 0, fmt.Errorf("the new KEK is the current KEK %s: remove %s and run again", cur.ID(), kekNextFile)
	}
	if err := appendKEKEvent(ctx, store, typeKEKRotationStarted, kekRotation{From: cur.ID(), To: next.ID()}, version); err != nil {
		next.Close()
		return nil, 0, err
	}
	return next, version + 1, nil
}

// keyKEKs counts the data keys of dir's vault and its software CA key files
// per KEK id.
func keyKEKs(ctx context.Context, dir string) (map[string]int, error) {
	counts, err := keyvault.KEKCounts(ctx, filepath.Join(dir, vaultFile))
	if err != nil {
		return nil, err
	}
	files, err := signer.KeyFileKEKs(filepath.Join(dir, caKeysDir))
	if err != nil {
		return nil, err
	}
	for id, n := range files {
		counts[id] += n
	}
	return counts, nil
}

// keysUnder returns how many keys of dir are wrapped under the KEK id.
func keysUnder(ctx context.Context, dir, id string) (int, error) {
	counts, err := keyKEKs(ctx, dir)
	return counts[id], err
}

// onlyUnder fails unless every key of dir is wrapped under the KEK id.
func onlyUnder(ctx context.Context, dir, id string) error {
	counts, err := keyKEKs(ctx, dir)
	if err != nil {
		return err
	}
	for other, n := range counts {
		if other != id {
			return fmt.Errorf("%d keys are still wrapped under KEK %s, not the new KEK %s: the retirement is not recorded", n, other, id)
		}
	}
	return nil
}

// readKEKRotations returns the rotation the ledger records as started and
// not yet retired, if any, and the version of kekStream.
func readKEKRotations(ctx context.Context, store eventstore.Store) (*kekRotation, uint64, error) {
	var pending *kekRotation
	var version uint64
	for e, err := range store.ReadStream(ctx, kekStream, 1) {
		if err != nil {
			return nil, 0, fmt.Errorf("read %s: %w", kekStream, err)
		}
		version = e.Version
		if e.Schema != kekEventSchema {
			return nil, 0, fmt.Errorf("%s version %d: %s schema %d, this program knows %d", kekStream, e.Version, e.Type, e.Schema, kekEventSchema)
		}
		var p kekRotation
		if err := json.Unmarshal(e.Public, &p); err != nil || p.From == "" || p.To == "" {
			return nil, 0, fmt.Errorf("%s version %d: %s does not name two KEKs", kekStream, e.Version, e.Type)
		}
		switch {
		case e.Type == typeKEKRotationStarted && pending == nil:
			pending = &p
		case (e.Type == typeKEKRetired || e.Type == typeKEKRotationAbandoned) && pending != nil && *pending == p:
			pending = nil
		default:
			return nil, 0, fmt.Errorf("%s version %d: %s out of order", kekStream, e.Version, e.Type)
		}
	}
	return pending, version, nil
}

func appendKEKEvent(ctx context.Context, store eventstore.Store, typ string, p kekRotation, version uint64) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	id, err := domain.NewEventID(rand.Reader)
	if err != nil {
		return err
	}
	ev := domain.Event{ID: id, Type: typ, Schema: kekEventSchema, Time: time.Now().UTC(), Actor: kekActor, Public: b}
	if _, err := store.Append(ctx, kekStream, domain.Exact(version), ev); err != nil {
		return fmt.Errorf("record %s: %w", typ, err)
	}
	return nil
}
