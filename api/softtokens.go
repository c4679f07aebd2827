package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/textproto"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/caledger/caledger/crypto/softtoken"
	"github.com/caledger/caledger/domain"
	"github.com/danielgtaylor/huma/v2"
)

// pkcs12Type is the media type of a PKCS#12 file.
const pkcs12Type = "application/x-pkcs12"

// subjectIDHeader names a registered subject in a soft-token request, and the
// subject of the token in the response.
const subjectIDHeader = "Caledger-Subject-Id"

// SoftTokens issues soft tokens; crypto/softtoken's Service implements it.
type SoftTokens interface {
	Issue(ctx context.Context, actor domain.Actor, req softtoken.Request) (softtoken.Token, error)
}

// DefaultSoftTokenHeaders maps subject attributes to the request headers a
// proxy sets them in, when Config.SoftTokenHeaders is nil. dns_names and
// ip_addresses are left out: soft tokens are for people.
func DefaultSoftTokenHeaders() map[string]string {
	return map[string]string{
		"common_name":         "Caledger-Common-Name",
		"given_name":          "Caledger-Given-Name",
		"surname":             "Caledger-Surname",
		"email":               "Caledger-Email",
		"organization":        "Caledger-Organization",
		"organizational_unit": "Caledger-Organizational-Unit",
		"country":             "Caledger-Country",
		"locality":            "Caledger-Locality",
		"serial_number":       "Caledger-Serial-Number",
	}
}

// CheckSoftTokenHeaders checks a mapping of attributes to header names: known
// attributes, valid header names that are not the subject header, and no
// header used twice.
func CheckSoftTokenHeaders(m map[string]string) error {
	seen := map[string]string{}
	for attr, h := range m {
		if !domain.KnownAttribute(attr) {
			return fmt.Errorf("soft-token headers: %q is not a subject attribute", attr)
		}
		if h == "" {
			continue // the attribute is not taken from a header
		}
		canon := textproto.CanonicalMIMEHeaderKey(h)
		if !validHeaderName(h) || canon == subjectIDHeader {
			return fmt.Errorf("soft-token headers: %q (for %s) is not a header name caledger can use", h, attr)
		}
		if other, ok := seen[canon]; ok {
			return fmt.Errorf("soft-token headers: %s and %s both use %s", other, attr, canon)
		}
		seen[canon] = attr
	}
	return nil
}

func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for _, c := range []byte(h) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// SoftTokenRequest is the body of POST /v1/soft-tokens, as JSON or as an HTML
// form (application/x-www-form-urlencoded) with the same field names.
type SoftTokenRequest struct {
	Password string `json:"password" minLength:"8" maxLength:"256" doc:"Encrypts the PKCS#12 file. Never stored, logged or echoed."`
	Profile  string `json:"profile,omitempty" pattern:"^[a-z0-9-]{1,64}$" doc:"Certificate profile (default tls-client). A profile that carries an API role needs the admin role."`
	KeyType  string `json:"key_type,omitempty" enum:"P-256,P-384,Ed25519,RSA" doc:"The key pair caledger generates (default P-256; RSA is 3072 bits, or the profile's minimum if larger)."`
	CA       string `json:"ca,omitempty" pattern:"^[a-z0-9-]{1,64}$" doc:"Issuing CA (default: the default issuing CA)."`
}

type softTokenInput struct {
	ContentType string `header:"Content-Type"`
	SubjectID   string `header:"Caledger-Subject-Id" doc:"A registered subject to issue the token for. Without it, the attribute headers register a new subject."`
	RawBody     []byte
	// headers are all the request's headers: which carry attributes is
	// configuration, not a fixed list of fields.
	headers http.Header
}

// Resolve keeps the request's headers.
func (in *softTokenInput) Resolve(ctx huma.Context) []error {
	in.headers = http.Header{}
	ctx.EachHeader(func(name, value string) { in.headers.Add(name, value) })
	return nil
}

type softTokenOutput struct {
	ContentType        string `header:"Content-Type"`
	ContentDisposition string `header:"Content-Disposition"`
	CacheControl       string `header:"Cache-Control"`
	Location           string `header:"Location"`
	SubjectID          string `header:"Caledger-Subject-Id"`
	Status             int
	Body               []byte
}

func (s *server) registerSoftTokens(hapi huma.API) {
	headers := s.cfg.SoftTokenHeaders
	if headers == nil {
		headers = DefaultSoftTokenHeaders()
	}
	var mapped []string
	for attr, h := range headers {
		if h != "" {
			mapped = append(mapped, textproto.CanonicalMIMEHeaderKey(h)+" ("+attr+")")
		}
	}
	slices.Sort(mapped)
	reqSchema := hapi.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[SoftTokenRequest](), true, "SoftTokenRequest")
	huma.Register(hapi, huma.Operation{
		OperationID: "issue-soft-token", Method: http.MethodPost, Path: "/v1/soft-tokens",
		Summary: "Issue a soft token (PKCS#12)", Tags: []string{"soft tokens"}, Security: []map[string][]string{{mtlsScheme: {}}},
		MaxBodyBytes: 8 << 10,
		// JSON or an HTML form; softTokenRequest parses and checks both.
		SkipValidateBody: true,
		Description: "For a trusted proxy that authenticated the person itself: caledger generates a key pair, certifies it and returns it once, " +
			"in a PKCS#12 file (AES-256-CBC under PBKDF2-HMAC-SHA256, a SHA-256 MAC, " + fmt.Sprint(softtoken.Iterations) + " iterations each) under the password in the body. " +
			"The person's attributes come from the request headers " + strings.Join(mapped, ", ") + "; they register a new subject, " +
			"whose pseudonym the response's " + subjectIDHeader + " header carries. A request with " + subjectIDHeader + " instead issues for that " +
			"registered subject, and must carry no attribute headers. A header value may be raw UTF-8 or RFC 8187 encoded (UTF-8''%C3%A5...). " +
			"The certificate.issued event records key_generated; the private key is never stored. Role: officer-proxy.",
		RequestBody: &huma.RequestBody{Required: true, Content: map[string]*huma.MediaType{
			"application/json":                  {Schema: reqSchema},
			"application/x-www-form-urlencoded": {Schema: reqSchema},
		}},
		Responses: map[string]*huma.Response{"201": {Description: "Issued: the PKCS#12 file.", Content: map[string]*huma.MediaType{
			pkcs12Type: {Schema: &huma.Schema{Type: "string", Format: "binary"}},
		}}},
		Errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusGone,
			http.StatusUnsupportedMediaType, http.StatusServiceUnavailable},
	}, func(ctx context.Context, in *softTokenInput) (*softTokenOutput, error) {
		actor, err := require(ctx, RoleOfficerProxy)
		if err != nil {
			return nil, err
		}
		req, err := s.softTokenRequest(in, headers)
		if err != nil {
			return nil, err
		}
		if actor, err = s.credentialGuard(ctx, actor, req.Profile); err != nil {
			return nil, err
		}
		tok, err := s.cfg.SoftTokens.Issue(ctx, actor, req)
		if err != nil {
			if tok.Registered {
				// The new subject stays registered: name it, so that the
				// proxy can retry for it, or have it erased.
				return nil, huma.ErrorWithHeaders(s.problem(ctx, err), http.Header{subjectIDHeader: {string(tok.SubjectID)}})
			}
			return nil, s.problem(ctx, err)
		}
		s.waitForViews(ctx, tok.Position)
		return &softTokenOutput{
			Status: http.StatusCreated, ContentType: pkcs12Type, Body: tok.PKCS12,
			ContentDisposition: `attachment; filename="` + string(tok.Serial) + `.p12"`,
			CacheControl:       "no-store",
			Location:           "/v1/certificates/" + string(tok.Serial),
			SubjectID:          string(tok.SubjectID),
		}, nil
	})
}

// softTokenRequest reads the body (JSON or form) and the attribute headers.
func (s *server) softTokenRequest(in *softTokenInput, headers map[string]string) (softtoken.Request, error) {
	var body SoftTokenRequest
	mt, _, err := mime.ParseMediaType(in.ContentType)
	if in.ContentType != "" && err != nil {
		return softtoken.Request{}, unsupportedMediaType("the Content-Type cannot be read; send application/json or application/x-www-form-urlencoded")
	}
	switch mt {
	case "application/json", "":
		// As strict as the form: no field other than the four, one object.
		dec := json.NewDecoder(bytes.NewReader(in.RawBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil || !atEOF(dec) {
			return softtoken.Request{}, invalid("bad-body", "the body is not a JSON SoftTokenRequest (password, profile, key_type, ca)")
		}
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(in.RawBody))
		if err != nil {
			return softtoken.Request{}, invalid("bad-body", "the body is not a valid HTML form")
		}
		for name, vs := range form {
			var field *string
			switch name {
			case "password":
				field = &body.Password
			case "profile":
				field = &body.Profile
			case "key_type":
				field = &body.KeyType
			case "ca":
				field = &body.CA
			default:
				return softtoken.Request{}, invalid("bad-body", "the form has a field other than password, profile, key_type and ca")
			}
			if len(vs) != 1 {
				return softtoken.Request{}, invalid("bad-body", "a form field is given more than once")
			}
			*field = vs[0]
		}
	default:
		return softtoken.Request{}, unsupportedMediaType("send application/json or application/x-www-form-urlencoded")
	}
	if body.Profile == "" {
		body.Profile = "tls-client"
	}
	ca, err := s.profileAndCA(body.Profile, body.CA)
	if err != nil {
		return softtoken.Request{}, err
	}
	body.CA = ca
	h := in.headers
	if len(h.Values(subjectIDHeader)) > 1 {
		return softtoken.Request{}, invalid("bad-subject-header", "the header "+subjectIDHeader+" is given more than once")
	}
	attrs := map[string]string{}
	for attr, name := range headers {
		if name == "" {
			continue
		}
		vs := h.Values(name)
		switch {
		case len(vs) == 0:
			continue
		case len(vs) > 1:
			return softtoken.Request{}, invalid("bad-attribute-header", fmt.Sprintf("the header %s (%s) is given more than once", textproto.CanonicalMIMEHeaderKey(name), attr))
		}
		v, err := headerValue(vs[0])
		if err != nil {
			return softtoken.Request{}, invalid("bad-attribute-header", fmt.Sprintf("the header %s (%s) %s", textproto.CanonicalMIMEHeaderKey(name), attr, err))
		}
		if v != "" {
			attrs[attr] = v
		}
	}
	if len(attrs) == 0 {
		attrs = nil
	}
	return softtoken.Request{SubjectID: domain.SubjectID(in.SubjectID), Attributes: attrs, Profile: body.Profile,
		CAID: body.CA, KeyType: body.KeyType, Password: body.Password}, nil
}

// headerValue decodes a header value: raw UTF-8, or RFC 8187's ext-value
// (charset'language'percent-encoded value) when it starts with the charset
// UTF-8 or ISO-8859-1 and a quote. The language is ignored. The error names
// the problem, never the value.
func headerValue(v string) (string, error) {
	v = strings.TrimSpace(v)
	if charset, rest, ok := strings.Cut(v, "'"); ok && (strings.EqualFold(charset, "UTF-8") || strings.EqualFold(charset, "ISO-8859-1")) {
		lang, enc, ok := strings.Cut(rest, "'")
		if !ok || strings.Trim(lang, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			return "", fmt.Errorf("is not an RFC 8187 value: no language tag between quotes after the charset")
		}
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c == '%' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
				continue
			}
			return "", fmt.Errorf("is not an RFC 8187 value: it has a character that must be percent-encoded")
		}
		d, err := url.PathUnescape(enc)
		if err != nil {
			return "", fmt.Errorf("is not an RFC 8187 value: a bad percent-encoding")
		}
		if strings.EqualFold(charset, "ISO-8859-1") {
			runes := make([]rune, len(d))
			for i := range len(d) {
				runes[i] = rune(d[i])
			}
			d = string(runes)
		}
		v = strings.TrimSpace(d)
	}
	if !utf8.ValidString(v) {
		return "", fmt.Errorf("is not valid UTF-8")
	}
	return v, nil
}

// atEOF reports whether dec has nothing left but white space.
func atEOF(dec *json.Decoder) bool {
	_, err := dec.Token()
	return err == io.EOF
}
