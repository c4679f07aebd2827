// Package signer provides CA signing keys as crypto.Signer, kept either in files
// wrapped by a KEK (Software) or in an HSM through PKCS#11 (PKCS11).
//
// A key is named by a Ref (provider, label, algorithm), which the ledger records;
// the Ref holds nothing secret, and which directory or token it means is the
// process's configuration. Every signer a Provider returns hides its private key
// from type assertions and fmt, checks digest lengths, and refuses to sign after the
// Provider is closed.
//
// # Key files
//
// Software stores the key with label L at <dir>/L.key (mode 0600, directory 0700):
//
//	"CALEDGER CA KEY\n"  16-byte magic
//	version              1 byte, 1
//	algorithm            1-byte length, then the name ("P-256", "P-384", "Ed25519")
//	KEK id               2-byte big-endian length, then Wrapper.ID()
//	ciphertext           the rest: Wrapper.Wrap of the PKCS#8 DER private key
//
// The associated data of the wrap is "caledger ca key v1\x00", L, a zero byte and
// the header above. So a file copied or renamed to another label does not open, and
// neither does one whose algorithm or KEK id was edited. The algorithm and KEK id are
// in clear so that a mismatch is reported as such, not as a corrupt file. A new
// format gets a new version byte and a new associated-data prefix.
//
// # Why the KEK wraps CA keys
//
// A CA key on disk in the clear would be readable by anything that reads the data
// directory or its backups. Wrapped, the key file is worth nothing without the KEK,
// which lives elsewhere (a separate file kept out of the data backups, or an HSM),
// and the same KEK epoch that protects the vault's data keys protects the CA keys:
// one secret to guard, rotate and destroy. A CA that must keep its key out of the
// process's memory entirely uses PKCS11 instead.
//
// # PKCS#11
//
// PKCS11 shares crypto11's process-wide module with crypto/kek: see that package's
// documentation for what that implies (one C_Initialize per process, login state
// shared between Contexts). Keys are generated with CKA_ID and CKA_LABEL both set to
// the label and found by CKA_LABEL, so keys made with other tools are found if their
// label follows the same rule. crypto11 returns ECDSA signatures in ASN.1 DER, as
// crypto/x509 expects.
package signer
