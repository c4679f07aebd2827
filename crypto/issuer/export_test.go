package issuer

import "crypto/x509"

// SetMutate installs a hook that edits every template before it is encoded, so
// that a test can make a certificate only the lints would refuse.
func SetMutate(i *Issuer, f func(*x509.Certificate)) { i.mutate = f }

// LintNames lists the lints profile runs.
func LintNames(i *Issuer, profile string) []string { return i.profiles[profile].linter.names() }

// ExcludedLints and RoleOnlyLints are the tables of lints left out, with reasons.
var (
	ExcludedLints = excludedLints
	RoleOnlyLints = roleOnlyLints
)

// LintSourceNames lists the zlint sources run.
func LintSourceNames() []string {
	out := make([]string, len(lintSources))
	for i, s := range lintSources {
		out[i] = string(s)
	}
	return out
}
