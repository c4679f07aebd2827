package softhsmtest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Config says how to reach a token made by NewToken.
type Config struct {
	// Library is the path of the SoftHSM2 PKCS#11 module.
	Library string
	// TokenLabel is the label the token was initialised with; it is unique per call.
	TokenLabel string
	// PIN is the user PIN.
	PIN string
	// SOPIN is the security officer PIN.
	SOPIN string
}

// libraryPaths are where distributions install the SoftHSM2 module.
var libraryPaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/lib/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

const installHint = "install SoftHSM2 (`make test` does it; on Debian: apt-get install softhsm2)"

// Library returns the path of the SoftHSM2 module, failing t if none is installed.
func Library(t testing.TB) string {
	t.Helper()
	for _, p := range libraryPaths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("softhsmtest: the SoftHSM2 library is not installed (looked in %v): %s", libraryPaths, installHint)
	return ""
}

// NewToken creates an initialised token in a fresh token directory, points
// SOFTHSM2_CONF at it for the rest of the test, and returns how to log in to it.
// See the package documentation for why no crypto11 Context may be open on the
// library when it is called.
func NewToken(t testing.TB) Config {
	t.Helper()
	lib := Library(t)
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		t.Fatalf("softhsmtest: softhsm2-util is not on PATH: %s", installHint)
	}

	// Not t.TempDir: its name comes from the test name, which may hold '#', and
	// SoftHSM2 reads '#' in its configuration file as the start of a comment.
	dir, err := os.MkdirTemp("", "softhsmtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := "directories.tokendir = " + tokens + "\n" +
		"objectstore.backend = file\n" +
		"log.level = ERROR\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)

	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Library:    lib,
		TokenLabel: "caledger-test-" + hex.EncodeToString(b[:]),
		PIN:        "1234",
		SOPIN:      "5678",
	}
	cmd := exec.Command(util, "--init-token", "--free",
		"--label", cfg.TokenLabel, "--pin", cfg.PIN, "--so-pin", cfg.SOPIN)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsmtest: softhsm2-util --init-token: %v\n%s", err, out)
	}
	return cfg
}
