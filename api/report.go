package api

import (
	"context"
	"net/http"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/projections"
	"github.com/danielgtaylor/huma/v2"
)

// Reporter is what the subject report reads besides the commands;
// projections.Views implements it.
type Reporter interface {
	SubjectCertificates(ctx context.Context, id domain.SubjectID) ([]CertificateRow, error)
	AccessLog(ctx context.Context, id domain.SubjectID, after uint64, limit int) ([]AccessRow, error)
}

// AccessRow is a row of the access-log view.
type AccessRow = projections.AccessRow

// SubjectReport answers a data-subject access request (GDPR art. 15): the
// personal data held, the certificates issued from it, and who read it when.
type SubjectReport struct {
	SubjectID    domain.SubjectID  `json:"subject_id"`
	Attributes   map[string]string `json:"attributes"`
	Certificates []CertificateInfo `json:"certificates"`
	Accesses     []Access          `json:"accesses" doc:"Reads of the personal data, oldest first. The reasons stay sealed in the ledger."`
	GeneratedAt  time.Time         `json:"generated_at"`
}

// Access is one recorded read of a subject's personal data.
type Access struct {
	Time      time.Time `json:"time"`
	Actor     string    `json:"actor" doc:"The reader's client certificate (cert:<serial>), never a name."`
	Role      string    `json:"role"`
	Operation string    `json:"operation"`
}

// maxReportAccesses bounds the access log a report carries.
const maxReportAccesses = 1000

func (s *server) registerReport(hapi huma.API) {
	huma.Register(hapi, huma.Operation{
		OperationID: "subject-report", Method: http.MethodGet, Path: "/v1/subjects/{id}/report",
		Summary: "Data-subject access report", Tags: []string{"compliance"},
		Security: []map[string][]string{{mtlsScheme: {}}},
		Description: "Everything held about a subject, for an access request: the attributes, the certificates' public records and the log of " +
			"who read the data and when. Producing it is itself recorded as an access (operation report) with the " + reasonHeader + " reason. Role: compliance.",
	}, func(ctx context.Context, in *struct {
		SubjectPath
		Reason string `header:"Caledger-Reason" required:"true" minLength:"1" maxLength:"1024" doc:"Why the report is made, e.g. the request's reference; recorded, sealed."`
	}) (*struct{ Body SubjectReport }, error) {
		actor, err := require(ctx, RoleCompliance)
		if err != nil {
			return nil, err
		}
		id := domain.SubjectID(in.ID)
		attrs, err := s.cfg.Commands.ReadSubject(ctx, actor, id, "report", in.Reason)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		s.waitForHead(ctx)
		certs, err := s.cfg.Reporter.SubjectCertificates(ctx, id)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		accesses, err := s.cfg.Reporter.AccessLog(ctx, id, 0, maxReportAccesses)
		if err != nil {
			return nil, s.problem(ctx, err)
		}
		out := SubjectReport{SubjectID: id, Attributes: attrs, Certificates: []CertificateInfo{}, Accesses: []Access{}, GeneratedAt: time.Now().UTC()}
		for _, c := range certs {
			out.Certificates = append(out.Certificates, certificateInfo(c))
		}
		for _, a := range accesses {
			out.Accesses = append(out.Accesses, Access{Time: a.Time, Actor: a.ActorID, Role: a.ActorRole, Operation: a.Operation})
		}
		return &struct{ Body SubjectReport }{Body: out}, nil
	})
}
