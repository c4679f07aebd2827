package sharedvault

import (
	"context"

	"github.com/caledger/caledger/crypto/datakey"
	"github.com/caledger/caledger/domain"
)

// Cached reports whether this node holds the unwrapped key of (subject, group).
func (v *Vault) Cached(subject domain.SubjectID, group string) bool {
	return v.cache.Contains(datakey.CacheKey{Subject: subject, Group: group})
}

// Following reports whether Run is running and caching.
func (v *Vault) Following() bool { return v.running.Load() && v.seen.Load() > 0 }

// UnwrapWith tries to unwrap a wrapped keyset from a key stream with k, under the
// associated data of (subject, group, epoch).
func UnwrapWith(ctx context.Context, k KEK, wrapped []byte, subject domain.SubjectID, group string, epoch uint32) error {
	_, err := datakey.Unwrap(ctx, wrapped, k, wrapAD(subject, group, epoch))
	return err
}
