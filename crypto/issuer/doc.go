// Package issuer turns certificate requests into end-entity certificates under
// configured profiles, linting each one with zlint before a CA key signs it; it
// implements domain.CertificateSigner.
//
// # Profiles
//
// A Profile fixes validity, key usages, extended key usages, the subject key
// types accepted and the subject attributes that must or may go into a
// certificate. DefaultProfiles has tls-server, tls-client, email-protection and
// four role profiles (officer, auditor, compliance, admin) whose certificates
// carry the roles extension (OIDRoles, read by RolesOf) that the REST API maps to
// permissions. LoadProfiles reads a replacement set from JSON. docs/profiles.md
// is the reference table.
//
// # Certificate requests
//
// ParseCSR accepts a DER PKCS#10 request of at most 64 KiB with an ECDSA P-256 or
// P-384, Ed25519, or RSA (2048 to 8192 bits, exponent 65537) key, checks the key
// before the signature (so refused keys cost no verification) and refuses SHA-1
// signatures. Only the public key is used: the subject DN and the alternative
// names come from the subject's attributes filtered through the profile, never
// from the request, whose subject and requested extensions are ignored.
//
// Every refusal is a *domain.Error of KindInvalid with a stable Code (bad-csr,
// csr-signature, weak-key, key-type-not-allowed, unknown-profile, unknown-ca,
// missing-attribute, bad-attribute, lint-failed, bad-serial, ca-expired) and a
// Detail that names attributes and profiles but never holds their values, the
// request's content or a DNS name.
//
// # Pre-issuance linting
//
// SignCertificate encodes the TBSCertificate once, by running
// x509.CreateCertificate with a signer that captures the bytes instead of
// signing them. It gives those bytes a fixed signature of the CA key's type
// (made once in New by a throwaway key), parses that lint certificate with
// zcrypto and runs the profile's zlint registry (built once in New). Only if
// no lint returns Error or Fatal does the CA key sign the same bytes, so the
// certificate issued is exactly the one linted (but for the signature); the CA
// signature is then verified before the certificate is returned. A refusal
// carries a *domain.LintFailure naming the lints.
//
// The lint set is zlint's RFC, community and Mozilla error lints; the CA/Browser
// Forum, ETSI and root-program lints target publicly trusted certificates and
// are not run. docs/profiles.md lists the exclusions with their reasons.
package issuer
