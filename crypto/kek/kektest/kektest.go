package kektest

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"testing"

	"github.com/caledger/caledger/crypto/datakey"
)

// Run checks k against the datakey.KEK contract. newKEK is called once; Run's
// subtests share the KEK it returns, and do not run in parallel with other tests.
func Run(t *testing.T, newKEK func(t *testing.T) datakey.KEK) {
	k := newKEK(t)
	ctx := context.Background()

	t.Run("ID", func(t *testing.T) {
		if k.ID() == "" {
			t.Fatal("empty ID")
		}
		if k.ID() != k.ID() {
			t.Fatal("ID changes between calls")
		}
	})

	t.Run("RoundTrip", func(t *testing.T) {
		for _, n := range []int{0, 1, 32, 1000, 64 << 10} {
			for _, ad := range [][]byte{nil, []byte("a"), random(t, 300)} {
				t.Run(fmt.Sprintf("plaintext=%d/ad=%d", n, len(ad)), func(t *testing.T) {
					pt := random(t, n)
					ct := wrap(t, k, pt, ad)
					got, err := k.Unwrap(ctx, ct, ad)
					if err != nil {
						t.Fatalf("Unwrap: %v", err)
					}
					if !bytes.Equal(got, pt) {
						t.Fatal("Unwrap returned other bytes than were wrapped")
					}
				})
			}
		}
	})

	t.Run("Hides", func(t *testing.T) {
		pt := random(t, 64)
		ct := wrap(t, k, pt, nil)
		for i := 0; i+16 <= len(pt); i++ {
			if bytes.Contains(ct, pt[i:i+16]) {
				t.Fatal("ciphertext contains plaintext")
			}
		}
	})

	t.Run("Randomised", func(t *testing.T) {
		pt, ad := random(t, 32), []byte("ad")
		a, b := wrap(t, k, pt, ad), wrap(t, k, pt, ad)
		if bytes.Equal(a, b) {
			t.Fatal("two wraps of the same plaintext are equal")
		}
	})

	t.Run("WrongAD", func(t *testing.T) {
		pt, ad := random(t, 32), []byte("subject-1/group")
		ct := wrap(t, k, pt, ad)
		for _, other := range [][]byte{nil, []byte("subject-2/group"), []byte("subject-1/grou"), append(ad, 0)} {
			expectFail(t, k, ct, other)
		}
	})

	t.Run("Tampered", func(t *testing.T) {
		pt, ad := random(t, 48), []byte("ad")
		ct := wrap(t, k, pt, ad)
		for i := range ct {
			for _, bit := range []byte{0x01, 0x80} {
				bad := bytes.Clone(ct)
				bad[i] ^= bit
				expectFail(t, k, bad, ad)
			}
		}
		for _, n := range []int{0, 1, 12, len(ct) - 1} {
			expectFail(t, k, ct[:n], ad)
		}
		expectFail(t, k, append(bytes.Clone(ct), 0), ad)
		// The KEK must still work after refusing all of the above.
		if got, err := k.Unwrap(ctx, ct, ad); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Unwrap of the untouched ciphertext after failures: %v", err)
		}
	})

	t.Run("Canceled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := k.Wrap(cctx, []byte("x"), nil); err == nil {
			t.Fatal("Wrap with a canceled context succeeded")
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		const workers, rounds = 8, 40
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for r := range rounds {
					pt := fmt.Appendf(nil, "worker %d round %d", w, r)
					ad := fmt.Appendf(nil, "ad %d/%d", w, r)
					ct, err := k.Wrap(ctx, pt, ad)
					if err != nil {
						errs <- err
						return
					}
					got, err := k.Unwrap(ctx, ct, ad)
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(got, pt) {
						errs <- fmt.Errorf("worker %d round %d: wrong plaintext", w, r)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

func wrap(t *testing.T, k datakey.KEK, pt, ad []byte) []byte {
	t.Helper()
	ct, err := k.Wrap(context.Background(), pt, ad)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return ct
}

func expectFail(t *testing.T, k datakey.KEK, ct, ad []byte) {
	t.Helper()
	got, err := k.Unwrap(context.Background(), ct, ad)
	if err == nil {
		t.Fatalf("Unwrap of a forged ciphertext (len %d) succeeded", len(ct))
	}
	if got != nil {
		t.Fatalf("Unwrap returned %d bytes with its error", len(got))
	}
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
