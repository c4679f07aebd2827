// Package kek provides the key-encryption keys that wrap the vault's data keys:
// a local Tink keyset file (File) and an AES key in an HSM reached through PKCS#11
// (PKCS11). Both satisfy datakey.KEK (which both vaults use).
//
// # Errors
//
// Errors never contain plaintext, key material, associated data or PINs. Unwrap of a
// ciphertext that does not authenticate returns an error matching
// ErrInvalidCiphertext and no plaintext.
//
// # PKCS#11 in one process
//
// A PKCS#11 library is initialised once per process. crypto11 shares one initialised
// module between all Contexts on the same library path and finalises it when the last
// one is closed. Two consequences: a token created by another process after the
// module was initialised is not seen until every Context is closed (SoftHSM2 scans its
// token directory in C_Initialize), and the PIN of a second PKCS11 on an already
// logged-in token is not checked (login state belongs to the process; crypto11
// accepts CKR_USER_ALREADY_LOGGED_IN).
//
// # crypto11 details that shaped PKCS11
//
//   - Its GCM cipher.AEAD panics when the token fails during Seal (cipher.AEAD has no
//     error return); Wrap recovers and returns an error.
//   - Context.Close is not idempotent: a second call decrements the shared module
//     reference count again (finalising the library under other Contexts) or panics.
//     PKCS11.Close calls it once.
//   - Its default GCM IV length (16) only changes what NonceSize reports; PKCS11 sets
//     it to the 12 bytes it actually uses.
//   - SoftHSM2 2.6.1 reports a failed GCM tag check as CKR_GENERAL_ERROR, not
//     CKR_ENCRYPTED_DATA_INVALID, and crypto11 flattens the code into a string; Unwrap
//     therefore treats any C_Decrypt failure after a successful C_DecryptInit as a
//     ciphertext that does not authenticate.
package kek
