package server

import (
	"errors"
	"fmt"
	"net/http"
)

// Error types, as in the OpenAI API's error.type field.
const (
	TypeInvalidRequest = "invalid_request_error" // bad input: fix the request
	TypeAuthentication = "authentication_error"  // missing or wrong API key
	TypeRateLimit      = "rate_limit_error"      // queue full: retry later
	TypeUnavailable    = "service_unavailable"   // draining for shutdown
	TypeTimeout        = "timeout_error"         // the per-request timeout elapsed
	TypeCancelled      = "cancelled"             // the job was cancelled
	TypeServer         = "server_error"          // the model failed; not the client's fault
)

// APIError is an error answered to a client as JSON in the OpenAI shape
// {"error": {"message", "type", "param", "code"}} with HTTP status Status.
type APIError struct {
	Status  int    // HTTP status code
	Message string // human-readable, names the field and the allowed values
	Type    string // one of the Type* constants
	Param   string // the request field at fault, or ""
	Code    string // machine-readable detail, e.g. "model_not_found", or ""
	// RetryAfter, when > 0, is sent as the Retry-After header in seconds.
	RetryAfter int
}

// Error implements error.
func (e *APIError) Error() string {
	if e.Param != "" {
		return fmt.Sprintf("%d %s: %s (param %s)", e.Status, e.Type, e.Message, e.Param)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message)
}

// errorBody is the JSON body of an error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *APIError) body() errorBody {
	d := errorDetail{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		p := e.Param
		d.Param = &p
	}
	if e.Code != "" {
		c := e.Code
		d.Code = &c
	}
	return errorBody{Error: d}
}

// badRequest is a 400 for a request that cannot be parsed.
func badRequest(param, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}

// invalid is a 422 for a well-formed request with a value out of bounds.
func invalid(param, format string, args ...any) *APIError {
	return &APIError{Status: http.StatusUnprocessableEntity, Type: TypeInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}

// asAPIError converts any error to the APIError to send: APIErrors as they
// are, everything else as a 500 whose message does not leak internals.
func asAPIError(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	return &APIError{Status: http.StatusInternalServerError, Type: TypeServer, Message: "internal error; see the server log"}
}
