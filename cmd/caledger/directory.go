package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caledger/caledger/api"
	"github.com/caledger/caledger/crypto/secretfile"
	"github.com/caledger/caledger/projections/directory"
)

// directoryCheckpointFile is where serve keeps the directory publisher's
// checkpoint. Deleting it (with serve stopped) republishes everything.
const directoryCheckpointFile = "directory-checkpoint.json"

// directoryConfig is caledger.json's "directory": the LDAP directory that
// certificates are published to (docs/directory.md).
type directoryConfig struct {
	// URL is ldap://host[:port], ldaps://host[:port] or
	// ldapi://<escaped socket path>.
	URL    string `json:"url"`
	BindDN string `json:"bind_dn,omitempty"`
	// PasswordFile holds the bind password (a path relative to the data
	// directory, or absolute; mode 0600). The password is never in this file.
	PasswordFile string `json:"password_file,omitempty"`
	StartTLS     bool   `json:"start_tls,omitempty"`
	// CAFile holds the PEM certificates the directory's TLS certificate must
	// chain to (relative to the data directory, or absolute); empty: the
	// system's roots.
	CAFile string `json:"ca_file,omitempty"`
	BaseDN string `json:"base_dn"`
	// Profiles and Attributes are what is published; empty: the publisher's
	// defaults (email-protection; common_name and email).
	Profiles   []string `json:"profiles,omitempty"`
	Attributes []string `json:"attributes,omitempty"`
	// SweepInterval is a Go duration such as "1h" (the default); zero ("0",
	// "0s") sweeps at start only.
	SweepInterval string `json:"sweep_interval,omitempty"`
	// PublishCAs publishes every CA's certificate and current CRL too, as
	// cn=<CA id>,<base_dn> (object classes applicationProcess and pkiCA).
	PublishCAs bool `json:"publish_cas,omitempty"`
}

// openDirectory returns the publisher cfg describes, checked against the
// node's profiles. Nothing is contacted yet.
func (n *node) openDirectory(cfg *directoryConfig) (*directory.Publisher, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: directory: %s", configFile, fmt.Sprintf(format, args...))
	}
	inData := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(n.dataDir, p)
	}
	opts := directory.Options{URL: cfg.URL, BindDN: cfg.BindDN, StartTLS: cfg.StartTLS, BaseDN: cfg.BaseDN,
		Profiles: cfg.Profiles, Attributes: cfg.Attributes, Logger: n.logger,
		Checkpoints: jsonFile[directory.Checkpoint]{path: filepath.Join(n.dataDir, directoryCheckpointFile)}}
	profiles := cfg.Profiles
	if len(profiles) == 0 {
		profiles = directory.DefaultProfiles()
	}
	for _, p := range profiles {
		if !n.issuer.HasProfile(p) {
			return nil, bad("profile %q does not exist", p)
		}
		// Staff credentials say who may act on the CA: not for a directory.
		if role := n.issuer.ProfileRole(p); role != "" {
			return nil, bad("profile %q makes %s credentials, which are not published", p, role)
		}
	}
	if cfg.BindDN != "" {
		if cfg.PasswordFile == "" {
			return nil, bad("bind_dn needs a password_file")
		}
		pw, err := secretfile.Read(inData(cfg.PasswordFile), 4096)
		if err != nil {
			return nil, bad("password_file: %v", err)
		}
		opts.Password = strings.TrimRight(string(pw), "\r\n")
		if opts.Password == "" {
			return nil, bad("password_file %s is empty", cfg.PasswordFile)
		}
	}
	if cfg.CAFile != "" {
		if !strings.HasPrefix(cfg.URL, "ldaps://") && !cfg.StartTLS {
			return nil, bad("ca_file applies to ldaps:// URLs and start_tls only")
		}
		pem, err := os.ReadFile(inData(cfg.CAFile))
		if err != nil {
			return nil, bad("ca_file: %v", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, bad("ca_file %s holds no PEM certificate", cfg.CAFile)
		}
		opts.TLS = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	if cfg.SweepInterval != "" {
		d, err := time.ParseDuration(cfg.SweepInterval)
		if err != nil || d < 0 {
			return nil, bad("sweep_interval %q is not a duration such as 1h (or 0: at start only)", cfg.SweepInterval)
		}
		opts.SweepInterval = d
		if d == 0 {
			opts.SweepInterval = -1
		}
	}
	if cfg.PublishCAs {
		for _, ca := range n.cas.List() {
			opts.CAs = append(opts.CAs, directory.CA{ID: ca.ID, Certificate: ca.Certificate.Raw,
				CRL: func(ctx context.Context) ([]byte, error) { return n.cas.CRL(ctx, ca.ID) }})
		}
	}
	p, err := directory.New(opts, n.handlers)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", configFile, err)
	}
	return p, nil
}

// runDirectory keeps the directory in step with the ledger until ctx ends.
func (n *node) runDirectory(ctx context.Context, p *directory.Publisher) {
	n.supervise(ctx, "directory publication stopped; restarting", func(ctx context.Context) error { return p.Run(ctx, n.store) }, nil)
}

// publishedUpTo reports whether the publisher has published the ledger
// up to position at, a subject's latest erasure (its entry is then gone, or
// holds nothing of the erased groups), waiting up to wait for it.
func publishedUpTo(p *directory.Publisher) api.DirectoryErasure {
	return func(ctx context.Context, at uint64, wait time.Duration) (bool, error) {
		if wait > 0 {
			wctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			_ = p.WaitFor(wctx, at)
		}
		return p.Applied() >= at, nil
	}
}
