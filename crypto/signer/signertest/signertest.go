package signertest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caledger/caledger/crypto/signer"
)

// all is every Algorithm the signer package names.
var all = []signer.Algorithm{signer.P256, signer.P384, signer.Ed25519}

// Run checks the Providers open returns against the signer.Provider contract.
//
// open MUST return a new Provider over the same storage (the same directory, the same
// token) every time it is called during one Run: the suite calls it several times to
// check that keys survive a reopen and that closing one Provider leaves the others
// working. Run closes every Provider it gets. algs lists the algorithms the provider
// supports; Generate of any other must fail with ErrUnsupportedAlgorithm.
//
// Labels are unique per Run, so storage may hold other keys, but Run does not run in
// parallel with other tests.
func Run(t *testing.T, open func(t *testing.T) signer.Provider, algs []signer.Algorithm) {
	if len(algs) == 0 {
		t.Fatal("signertest: no algorithms to test")
	}
	ctx := context.Background()
	openP := func(t *testing.T) signer.Provider {
		t.Helper()
		p := open(t)
		if p == nil {
			t.Fatal("open returned a nil Provider")
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	p := openP(t)
	label := newLabeler(t)

	// The provider's name is learnt from a Ref it makes.
	_, probe, err := p.Generate(ctx, label("probe"), algs[0])
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	name := probe.Provider
	if name == "" {
		t.Fatal("Generate returned a Ref with no provider")
	}

	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			lbl := label(strings.ToLower(string(alg)))
			s, ref, err := p.Generate(ctx, lbl, alg)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			if want := (signer.Ref{Provider: name, Label: lbl, Algorithm: alg}); ref != want {
				t.Fatalf("Generate returned %+v, want %+v", ref, want)
			}
			checkPublic(t, s.Public(), alg)

			t.Run("SignVerify", func(t *testing.T) {
				for i := range 3 {
					msg := fmt.Appendf(nil, "message %d", i)
					verify(t, s.Public(), alg, msg, sign(t, s, alg, msg))
				}
			})

			t.Run("Load", func(t *testing.T) {
				l, err := p.Load(ctx, ref)
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				samePublic(t, l.Public(), s.Public())
				msg := []byte("signed by the loaded key")
				verify(t, s.Public(), alg, msg, sign(t, l, alg, msg))
			})

			t.Run("Exists", func(t *testing.T) {
				for _, other := range algs {
					if _, _, err := p.Generate(ctx, lbl, other); !errors.Is(err, signer.ErrExists) {
						t.Fatalf("Generate %s on an existing label: %v, want ErrExists", other, err)
					}
				}
				l, err := p.Load(ctx, ref)
				if err != nil {
					t.Fatalf("Load after a refused Generate: %v", err)
				}
				samePublic(t, l.Public(), s.Public())
			})

			t.Run("Reopen", func(t *testing.T) {
				q := openP(t)
				l, err := q.Load(ctx, ref)
				if err != nil {
					t.Fatalf("Load from a reopened provider: %v", err)
				}
				samePublic(t, l.Public(), s.Public())
				msg := []byte("signed after reopen")
				verify(t, s.Public(), alg, msg, sign(t, l, alg, msg))
				if err := q.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				// Closing another provider on the same storage must not disturb p.
				verify(t, s.Public(), alg, msg, sign(t, s, alg, msg))
			})

			t.Run("WrongAlgorithm", func(t *testing.T) {
				for _, other := range algs {
					if other == alg {
						continue
					}
					wrong := ref
					wrong.Algorithm = other
					if _, err := p.Load(ctx, wrong); !errors.Is(err, signer.ErrWrongAlgorithm) {
						t.Fatalf("Load of a %s key as %s: %v, want ErrWrongAlgorithm", alg, other, err)
					}
				}
			})

			t.Run("Certificate", func(t *testing.T) { checkCertificates(t, s) })

			t.Run("Concurrent", func(t *testing.T) {
				const workers, rounds = 16, 8
				var wg sync.WaitGroup
				errs := make(chan error, workers)
				for w := range workers {
					wg.Go(func() {
						for r := range rounds {
							msg := fmt.Appendf(nil, "worker %d round %d", w, r)
							sig, err := s.Sign(rand.Reader, digest(alg, msg), opts(alg))
							if err != nil {
								errs <- err
								return
							}
							if !valid(s.Public(), alg, msg, sig) {
								errs <- fmt.Errorf("worker %d round %d: signature does not verify", w, r)
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

			if alg != signer.Ed25519 {
				t.Run("DigestChecked", func(t *testing.T) {
					d := digest(alg, []byte("x"))
					if _, err := s.Sign(rand.Reader, d[:len(d)-1], opts(alg)); err == nil {
						t.Error("signed a digest shorter than its hash")
					}
					if _, err := s.Sign(rand.Reader, d, crypto.Hash(0)); err == nil {
						t.Error("ECDSA signed with no hash named")
					}
				})
			}

			t.Run("Printing", func(t *testing.T) {
				for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
					out := fmt.Sprintf(format, s)
					if !strings.Contains(out, lbl) {
						t.Errorf("%s prints %q, which does not name the key", format, out)
					}
					if len(out) > 200 {
						t.Errorf("%s prints %d characters; it may show key material", format, len(out))
					}
				}
			})
		})
	}

	t.Run("NotFound", func(t *testing.T) {
		for _, alg := range algs {
			_, err := p.Load(ctx, signer.Ref{Provider: name, Label: label("absent"), Algorithm: alg})
			if !errors.Is(err, signer.ErrNotFound) {
				t.Fatalf("Load of a missing %s key: %v, want ErrNotFound", alg, err)
			}
		}
	})

	t.Run("Labels", func(t *testing.T) {
		for _, bad := range []string{
			"", "CA", "ca_1", "ca.1", "ca 1", "ca/1", "../ca", "ca\x00", "ca\n", "cå",
			strings.Repeat("a", 65),
		} {
			if _, _, err := p.Generate(ctx, bad, algs[0]); !errors.Is(err, signer.ErrInvalidLabel) {
				t.Errorf("Generate(%q): %v, want ErrInvalidLabel", bad, err)
			}
			ref := signer.Ref{Provider: name, Label: bad, Algorithm: algs[0]}
			if _, err := p.Load(ctx, ref); !errors.Is(err, signer.ErrInvalidLabel) {
				t.Errorf("Load(%q): %v, want ErrInvalidLabel", bad, err)
			}
		}
		// The longest label, and one of every allowed character kind.
		for _, good := range []string{label(strings.Repeat("a", 55)), label("0-z")} {
			s, ref, err := p.Generate(ctx, good, algs[0])
			if err != nil {
				t.Fatalf("Generate(%q): %v", good, err)
			}
			l, err := p.Load(ctx, ref)
			if err != nil {
				t.Fatalf("Load(%q): %v", good, err)
			}
			samePublic(t, l.Public(), s.Public())
		}
	})

	t.Run("UnsupportedAlgorithm", func(t *testing.T) {
		bad := []signer.Algorithm{"", "RSA-2048", "p-256", "P-521", "ed25519"}
		for _, alg := range all {
			if !slices.Contains(algs, alg) {
				bad = append(bad, alg)
			}
		}
		for _, alg := range bad {
			_, _, err := p.Generate(ctx, label("unsupported"), alg)
			if !errors.Is(err, signer.ErrUnsupportedAlgorithm) {
				t.Errorf("Generate %q: %v, want ErrUnsupportedAlgorithm", alg, err)
			}
			_, err = p.Load(ctx, signer.Ref{Provider: name, Label: probe.Label, Algorithm: alg})
			if !errors.Is(err, signer.ErrUnsupportedAlgorithm) {
				t.Errorf("Load %q: %v, want ErrUnsupportedAlgorithm", alg, err)
			}
		}
	})

	t.Run("WrongProvider", func(t *testing.T) {
		others := []string{"", "other", strings.ToUpper(name)}
		for _, o := range []string{signer.ProviderSoftware, signer.ProviderPKCS11} {
			if o != name {
				others = append(others, o)
			}
		}
		for _, o := range others {
			ref := probe
			ref.Provider = o
			if _, err := p.Load(ctx, ref); !errors.Is(err, signer.ErrWrongProvider) {
				t.Errorf("Load of a %q ref: %v, want ErrWrongProvider", o, err)
			}
		}
	})

	t.Run("Canceled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := p.Generate(cctx, label("canceled"), algs[0]); !errors.Is(err, context.Canceled) {
			t.Errorf("Generate with a canceled context: %v", err)
		}
		if _, err := p.Load(cctx, probe); !errors.Is(err, context.Canceled) {
			t.Errorf("Load with a canceled context: %v", err)
		}
	})

	t.Run("Close", func(t *testing.T) {
		q := openP(t)
		alg := algs[0]
		s, ref, err := q.Generate(ctx, label("closed"), alg)
		if err != nil {
			t.Fatalf("Generate: %v", err)
		}
		for range 2 {
			if err := q.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}
		if _, _, err := q.Generate(ctx, label("after-close"), alg); !errors.Is(err, signer.ErrClosed) {
			t.Errorf("Generate after Close: %v, want ErrClosed", err)
		}
		if _, err := q.Load(ctx, ref); !errors.Is(err, signer.ErrClosed) {
			t.Errorf("Load after Close: %v, want ErrClosed", err)
		}
		msg := []byte("x")
		if _, err := s.Sign(rand.Reader, digest(alg, msg), opts(alg)); !errors.Is(err, signer.ErrClosed) {
			t.Errorf("Sign after Close: %v, want ErrClosed", err)
		}
		// p, open on the same storage, is untouched.
		l, err := p.Load(ctx, ref)
		if err != nil {
			t.Fatalf("Load from another provider after Close: %v", err)
		}
		verify(t, s.Public(), alg, msg, sign(t, l, alg, msg))
	})
}

// newLabeler returns a function making labels unique to this Run, so storage shared
// with other tests (a token) cannot already hold them.
func newLabeler(t *testing.T) func(prefix string) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	run := hex.EncodeToString(b[:])
	return func(prefix string) string {
		l := prefix + "-" + run
		if err := signer.CheckLabel(l); err != nil {
			t.Fatalf("signertest made a bad label %q: %v", l, err)
		}
		return l
	}
}

func opts(alg signer.Algorithm) crypto.SignerOpts {
	switch alg {
	case signer.P256:
		return crypto.SHA256
	case signer.P384:
		return crypto.SHA384
	}
	return crypto.Hash(0)
}

func digest(alg signer.Algorithm, msg []byte) []byte {
	switch alg {
	case signer.P256:
		d := sha256.Sum256(msg)
		return d[:]
	case signer.P384:
		d := sha512.Sum384(msg)
		return d[:]
	}
	return msg
}

func sign(t *testing.T, s crypto.Signer, alg signer.Algorithm, msg []byte) []byte {
	t.Helper()
	sig, err := s.Sign(rand.Reader, digest(alg, msg), opts(alg))
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return sig
}

func valid(pub crypto.PublicKey, alg signer.Algorithm, msg, sig []byte) bool {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		return alg != signer.Ed25519 && ecdsa.VerifyASN1(pub, digest(alg, msg), sig)
	case ed25519.PublicKey:
		return alg == signer.Ed25519 && ed25519.Verify(pub, msg, sig)
	}
	return false
}

func verify(t *testing.T, pub crypto.PublicKey, alg signer.Algorithm, msg, sig []byte) {
	t.Helper()
	if !valid(pub, alg, msg, sig) {
		t.Fatal("signature does not verify with the public key")
	}
	bad := append([]byte(nil), msg...)
	bad = append(bad, '!')
	if valid(pub, alg, bad, sig) {
		t.Fatal("signature verifies for another message")
	}
}

func checkPublic(t *testing.T, pub crypto.PublicKey, alg signer.Algorithm) {
	t.Helper()
	ok := false
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		ok = alg == signer.P256 && pub.Curve == elliptic.P256() || alg == signer.P384 && pub.Curve == elliptic.P384()
	case ed25519.PublicKey:
		ok = alg == signer.Ed25519
	}
	if !ok {
		t.Fatalf("public key is a %T, not a %s key", pub, alg)
	}
}

func samePublic(t *testing.T, got, want crypto.PublicKey) {
	t.Helper()
	eq, ok := got.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !eq.Equal(want) {
		t.Fatal("the key has another public key")
	}
}

// checkCertificates has s sign a self-signed CA certificate and then a leaf, as the
// CA does, and verifies the chain with crypto/x509.
func checkCertificates(t *testing.T, s crypto.Signer) {
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "signertest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, s.Public(), s)
	if err != nil {
		t.Fatalf("CreateCertificate (CA): %v", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Fatalf("CA certificate signature: %v", err)
	}
	samePublic(t, ca.PublicKey, s.Public())

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: "leaf.example"},
		DNSNames:     []string{"leaf.example"},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(time.Minute),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, leafKey.Public(), s)
	if err != nil {
		t.Fatalf("CreateCertificate (leaf): %v", err)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "leaf.example", CurrentTime: now}); err != nil {
		t.Fatalf("leaf does not verify under the CA: %v", err)
	}
}

func serial(t *testing.T) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
