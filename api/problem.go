package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/projections"

	"github.com/danielgtaylor/huma/v2"
	"github.com/go-chi/chi/v5"
)

// This file is the one place that builds problems (RFC 9457).
//
// huma creates its own errors (validation failures, unexpected handler
// errors) through the package variable huma.NewError. Replacing that variable
// would change every huma API in the process, so it is left alone; instead
// every error body huma writes passes through problemTransformer, installed
// per API in huma.Config.Transformers. Handlers outside huma (404, 405,
// panics) call writeProblem.

// problemContentType is the media type of every problem body.
const problemContentType = "application/problem+json"

// newProblem builds a problem. detail is sent to the client: it MUST NOT
// contain personal data or internal error text.
func newProblem(status int, detail string) *huma.ErrorModel {
	return &huma.ErrorModel{
		Type:   "about:blank",
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
	}
}

// problemTransformer completes and scrubs the problems huma writes. It
// returns a copy; the error value returned by a handler is not modified.
//
//   - type defaults to about:blank and title to the status text;
//   - 5xx problems lose their error list: huma puts the text of an unexpected
//     handler error there, and internal errors must not reach the client;
//   - error details lose their echoed request value, which could be
//     personal data.
func problemTransformer(_ huma.Context, _ string, v any) (any, error) {
	em, ok := v.(*huma.ErrorModel)
	if !ok {
		return v, nil
	}
	p := newProblem(em.Status, em.Detail)
	if em.Type != "" {
		p.Type = em.Type
	}
	if em.Title != "" {
		p.Title = em.Title
	}
	p.Instance = em.Instance
	if em.Status >= 500 {
		return p, nil
	}
	for _, d := range em.Errors {
		if d == nil {
			continue
		}
		p.Errors = append(p.Errors, &huma.ErrorDetail{Message: d.Message, Location: d.Location})
	}
	return p, nil
}

// statusError is a problem body: *huma.ErrorModel or *problem.
type statusError interface {
	error
	GetStatus() int
}

// writeProblem writes p for handlers that run outside huma.
func writeProblem(w http.ResponseWriter, p statusError) {
	body, err := json.Marshal(p)
	if err != nil {
		// Unreachable: problems hold only strings and ints.
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", problemContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.GetStatus())
	_, _ = w.Write(body)
}

// problem is an RFC 9457 problem with two extension members: code, a stable
// machine-readable name of the error ("already-revoked"), and until, the moment
// after which a refused command can succeed (e.g. the end of a retention
// period). Its detail MUST NOT contain personal data.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code,omitempty"`
	Until  string `json:"until,omitempty"`
	// Reissued lists the replacements a correction with reissue completed
	// before it failed: they are valid and exist nowhere else.
	Reissued []Reissue `json:"reissued,omitempty"`
}

func (p *problem) Error() string             { return p.Detail }
func (p *problem) GetStatus() int            { return p.Status }
func (p *problem) ContentType(string) string { return problemContentType }

// problemType is the type URI of the problem with code.
func problemType(code string) string { return "urn:caledger:problem:" + code }

// kindStatus is the one mapping of domain error kinds to HTTP statuses.
var kindStatus = map[domain.Kind]int{
	domain.KindInvalid:     http.StatusBadRequest,
	domain.KindNotFound:    http.StatusNotFound,
	domain.KindConflict:    http.StatusConflict,
	domain.KindGone:        http.StatusGone,
	domain.KindUnavailable: http.StatusServiceUnavailable,
	domain.KindTooLarge:    http.StatusRequestEntityTooLarge,
}

// fromError turns an error of a command or query into the problem sent to the
// client. A domain error's code and detail are sent as they are (the domain
// guarantees they hold no personal data); its cause, and any other error, is
// only logged.
func fromError(ctx context.Context, logger *slog.Logger, err error) error {
	var p *problem
	if errors.As(err, &p) {
		return p
	}
	var de *domain.Error
	if errors.As(err, &de) {
		status, ok := kindStatus[de.Kind]
		if !ok {
			status = http.StatusInternalServerError
		}
		if status >= 500 && de.Err != nil {
			logger.LogAttrs(ctx, slog.LevelError, "request failed", slog.String("code", de.Code), slog.String("cause", de.Err.Error()))
		}
		return &problem{Type: problemType(de.Code), Title: http.StatusText(status), Status: status,
			Detail: de.Detail, Code: de.Code, Until: de.Until}
	}
	switch {
	case errors.Is(err, projections.ErrNotFound):
		return &problem{Type: problemType("not-found"), Title: http.StatusText(http.StatusNotFound), Status: http.StatusNotFound,
			Code: "not-found", Detail: "no such record"}
	case errors.Is(err, projections.ErrInvalidQuery):
		return invalid("bad-query", "the query is not acceptable")
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &problem{Type: problemType("timeout"), Title: http.StatusText(http.StatusServiceUnavailable),
			Status: http.StatusServiceUnavailable, Code: "timeout", Detail: "the request ended before it completed"}
	}
	logger.LogAttrs(ctx, slog.LevelError, "request failed", slog.String("cause", err.Error()))
	return &problem{Type: "about:blank", Title: http.StatusText(http.StatusInternalServerError),
		Status: http.StatusInternalServerError, Detail: "internal server error"}
}

// invalid is the 400 problem with code for bad input found by the API itself.
func invalid(code, detail string) *problem {
	return &problem{Type: problemType(code), Title: http.StatusText(http.StatusBadRequest), Status: http.StatusBadRequest, Code: code, Detail: detail}
}

// unsupportedMediaType is the 415 problem for a body of a media type the
// operation does not read.
func unsupportedMediaType(detail string) *problem {
	return &problem{Type: problemType("unsupported-media-type"), Title: http.StatusText(http.StatusUnsupportedMediaType),
		Status: http.StatusUnsupportedMediaType, Code: "unsupported-media-type", Detail: detail}
}

// notFound answers requests that match no route.
func notFound(w http.ResponseWriter, _ *http.Request) {
	writeProblem(w, newProblem(http.StatusNotFound, "no resource at this path"))
}

// methodNotAllowed answers requests whose path matches a route but whose
// method does not. chi keeps the allowed methods private once a custom 405
// handler is set, so the Allow header (required by RFC 9110) is rebuilt by
// matching the path against routes.
func methodNotAllowed(routes chi.Routes) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.RawPath
		if path == "" {
			path = r.URL.Path
		}
		for _, m := range httpMethods {
			if routes.Match(chi.NewRouteContext(), m, path) {
				w.Header().Add("Allow", m)
			}
		}
		writeProblem(w, newProblem(http.StatusMethodNotAllowed, "method not allowed for this path"))
	}
}
