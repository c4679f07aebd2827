package revocation

import "errors"

// ErrInvalid is matched by the errors of BuildCRL and NewResponder that are
// caused by their arguments (a key that does not match its certificate, a
// negative serial, a reason code outside RFC 5280, ...) rather than by a
// signer or lookup that failed.
var ErrInvalid = errors.New("revocation: invalid argument")
