package api

import "testing"

func TestPublishedPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/healthz":                     true,
		"/ocsp":                        true,
		"/ocsp/MEUwQzBBMD8wPTAJBgUrDg": true,
		"/v1/cas/issuing/crl":          true,
		"/v1/cas/root/certificate":     true,
		"/v1/cas":                      false,
		"/v1/cas/":                     false,
		"/v1/cas//crl":                 false,
		"/v1/cas/issuing":              false,
		"/v1/cas/issuing/crl/":         false,
		"/v1/cas/issuing/crl/x":        false,
		"/v1/cas/issuing/../subjects":  false,
		"/v1/certificates":             false,
		"/v1/subjects/search":          false,
		"/readyz":                      false,
		"/metrics":                     false,
		"/docs":                        false,
		"/openapi.json":                false,
		"/ocspx":                       false,
		"":                             false,
	} {
		if got := publishedPath(path); got != want {
			t.Errorf("publishedPath(%q) = %v, want %v", path, got, want)
		}
	}
}
