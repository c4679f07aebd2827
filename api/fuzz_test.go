package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/caledger/caledger/domain"
)

// oneCA is a CAs with one issuing CA, for parsing tests.
type oneCA struct{}

func (oneCA) List() []CAInfo { return nil }
func (oneCA) CA(id string) (CAInfo, bool) {
	return CAInfo{ID: "issuing", Kind: domain.CAKindIssuing}, id == "issuing"
}
func (oneCA) DefaultIssuer() string                       { return "issuing" }
func (oneCA) CRL(context.Context, string) ([]byte, error) { return nil, errors.New("no CRL") }

// FuzzIssueRequest feeds outside input to the issuance request parser: any
// body, content type and query. It must never panic, must answer bad input
// with a 4xx problem, and must never echo the body in the problem.
func FuzzIssueRequest(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	good, _ := json.Marshal(CertificateRequest{SubjectID: "00112233445566778899aabbccddeeff", Profile: "tls-client", CSR: string(csrPEM)})
	f.Add("application/json", good, "", "")
	f.Add("application/pkcs10", csrPEM, "00112233445566778899aabbccddeeff", "tls-client")
	f.Add("application/pkcs10", der, "00112233445566778899aabbccddeeff", "tls-server")
	f.Add("application/json", []byte(`{"subject_id":"x","profile":"Tls Client","csr":"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----"}`), "", "")
	f.Add("text/plain; charset=utf-8", []byte("secret person name"), "", "")
	f.Add("application/json; charset=utf-8", []byte(`{"csr":`), "", "")
	s := &server{cfg: Config{CAs: oneCA{}}}
	f.Fuzz(func(t *testing.T, contentType string, body []byte, subject, profile string) {
		req, err := s.issueRequest(&issueInput{ContentType: contentType, RawBody: body, SubjectID: subject, Profile: profile})
		if err == nil {
			if !req.SubjectID.Valid() || !domain.ValidSlug(req.Profile) || req.CAID != "issuing" || len(req.CSR) == 0 {
				t.Fatalf("accepted an invalid request: %+v", req)
			}
			return
		}
		var p *problem
		if !errors.As(err, &p) || p.Status < 400 || p.Status >= 500 {
			t.Fatalf("error %v is not a 4xx problem", err)
		}
		if p.Status != http.StatusBadRequest && p.Status != http.StatusUnsupportedMediaType {
			t.Fatalf("status %d", p.Status)
		}
		if len(body) >= 8 && strings.Contains(p.Detail, string(body)) {
			t.Fatalf("the problem echoes the body: %q", p.Detail)
		}
	})
}

// FuzzSoftTokenRequest feeds outside input to the soft-token request parser:
// any body, content type and attribute header value. It must never panic,
// must answer bad input with a 4xx problem that echoes neither the body nor
// the header, and what it accepts must hold only what it was sent.
func FuzzSoftTokenRequest(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", []byte("password=correct+horse&key_type=P-384"), "Ada Lovelace")
	f.Add("application/json", []byte(`{"password":"correct horse","profile":"email-protection","ca":"issuing"}`), "UTF-8''%C3%85sa")
	f.Add("application/x-www-form-urlencoded", []byte("password=a&password=b"), "UTF-8''%zz")
	f.Add("application/x-www-form-urlencoded", []byte("name=Ada+Lovelace§"), "utf-8''a b§")
	f.Add("text/plain", []byte("secret person name §"), "§")
	f.Add("application/x-www-form-urlencoded", []byte("password=correct+horse"), "UTF-8''Ada §")
	f.Add("application/json", []byte(`{"password":"§§§§§§§§","key_type":"§"}`), "UTF-8''%C2%A7")
	f.Add("application/json", []byte(`{"password":`), "\xff\xfe")
	s := &server{cfg: Config{CAs: oneCA{}}}
	headers := DefaultSoftTokenHeaders()
	f.Fuzz(func(t *testing.T, contentType string, body []byte, name string) {
		in := &softTokenInput{ContentType: contentType, RawBody: body, headers: http.Header{}}
		in.headers.Set("Caledger-Common-Name", name)
		req, err := s.softTokenRequest(in, headers)
		if err == nil {
			if !domain.ValidSlug(req.Profile) || !domain.ValidSlug(req.CAID) || req.SubjectID != "" {
				t.Fatalf("accepted an invalid request: %+v", req)
			}
			for attr, v := range req.Attributes {
				if attr != "common_name" || v == "" {
					t.Fatalf("attributes %v from one header", req.Attributes)
				}
			}
			return
		}
		var p *problem
		if !errors.As(err, &p) || p.Status != http.StatusBadRequest && p.Status != http.StatusUnsupportedMediaType {
			t.Fatalf("error %v is not a 400 or 415 problem", err)
		}
		// No fixed text of a problem holds '§': a detail that does echoes
		// the input, or a part of it.
		if strings.ContainsRune(p.Detail, '§') {
			t.Fatalf("the problem echoes the input: %q", p.Detail)
		}
	})
}
