package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caledger/caledger/crypto/softtoken"
	"github.com/caledger/caledger/domain"
)

func TestCheckSoftTokenHeaders(t *testing.T) {
	if err := CheckSoftTokenHeaders(DefaultSoftTokenHeaders()); err != nil {
		t.Fatalf("the default mapping: %v", err)
	}
	if err := CheckSoftTokenHeaders(map[string]string{"common_name": "X-Sso-Name", "email": ""}); err != nil {
		t.Fatalf("a mapping with an unmapped attribute: %v", err)
	}
	for name, m := range map[string]map[string]string{
		"unknown attribute":  {"shoe_size": "X-Shoe"},
		"space in a name":    {"common_name": "X Sso Name"},
		"colon in a name":    {"common_name": "X-Sso:Name"},
		"header used twice":  {"common_name": "X-Sso-Name", "surname": "x-sso-name"},
		"the subject header": {"common_name": "caledger-subject-id"},
	} {
		if err := CheckSoftTokenHeaders(m); err == nil {
			t.Errorf("%s: accepted %v", name, m)
		}
	}
}

func TestHeaderValue(t *testing.T) {
	for in, want := range map[string]string{
		"Ada Lovelace":                 "Ada Lovelace",
		"  Ada  ":                      "Ada",
		"Åsa":                          "Åsa",
		"D'Arcy O'Neil":                "D'Arcy O'Neil", // apostrophes, not an RFC 8187 value
		"O'Neil'x":                     "O'Neil'x",
		"UTF-8''%C3%85sa%20%C3%96berg": "Åsa Öberg",
		"utf-8''Ada":                   "Ada",
		"UTF-8'sv-SE'%C3%85sa":         "Åsa", // the language is ignored
		"UTF-8''%20Ada%20":             "Ada",
		"UTF-8''a+b":                   "a+b", // RFC 8187 has no '+' for a space
		"ISO-8859-1''%C5sa":            "Åsa",
	} {
		got, err := headerValue(in)
		if err != nil || got != want {
			t.Errorf("headerValue(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"UTF-8''%zz", "UTF-8''a b", "UTF-8''%C3", "\xc3 raw", "UTF-8'", "UTF-8'en us'x", "UTF-8'sv'\xc3"} {
		if got, err := headerValue(in); err == nil {
			t.Errorf("headerValue(%q) = %q, want an error", in, got)
		}
	}
}

// fakeTokens answers every soft-token request with tok and err.
type fakeTokens struct {
	tok softtoken.Token
	err error
}

func (f fakeTokens) Issue(context.Context, domain.Actor, softtoken.Request) (softtoken.Token, error) {
	return f.tok, f.err
}

// TestSoftTokenFailureNamesNewSubject: when the token fails after its subject
// was registered, the problem carries the subject's pseudonym, so that the
// proxy can retry for it or have it erased; when nothing was registered, it
// names none.
func TestSoftTokenFailureNamesNewSubject(t *testing.T) {
	const id = "00112233445566778899aabbccddeeff"
	unavailable := &domain.Error{Kind: domain.KindUnavailable, Code: "unavailable", Detail: "the signer is unavailable"}
	for _, tt := range []struct {
		name   string
		tokens fakeTokens
		header string
	}{
		{"registered, then failed", fakeTokens{softtoken.Token{SubjectID: id, Registered: true}, unavailable}, id},
		{"nothing registered", fakeTokens{softtoken.Token{}, unavailable}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			router, _ := newAPI(Config{CAs: oneCA{}, Commands: guardLedger{}, Views: guardViews{}, SoftTokens: tt.tokens})
			proxy := Principal{Actor: domain.Actor{ID: "cert:0a"}, Roles: []string{RoleOfficerProxy}}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				router.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, proxy)))
			}))
			t.Cleanup(srv.Close)
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/soft-tokens", strings.NewReader("password=correct+horse"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Caledger-Common-Name", "Ada Lovelace")
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get(subjectIDHeader) != tt.header {
				t.Fatalf("status %d, %s %q; want 503 and %q", res.StatusCode, subjectIDHeader, res.Header.Get(subjectIDHeader), tt.header)
			}
			var p struct{ Code string }
			if res.Header.Get("Content-Type") != problemContentType || json.Unmarshal(body, &p) != nil || p.Code != "unavailable" {
				t.Fatalf("answer %q: %s", res.Header.Get("Content-Type"), body)
			}
		})
	}
}
