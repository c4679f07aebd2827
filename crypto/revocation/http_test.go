package revocation

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// newTestServer mounts r the way the API does: /ocsp as is, /ocsp/* with the
// prefix stripped, on a router that does not clean paths.
func newTestServer(t *testing.T, r *Responder) *httptest.Server {
	t.Helper()
	stripped := http.StripPrefix("/ocsp", r)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.URL.Path == "/ocsp":
			r.ServeHTTP(w, req)
		case strings.HasPrefix(req.URL.Path, "/ocsp/"):
			stripped.ServeHTTP(w, req)
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestServeHTTP(t *testing.T) {
	ca := newTestCA(t, newP256(t), "HTTP CA")
	clock := &fakeClock{t: testNow}
	r := newTestResponder(t, ca, defaultTable(), Options{Now: clock.Now, Validity: time.Hour})
	srv := newTestServer(t, r)

	// A serial whose request's standard base64 has "/", "+" and "//", so the
	// alphabets and the path handling are all exercised.
	// Runs of 0xff give "/" (63) and of 0xfbefbe "+" (62) once aligned on a
	// 3-octet boundary of the request, which one of three prefixes achieves.
	var der []byte
	var std string
	for prefix := 1; prefix <= 3 && std == ""; prefix++ {
		serial := append(bytes.Repeat([]byte{0x7f}, prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb, 0xef, 0xbe, 0xfb, 0xef, 0xbe)
		der = simpleRequest(t, ca, crypto.SHA1, new(big.Int).SetBytes(serial))
		if b := base64.StdEncoding.EncodeToString(der); strings.Contains(b, "//") && strings.Contains(b, "+") {
			std = b
		}
	}
	if std == "" {
		t.Fatal("no request whose base64 has both // and +")
	}

	for _, tc := range []struct {
		name, path string
	}{
		{"std", "/ocsp/" + std},
		{"std percent-encoded", "/ocsp/" + url.PathEscape(std)},
		{"std all escaped", "/ocsp/" + strings.NewReplacer("/", "%2F", "+", "%2B", "=", "%3D").Replace(std)},
		{"url-safe", "/ocsp/" + base64.URLEncoding.EncodeToString(der)},
		{"raw std", "/ocsp/" + base64.RawStdEncoding.EncodeToString(der)},
		{"raw url-safe", "/ocsp/" + base64.RawURLEncoding.EncodeToString(der)},
	} {
		t.Run("GET "+tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+tc.path, nil)
			resp, body := do(t, req)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ContentTypeResponse {
				t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			if _, err := ocsp.ParseResponse(body, ca.cert); err != nil {
				t.Fatalf("ParseResponse: %v", err)
			}
			if got, want := resp.Header.Get("Cache-Control"), "max-age=1800, public, no-transform, must-revalidate"; got != want {
				t.Errorf("Cache-Control %q, want %q", got, want)
			}
			if got := resp.Header.Get("Last-Modified"); got != testNow.Format(http.TimeFormat) {
				t.Errorf("Last-Modified %q", got)
			}
			if got := resp.Header.Get("Expires"); got != testNow.Add(time.Hour).Format(http.TimeFormat) {
				t.Errorf("Expires %q", got)
			}
		})
	}

	t.Run("GET cached response has a shorter max-age", func(t *testing.T) {
		clock.Add(10 * time.Minute)
		defer clock.Add(-10 * time.Minute)
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/ocsp/"+std, nil)
		resp, _ := do(t, req)
		if got := resp.Header.Get("Cache-Control"); !strings.HasPrefix(got, "max-age=1200,") {
			t.Errorf("Cache-Control %q, want max-age=1200", got)
		}
	})

	for _, path := range []string{"/ocsp", "/ocsp/"} {
		t.Run("POST "+path, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+path, bytes.NewReader(der))
			req.Header.Set("Content-Type", ContentTypeRequest)
			resp, body := do(t, req)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ContentTypeResponse {
				t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			if _, err := ocsp.ParseResponse(body, ca.cert); err != nil {
				t.Fatalf("ParseResponse: %v", err)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "" {
				t.Errorf("Cache-Control %q on a POST response", cc)
			}
		})
	}

	for _, tc := range []struct {
		name, method, path string
		body               []byte
		status             int
		ocspStatus         ocsp.ResponseStatus
	}{
		{"GET not base64", http.MethodGet, "/ocsp/not*base64", nil, http.StatusOK, ocsp.Malformed},
		{"GET empty", http.MethodGet, "/ocsp/", nil, http.StatusOK, ocsp.Malformed},
		{"GET no slash", http.MethodGet, "/ocsp", nil, http.StatusOK, ocsp.Malformed},
		{"GET base64 garbage", http.MethodGet, "/ocsp/" + base64.StdEncoding.EncodeToString([]byte("garbage")), nil, http.StatusOK, ocsp.Malformed},
		{"POST garbage", http.MethodPost, "/ocsp", []byte("garbage"), http.StatusOK, ocsp.Malformed},
		{"POST other CA", http.MethodPost, "/ocsp", simpleRequest(t, newTestCA(t, newP256(t), "X"), crypto.SHA1, big.NewInt(1)), http.StatusOK, ocsp.Unauthorized},
		{"POST too large", http.MethodPost, "/ocsp", make([]byte, DefaultMaxRequestBytes+1), http.StatusRequestEntityTooLarge, 0},
		{"GET too long", http.MethodGet, "/ocsp/" + strings.Repeat("A", base64.StdEncoding.EncodedLen(DefaultMaxRequestBytes)+4), nil, http.StatusRequestURITooLong, 0},
		{"PUT", http.MethodPut, "/ocsp", der, http.StatusMethodNotAllowed, 0},
		{"HEAD", http.MethodHead, "/ocsp/" + std, nil, http.StatusMethodNotAllowed, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, bytes.NewReader(tc.body))
			resp, body := do(t, req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "GET, POST" {
				t.Errorf("Allow %q", resp.Header.Get("Allow"))
			}
			if tc.status != http.StatusOK {
				return
			}
			if resp.Header.Get("Content-Type") != ContentTypeResponse {
				t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
			}
			if tc.method == http.MethodGet && resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q on an error response", resp.Header.Get("Cache-Control"))
			}
			_, err := ocsp.ParseResponse(body, ca.cert)
			if re, ok := err.(ocsp.ResponseError); !ok || re.Status != tc.ocspStatus {
				t.Fatalf("got %v, want %v", err, tc.ocspStatus)
			}
		})
	}
}
