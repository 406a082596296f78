package server

import (
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Options configure a Server. The zero value of each field takes the
// default named in its comment.
type Options struct {
	MaxBatch     int           // most images per model batch (default 8)
	QueueSize    int           // most requests waiting for the device; more get 429 (default 64)
	Timeout      time.Duration // per-request limit, queueing included (default 5m; <0: none)
	DrainTimeout time.Duration // on shutdown, how long running and queued jobs may finish (default 30s)
	APIKey       string        // when set, every route but /healthz, /readyz and the page needs "Authorization: Bearer <key>"
	MaxBodyBytes int64         // request body limit (default DefaultMaxBody: 64 KiB, more for a model that inpaints)
	MaxN         int           // most images per request (default 16)
	MaxSteps     int           // most denoising steps per request (default: the model's T)
	MaxGuidance  float64       // largest guidance_scale (default 20)
	BatchWindow  time.Duration // how long the worker waits for a batch to fill when idle (default 0: never waits)
	JobRetention time.Duration // how long finished jobs stay readable (default 15m)
	MaxJobs      int           // most jobs kept, finished or not (default 1000)
	Logger       *slog.Logger  // default: discard

	// Connection limits, applied by Serve (not by Handler alone).

	// HeaderTimeout is how long a client may take to send a request's
	// headers (default 10s).
	HeaderTimeout time.Duration
	// BodyTimeout is how long a client may take to send a request's body
	// once its headers arrived (default 30s); a slower body is answered 408
	// and its connection closed.
	BodyTimeout time.Duration
	// IdleTimeout is how long a kept-alive connection may wait for its
	// next request (default 60s).
	IdleTimeout time.Duration
	// WriteTimeout is how long writing one answer, or one server-sent
	// event, may take before the connection is dropped (default 60s). It
	// does not limit how long a generation or an event stream lasts.
	WriteTimeout time.Duration
	// MaxConns is the most open connections; more are answered 503 and
	// closed at once (default 1024; <0: no limit).
	MaxConns int
	// MaxConnsPerClient is the most open connections from one client
	// address, an IPv6 client counting as its /64 (default 256; <0: no
	// limit). Trusted proxies are exempt.
	MaxConnsPerClient int
	// MaxHeaderBytes bounds a request's headers (default 64 KiB).
	MaxHeaderBytes int

	// TrustedProxies are the addresses whose X-Forwarded-For and
	// X-Real-IP headers name the client (in the access log). Requests
	// from anywhere else are logged with their TCP peer address.
	TrustedProxies []netip.Prefix
	// CORSOrigins are the web origins ("https://app.example.com", or "*"
	// for any) whose pages may call the API from a browser. None (the
	// default) sends no CORS headers, so browsers keep other sites' pages
	// from reading answers or sending JSON requests.
	CORSOrigins []string
}

func (o *Options) setDefaults(info ModelInfo) error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	dur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MaxBatch, 8)
	def(&o.QueueSize, 64)
	def(&o.MaxN, 16)
	def(&o.MaxSteps, info.TrainSteps)
	def(&o.MaxJobs, 1000)
	def(&o.MaxConns, 1024)
	def(&o.MaxConnsPerClient, 256)
	def(&o.MaxHeaderBytes, 64<<10)
	dur(&o.Timeout, 5*time.Minute)
	dur(&o.DrainTimeout, 30*time.Second)
	dur(&o.JobRetention, 15*time.Minute)
	dur(&o.HeaderTimeout, 10*time.Second)
	dur(&o.BodyTimeout, 30*time.Second)
	dur(&o.IdleTimeout, 60*time.Second)
	dur(&o.WriteTimeout, 60*time.Second)
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxBody(info)
	}
	if o.MaxGuidance == 0 {
		o.MaxGuidance = 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.MaxBatch < 1 || o.MaxBatch > 1024:
		return fmt.Errorf("server: MaxBatch %d outside [1, 1024]", o.MaxBatch)
	case o.QueueSize < 1:
		return fmt.Errorf("server: QueueSize %d must be >= 1", o.QueueSize)
	case o.MaxN < 1 || o.MaxN > 1024:
		return fmt.Errorf("server: MaxN %d outside [1, 1024]", o.MaxN)
	case o.MaxSteps < 1:
		return fmt.Errorf("server: MaxSteps %d must be >= 1", o.MaxSteps)
	case o.MaxBodyBytes < 64:
		return fmt.Errorf("server: MaxBodyBytes %d must be >= 64", o.MaxBodyBytes)
	case !(o.MaxGuidance > 0):
		return fmt.Errorf("server: MaxGuidance %g must be > 0", o.MaxGuidance)
	case o.MaxJobs < 1:
		return fmt.Errorf("server: MaxJobs %d must be >= 1", o.MaxJobs)
	case o.DrainTimeout < 0 || o.BatchWindow < 0 || o.JobRetention < 0:
		return fmt.Errorf("server: DrainTimeout, BatchWindow and JobRetention must not be negative")
	case o.HeaderTimeout < 0 || o.BodyTimeout < 0 || o.IdleTimeout < 0 || o.WriteTimeout < 0:
		return fmt.Errorf("server: HeaderTimeout, BodyTimeout, IdleTimeout and WriteTimeout must not be negative")
	case o.MaxHeaderBytes < 1024:
		return fmt.Errorf("server: MaxHeaderBytes %d must be >= 1024", o.MaxHeaderBytes)
	}
	for _, p := range o.TrustedProxies {
		if !p.IsValid() {
			return fmt.Errorf("server: TrustedProxies: invalid prefix %v", p)
		}
	}
	origins := make([]string, len(o.CORSOrigins)) // the caller's slice stays as it is
	for i, origin := range o.CORSOrigins {
		norm, err := ParseOrigin(origin)
		if err != nil {
			return fmt.Errorf("server: CORSOrigins: %w", err)
		}
		origins[i] = norm
	}
	o.CORSOrigins = origins
	o.TrustedProxies = append([]netip.Prefix(nil), o.TrustedProxies...)
	return nil
}

// ParseOrigin checks a CORS origin: "*" or "scheme://host[:port]" with the
// scheme http or https and nothing after the host, and returns it in lower
// case as browsers send it in the Origin header.
func ParseOrigin(s string) (string, error) {
	if s == "*" {
		return s, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("origin %q: want \"*\" or scheme://host[:port], e.g. https://app.example.com", s)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// ParseTrustedProxy parses a CIDR ("10.0.0.0/8") or a single address
// ("192.0.2.7", taken as /32 or /128) for Options.TrustedProxies.
func ParseTrustedProxy(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("trusted proxy %q: want a CIDR such as 10.0.0.0/8 or an address", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// DefaultMaxBody is the request body limit when Options.MaxBodyBytes is
// 0: 64 KiB, and for a model that inpaints (ModelInfo.Inpaint) also room
// for init_image and mask as base64 PNGs of the model's size stored
// without compression (8-bit RGBA: 4 S^2 + S bytes of pixel rows, plus
// 1 KiB of chunks each).
func DefaultMaxBody(info ModelInfo) int64 {
	n := int64(64 << 10)
	if info.Inpaint {
		s := int64(info.ImageSize)
		png := 4*s*s + s + 1024
		n += 2 * ((png + 2) / 3 * 4)
	}
	return n
}
