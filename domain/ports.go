package domain

import (
	"context"
	"errors"
	"iter"
	"time"
)

// Events is the part of the event store the command handlers use. eventstore.Store
// implements it; see there for the full contract.
type Events interface {
	// Append appends events to stream if its version satisfies expected. It returns
	// only once the events are durable. A version mismatch gives an error matching
	// ErrWrongVersion.
	Append(ctx context.Context, stream string, expected Expected, events ...Event) (Appended, error)
	// ReadStream yields the events of stream from version from (1: all), in order.
	ReadStream(ctx context.Context, stream string, from uint64) iter.Seq2[Event, error]
}

// ErrShredded is matched by the error a Sealer returns for a key that was destroyed.
// It is distinct from every other failure: the data is gone, not unavailable.
var ErrShredded = errors.New("data key destroyed")

// Sealer encrypts personal data under per-subject data keys (crypto/keyvault).
type Sealer interface {
	// Seal encrypts plaintext under the data key of (subject, group), creating the key
	// if needed, with ad as associated data. It fails with ErrShredded if that key
	// was destroyed.
	Seal(ctx context.Context, subject SubjectID, group string, plaintext, ad []byte) (Sealed, error)
	// Open decrypts s with ad. It fails with ErrShredded if the key was destroyed,
	// and never returns plaintext that was not sealed with exactly this ad.
	Open(ctx context.Context, s *Sealed, ad []byte) ([]byte, error)
	// Shred destroys the data keys of subject: the given groups, or all when none
	// are given. It returns once the keys are unrecoverable from the vault's files.
	Shred(ctx context.Context, subject SubjectID, groups ...string) error
}

// SignRequest is what a CertificateSigner needs to sign one certificate.
type SignRequest struct {
	CAID    string
	Serial  Serial
	Profile string
	// Attributes are the subject's current attributes: personal data.
	Attributes map[string]string
	// CSR is a DER PKCS#10 request; its public key goes into the certificate.
	CSR []byte
	// Now is the issuance time; the profile sets the validity from it.
	Now time.Time
}

// Signed is a certificate a CertificateSigner produced, with the facts the ledger
// records publicly. The signer reads them from the certificate it built, so the
// domain never parses DER (and stays free of crypto/x509).
type Signed struct {
	DER                 []byte
	Serial              Serial
	NotBefore, NotAfter time.Time
	// SPKISHA256 is the hex SHA-256 of the certificate's SubjectPublicKeyInfo.
	SPKISHA256 string
}

// CertificateSigner turns a SignRequest into a certificate. Implementations check
// the CSR, apply the profile and lint the result; a rejected request gives an
// *Error of KindInvalid.
type CertificateSigner interface {
	SignCertificate(ctx context.Context, req SignRequest) (Signed, error)
}
