package sqlite_test

import (
	"context"
	"testing"
	"time"

	"github.com/caledger/caledger/eventstore"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/caledger/caledger/eventstore/storetest"
)

func TestConformance(t *testing.T) {
	for name, opts := range map[string]sqlite.Options{
		"defaults": {},
		// Flushing the stream index all the time moves entries from memory to the
		// file while reads and appends are under way.
		"eager-index-flush": {IndexFlushInterval: 5 * time.Millisecond, IndexFlushEntries: 7},
	} {
		t.Run(name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) storetest.Opener {
				dir := t.TempDir()
				return func(t *testing.T) eventstore.Store {
					s, err := sqlite.Open(context.Background(), dir, opts)
					if err != nil {
						t.Fatal(err)
					}
					return s
				}
			})
		})
	}
}
