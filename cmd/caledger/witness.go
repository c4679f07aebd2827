package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/caledger/caledger/crypto/checkpoint"
	"github.com/caledger/caledger/projections/witness"
)

// witnessConfig is caledger.json's "witness": the witnesses that cosign the
// ledger's checkpoints (docs/ledger.md, "Witnesses").
type witnessConfig struct {
	Witnesses []witnessEntry `json:"witnesses"`
	// Quorum is how many witnesses must cosign a checkpoint; 0 means all.
	Quorum int `json:"quorum,omitempty"`
	// Interval is a Go duration such as "1m" (the default): how often a
	// grown ledger's checkpoint is sent to the witnesses.
	Interval string `json:"interval,omitempty"`
	// Refresh is a Go duration (default "1h"; "0s" for never): how old the
	// latest witnessed checkpoint may get, while the ledger does not grow,
	// before it is sent again for cosignatures of the current time. Readers
	// that bound their age (caledger audit --witness-max-age) need it.
	Refresh string `json:"refresh,omitempty"`
}

// defaultWitnessRefresh is the "refresh" of a witness config that sets none.
const defaultWitnessRefresh = time.Hour

// witnessEntry is one witness: where it takes checkpoints, and the verifier
// key of its cosignatures.
type witnessEntry struct {
	URL  string `json:"url"`
	VKey string `json:"vkey"`
}

// options checks cfg, with the witness keys read against the ledger's
// checkpoint signer, and returns the cosigner's options. It needs no backend,
// so that serve refuses a mistaken config before it opens any.
func (cfg *witnessConfig) options(signer *checkpoint.Signer, logger *slog.Logger) (witness.Options, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: witness: %s", configFile, fmt.Sprintf(format, args...))
	}
	if len(cfg.Witnesses) == 0 {
		return witness.Options{}, bad("no witnesses")
	}
	opts := witness.Options{Quorum: cfg.Quorum, Logger: logger.With("component", "witness")}
	vkeys := make([]string, 0, len(cfg.Witnesses))
	for i, w := range cfg.Witnesses {
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return witness.Options{}, bad("witness %d: url %q is not an http or https URL with no query or fragment", i+1, w.URL)
		}
		if u.User != nil {
			// A password here would be kept in caledger.json and in logs.
			return witness.Options{}, bad("witness %d: the url holds credentials, which caledger.json must not", i+1)
		}
		if strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/add-checkpoint") {
			return witness.Options{}, bad("witness %d: url %q must be the witness's prefix, without /add-checkpoint", i+1, w.URL)
		}
		opts.Witnesses = append(opts.Witnesses, witness.Witness{URL: u.String(), VKey: w.VKey})
		vkeys = append(vkeys, w.VKey)
	}
	// The keys and the quorum, checked as witness.New will check them.
	if _, err := checkpoint.ParseWitnesses(vkeys, cfg.Quorum, signer.VerifierKey()); err != nil {
		return witness.Options{}, bad("%v", err)
	}
	if cfg.Interval != "" {
		d, err := time.ParseDuration(cfg.Interval)
		if err != nil || d < time.Second {
			return witness.Options{}, bad("interval %q is not a duration of a second or more, such as 1m", cfg.Interval)
		}
		opts.Interval = d
	}
	opts.Refresh = defaultWitnessRefresh
	if cfg.Refresh != "" {
		d, err := time.ParseDuration(cfg.Refresh)
		if err != nil || (d != 0 && d < time.Second) {
			return witness.Options{}, bad("refresh %q is not a duration of a second or more, such as 1h, or 0s for never", cfg.Refresh)
		}
		opts.Refresh = d
	}
	return opts, nil
}

// witnessedFile is where serve keeps the latest checkpoint the witnesses
// cosigned, for the next start (projections/witness, Keeper). It is checked
// again when it is read, and may be deleted.
const witnessedFile = "views/witnessed.json"

// maxWitnessedFile bounds what is read of it: a checkpoint and a signature
// line per witness.
const maxWitnessedFile = 1 << 20

// keptFile keeps bytes in a file, replaced atomically.
type keptFile struct{ path string }

func (f keptFile) Load(context.Context) ([]byte, error) {
	b, err := readFileLimit(f.path, maxWitnessedFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func (f keptFile) Save(_ context.Context, b []byte) error {
	return writeFileAtomic(f.path, b, 0o600)
}

// runCosigner has the witnesses cosign the ledger's checkpoints until ctx
// ends.
func (n *node) runCosigner(ctx context.Context, c *witness.Cosigner) {
	n.supervise(ctx, "witnessing stopped; restarting", c.Run, nil)
}

// witnessFlags are the --witness-vkey and --witness-quorum flags of the
// commands that check checkpoints (audit, verify-erasure).
type witnessFlags struct {
	files  []string
	quorum int
}

// addWitnessFlags adds the flags to fs.
func addWitnessFlags(fs *flag.FlagSet) *witnessFlags {
	w := &witnessFlags{}
	fs.Func("witness-vkey", "a `file` holding witness verifier keys, one per line, obtained out of band (repeatable): the checkpoint must be cosigned by them", func(s string) error {
		w.files = append(w.files, s)
		return nil
	})
	fs.IntVar(&w.quorum, "witness-quorum", 0, "how many of the witnesses must have cosigned; 0: all of them")
	return w
}

// load reads the witness keys given, for checkpoints of the log whose
// verifier key is logVKey; nil when none were given. A flag given wrongly is a
// *usageError.
func (w *witnessFlags) load(logVKey string) (*checkpoint.Witnesses, error) {
	if len(w.files) == 0 {
		if w.quorum != 0 {
			return nil, &usageError{msg: "--witness-quorum needs --witness-vkey"}
		}
		return nil, nil
	}
	var keys []string
	for _, f := range w.files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("witness key: %w", err)
		}
		n := len(keys)
		for line := range strings.Lines(string(b)) {
			if line = strings.TrimSpace(line); line != "" {
				keys = append(keys, line)
			}
		}
		if len(keys) == n {
			return nil, fmt.Errorf("witness key: %s holds no key", f)
		}
	}
	if w.quorum < 0 || w.quorum > len(keys) {
		return nil, &usageError{msg: fmt.Sprintf("--witness-quorum %d: the --witness-vkey files hold %d keys", w.quorum, len(keys))}
	}
	ws, err := checkpoint.ParseWitnesses(keys, w.quorum, logVKey)
	if err != nil {
		return nil, fmt.Errorf("--witness-vkey: %w", err)
	}
	return ws, nil
}

// cosigners lists the cosignatures for a report line.
func cosigners(cs []checkpoint.Cosignature) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprintf("%s (%s)", printable(c.Witness), c.Time.Format(time.RFC3339))
	}
	return strings.Join(parts, ", ")
}

// prefixed puts the command's name before err, keeping a *usageError one.
func prefixed(command string, err error) error {
	var u *usageError
	if errors.As(err, &u) {
		return &usageError{msg: command + ": " + u.msg}
	}
	return fmt.Errorf("%s: %w", command, err)
}
