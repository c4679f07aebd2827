package issuer

import (
	"encoding/asn1"
	"net"
	"net/netip"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/net/idna"
)

// maxSANs bounds the subject alternative names of one certificate.
const maxSANs = 100

// dnAttribute is one subject attribute that goes into the distinguished name.
type dnAttribute struct {
	name      string // attribute name (domain.KnownAttribute)
	oid       asn1.ObjectIdentifier
	maxRunes  int  // X.520 / RFC 5280 Appendix A upper bound
	printable bool // PrintableString (X.520 CountryName, SerialNumber); else UTF8String
}

// dnOrder lists the distinguished-name attributes from the most to the least
// significant, the order they appear in the subject.
var dnOrder = []dnAttribute{
	{"country", asn1.ObjectIdentifier{2, 5, 4, 6}, 2, true},
	{"locality", asn1.ObjectIdentifier{2, 5, 4, 7}, 128, false},
	{"organization", asn1.ObjectIdentifier{2, 5, 4, 10}, 64, false},
	{"organizational_unit", asn1.ObjectIdentifier{2, 5, 4, 11}, 64, false},
	{"surname", asn1.ObjectIdentifier{2, 5, 4, 4}, 128, false},
	{"given_name", asn1.ObjectIdentifier{2, 5, 4, 42}, 128, false},
	{"serial_number", asn1.ObjectIdentifier{2, 5, 4, 5}, 64, true},
	{"common_name", asn1.ObjectIdentifier{2, 5, 4, 3}, 64, false},
}

// names is what the attributes put into a certificate.
type names struct {
	subject []byte // DER Name; an empty SEQUENCE when no DN attribute is present
	dns     []string
	ips     []net.IP
	emails  []string
}

// CheckSubject makes the check SignCertificate makes of a subject's attributes
// for profile p, without a CSR or a CA: that p's required attributes are there
// and that every attribute it admits is well formed. Errors name attributes,
// never values.
func CheckSubject(p Profile, attrs map[string]string) error {
	_, err := buildNames(&p, attrs)
	return err
}

// buildNames checks the attributes p needs and admits, and turns them into a
// subject DN and subject alternative names. Errors name attributes, never values.
func buildNames(p *Profile, attrs map[string]string) (names, error) {
	get := func(name string) string {
		if !p.permits(name) {
			return ""
		}
		return attrs[name]
	}
	for _, name := range p.Required {
		if attrs[name] == "" {
			return names{}, invalid(CodeMissingAttribute, "profile %s requires the attribute %s", p.Name, name)
		}
	}
	var n names
	var b cryptobyte.Builder
	var dnErr error
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, a := range dnOrder {
			v := get(a.name)
			if v == "" {
				continue
			}
			v, err := checkDNValue(a, v)
			if err != nil {
				dnErr = err
				return
			}
			tag := cbasn1.UTF8String
			if a.printable {
				tag = cbasn1.PrintableString
			}
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(a.oid)
					b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes([]byte(v)) })
				})
			})
		}
	})
	if dnErr != nil {
		return names{}, dnErr
	}
	subject, err := b.Bytes()
	if err != nil {
		return names{}, invalid(CodeBadAttribute, "the subject name cannot be encoded")
	}
	n.subject = subject

	if v := get("dns_names"); v != "" {
		if n.dns, err = parseDNSNames(v); err != nil {
			return names{}, err
		}
	}
	if v := get("ip_addresses"); v != "" {
		if n.ips, err = parseIPs(v); err != nil {
			return names{}, err
		}
	}
	if v := get("email"); v != "" {
		// RFC 5280 4.1.2.6: an e-mail address goes in the rfc822Name of the
		// subject alternative names, never in the DN's legacy emailAddress.
		e, err := checkEmail(v)
		if err != nil {
			return names{}, err
		}
		n.emails = []string{e}
	}
	if len(n.dns)+len(n.ips)+len(n.emails) > maxSANs {
		return names{}, invalid(CodeBadAttribute, "the certificate would carry more than %d alternative names", maxSANs)
	}
	if slices.Contains(p.ExtKeyUsage, "server_auth") && len(n.dns) == 0 && len(n.ips) == 0 {
		return names{}, invalid(CodeMissingAttribute, "profile %s requires the attribute dns_names or ip_addresses", p.Name)
	}
	if len(n.subject) == 2 && len(n.dns)+len(n.ips)+len(n.emails) == 0 {
		return names{}, invalid(CodeMissingAttribute, "profile %s: the subject has none of the attributes that name it in a certificate", p.Name)
	}
	return n, nil
}

// checkDNValue validates (and for country normalises) one DN attribute value.
func checkDNValue(a dnAttribute, v string) (string, error) {
	if !utf8.ValidString(v) {
		return "", invalid(CodeBadAttribute, "attribute %s is not valid UTF-8", a.name)
	}
	if a.name == "country" {
		if len(v) != 2 || !isASCIILetter(v[0]) || !isASCIILetter(v[1]) {
			return "", invalid(CodeBadAttribute, "attribute country must be an ISO 3166 two-letter code")
		}
		return strings.ToUpper(v), nil
	}
	if n := utf8.RuneCountInString(v); n > a.maxRunes {
		return "", invalid(CodeBadAttribute, "attribute %s is longer than %d characters", a.name, a.maxRunes)
	}
	first, _ := utf8.DecodeRuneInString(v)
	last, _ := utf8.DecodeLastRuneInString(v)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return "", invalid(CodeBadAttribute, "attribute %s begins or ends with white space", a.name)
	}
	for _, r := range v {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return "", invalid(CodeBadAttribute, "attribute %s contains a control or replacement character", a.name)
		}
		if a.printable && !isPrintable(r) {
			return "", invalid(CodeBadAttribute, "attribute %s may hold only letters, digits, spaces and '()+,-./:=?", a.name)
		}
	}
	return v, nil
}

func isASCIILetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// isPrintable reports whether r is in the ASN.1 PrintableString alphabet.
func isPrintable(r rune) bool {
	if r < utf8.RuneSelf && (isASCIILetter(byte(r)) || '0' <= r && r <= '9') {
		return true
	}
	return strings.ContainsRune(" '()+,-./:=?", r)
}

// splitList splits a comma-separated attribute, dropping empty items.
func splitList(v string) []string {
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// parseDNSNames checks a comma-separated list of host names, lower-cases them and
// drops duplicates. A wildcard is allowed only as the whole leftmost label of a
// name with at least two more labels. Internationalised names must be given in
// their A-label (xn--) form.
func parseDNSNames(v string) ([]string, error) {
	var out []string
	for _, name := range splitList(v) {
		name = strings.ToLower(name)
		if !validHostname(name, true) {
			return nil, invalid(CodeBadAttribute, "attribute dns_names holds a name that is not a valid host name")
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
		if len(out) > maxSANs {
			return nil, invalid(CodeBadAttribute, "attribute dns_names holds more than %d names", maxSANs)
		}
	}
	if len(out) == 0 {
		return nil, invalid(CodeBadAttribute, "attribute dns_names holds no name")
	}
	return out, nil
}

// validHostname reports whether name (lower case) is a host name of LDH labels,
// optionally with a leading wildcard label.
func validHostname(name string, wildcard bool) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	labels := strings.Split(name, ".")
	if wildcard && labels[0] == "*" {
		if len(labels) < 3 {
			return false
		}
		labels = labels[1:]
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
		if strings.HasPrefix(l, "xn--") {
			u, err := idna.Registration.ToUnicode(l)
			if err != nil {
				return false
			}
			if a, err := idna.Registration.ToASCII(u); err != nil || a != l {
				return false
			}
		}
	}
	// A last label of digits only would make the name look like an IPv4 address.
	tld := labels[len(labels)-1]
	return strings.Trim(tld, "0123456789") != ""
}

// parseIPs checks a comma-separated list of IPv4 and IPv6 addresses (no zones) and
// drops duplicates.
func parseIPs(v string) ([]net.IP, error) {
	var addrs []netip.Addr
	for _, s := range splitList(v) {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, invalid(CodeBadAttribute, "attribute ip_addresses holds an item that is not an IP address")
		}
		a = a.Unmap()
		if a.IsUnspecified() {
			return nil, invalid(CodeBadAttribute, "attribute ip_addresses holds the unspecified address")
		}
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
		if len(addrs) > maxSANs {
			return nil, invalid(CodeBadAttribute, "attribute ip_addresses holds more than %d addresses", maxSANs)
		}
	}
	if len(addrs) == 0 {
		return nil, invalid(CodeBadAttribute, "attribute ip_addresses holds no address")
	}
	out := make([]net.IP, len(addrs))
	for i, a := range addrs {
		out[i] = net.IP(a.AsSlice())
	}
	return out, nil
}

// checkEmail validates an address for an rfc822Name: an ASCII dot-atom local part
// and a host name, lower-casing the domain. Quoted local parts and non-ASCII
// addresses (which need SmtpUTF8Mailbox) are refused.
func checkEmail(v string) (string, error) {
	bad := invalid(CodeBadAttribute, "attribute email is not an ASCII address of the form local@domain")
	at := strings.LastIndexByte(v, '@')
	if at <= 0 || at > 64 || len(v) > 254 {
		return "", bad
	}
	local, domain := v[:at], strings.ToLower(v[at+1:])
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return "", bad
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if !(isASCIILetter(c) || '0' <= c && c <= '9' || strings.IndexByte(".!#$%&'*+/=?^_`{|}~-", c) >= 0) {
			return "", bad
		}
	}
	if !validHostname(domain, false) {
		return "", bad
	}
	return local + "@" + domain, nil
}
