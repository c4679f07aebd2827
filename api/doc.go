// Package api serves caledger's HTTP API: huma v2 operations on a chi router,
// described by an OpenAPI 3.1 document at /openapi.json.
//
// # Errors
//
// Every error response is an RFC 9457 problem (application/problem+json) with
// type, title, status and detail. Problems are built in one place (problem.go):
// errors returned by operations, huma's own validation errors, unknown routes
// (404), wrong methods (405) and recovered panics (500) all end up there. A
// problem never carries personal data nor internal error text: 5xx problems
// have a generic detail and the cause is logged instead.
//
// # Logs
//
// Each request is logged once with its method, route pattern (never the raw
// path or query, which could carry data), status and duration. Client
// addresses are not logged: they are personal data.
//
// # Documentation page
//
// huma's built-in /docs page loads JavaScript from a CDN, so it is disabled;
// an offline page will be served instead.
package api
