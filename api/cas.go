package api

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/danielgtaylor/huma/v2"
)

// CAInfo describes a certificate authority this node runs.
type CAInfo struct {
	ID          string
	Kind        string // domain.CAKindRoot or domain.CAKindIssuing
	ParentID    string
	Certificate *x509.Certificate
	// RetainUntilExpiry is the CA's retention policy.
	RetainUntilExpiry bool
}

// CAs are the certificate authorities behind the public operations.
type CAs interface {
	List() []CAInfo
	CA(id string) (CAInfo, bool)
	// DefaultIssuer is the CA that issues when a request names none.
	DefaultIssuer() string
	// CRL returns the CA's current DER CRL. It MUST list every revocation the
	// revocations view held when it was called, and MUST return a CRL only once
	// its ca.crl-published event is durable.
	CRL(ctx context.Context, id string) ([]byte, error)
}

// CA is the public description of a certificate authority.
type CA struct {
	ID                string    `json:"id"`
	Kind              string    `json:"kind" enum:"root,issuing"`
	Parent            string    `json:"parent,omitempty"`
	Subject           string    `json:"subject"`
	NotBefore         time.Time `json:"not_before"`
	NotAfter          time.Time `json:"not_after"`
	RetainUntilExpiry bool      `json:"retain_until_expiry"`
	Default           bool      `json:"default" doc:"Issues when a request names no CA."`
}

// CAPath is the {id} path parameter of CA operations.
type CAPath struct {
	ID string `path:"id" pattern:"^[a-z0-9-]{1,64}$"`
}

func (s *server) registerCAs(hapi huma.API) {
	huma.Register(hapi, huma.Operation{
		OperationID: "list-cas", Method: http.MethodGet, Path: "/v1/cas",
		Summary: "List certificate authorities", Tags: []string{"public"},
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body []CA }, error) {
		out := []CA{}
		for _, c := range s.cfg.CAs.List() {
			out = append(out, CA{ID: c.ID, Kind: c.Kind, Parent: c.ParentID, Subject: c.Certificate.Subject.String(),
				NotBefore: c.Certificate.NotBefore, NotAfter: c.Certificate.NotAfter,
				RetainUntilExpiry: c.RetainUntilExpiry, Default: c.ID == s.cfg.CAs.DefaultIssuer()})
		}
		return &struct{ Body []CA }{Body: out}, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "get-ca-certificate", Method: http.MethodGet, Path: "/v1/cas/{id}/certificate",
		Summary: "A CA's certificate", Tags: []string{"public"},
		Description: "PEM by default; DER with Accept: application/pkix-cert.",
		Responses: map[string]*huma.Response{"200": {Description: "The certificate.", Content: map[string]*huma.MediaType{
			"application/x-pem-file": {Schema: &huma.Schema{Type: "string"}},
			"application/pkix-cert":  {Schema: &huma.Schema{Type: "string", Format: "binary"}},
		}}},
	}, func(ctx context.Context, in *struct {
		CAPath
		Accept string `header:"Accept"`
	}) (*rawOutput, error) {
		c, ok := s.cfg.CAs.CA(in.ID)
		if !ok {
			return nil, s.problem(ctx, &domain.Error{Kind: domain.KindNotFound, Code: "no-ca", Detail: "no such CA"})
		}
		if accepts(in.Accept, "application/pkix-cert") {
			return &rawOutput{Status: http.StatusOK, ContentType: "application/pkix-cert", Body: c.Certificate.Raw}, nil
		}
		return &rawOutput{Status: http.StatusOK, ContentType: "application/x-pem-file", Body: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate.Raw})}, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "get-ca-crl", Method: http.MethodGet, Path: "/v1/cas/{id}/crl",
		Summary: "A CA's CRL", Tags: []string{"public"},
		Description: "The current CRL, DER (RFC 5280). A revocation appears in it within a second. Every CRL served is recorded in the ledger (ca.crl-published) first.",
		Responses: map[string]*huma.Response{"200": {Description: "The CRL.", Content: map[string]*huma.MediaType{
			"application/pkix-crl": {Schema: &huma.Schema{Type: "string", Format: "binary"}},
		}}},
	}, func(ctx context.Context, in *CAPath) (*rawOutput, error) {
		if _, ok := s.cfg.CAs.CA(in.ID); !ok {
			return nil, s.problem(ctx, &domain.Error{Kind: domain.KindNotFound, Code: "no-ca", Detail: "no such CA"})
		}
		crl, err := s.cfg.CAs.CRL(ctx, in.ID)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		return &rawOutput{Status: http.StatusOK, ContentType: "application/pkix-crl", Body: crl}, nil
	})
}

// CAChain returns the certificates of caID and its parents up to, not
// including, the root: what a certificate caID issued is sent with.
func CAChain(cas CAs, caID string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for id := caID; id != ""; {
		c, ok := cas.CA(id)
		if !ok {
			return nil, &domain.Error{Kind: domain.KindUnavailable, Code: "unavailable", Detail: "the issuing CA is not loaded"}
		}
		if c.Kind == domain.CAKindRoot {
			break
		}
		out = append(out, c.Certificate)
		id = c.ParentID
	}
	return out, nil
}

// chainPEM returns the PEM chain of a certificate caID issued: the
// certificate, then CAChain.
func (s *server) chainPEM(caID string, der []byte) (string, error) {
	chain, err := CAChain(s.cfg.CAs, caID)
	if err != nil {
		return "", err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, c := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return string(out), nil
}
