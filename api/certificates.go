package api

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/projections"
	"github.com/danielgtaylor/huma/v2"
)

// pemChainType is the media type of a PEM certificate chain (RFC 8555 9.1).
const pemChainType = "application/pem-certificate-chain"

// CertificateRequest is the JSON body of POST /v1/certificates.
type CertificateRequest struct {
	SubjectID domain.SubjectID `json:"subject_id" pattern:"^[0-9a-f]{32}$" doc:"The registered subject the certificate is for; its attributes and the profile make the subject DN."`
	Profile   string           `json:"profile" pattern:"^[a-z0-9-]{1,64}$" doc:"Certificate profile, e.g. tls-server, tls-client, email-protection."`
	CA        string           `json:"ca,omitempty" pattern:"^[a-z0-9-]{1,64}$" doc:"Issuing CA (default: the default issuing CA)."`
	CSR       string           `json:"csr" maxLength:"65536" doc:"PKCS#10 request, PEM. Only its public key is used: its subject and extensions are ignored."`
}

// IssuedCertificate is the JSON response of POST /v1/certificates.
type IssuedCertificate struct {
	Serial domain.Serial `json:"serial"`
	CA     string        `json:"ca"`
	Chain  string        `json:"chain" doc:"PEM: the certificate, then the issuing CA certificate."`
}

// CertificateInfo is the public record of a certificate, from the certificates view.
type CertificateInfo struct {
	Serial     domain.Serial    `json:"serial"`
	CA         string           `json:"ca"`
	SubjectID  domain.SubjectID `json:"subject_id"`
	Profile    string           `json:"profile"`
	Status     string           `json:"status" enum:"valid,revoked,deleted"`
	NotBefore  time.Time        `json:"not_before"`
	NotAfter   time.Time        `json:"not_after"`
	SPKISHA256 string           `json:"spki_sha256"`
	RevokedAt  *time.Time       `json:"revoked_at,omitempty"`
	Reason     string           `json:"reason,omitempty"`
	// KeyGenerated is set for a soft token's certificate.
	KeyGenerated bool `json:"key_generated,omitempty" doc:"caledger generated the key pair and handed it out in a PKCS#12 file (POST /v1/soft-tokens)."`
}

// Revocation is the body of POST /v1/certificates/{serial}/revocation.
type Revocation struct {
	Reason string `json:"reason,omitempty" enum:"unspecified,keyCompromise,cACompromise,affiliationChanged,superseded,cessationOfOperation,privilegeWithdrawn,aACompromise" doc:"RFC 5280 CRLReason (default unspecified)."`
}

// SerialPath is the {serial} path parameter.
type SerialPath struct {
	Serial string `path:"serial" pattern:"^[1-9a-f][0-9a-f]{0,39}$" doc:"Serial, lower-case hex."`
}

type issueInput struct {
	ContentType string `header:"Content-Type"`
	Accept      string `header:"Accept"`
	SubjectID   string `query:"subject_id" doc:"With an application/pkcs10 body: the subject."`
	Profile     string `query:"profile" doc:"With an application/pkcs10 body: the profile."`
	CA          string `query:"ca" doc:"With an application/pkcs10 body: the issuing CA."`
	RawBody     []byte
}

type rawOutput struct {
	ContentType string `header:"Content-Type"`
	Location    string `header:"Location"`
	Status      int
	Body        []byte
}

var reasonCodes = map[string]domain.RevocationReason{
	"unspecified": domain.ReasonUnspecified, "keyCompromise": domain.ReasonKeyCompromise,
	"cACompromise": domain.ReasonCACompromise, "affiliationChanged": domain.ReasonAffiliationChanged,
	"superseded": domain.ReasonSuperseded, "cessationOfOperation": domain.ReasonCessationOfOperation,
	"privilegeWithdrawn": domain.ReasonPrivilegeWithdrawn, "aACompromise": domain.ReasonAACompromise,
}

func reasonName(r domain.RevocationReason) string {
	for name, code := range reasonCodes {
		if code == r {
			return name
		}
	}
	return ""
}

func (s *server) registerCertificates(hapi huma.API) {
	officerOnly := []map[string][]string{{mtlsScheme: {}}}
	reqSchema := hapi.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[CertificateRequest](), true, "CertificateRequest")
	outSchema := hapi.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[IssuedCertificate](), true, "IssuedCertificate")
	huma.Register(hapi, huma.Operation{
		OperationID: "issue-certificate", Method: http.MethodPost, Path: "/v1/certificates",
		Summary: "Issue a certificate from a CSR", Tags: []string{"certificates"}, Security: officerOnly,
		MaxBodyBytes: 256 << 10,
		// The body is JSON or a CSR; issueRequest parses and checks both.
		SkipValidateBody: true,
		Description: "Issues a certificate for a registered subject from a PKCS#10 CSR. The body is JSON (CertificateRequest), or the CSR itself " +
			"(Content-Type application/pkcs10, PEM or DER) with subject_id and profile as query parameters. The CSR's signature and key are checked; " +
			"the subject DN comes from the subject's attributes and the profile; the certificate is linted before signing. " +
			"The chain is returned only once the issuance is durable in the ledger: as JSON, or as PEM with Accept: " + pemChainType + ". Role: officer.",
		RequestBody: &huma.RequestBody{Required: true, Content: map[string]*huma.MediaType{
			"application/json":   {Schema: reqSchema},
			"application/pkcs10": {Schema: &huma.Schema{Type: "string", Format: "binary"}},
		}},
		Responses: map[string]*huma.Response{"201": {Description: "Issued.", Content: map[string]*huma.MediaType{
			"application/json": {Schema: outSchema},
			pemChainType:       {Schema: &huma.Schema{Type: "string"}},
		}}},
		Errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusGone,
			http.StatusUnsupportedMediaType, http.StatusServiceUnavailable},
	}, func(ctx context.Context, in *issueInput) (*rawOutput, error) {
		actor, err := require(ctx, RoleOfficer)
		if err != nil {
			return nil, err
		}
		req, err := s.issueRequest(in)
		if err != nil {
			return nil, err
		}
		if actor, err = s.credentialGuard(ctx, actor, req.Profile); err != nil {
			return nil, err
		}
		issued, err := s.cfg.Commands.IssueCertificate(ctx, actor, req)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		chain, err := s.chainPEM(req.CAID, issued.Certificate)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		s.waitForViews(ctx, issued.Position)
		out := &rawOutput{Status: http.StatusCreated, Location: "/v1/certificates/" + string(issued.Serial)}
		if accepts(in.Accept, pemChainType) {
			out.ContentType, out.Body = pemChainType, []byte(chain)
			return out, nil
		}
		out.ContentType = "application/json"
		out.Body, _ = json.Marshal(IssuedCertificate{Serial: issued.Serial, CA: req.CAID, Chain: chain})
		return out, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "list-certificates", Method: http.MethodGet, Path: "/v1/certificates",
		Summary: "List certificates", Tags: []string{"certificates"}, Security: officerOnly,
		Description: "Public records of certificates, ordered by serial, from the certificates view. Page with after=<last serial>. Role: officer or auditor.",
	}, func(ctx context.Context, in *struct {
		CA        string `query:"ca" pattern:"^[a-z0-9-]{0,64}$"`
		SubjectID string `query:"subject_id" pattern:"^([0-9a-f]{32})?$"`
		Status    string `query:"status" enum:"valid,revoked,deleted,"`
		After     string `query:"after" pattern:"^[0-9a-f]{0,40}$"`
		Limit     int    `query:"limit" minimum:"0" maximum:"1000"`
	}) (*struct{ Body []CertificateInfo }, error) {
		if _, err := require(ctx, RoleOfficer, RoleAuditor); err != nil {
			return nil, err
		}
		limit := in.Limit
		if limit == 0 {
			limit = 100
		}
		rows, err := s.cfg.Views.Certificates(ctx, CertificateFilter{CAID: in.CA, SubjectID: domain.SubjectID(in.SubjectID),
			Status: in.Status, After: domain.Serial(in.After), Limit: limit})
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		out := make([]CertificateInfo, 0, len(rows))
		for _, r := range rows {
			out = append(out, certificateInfo(r))
		}
		return &struct{ Body []CertificateInfo }{Body: out}, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "get-certificate", Method: http.MethodGet, Path: "/v1/certificates/{serial}",
		Summary: "Get a certificate's public record", Tags: []string{"certificates"}, Security: officerOnly,
		Description: "Role: officer or auditor. The certificate itself names its subject and is returned only at issuance.",
	}, func(ctx context.Context, in *SerialPath) (*struct{ Body CertificateInfo }, error) {
		if _, err := require(ctx, RoleOfficer, RoleAuditor); err != nil {
			return nil, err
		}
		row, err := s.cfg.Views.Certificate(ctx, domain.Serial(in.Serial))
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		return &struct{ Body CertificateInfo }{Body: certificateInfo(row)}, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "revoke-certificate", Method: http.MethodPost, Path: "/v1/certificates/{serial}/revocation",
		Summary: "Revoke a certificate", Tags: []string{"certificates"}, Security: officerOnly,
		Description: "Revokes the certificate. Revocation is final and recorded once: revoking again writes nothing and answers 409 already-revoked. " +
			"The revocation is in the CRL and OCSP answers within a second. Role: officer.",
	}, func(ctx context.Context, in *struct {
		SerialPath
		Body *Revocation // optional: no body is reason unspecified
	}) (*struct{ Body CertificateInfo }, error) {
		actor, err := require(ctx, RoleOfficer)
		if err != nil {
			return nil, err
		}
		serial := domain.Serial(in.Serial)
		if actor, err = s.credentialGuardSerial(ctx, actor, serial); err != nil {
			return nil, err
		}
		reason := domain.ReasonUnspecified
		if in.Body != nil && in.Body.Reason != "" {
			reason = reasonCodes[in.Body.Reason]
		}
		if err := s.cfg.Commands.RevokeCertificate(ctx, actor, serial, reason); err != nil {
			return nil, s.problem(ctx, err)
		}
		s.waitForHead(ctx)
		row, err := s.cfg.Views.Certificate(ctx, serial)
		if err != nil && !errors.Is(err, projections.ErrNotFound) {
			return nil, s.problem(ctx, err)
		}
		if err != nil || row.Status == projections.StatusValid {
			// The views are behind the revocation just recorded (another
			// node's views, or a lag past the wait): the ledger says how
			// the certificate stands.
			c, lerr := s.cfg.Commands.CertificateState(ctx, serial)
			if lerr != nil {
				return nil, s.problem(ctx, lerr)
			}
			if err != nil {
				row = CertificateRow{Serial: serial, CAID: c.CAID, SubjectID: c.SubjectID, Profile: c.Profile,
					NotBefore: c.NotBefore, NotAfter: c.NotAfter, SPKISHA256: c.SPKISHA256, KeyGenerated: c.KeyGenerated}
			}
			row.Status, row.RevokedAt, row.Reason = projections.StatusRevoked, c.RevokedAt, c.Reason
			if c.Deleted {
				row.Status = projections.StatusDeleted
			}
		}
		return &struct{ Body CertificateInfo }{Body: certificateInfo(row)}, nil
	})

	huma.Register(hapi, huma.Operation{
		OperationID: "delete-certificate", Method: http.MethodDelete, Path: "/v1/certificates/{serial}",
		Summary: "Delete a certificate", Tags: []string{"certificates"}, Security: officerOnly,
		DefaultStatus: http.StatusNoContent,
		Description: "Deletes a revoked or expired certificate from the views (its events stay in the ledger). Under the CA policy retain_until_expiry, " +
			"deletion before expiry answers 409 with until: the date from which it is allowed. Role: officer.",
	}, func(ctx context.Context, in *SerialPath) (*struct{}, error) {
		actor, err := require(ctx, RoleOfficer)
		if err != nil {
			return nil, err
		}
		row, err := s.cfg.Views.Certificate(ctx, domain.Serial(in.Serial))
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		if actor, err = s.credentialGuard(ctx, actor, row.Profile); err != nil {
			return nil, err
		}
		ca, ok := s.cfg.CAs.CA(row.CAID)
		if !ok {
			// Its retention policy is unknown here: refuse rather than assume none.
			return nil, s.problem(ctx, &domain.Error{Kind: domain.KindUnavailable, Code: "ca-not-loaded",
				Detail: "the certificate's CA is not loaded on this node, so its retention policy cannot be checked"})
		}
		retain := ca.RetainUntilExpiry
		if err := s.cfg.Commands.DeleteCertificate(ctx, actor, domain.Serial(in.Serial), retain); err != nil {
			return nil, s.problem(ctx, err)
		}
		s.waitForHead(ctx)
		return nil, nil
	})
}

// issueRequest reads the issuance request from a JSON or application/pkcs10 body.
func (s *server) issueRequest(in *issueInput) (domain.IssueRequest, error) {
	mt, _, _ := mime.ParseMediaType(in.ContentType)
	var req CertificateRequest
	var csr []byte
	switch mt {
	case "application/json", "":
		if err := json.Unmarshal(in.RawBody, &req); err != nil {
			return domain.IssueRequest{}, invalid("bad-body", "the body is not a JSON CertificateRequest")
		}
		block, _ := pem.Decode([]byte(req.CSR))
		if block == nil || block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return domain.IssueRequest{}, invalid("bad-csr", "csr must be a PEM CERTIFICATE REQUEST")
		}
		csr = block.Bytes
	case "application/pkcs10":
		req = CertificateRequest{SubjectID: domain.SubjectID(in.SubjectID), Profile: in.Profile, CA: in.CA}
		csr = in.RawBody
		if block, _ := pem.Decode(in.RawBody); block != nil {
			if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
				return domain.IssueRequest{}, invalid("bad-csr", "the PEM body is not a CERTIFICATE REQUEST")
			}
			csr = block.Bytes
		}
	default:
		return domain.IssueRequest{}, unsupportedMediaType("send application/json or application/pkcs10")
	}
	if !req.SubjectID.Valid() {
		return domain.IssueRequest{}, invalid("bad-subject-id", "subject_id must be a subject pseudonym: 32 lower-case hex digits")
	}
	ca, err := s.profileAndCA(req.Profile, req.CA)
	if err != nil {
		return domain.IssueRequest{}, err
	}
	return domain.IssueRequest{SubjectID: req.SubjectID, CAID: ca, Profile: req.Profile, CSR: csr}, nil
}

// profileAndCA checks an issuance's profile name and CA, and returns the CA:
// the default issuer when ca is empty.
func (s *server) profileAndCA(profile, ca string) (string, error) {
	if !domain.ValidSlug(profile) {
		return "", invalid("bad-profile", "profile must be a profile name: lower-case letters, digits and hyphens")
	}
	if ca == "" {
		ca = s.cfg.CAs.DefaultIssuer()
	}
	if _, ok := s.cfg.CAs.CA(ca); !ok {
		return "", invalid("unknown-ca", "no such issuing CA")
	}
	return ca, nil
}

// accepts reports whether the Accept header lists mediaType explicitly.
func accepts(accept, mediaType string) bool {
	for part := range strings.SplitSeq(accept, ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == mediaType {
			return true
		}
	}
	return false
}

func certificateInfo(r CertificateRow) CertificateInfo {
	info := CertificateInfo{Serial: r.Serial, CA: r.CAID, SubjectID: r.SubjectID, Profile: r.Profile, Status: r.Status,
		NotBefore: r.NotBefore, NotAfter: r.NotAfter, SPKISHA256: r.SPKISHA256, KeyGenerated: r.KeyGenerated}
	if !r.RevokedAt.IsZero() {
		t := r.RevokedAt
		info.RevokedAt = &t
		info.Reason = reasonName(r.Reason)
	}
	return info
}

// credentialGuard lets actor act on a certificate of profile only if the
// profile carries no role, or actor holds the admin role: client credentials
// are the administrators' to issue and withdraw. It returns the actor to
// record.
func (s *server) credentialGuard(ctx context.Context, actor domain.Actor, profile string) (domain.Actor, error) {
	if s.cfg.ProfileRole == nil || s.cfg.ProfileRole(profile) == "" {
		return actor, nil
	}
	return require(ctx, RoleAdmin)
}

// credentialGuardSerial is credentialGuard for the certificate serial. Its
// profile comes from the views, or from the ledger when the views do not have
// the certificate yet, so a lagging view never lets an officer withdraw a
// credential. A serial the ledger does not know passes: the command then
// answers 404. Any other failure to learn the profile refuses the request.
func (s *server) credentialGuardSerial(ctx context.Context, actor domain.Actor, serial domain.Serial) (domain.Actor, error) {
	row, err := s.cfg.Views.Certificate(ctx, serial)
	profile := row.Profile
	if errors.Is(err, projections.ErrNotFound) {
		c, lerr := s.cfg.Commands.CertificateState(ctx, serial)
		if errors.Is(lerr, domain.ErrNotFound) {
			return actor, nil
		}
		profile, err = c.Profile, lerr
	}
	if err != nil {
		return actor, s.problem(ctx, err)
	}
	return s.credentialGuard(ctx, actor, profile)
}
