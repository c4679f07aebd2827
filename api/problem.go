package api

import (
	"encoding/json"
	"net/http"

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

// writeProblem writes p for handlers that run outside huma.
func writeProblem(w http.ResponseWriter, p *huma.ErrorModel) {
	body, err := json.Marshal(p)
	if err != nil {
		// Unreachable: ErrorModel holds only strings and ints here.
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", problemContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
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
	methods := []string{
		http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions,
	}
	return func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.RawPath
		if path == "" {
			path = r.URL.Path
		}
		for _, m := range methods {
			if routes.Match(chi.NewRouteContext(), m, path) {
				w.Header().Add("Allow", m)
			}
		}
		writeProblem(w, newProblem(http.StatusMethodNotAllowed, "method not allowed for this path"))
	}
}
