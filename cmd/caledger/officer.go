package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/caledger/caledger/crypto/issuer"
)

func runOfficer(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "add" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprintln(stdout, "Usage: caledger officer add --role ROLE --name NAME [--data DIR] [--out DIR]")
			return nil
		}
		return &usageError{msg: "officer: the only subcommand is 'add' (run 'caledger officer add -h')"}
	}
	fs := flag.NewFlagSet("officer add", flag.ContinueOnError)
	dataDir := fs.String("data", envOr(env, "CALEDGER_DATA", "./data"), "data `directory`; env CALEDGER_DATA")
	role := fs.String("role", "officer", "`role`: officer, auditor, compliance, admin or officer-proxy (a front end that asks for soft tokens)")
	name := fs.String("name", "", "the officer's `name` (common name; personal data, sealed in the ledger)")
	email := fs.String("email", "", "the officer's e-mail `address` (optional; sealed)")
	out := fs.String("out", "", "output `directory` for the credential (default DIR/officers/<serial>); existing files are never overwritten")
	setUsage(fs, "officer add --role ROLE --name NAME [--data DIR] [--out DIR]", `Register an officer as a subject and issue a client credential for the
role: a certificate chain and key (PEM) and a PKCS#12 file with a random
password. The server must be stopped: the ledger allows one process.`)
	if help, err := parseFlags(fs, args[1:], stdout); help || err != nil {
		return err
	}
	if roles := issuer.Roles(); !slices.Contains(roles, *role) {
		return &usageError{msg: fmt.Sprintf("officer add: unknown role %q (known: %s)", *role, strings.Join(roles, ", "))}
	}
	if *name == "" {
		return &usageError{msg: "officer add: --name is required"}
	}
	n, dir, cfg, err := openOffline(ctx, "officer add", *dataDir, env, stderr)
	if err != nil {
		return err
	}
	defer n.close()
	if err := n.loadCAs(ctx, cfg, env); err != nil {
		return err
	}
	attrs := map[string]string{"common_name": *name}
	if *email != "" {
		attrs["email"] = *email
	}
	outDir := *out
	if outDir == "" {
		// Named after the credential's serial once it is known; until then,
		// a directory of its own.
		outDir, err = os.MkdirTemp(filepath.Join(dir), ".officer-")
		if err != nil {
			return err
		}
	}
	cred, err := issueCredential(ctx, n, attrs, *role, filepath.Join(outDir, *role+".pem"), filepath.Join(outDir, *role+"-key.pem"), filepath.Join(outDir, *role+".p12"))
	if err != nil {
		return err
	}
	if *out == "" {
		final := filepath.Join(dir, "officers", string(cred.serial))
		if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
			return err
		}
		if err := os.Rename(outDir, final); err != nil {
			return err
		}
		rel := func(p string) string { return filepath.Join(final, filepath.Base(p)) }
		cred.cert, cred.key, cred.p12 = rel(cred.cert), rel(cred.key), rel(cred.p12)
	}
	fmt.Fprintf(stdout, "issued %s credential, serial %s, subject %s\n  %s (key %s)\n  %s (PKCS#12, password in %s)\n",
		*role, cred.serial, cred.subject, cred.cert, cred.key, cred.p12, cred.p12+".password")
	return nil
}

func runProjections(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "rebuild" {
		return &usageError{msg: "projections: the only subcommand is 'rebuild' (run 'caledger projections rebuild -h')"}
	}
	fs := flag.NewFlagSet("projections rebuild", flag.ContinueOnError)
	dataDir := fs.String("data", envOr(env, "CALEDGER_DATA", "./data"), "data `directory`; env CALEDGER_DATA")
	setUsage(fs, "projections rebuild [--data DIR]", `Empty every view and replay the ledger from position 0, with a progress
bar on stderr. Personal data of erased subjects does not come back: their
sealed parts no longer open. The server must be stopped.`)
	if help, err := parseFlags(fs, args[1:], stdout); help || err != nil {
		return err
	}
	n, _, _, err := openOffline(ctx, "projections rebuild", *dataDir, env, stderr)
	if err != nil {
		return err
	}
	defer n.close()
	start := time.Now()
	events, err := n.rebuildViews(ctx, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rebuilt the views from %d events in %s\n", events, time.Since(start).Round(time.Millisecond))
	return nil
}

// rebuildViews recreates the node's views from position 1, with a progress
// bar on stderr, and returns the number of events.
func (n *node) rebuildViews(ctx context.Context, stderr io.Writer) (uint64, error) {
	bar := &progressBar{w: stderr}
	if err := n.views.Rebuild(ctx, n.store, bar.update); err != nil {
		return 0, err
	}
	bar.done()
	return bar.total, nil
}

// progressBar draws "[#####     ]  52%  520000/1000000 events" on one line.
type progressBar struct {
	w     io.Writer
	unit  string // what is counted; "events" if empty
	total uint64
	last  time.Time
}

func (p *progressBar) update(done, total uint64) {
	p.total = total
	if time.Since(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last = time.Now()
	const width = 30
	filled := width
	pct := 100
	if total > 0 {
		filled = int(done * width / total)
		pct = int(done * 100 / total)
	}
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = ' '
		if i < filled {
			bar[i] = '#'
		}
	}
	unit := p.unit
	if unit == "" {
		unit = "events"
	}
	fmt.Fprintf(p.w, "\r[%s] %3d%%  %d/%d %s", bar, pct, done, total, unit)
}

func (p *progressBar) done() {
	p.last = time.Time{}
	p.update(p.total, p.total)
	fmt.Fprintln(p.w)
}

// openOffline opens the node of the data directory dataDir for the offline
// command named cmd, which needs the server stopped (the ledger admits one
// process). It returns the node, the directory's absolute path and its config.
func openOffline(ctx context.Context, cmd, dataDir string, env func(string) string, stderr io.Writer) (*node, string, config, error) {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, "", config{}, err
	}
	cfg, err := readConfig(dir)
	if err != nil {
		return nil, "", config{}, err
	}
	n, err := openNode(ctx, cfg, dir, slog.New(slog.NewTextHandler(stderr, nil)), env)
	if err != nil {
		return nil, "", config{}, fmt.Errorf("%w (%s needs the server stopped)", err, cmd)
	}
	return n, dir, cfg, nil
}
