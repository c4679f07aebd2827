package api

import "testing"

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
		"UTF-8''%C3%85sa%20%C3%96berg": "Åsa Öberg",
		"utf-8''Ada":                   "Ada",
		"UTF-8''a+b":                   "a+b", // RFC 8187 has no '+' for a space
		"UTF-8'":                       "UTF-8'",
		"ISO-8859-1''%C5sa":            "ISO-8859-1''%C5sa", // only UTF-8 is decoded
	} {
		got, err := headerValue(in)
		if err != nil || got != want {
			t.Errorf("headerValue(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"UTF-8''%zz", "UTF-8''a b", "UTF-8''%C3", "\xc3 raw"} {
		if got, err := headerValue(in); err == nil {
			t.Errorf("headerValue(%q) = %q, want an error", in, got)
		}
	}
}
