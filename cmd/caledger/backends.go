package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/caledger/caledger/api"
	"github.com/caledger/caledger/crypto/authority"
	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/crypto/sharedvault"
	"github.com/caledger/caledger/crypto/signer"
	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/eventstore/kurrent"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/caledger/caledger/projections"
	"github.com/caledger/caledger/projections/tree"
)

// Data directory layout of the embedded default.
const (
	configFile  = "caledger.json"  // what init set up: CAs, key provider, base URL
	ledgerDir   = "ledger"         // eventstore/sqlite files
	kekFile     = "keys/kek.json"  // the local KEK (Tink keyset, mode 0600)
	vaultFile   = "keys/vault.db"  // wrapped per-subject data keys
	caKeysDir   = "keys/ca"        // software CA keys, wrapped by the KEK
	viewsFile   = "views/views.db" // projections (rebuildable)
	rootPEM     = "ca/root.pem"    // the root CA certificate clients trust
	tlsCertFile = "tls/server.pem" // the server's chain, issued by the issuing CA
	tlsKeyFile  = "tls/server-key.pem"
	adminDir    = "admin" // the first officer's credential
)

// config is DATA/caledger.json, written by init. The ledger holds the CAs
// themselves (ca.created events); the file only says which to load.
type config struct {
	// Store is the ledger backend: "sqlite" (DIR/ledger) or "kurrent" (a
	// KurrentDB cluster named by the environment variable KURRENTDB_URL, which
	// holds credentials and is therefore never written here).
	Store         string   `json:"store,omitempty"`
	CAs           []string `json:"cas"`
	DefaultIssuer string   `json:"default_issuer"`
	// BaseURL is where relying parties reach the CRL and OCSP URLs written in
	// certificates.
	BaseURL string `json:"base_url"`
	// KeyProvider holds the CA keys: "software" (DATA/keys/ca, wrapped by the
	// KEK) or "pkcs11".
	KeyProvider string         `json:"key_provider"`
	PKCS11      *pkcs11Options `json:"pkcs11,omitempty"`
	// KEK is where the local KEK lives; absent means the file keys/kek.json.
	KEK *kekOptions `json:"kek,omitempty"`
	// Profiles is a JSON profiles file; empty means the built-in profiles.
	Profiles string `json:"profiles,omitempty"`
	// SoftTokenHeaders maps subject attributes to the request headers a
	// trusted proxy sets them in for POST /v1/soft-tokens; absent means
	// api.DefaultSoftTokenHeaders, and an empty header name takes an
	// attribute from no header.
	SoftTokenHeaders map[string]string `json:"soft_token_headers,omitempty"`
	// Directory, when set, publishes certificates to an LDAP directory
	// (docs/directory.md).
	Directory *directoryConfig `json:"directory,omitempty"`
	// Witness, when set, has witnesses cosign the ledger's checkpoints
	// (docs/ledger.md).
	Witness *witnessConfig `json:"witness,omitempty"`
	// OCSP, when set, configures who signs OCSP responses (docs/ca.md).
	OCSP *ocspConfig `json:"ocsp,omitempty"`
}

// ocspConfig is the "ocsp" section of the config.
type ocspConfig struct {
	// Responder is "ca" (the default: each CA's key signs its responses) or
	// "delegated": each CA certifies an in-memory key of the server for OCSP
	// signing, which signs its responses instead (RFC 6960 section 4.2.2.2),
	// so that a CA key on an HSM signs one certificate, not every response.
	Responder string `json:"responder,omitempty"`
	// ResponderValidity is a Go duration (default "48h", at least "4h"): the
	// validity of each delegated responder certificate; it is renewed at
	// half of it.
	ResponderValidity string `json:"responder_validity,omitempty"`
}

// Values of ocspConfig.Responder.
const (
	ocspResponderCA        = "ca"
	ocspResponderDelegated = "delegated"
)

// defaultOCSPResponderValidity is the validity of delegated responders when
// the config sets none.
const defaultOCSPResponderValidity = 48 * time.Hour

// delegated returns the validity of the delegated responders, or 0 when the
// CA keys sign their responses themselves.
func (c *ocspConfig) delegated() (time.Duration, error) {
	if c == nil {
		return 0, nil
	}
	switch c.Responder {
	case "", ocspResponderCA:
		if c.ResponderValidity != "" {
			return 0, fmt.Errorf("%s: ocsp: responder_validity is set but responder is not %q", configFile, ocspResponderDelegated)
		}
		return 0, nil
	case ocspResponderDelegated:
	default:
		return 0, fmt.Errorf("%s: ocsp: responder %q is neither %q nor %q", configFile, c.Responder, ocspResponderCA, ocspResponderDelegated)
	}
	if c.ResponderValidity == "" {
		return defaultOCSPResponderValidity, nil
	}
	d, err := time.ParseDuration(c.ResponderValidity)
	if err != nil {
		return 0, fmt.Errorf("%s: ocsp: responder_validity: %w", configFile, err)
	}
	if d < authority.MinOCSPResponderValidity {
		return 0, fmt.Errorf("%s: ocsp: responder_validity %v is below %v: a responder is renewed at half its validity and must outlast the hour of the responses it signs", configFile, d, authority.MinOCSPResponderValidity)
	}
	return d, nil
}

// pkcs11Options locate the token of the CA keys. The PIN is never stored: it
// comes from the environment variable CALEDGER_PKCS11_PIN.
type pkcs11Options struct {
	Library string `json:"library"`
	Token   string `json:"token"`
}

// embedded reports whether the ledger and the key vault are the embedded
// ones, files in the data directory (store sqlite, the default).
func (c config) embedded() bool { return c.Store == "" || c.Store == "sqlite" }

// writeConfig replaces dataDir's config file by cfg, atomically.
func writeConfig(dataDir string, cfg config) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dataDir, configFile), append(b, '\n'), 0o600)
}

func readConfig(dataDir string) (config, error) {
	var c config
	b, err := os.ReadFile(filepath.Join(dataDir, configFile))
	if errors.Is(err, fs.ErrNotExist) {
		return c, fmt.Errorf("%s is not initialised: run 'caledger init --data %s' first", dataDir, dataDir)
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w", configFile, err)
	}
	return c, nil
}

// node is one caledger process's backends: the ledger, the key vault, the
// views, and once loadCAs ran, the CAs and the certificate signer.
type node struct {
	dataDir string
	logger  *slog.Logger
	store   eventstore.Store
	vault   domain.Sealer
	// embedded is the vault when it is a file in dataDir (store sqlite).
	embedded *keyvault.Vault
	// shared is the vault when it is shared with other nodes (store kurrent):
	// serve must run it to hear their erasures.
	shared   *sharedvault.Vault
	kek      openedKEK
	views    *projections.Views
	tree     *tree.Tree // the Merkle log over the ledger; serve opens it (openTree)
	handlers *domain.Handlers
	keys     authority.Keys
	cas      *authority.Authority
	issuer   *issuer.Issuer
	closers  []func() error
	// viewsErr is why the views last stopped; nil while they run.
	viewsMu  sync.Mutex
	viewsErr error
}

// openNode opens the backends in dataDir that cfg names, by an explicit switch
// on the store name: "sqlite" (the embedded default: ledger and key vault in
// dataDir) or "kurrent" (the ledger on the KurrentDB cluster
// env("KURRENTDB_URL") names, with the key vault shared through it:
// crypto/sharedvault). close releases them; call it after the HTTP server has
// stopped.
func openNode(ctx context.Context, cfg config, dataDir string, logger *slog.Logger, env func(string) string) (*node, error) {
	return openNodeFor(ctx, cfg, dataDir, logger, env, false)
}

// openNodeFor is openNode; creating is set by init, which makes the local
// KEK and may make the shared vault's first KEK.
func openNodeFor(ctx context.Context, cfg config, dataDir string, logger *slog.Logger, env func(string) string, creating bool) (_ *node, err error) {
	n := &node{dataDir: dataDir, logger: logger}
	defer func() {
		if err != nil {
			_ = n.close()
			if creating && n.kek != nil {
				err = errors.Join(err, discardInitKEK(ctx, dataDir, cfg, env))
			}
		}
	}()
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	// The local KEK wraps the software CA keys, and the data keys of the
	// embedded vault. It is closed last.
	home, err := kekHomeFor(dataDir, cfg, env)
	if err != nil {
		return nil, err
	}
	k, err := home.open(ctx, creating)
	if err != nil {
		return nil, fmt.Errorf("open the key-encryption key: %w", err)
	}
	n.kek = k
	n.closers = append(n.closers, k.Close)
	switch storeName := cfg.Store; storeName {
	case "sqlite", "":
		s, err := sqlite.Open(ctx, filepath.Join(dataDir, ledgerDir), sqlite.Options{Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("open the ledger: %w", err)
		}
		n.store = s
		n.closers = append(n.closers, s.Close)
		// Between a rotation's first record and its last, keys may be under
		// either KEK, and the old KEK's file not yet overwritten.
		rot, _, err := readKEKRotations(ctx, s)
		if err != nil {
			return nil, err
		}
		if rot != nil {
			return nil, fmt.Errorf("the rotation of the KEK from %s to %s is unfinished: run 'caledger kek rotate' to complete it", rot.From, rot.To)
		}
		v, err := keyvault.Open(ctx, filepath.Join(dataDir, vaultFile), k)
		if err != nil {
			return nil, fmt.Errorf("open the key vault: %w", err)
		}
		n.vault, n.embedded = v, v
		n.closers = append(n.closers, v.Close)
	case "kurrent":
		url := env("KURRENTDB_URL")
		if url == "" {
			return nil, errors.New("store kurrent: set KURRENTDB_URL to the cluster's kurrentdb:// connection string")
		}
		s, err := kurrent.Open(ctx, url, kurrent.Options{Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("open the ledger: %w", err)
		}
		n.store = s
		n.closers = append(n.closers, s.Close)
		// Only init makes the first epoch's KEK; a node missing a KEK file
		// fails instead of making a new one.
		v, err := sharedvault.New(ctx, s, epochKeyring(dataDir, creating), sharedvault.Options{Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("open the shared key vault: %w", err)
		}
		n.vault, n.shared = v, v
		n.closers = append(n.closers, v.Close)
	default:
		return nil, &usageError{msg: fmt.Sprintf("unknown store %q (known: sqlite, kurrent)", storeName)}
	}
	views, err := projections.Open(ctx, filepath.Join(dataDir, viewsFile), projections.Options{Sealer: n.vault, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("open the views: %w", err)
	}
	n.views = views
	n.closers = append(n.closers, views.Close)
	n.handlers = &domain.Handlers{Events: n.store, Vault: n.vault, Now: time.Now, Rand: rand.Reader}
	return n, nil
}

// epochKeyring finds the shared vault's epoch KEKs as files in
// DIR/keys/epochs/. Every node needs the same files, which is only sound for
// tests and trials: deleting one copy of a file proves nothing about the
// others, so a retired epoch is not provably destroyed. Production keeps the
// epoch KEKs in a network HSM (sharedvault.PKCS11Keyring); docs/distributed.md.
func epochKeyring(dataDir string, create bool) sharedvault.Keyring {
	return sharedvault.KeyringFunc(func(ctx context.Context, epoch uint32) (sharedvault.KEK, error) {
		path := filepath.Join(dataDir, "keys", "epochs", fmt.Sprintf("kek-%d.json", epoch))
		if create {
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return nil, err
			}
		}
		return sharedvault.OpenFileKEK(ctx, path, create)
	})
}

// openKeys opens the CA key provider cfg names. env supplies the PKCS#11 PIN.
func (n *node) openKeys(ctx context.Context, cfg config, env func(string) string) error {
	n.keys = authority.Keys{}
	switch cfg.KeyProvider {
	case "software", "":
		n.keys["software"] = signer.NewSoftware(filepath.Join(n.dataDir, caKeysDir), n.kek)
	case "pkcs11":
		if cfg.PKCS11 == nil {
			return errors.New("key provider pkcs11 needs a library and a token")
		}
		pin := env("CALEDGER_PKCS11_PIN")
		if pin == "" {
			return errors.New("key provider pkcs11: set CALEDGER_PKCS11_PIN to the token's user PIN")
		}
		p, err := signer.OpenPKCS11(ctx, signer.PKCS11Config{Library: cfg.PKCS11.Library, TokenLabel: cfg.PKCS11.Token, PIN: pin})
		if err != nil {
			return fmt.Errorf("open the PKCS#11 token: %w", err)
		}
		n.keys["pkcs11"] = p
		n.closers = append(n.closers, p.Close)
	default:
		return fmt.Errorf("unknown key provider %q (known: software, pkcs11)", cfg.KeyProvider)
	}
	return nil
}

// loadCAs loads the CAs cfg names and makes the handlers sign with them.
func (n *node) loadCAs(ctx context.Context, cfg config, env func(string) string) error {
	if n.keys == nil {
		if err := n.openKeys(ctx, cfg, env); err != nil {
			return err
		}
	}
	a, err := authority.Load(ctx, n.handlers, n.views, n.keys, cfg.CAs, cfg.DefaultIssuer, authority.Options{Head: n.store.Head})
	if err != nil {
		return err
	}
	profiles := issuer.DefaultProfiles()
	if cfg.Profiles != "" {
		f, err := os.Open(cfg.Profiles)
		if err != nil {
			return fmt.Errorf("profiles: %w", err)
		}
		profiles, err = issuer.LoadProfiles(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("profiles %s: %w", cfg.Profiles, err)
		}
	}
	iss, err := issuer.New(a.Issuers(), profiles, issuer.Options{BaseURL: cfg.BaseURL})
	if err != nil {
		return err
	}
	n.cas, n.issuer = a, iss
	n.handlers.Signer = iss
	return nil
}

func (n *node) close() error {
	var errs []error
	for i := len(n.closers) - 1; i >= 0; i-- {
		errs = append(errs, n.closers[i]())
	}
	n.closers = nil
	return errors.Join(errs...)
}

// maxViewLag is the view lag beyond which the node reports itself not ready:
// its CRLs, OCSP answers and credential checks would be that far behind.
const maxViewLag = 5 * time.Second

// Ready reports whether every backend can serve; it backs GET /readyz. The
// views count: a node whose views stopped or fell behind must not take traffic.
// The ledger is asked once, by Lag, which fails when it cannot be read.
func (n *node) Ready(ctx context.Context) error {
	n.viewsMu.Lock()
	verr := n.viewsErr
	n.viewsMu.Unlock()
	if verr != nil {
		return fmt.Errorf("views: %w", verr)
	}
	lags, err := n.views.Lag(ctx, n.store)
	if err != nil {
		return err
	}
	for view, l := range lags {
		if l.Age > maxViewLag {
			return fmt.Errorf("view %s is %s behind the ledger", view, l.Age.Round(time.Millisecond))
		}
	}
	return nil
}

// runSharedVault keeps a shared vault following the ledger until ctx ends, so
// that this node drops the keys other nodes erase at once; until it runs, the
// vault reads every key from the ledger (correct, slower).
func (n *node) runSharedVault(ctx context.Context) {
	n.supervise(ctx, "shared key vault stopped following the ledger; restarting", n.shared.Run, nil)
}

// runViews keeps the views following the ledger until ctx ends. Run stops at
// an event it cannot apply (say the vault was briefly unavailable); it is
// restarted, and until it recovers the node reports itself not ready.
func (n *node) runViews(ctx context.Context) {
	n.supervise(ctx, "views stopped; restarting", func(ctx context.Context) error { return n.views.Run(ctx, n.store) }, n.setViewsErr)
}

// openTree opens the ledger's Merkle tree, which only serve uses; close closes
// it.
func (n *node) openTree(ctx context.Context) error {
	t, err := tree.Open(ctx, filepath.Join(n.dataDir, treeFile))
	if err != nil {
		return fmt.Errorf("open the ledger's Merkle tree: %w", err)
	}
	n.tree = t
	n.closers = append(n.closers, t.Close)
	return nil
}

// runTree keeps the Merkle tree following the ledger until ctx ends. A tree
// that does not match the ledger (its file from another ledger) stops with an
// error and is retried; the checkpoints then stay at its last size.
func (n *node) runTree(ctx context.Context) {
	n.supervise(ctx, "the ledger's Merkle tree stopped; restarting", func(ctx context.Context) error { return n.tree.Run(ctx, n.store) }, nil)
}

// supervise runs run until ctx ends, restarting it whenever it returns, with a
// backoff of 100 ms doubling to 30 s (back to 100 ms after a run of a minute
// or more). down, when set, learns why run stopped, and nil once it restarts.
func (n *node) supervise(ctx context.Context, msg string, run func(context.Context) error, down func(error)) {
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		err := run(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("stopped")
		}
		if down != nil {
			down(err)
		}
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		n.logger.Error(msg, "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
		if down != nil {
			down(nil)
		}
	}
}

func (n *node) setViewsErr(err error) {
	n.viewsMu.Lock()
	n.viewsErr = err
	n.viewsMu.Unlock()
}

// erasureState asks the vault how far the erasures the ledger records have
// gone. Every erasure must have its tombstone in the vault, and an older
// tombstone of another group says nothing about it; one without (its key
// destruction failed) is "shred-pending", as is any erasure while the embedded
// vault owes the WAL checkpoint that removes deleted keys' bytes. The shared
// vault's erasure completes only when the KEK epochs that wrapped the keys are
// destroyed.
func (n *node) erasureState() api.ErasureState {
	return func(ctx context.Context, id domain.SubjectID, all bool, groups []string) (string, time.Time, []uint32, error) {
		var tombs []string
		var shared sharedvault.Status
		owed := false
		switch {
		case n.shared != nil:
			st, err := n.shared.ErasureStatus(ctx, id)
			if err != nil {
				return "", time.Time{}, nil, err
			}
			shared, tombs = st, st.Groups
		case n.embedded != nil:
			st, err := n.embedded.ErasureStatus(ctx, id)
			if err != nil {
				return "", time.Time{}, nil, err
			}
			tombs, owed = st.Groups, st.CheckpointPending
		default:
			return "", time.Time{}, nil, errors.New("erasure state: no key vault is open")
		}
		if all {
			groups = nil
		}
		switch {
		case owed || !datakey.Covers(tombs, groups...):
			return "shred-pending", time.Time{}, nil, nil
		case n.shared == nil:
			return "keys-destroyed", time.Time{}, nil, nil
		case shared.Complete():
			return "complete", shared.CompleteAt, nil, nil
		}
		return "recorded", time.Time{}, shared.PendingEpochs, nil
	}
}
