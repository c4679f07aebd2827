package domain

import (
	"fmt"
	"strings"
)

// Kind classifies a domain error. The API maps each kind to one HTTP status in one
// place; nothing else inspects kinds.
type Kind uint8

const (
	// KindInvalid: the command is malformed or breaks a rule about its own content.
	KindInvalid Kind = iota + 1
	// KindNotFound: the subject or certificate does not exist.
	KindNotFound
	// KindConflict: the command is valid but not in the aggregate's current state
	// (already revoked, not yet revoked, a concurrent change won).
	KindConflict
	// KindGone: the subject was erased; its personal data no longer exists.
	KindGone
	// KindUnavailable: a dependency (store, vault, signer) failed; retrying may work.
	KindUnavailable
	// KindTooLarge: the command's content is valid but too large to record.
	KindTooLarge
)

func (k Kind) String() string {
	switch k {
	case KindInvalid:
		return "invalid"
	case KindNotFound:
		return "not found"
	case KindConflict:
		return "conflict"
	case KindGone:
		return "gone"
	case KindUnavailable:
		return "unavailable"
	case KindTooLarge:
		return "too large"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Error is the one error type of the domain. Code is a stable machine-readable name
// ("not-revoked"); Detail is a sentence for people. Neither ever holds personal data:
// they name subjects and certificates only by pseudonym and serial.
type Error struct {
	Kind   Kind
	Code   string
	Detail string
	// Until, when set, is the moment after which the command can succeed (for
	// example the end of a retention period).
	Until string
	Err   error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Detail + ": " + e.Err.Error()
	}
	return e.Detail
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches another *Error of the same Kind whose Code is empty or equal, so the
// Err* sentinels below work with errors.Is.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind && (t.Code == "" || t.Code == e.Code)
}

// Sentinels for errors.Is; each matches every Error of its kind.
var (
	ErrInvalid     = &Error{Kind: KindInvalid}
	ErrNotFound    = &Error{Kind: KindNotFound}
	ErrConflict    = &Error{Kind: KindConflict}
	ErrGone        = &Error{Kind: KindGone}
	ErrUnavailable = &Error{Kind: KindUnavailable}
)

func errorf(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Detail: fmt.Sprintf(format, args...)}
}

// LintFailure is the cause (Error.Err) of a certificate a CertificateSigner refused
// because pre-issuance linting found errors. The handler records it as a
// certificate.rejected event: a lint error is the CA's fault, not the caller's, and
// auditors need to see it. Lints holds lint names, never certificate content.
type LintFailure struct {
	Lints []string
}

func (f *LintFailure) Error() string {
	return fmt.Sprintf("pre-issuance lints failed: %s", strings.Join(f.Lints, ", "))
}
