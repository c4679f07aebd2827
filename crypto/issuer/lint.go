package issuer

import (
	"fmt"
	"regexp"
	"strings"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lint"

	// Only the lint sources used are linked in; see lintSources.
	_ "github.com/zmap/zlint/v3/lints/community"
	_ "github.com/zmap/zlint/v3/lints/mozilla"
	_ "github.com/zmap/zlint/v3/lints/rfc"
)

// lintSources are the zlint sources run before issuance: the IETF RFC lints, the
// community lints (certlint heritage: encoding and key sanity) and the Mozilla
// root store policy lints, whose error lints are algorithm and key encoding
// checks that hold for any CA. The CA/Browser Forum, ETSI, Apple and Chrome lints
// are about publicly trusted certificates (docs/profiles.md says why they do not
// fit a private CA), and the RFC 6962 lints about Certificate Transparency, which
// caledger does not use.
var lintSources = lint.SourceList{
	lint.RFC5280, lint.RFC3279, lint.RFC5480, lint.RFC5891, lint.RFC8813,
	lint.Community, lint.MozillaRootStorePolicy,
}

// excludedLints are lints of those sources that are never run, with the reason.
// docs/profiles.md repeats the table; TestLintExclusionsDocumented keeps the two
// in step.
var excludedLints = map[string]string{
	"e_cert_issued_by_compromised_emudhra_ca": "checks the issuer against eight compromised eMudhra intermediates, " +
		"which never issue for caledger; it costs about 8 ms per certificate",
}

// roleOnlyLints run only for profiles that issue API credentials (Profile.Role),
// with the reason they are left out of the others.
var roleOnlyLints = map[string]string{
	"e_ecdsa_small_private_key": "searches for an ECDSA private key below 2^16 by baby-step giant-step, " +
		"about 0.1 to 0.6 ms per certificate, as much as the CA signature itself; such keys come only from " +
		"broken key generators, so the search is spent where a recoverable key would do the most harm: " +
		"the few certificates that grant API roles",
}

// errorOnly keeps the lints whose names start with e_. By zlint's naming rule
// only those return Error; w_ and n_ lints return at most Warn or Notice, which
// never stop an issuance, so running them would only cost time.
var errorOnly = regexp.MustCompile(`^e_`)

// linter runs one profile's lint set.
type linter struct {
	lints  []*lint.CertificateLint
	config lint.Configuration
}

// newLinter builds the registry for p: the lint sources, less the excluded lints,
// less the role-only lints unless p issues API credentials, less the lints that
// cannot return Error.
func newLinter(p *Profile) (*linter, error) {
	exclude := mapKeys(excludedLints)
	if p.Role == "" {
		exclude = append(exclude, mapKeys(roleOnlyLints)...)
	}
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{
		IncludeSources: lintSources,
		ExcludeNames:   exclude,
	})
	if err != nil {
		return nil, fmt.Errorf("profile %q: lint registry: %w", p.Name, err)
	}
	reg, err = reg.Filter(lint.FilterOptions{NameFilter: errorOnly})
	if err != nil {
		return nil, fmt.Errorf("profile %q: lint registry: %w", p.Name, err)
	}
	cfg := lint.NewEmptyConfig()
	reg.SetConfiguration(cfg)
	return &linter{lints: reg.CertificateLints().Lints(), config: cfg}, nil
}

// run lints c and returns the names of the lints that found an error (or failed
// to run: zlint turns a panicking lint into Fatal).
func (l *linter) run(c *zx509.Certificate) []string {
	var failed []string
	for _, cl := range l.lints {
		switch cl.Execute(c, l.config).Status {
		case lint.Error, lint.Fatal:
			failed = append(failed, cl.Name)
		}
	}
	return failed
}

// names lists the lints l runs.
func (l *linter) names() []string {
	out := make([]string, len(l.lints))
	for i, cl := range l.lints {
		out[i] = cl.Name
	}
	return out
}

func lintDetail(failed []string) string {
	return fmt.Sprintf("pre-issuance linting refused the certificate: %s", strings.Join(failed, ", "))
}
