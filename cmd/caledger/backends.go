package main

import (
	"context"
	"log/slog"
)

// backends are the stores and keys behind the API.
type backends struct{}

// openBackends is the one place where backends are chosen and opened. The
// returned close function releases them; call it after the HTTP server has
// stopped.
func openBackends(ctx context.Context, dataDir string, logger *slog.Logger) (*backends, func() error, error) {
	// TODO: wire the event store and the key vault here, chosen by an
	// explicit switch on configuration (embedded default shown):
	//   - ledger: eventstore/sqlite in dataDir;
	//   - data keys: crypto/keyvault in dataDir, under the local KEK.
	// Close them in the returned function, vault last.
	return &backends{}, func() error { return nil }, nil
}

// Ready reports whether every backend can serve; it backs GET /readyz.
// Until the stores are wired there is nothing to check.
func (b *backends) Ready(ctx context.Context) error {
	return nil
}
