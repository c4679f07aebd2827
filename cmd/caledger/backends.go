package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/caledger/caledger/crypto/kek"
	"github.com/caledger/caledger/crypto/keyvault"
	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/prometheus/client_golang/prometheus"
)

// backends are the stores and keys behind the API.
type backends struct {
	store eventstore.Store
	vault *keyvault.Vault
}

// Data directory layout of the embedded default.
const (
	ledgerDir = "ledger"        // eventstore/sqlite files
	kekFile   = "keys/kek.json" // the local KEK (Tink keyset, mode 0600)
	vaultFile = "keys/vault.db" // wrapped per-subject data keys
)

// openBackends is the one place where backends are chosen and opened, by an
// explicit switch on the store name. The returned close function releases them;
// call it after the HTTP server has stopped.
func openBackends(ctx context.Context, storeName, dataDir string, logger *slog.Logger) (*backends, func() error, error) {
	var b backends
	var closers []func() error
	closeAll := func() error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(errs...)
	}
	switch storeName {
	case "sqlite":
		s, err := sqlite.Open(ctx, filepath.Join(dataDir, ledgerDir), sqlite.Options{Logger: logger})
		if err != nil {
			return nil, nil, fmt.Errorf("open the ledger: %w", err)
		}
		b.store = s
		closers = append(closers, s.Close)
	default:
		return nil, nil, &usageError{msg: fmt.Sprintf("serve: unknown store %q (known: sqlite)", storeName)}
	}
	k, err := kek.OpenOrCreateFile(ctx, filepath.Join(dataDir, kekFile))
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("open the key-encryption key: %w", err)
	}
	v, err := keyvault.Open(ctx, filepath.Join(dataDir, vaultFile), k)
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("open the key vault: %w", err)
	}
	b.vault = v
	closers = append(closers, v.Close)
	return &b, closeAll, nil
}

// Ready reports whether every backend can serve; it backs GET /readyz.
func (b *backends) Ready(ctx context.Context) error {
	_, err := b.store.Head(ctx)
	return err
}

// collectors returns the backends' metrics.
func (b *backends) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "caledger_ledger_head_position",
			Help: "Global position of the last event committed to the ledger.",
		}, func() float64 {
			h, err := b.store.Head(context.Background())
			if err != nil {
				return -1
			}
			return float64(h)
		}),
	}
}
