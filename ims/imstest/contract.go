package imstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
)

// Contract validates IMS image requests and responses against the IMS
// OpenAPI document (testdata/reference/ims/openapi.yaml) with kin-openapi.
// Safe for concurrent use once loaded.
type Contract struct {
	doc *openapi3.T
}

// LoadContract loads and validates the OpenAPI document at path.
func LoadContract(ctx context.Context, path string) (*Contract, error) {
	loader := openapi3.NewLoader()
	loader.Context = ctx
	doc, err := loader.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("imstest: load OpenAPI spec %s: %w", path, err)
	}
	// The IMS spec has two defects that do not concern the image records:
	// examples that do not match their schemas (example: True on a boolean
	// with minLength) and operationIds shared by several v2 operations. The
	// first is skipped by option, the second filtered out below; anything
	// else makes the spec unusable as a contract.
	err = doc.Validate(ctx, openapi3.DisableExamplesValidation(), openapi3.EnableMultiError())
	if err = withoutDuplicateOperationIDs(err); err != nil {
		return nil, fmt.Errorf("imstest: OpenAPI spec %s is invalid: %w", path, err)
	}
	return &Contract{doc: doc}, nil
}

// withoutDuplicateOperationIDs drops DuplicateOperationIDError from a
// validation result.
func withoutDuplicateOperationIDs(err error) error {
	if err == nil {
		return nil
	}
	var me openapi3.MultiError
	if errors.As(err, &me) {
		var keep openapi3.MultiError
		for _, e := range me {
			if e = withoutDuplicateOperationIDs(e); e != nil {
				keep = append(keep, e)
			}
		}
		if len(keep) == 0 {
			return nil
		}
		return keep
	}
	var dup *openapi3.DuplicateOperationIDError
	if errors.As(err, &dup) {
		return nil
	}
	return err
}

// gatewayStatus reports statuses produced by the CSM API gateway rather than
// IMS; the IMS spec does not describe them, so they are not validated.
func gatewayStatus(code int) bool {
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// gatewayNoRoute reports the answer of Envoy with no route to IMS (404,
// empty body, no content type): the gateway's, not IMS's.
func gatewayNoRoute(status int, header http.Header, body []byte) bool {
	return status == http.StatusNotFound && len(body) == 0 && header.Get("Content-Type") == ""
}

// Check validates one exchange on the image routes (/v3/images and
// /v3/images/{image_id}, optionally under /apis/ims). reqBody is the request
// body sent (nil if none). Responses with a status the spec does not list
// fail, except the gateway statuses 401, 403, 502, 503 and 504 and the
// gateway's 404 with an empty body (no route to IMS).
func (c *Contract) Check(ctx context.Context, req *http.Request, reqBody []byte, status int, header http.Header, body []byte) error {
	path := strings.TrimPrefix(req.URL.Path, "/apis/ims")
	tmpl, params := "", map[string]string{}
	switch {
	case path == "/v3/images":
		tmpl = "/v3/images"
	case strings.HasPrefix(path, "/v3/images/") && !strings.Contains(path[len("/v3/images/"):], "/"):
		tmpl = "/v3/images/{image_id}"
		params["image_id"] = path[len("/v3/images/"):]
	default:
		return fmt.Errorf("contract: %s %s is not an IMS image route", req.Method, req.URL.Path)
	}
	item := c.doc.Paths.Value(tmpl)
	if item == nil {
		return fmt.Errorf("contract: spec has no path %s", tmpl)
	}
	op := item.GetOperation(req.Method)
	if op == nil {
		return fmt.Errorf("contract: spec has no %s %s", req.Method, tmpl)
	}
	opts := &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		SchemaValidationOptions: []openapi3.SchemaValidationOption{
			openapi3.WithStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC4122)),
		},
	}
	route := &routers.Route{Spec: c.doc, Path: tmpl, PathItem: item, Method: req.Method, Operation: op}
	r2 := req.Clone(ctx)
	r2.Body = io.NopCloser(bytes.NewReader(reqBody))
	in := &openapi3filter.RequestValidationInput{Request: r2, PathParams: params, Route: route, Options: opts}
	var errs []error
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
		errs = append(errs, fmt.Errorf("request: %w", err))
	}
	if !gatewayStatus(status) && !gatewayNoRoute(status, header, body) {
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: opts}
		out.SetBodyBytes(body)
		if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
			errs = append(errs, fmt.Errorf("response %d: %w", status, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("contract: %s %s: %w", req.Method, req.URL.Path, errors.Join(errs...))
	}
	return nil
}

// Transport returns a RoundTripper that sends through next (nil:
// http.DefaultTransport), checks every exchange and hands violations to
// report. The response passes through unchanged.
func (c *Contract) Transport(next http.RoundTripper, report func(error)) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		var reqBody []byte
		if req.Body != nil {
			b, err := io.ReadAll(req.Body)
			req.Body.Close()
			if err != nil {
				return nil, err
			}
			reqBody = b
			req = req.Clone(req.Context())
			req.Body = io.NopCloser(bytes.NewReader(b))
		}
		resp, err := next.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if err != nil {
			return resp, nil // let the caller see the truncated body
		}
		if cerr := c.Check(req.Context(), req, reqBody, resp.StatusCode, resp.Header, body); cerr != nil {
			report(cerr)
		}
		return resp, nil
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
