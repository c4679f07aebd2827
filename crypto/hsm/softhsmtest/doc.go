// Package softhsmtest creates throw-away SoftHSM2 tokens for tests that need a real
// PKCS#11 module.
//
// # Missing dependency
//
// NewToken fails the test (it never skips) when softhsm2-util or the SoftHSM2 library
// is not installed: a skipped HSM test in CI would hide a broken KEK or signer. `make
// test` installs the Debian package softhsm2.
//
// # One module per process
//
// PKCS#11 is initialised once per process and library (C_Initialize), and SoftHSM2
// reads SOFTHSM2_CONF and scans its token directory only then. crypto11 shares one
// initialised module between all Contexts opened on the same library path (a
// reference count) and calls C_Finalize when the last Context is closed. So a token
// created by NewToken is visible to crypto11 only if no Context on the library is open
// at that moment: every test MUST close its Contexts before it ends (t.Cleanup does
// it in the right order, because cleanups run last-registered first and NewToken
// registers the environment restore before the test opens anything). Tests that use
// NewToken cannot run in parallel (NewToken calls t.Setenv).
package softhsmtest
