package softhsmtest_test

import (
	"testing"

	"github.com/ThalesGroup/crypto11"

	"github.com/caledger/caledger/crypto/hsm/softhsmtest"
)

func configure(c softhsmtest.Config, pin string) (*crypto11.Context, error) {
	return crypto11.Configure(&crypto11.Config{Path: c.Library, TokenLabel: c.TokenLabel, Pin: pin})
}

// Closing every Context finalises the module, so the next token is found.
func TestNewTokenSequential(t *testing.T) {
	for range 3 {
		t.Run("token", func(t *testing.T) {
			c := softhsmtest.NewToken(t)
			ctx, err := configure(c, c.PIN)
			if err != nil {
				t.Fatal(err)
			}
			if err := ctx.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// These pin down PKCS#11 and crypto11 behaviour that the package documentation and
// crypto/kek rely on; if a SoftHSM2 or crypto11 upgrade changes them, the
// documentation must change too.
func TestModuleSharing(t *testing.T) {
	c1 := softhsmtest.NewToken(t)
	ctx1, err := configure(c1, c1.PIN)
	if err != nil {
		t.Fatal(err)
	}
	defer ctx1.Close()

	t.Run("token created while the module is open is invisible", func(t *testing.T) {
		c2 := softhsmtest.NewToken(t)
		ctx2, err := configure(c2, c2.PIN)
		if err == nil {
			ctx2.Close()
			t.Fatal("a token created after C_Initialize was found; update the softhsmtest documentation")
		}
	})

	t.Run("wrong PIN is not checked while the token is logged in", func(t *testing.T) {
		// PKCS#11 login state belongs to the process, not to the session: crypto11
		// accepts CKR_USER_ALREADY_LOGGED_IN, so the PIN is never checked.
		ctx3, err := configure(c1, c1.PIN+"0")
		if err != nil {
			t.Fatalf("got %v; update the crypto/kek documentation", err)
		}
		ctx3.Close()
	})
}

func TestWrongPIN(t *testing.T) {
	c := softhsmtest.NewToken(t)
	ctx, err := configure(c, c.PIN+"0")
	if err == nil {
		ctx.Close()
		t.Fatal("logged in with a wrong PIN")
	}
}
