package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/caledger/caledger/crypto/signer"
)

// softToken is a SoftHSM2 token in a directory of its own.
type softToken struct {
	library, conf, label, pin string
}

func newSoftToken(ctx context.Context, dir string) (*softToken, error) {
	t := &softToken{library: "/usr/lib/softhsm/libsofthsm2.so", label: "issuebench", pin: "1234"}
	if _, err := os.Stat(t.library); err != nil {
		return nil, fmt.Errorf("SoftHSM2 is not installed (make test installs it): %w", err)
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		return nil, err
	}
	t.conf = filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(t.conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "softhsm2-util", "--init-token", "--free", "--label", t.label, "--pin", t.pin, "--so-pin", "5678")
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+t.conf)
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("softhsm2-util: %v\n%s", err, b)
	}
	return t, nil
}

// signRate is raw P-256 signatures per second on the token over d, with
// GOMAXPROCS goroutines, through the same crypto11 path the CA uses.
func (t *softToken) signRate(ctx context.Context, d time.Duration) (float64, error) {
	if err := os.Setenv("SOFTHSM2_CONF", t.conf); err != nil {
		return 0, err
	}
	p, err := signer.OpenPKCS11(ctx, signer.PKCS11Config{Library: t.library, TokenLabel: t.label, PIN: t.pin})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	var b [4]byte
	_, _ = rand.Read(b[:])
	key, _, err := p.Generate(ctx, fmt.Sprintf("baseline-%x", b), signer.P256)
	if err != nil {
		return 0, err
	}
	digest := sha256.Sum256([]byte("issuebench"))
	return rateOf(d, func() bool {
		_, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
		return err == nil
	}), nil
}
