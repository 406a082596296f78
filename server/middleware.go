package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// The middleware chain, outermost first: observe (metrics and access log;
// closes connections whose body was refused unread), recover, cors, auth
// (headers only), readBody (content type, size and body timeout). So a
// request is authenticated before a byte of its body is read.

// bodyReadKey marks in the echo context that readBody consumed the body.
const bodyReadKey = "ddpm.bodyRead"

// observe records request counts and latency, labelled from closed sets
// (methodLabel, routeLabel, codeLabel), and writes the access log line.
// A request whose body was not read (refused before readBody, or by it) is
// answered with "Connection: close", and the connection's read deadline is
// moved to now, so that net/http does not wait for the rest of the body.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		r := c.Request()
		if hasBody(r) {
			// Bounds the whole body, read or not: net/http discards an
			// unread body after the handler.
			_ = http.NewResponseController(c.Response().Writer).SetReadDeadline(start.Add(s.opts.BodyTimeout))
		}
		err := next(c)
		if err != nil {
			if hasBody(r) && c.Get(bodyReadKey) == nil && !c.Response().Committed {
				c.Response().Header().Set("Connection", "close")
				_ = http.NewResponseController(c.Response().Writer).SetReadDeadline(time.Now())
			}
			c.Error(err)
		}
		route := s.routeLabel(c.Path())
		method := methodLabel(r.Method)
		status := c.Response().Status
		took := time.Since(start)
		s.m.requests.WithLabelValues(route, method, codeLabel(status)).Inc()
		s.m.latency.WithLabelValues(route).Observe(took.Seconds())
		switch route {
		case "/healthz", "/readyz", "/metrics": // probes and scrapes are not logged
		default:
			s.log.Info("http", "method", method, "route", route, "status", status,
				"ms", took.Milliseconds(), "remote", c.RealIP())
		}
		return nil
	}
}

// hasBody reports whether r announces a body (a Content-Length or chunks).
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// methodLabel is r.Method for the methods of RFC 9110, else "other": a
// client cannot make new metric series with made-up methods.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// routeLabel is the matched route template, or "unmatched".
func (s *Server) routeLabel(path string) string {
	if s.routes[path] {
		return path
	}
	return "unmatched"
}

// codeLabel is the status code as text (at most 500 values), else "other".
func codeLabel(status int) string {
	if status >= 100 && status <= 599 {
		return strconv.Itoa(status)
	}
	return "other"
}

// recover turns a panic in a handler into a logged 500.
func (s *Server) recover(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("panic in handler", "route", c.Path(), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = &APIError{Status: http.StatusInternalServerError, Type: TypeServer, Message: "internal error; see the server log"}
			}
		}()
		return next(c)
	}
}

// corsMethods and corsHeaders are what a preflight may ask for.
const (
	corsMethods = "GET, HEAD, POST, DELETE"
	corsHeaders = "Authorization, Content-Type"
	corsExpose  = "Location, Retry-After, X-DDPM-Seeds, X-DDPM-Classes, X-DDPM-Class-Source"
)

// cors applies Options.CORSOrigins. With none configured it does nothing:
// no Access-Control headers, so a browser lets no other origin read an
// answer, and a cross-origin JSON POST fails its preflight. With origins,
// a request from one of them gets Access-Control-Allow-Origin, and a
// preflight (OPTIONS with Access-Control-Request-Method) is answered 204
// before authentication, as browsers send preflights without credentials.
func (s *Server) cors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if len(s.opts.CORSOrigins) == 0 {
			return next(c)
		}
		r := c.Request()
		h := c.Response().Header()
		h.Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		allow := ""
		if origin != "" {
			switch {
			case slices.Contains(s.opts.CORSOrigins, "*"):
				allow = "*"
			case slices.Contains(s.opts.CORSOrigins, strings.ToLower(origin)):
				allow = origin
			}
		}
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if allow == "" {
			if preflight {
				return &APIError{Status: http.StatusForbidden, Type: TypeInvalidRequest, Code: "cors_origin_not_allowed",
					Message: fmt.Sprintf("origin %q may not call this server (see --cors-origin)", truncate(origin))}
			}
			return next(c)
		}
		h.Set("Access-Control-Allow-Origin", allow)
		if preflight {
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", corsMethods)
			h.Set("Access-Control-Allow-Headers", corsHeaders)
			h.Set("Access-Control-Max-Age", "600")
			return c.NoContent(http.StatusNoContent)
		}
		h.Set("Access-Control-Expose-Headers", corsExpose)
		return next(c)
	}
}

// auth checks the bearer token (constant-time, on SHA-256 digests so that
// the key length does not leak) on every route but health and the page.
// It reads only the headers: an unauthenticated body is never read.
func (s *Server) auth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.opts.APIKey == "" {
			return next(c)
		}
		switch c.Request().URL.Path {
		case "/healthz", "/readyz", "/":
			return next(c)
		}
		tok, ok := bearerToken(c.Request().Header.Get("Authorization"))
		if !ok {
			return &APIError{Status: http.StatusUnauthorized, Type: TypeAuthentication, Code: "invalid_api_key",
				Message: "missing API key: send the header \"Authorization: Bearer <key>\""}
		}
		got := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(got[:], s.apiKey[:]) != 1 {
			return &APIError{Status: http.StatusUnauthorized, Type: TypeAuthentication, Code: "invalid_api_key",
				Message: "incorrect API key"}
		}
		return next(c)
	}
}

// bearerToken returns the credentials of an "Authorization: Bearer <tok>"
// header; the scheme is case-insensitive (RFC 7235, section 2.1).
func bearerToken(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// readBody reads the whole request body (at most MaxBodyBytes, within
// BodyTimeout of its headers) before the handler runs, and then lifts the
// read deadline again, so that long generations and event streams are not
// cut by it. A POST must declare Content-Type application/json (415
// otherwise; this also keeps other sites' pages from sending "simple"
// cross-origin requests). A body announced over the limit is refused
// unread (413), and a body too slow is answered 408.
func (s *Server) readBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Method == http.MethodPost {
			if err := checkJSON(r.Header.Get("Content-Type")); err != nil {
				return err
			}
		}
		if !hasBody(r) {
			return next(c)
		}
		max := s.opts.MaxBodyBytes
		if r.ContentLength > max {
			return tooLarge(max)
		}
		rc := http.NewResponseController(c.Response().Writer)
		data, err := io.ReadAll(io.LimitReader(r.Body, max+1))
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return &APIError{Status: http.StatusRequestTimeout, Type: TypeInvalidRequest,
				Message: fmt.Sprintf("the request body did not arrive within %s", s.opts.BodyTimeout)}
		case err != nil:
			return badRequest("", "reading the request body: %s", truncate(err.Error()))
		case int64(len(data)) > max:
			return tooLarge(max)
		}
		_ = rc.SetReadDeadline(time.Time{})
		c.Set(bodyReadKey, true)
		r.Body = io.NopCloser(bytes.NewReader(data))
		return next(c)
	}
}

// checkJSON accepts the media type application/json, with at most a
// charset parameter of utf-8; anything else is a 415.
func checkJSON(ct string) error {
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil && mt == "application/json" {
		cs, ok := params["charset"]
		if len(params) == 0 || (len(params) == 1 && ok && strings.EqualFold(cs, "utf-8")) {
			return nil
		}
	}
	got := "no Content-Type"
	if ct != "" {
		got = fmt.Sprintf("Content-Type %q", truncate(ct))
	}
	return &APIError{Status: http.StatusUnsupportedMediaType, Type: TypeInvalidRequest, Code: "unsupported_media_type",
		Message: fmt.Sprintf("%s: send the JSON body with \"Content-Type: application/json\"", got)}
}

// clientIP is the echo IPExtractor: the TCP peer, unless the peer is a
// trusted proxy; then X-Forwarded-For is read from the right, skipping
// trusted proxies, and the first other address is the client (else
// X-Real-IP, else the peer).
func (s *Server) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap().WithZone("")
	if !s.trusted(peer) {
		return peer.String()
	}
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		hops := strings.Split(strings.Join(xff, ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // not an address: trust nothing further left
			}
			a = a.Unmap().WithZone("")
			if !s.trusted(a) {
				return a.String()
			}
			peer = a
		}
		return peer.String()
	}
	if a, err := netip.ParseAddr(strings.TrimSpace(r.Header.Get("X-Real-IP"))); err == nil {
		return a.Unmap().WithZone("").String()
	}
	return peer.String()
}

// trusted reports whether a is in Options.TrustedProxies.
func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// echoError formats echo's own errors (unknown route, wrong method) and
// anything a middleware returns in the OpenAI shape.
func (s *Server) echoError(err error, c echo.Context) {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		r := c.Request()
		switch he.Code {
		case http.StatusNotFound:
			msg = fmt.Sprintf("no route %s %s", truncate(r.Method), truncate(r.URL.Path))
		case http.StatusMethodNotAllowed:
			msg = fmt.Sprintf("method %s is not allowed on %s", truncate(r.Method), truncate(r.URL.Path))
		}
		err = &APIError{Status: he.Code, Type: TypeInvalidRequest, Message: msg}
	}
	_ = s.writeError(c, err)
}
