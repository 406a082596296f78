package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// serveLoopback runs s.Serve on a random port of 127.0.0.1 until the test
// ends and returns the listening address.
func serveLoopback(t *testing.T, gen Generator, opts Options) (*Server, string) {
	t.Helper()
	if gen == nil {
		gen = NewFakeGenerator(8, 1, digits)
	}
	s, err := New(gen, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-served:
		case <-time.After(20 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return s, ln.Addr().String()
}

// loopbackFrom reports whether this machine can dial from the loopback
// address ip (Linux routes all of 127/8 to lo; some systems only .1).
func loopbackFrom(t *testing.T, ip string) bool {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: time.Second}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// dialFrom opens a TCP connection to addr from the local address ip ("" for
// any).
func dialFrom(ip, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if ip != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)}
	}
	return d.Dial("tcp", addr)
}

// getFrom sends one GET from the local address ip and returns the status
// and the time it took.
func getFrom(t *testing.T, ip, addr, path string) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	c, err := dialFrom(ip, addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", path, ip, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

// metricValue scrapes /metrics (from 127.0.0.1) for one series.
func metricValue(t *testing.T, addr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// slowBody opens a connection from ip that announces a 60000-byte JSON
// body and then sends one byte every 200 ms. It reports when the server
// closed the connection (or answered), and the status line it got, if
// any; it gives up after limit.
func slowBody(ip, addr, path string, hdr string, limit time.Duration, opened chan<- struct{}) (closedAfter time.Duration, status string, err error) {
	c, err := dialFrom(ip, addr)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	start := time.Now()
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: 60000\r\n\r\n{", path, hdr); err != nil {
		return 0, "", err
	}
	opened <- struct{}{}
	buf := make([]byte, 512)
	for i := 0; time.Since(start) < limit && i < 10000; i++ {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		if n > 0 {
			line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
			return time.Since(start), line, nil
		}
		if ne, ok := err.(net.Error); err != nil && !(ok && ne.Timeout()) {
			return time.Since(start), "", nil // closed or reset
		}
		if _, err := c.Write([]byte(" ")); err != nil {
			return time.Since(start), "", nil
		}
	}
	return limit, "", fmt.Errorf("still open after %v", limit)
}

// TestSlowBodies: 300 connections that each announce a 60000-byte body and
// send a byte every 200 ms. While they are open /healthz answers within
// 2 s, and the body timeout (2 s here; --body-timeout) closes all of them
// with a 408 well within 60 s.
func TestSlowBodies(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 300 connections for several seconds; skipped with -short")
	}
	const conns = 300
	opts := Options{BodyTimeout: 2 * time.Second, HeaderTimeout: 2 * time.Second}
	// The attack comes from 127.0.0.2 and .3, 150 connections each (under
	// the default per-client cap of 256); probes from 127.0.0.1.
	attackers := []string{"127.0.0.2", "127.0.0.3"}
	if !loopbackFrom(t, attackers[0]) || !loopbackFrom(t, attackers[1]) {
		t.Log("cannot dial from 127.0.0.2: all connections from 127.0.0.1, no per-client cap")
		attackers = []string{"127.0.0.1"}
		opts.MaxConnsPerClient = -1
	}
	_, addr := serveLoopback(t, nil, opts)
	type res struct {
		after  time.Duration
		status string
		err    error
	}
	results := make(chan res, conns)
	opened := make(chan struct{}, conns)
	start := time.Now()
	for i := range conns {
		go func() {
			a, st, err := slowBody(attackers[i%len(attackers)], addr, "/v1/images/generations",
				"Content-Type: application/json\r\n", 60*time.Second, opened)
			results <- res{a, st, err}
		}()
	}
	for range conns {
		select {
		case <-opened:
		case r := <-results:
			t.Fatalf("a slow connection failed to open: %v", r.err)
		case <-time.After(30 * time.Second):
			t.Fatal("slow connections did not open within 30 s")
		}
	}
	open := metricValue(t, addr, "ddpm_http_connections_open")
	var worst time.Duration
	for range 3 {
		code, took := getFrom(t, "127.0.0.1", addr, "/healthz")
		if code != 200 {
			t.Errorf("healthz: %d", code)
		}
		worst = max(worst, took)
	}
	t.Logf("%d slow connections opened in %v; %.0f connections open; /healthz took at most %v",
		conns, time.Since(start).Round(time.Millisecond), open, worst)
	if open < conns {
		t.Errorf("only %.0f connections open, want >= %d", open, conns)
	}
	if worst > 2*time.Second {
		t.Errorf("/healthz took %v with %d slow connections open, want < 2 s", worst, conns)
	}
	var last time.Duration
	statuses := map[string]int{}
	for range conns {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		last = max(last, r.after)
		statuses[r.status]++
	}
	t.Logf("all %d slow connections closed after at most %v: %v", conns, last.Round(time.Millisecond), statuses)
	if last > 60*time.Second {
		t.Errorf("slowest connection closed after %v, want < 60 s", last)
	}
	if statuses["HTTP/1.1 408 Request Timeout"] == 0 {
		t.Errorf("no 408 answers: %v", statuses)
	}
	deadline := time.Now().Add(5 * time.Second)
	for metricValue(t, addr, "ddpm_http_connections_open") > 1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := metricValue(t, addr, "ddpm_http_connections_open"); n > 1 {
		t.Errorf("%.0f connections still counted open", n)
	}
}

// TestRefusedBodyNotRead: a request refused on its headers (no API key,
// wrong content type, too large) is answered at once and its connection
// closed, although its body has barely begun (before: the server read the
// whole slow body first).
func TestRefusedBodyNotRead(t *testing.T) {
	_, addr := serveLoopback(t, nil, Options{APIKey: "k", BodyTimeout: 30 * time.Second, MaxBodyBytes: 50000})
	tests := []struct {
		name, hdr, want string
	}{
		{"no key", "Content-Type: application/json\r\n", "HTTP/1.1 401 Unauthorized"},
		{"lower-case scheme, text/plain", "Authorization: bearer k\r\nContent-Type: text/plain\r\n", "HTTP/1.1 415 Unsupported Media Type"},
		{"too large", "Authorization: Bearer k\r\nContent-Type: application/json\r\n", "HTTP/1.1 413 Request Entity Too Large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opened := make(chan struct{}, 1)
			after, status, err := slowBody("", addr, "/v1/jobs", tc.hdr, 5*time.Second, opened)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("answered %q after %v", status, after.Round(time.Millisecond))
			if status != tc.want || after > time.Second {
				t.Errorf("got %q after %v, want %q within 1 s", status, after, tc.want)
			}
		})
	}
	// And the connection is closed after the answer: no further bytes.
	c, err := dialFrom("", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 401 || !resp.Close {
		t.Errorf("status %d, close %v", resp.StatusCode, resp.Close)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Logf("after the answer: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("connection still open after the 401 (%d body bytes)", len(rest))
	}
}

// TestConnLimits: connections over MaxConnsPerClient from one address, or
// over MaxConns in all, get a 503 and are closed at accept; other clients
// and trusted proxies (exempt from the per-client cap) are served.
func TestConnLimits(t *testing.T) {
	if !loopbackFrom(t, "127.0.0.2") || !loopbackFrom(t, "127.0.0.3") {
		t.Skip("cannot dial from 127.0.0.2 and 127.0.0.3 here")
	}
	proxy := netip.MustParsePrefix("127.0.0.3/32")
	_, addr := serveLoopback(t, nil, Options{MaxConns: 8, MaxConnsPerClient: 3, TrustedProxies: []netip.Prefix{proxy}})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	hold := func(ip string) {
		t.Helper()
		c, err := dialFrom(ip, addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// refused reports whether a new connection from ip is turned away.
	refused := func(ip string) bool {
		t.Helper()
		c, err := dialFrom(ip, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return true // reset before the answer could be read
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}
	for range 3 {
		hold("127.0.0.2")
	}
	if !refused("127.0.0.2") {
		t.Error("a 4th connection from 127.0.0.2 was accepted (per-client cap 3)")
	}
	if refused("127.0.0.1") {
		t.Error("127.0.0.1 was refused while only 127.0.0.2 is at its cap")
	}
	for range 5 { // the trusted proxy is exempt: 3 + 5 = 8 open
		hold("127.0.0.3")
	}
	if code, _ := getFrom(t, "127.0.0.3", addr, "/healthz"); code != http.StatusServiceUnavailable {
		// 8 held: the next connection exceeds MaxConns.
		t.Errorf("9th connection: %d, want 503", code)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _ := getFrom(t, "127.0.0.2", addr, "/healthz")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing, /healthz still %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := metricValue(t, addr, `ddpm_http_connections_rejected_total{reason="max_conns_per_client"}`); v < 1 {
		t.Errorf("max_conns_per_client rejections %v", v)
	}
	if v := metricValue(t, addr, `ddpm_http_connections_rejected_total{reason="max_conns"}`); v < 1 {
		t.Errorf("max_conns rejections %v", v)
	}
}

// TestTimeoutsSpareLongWork: the body, header and write timeouts bound
// slow clients, not long work. A generation and an event stream that take
// several times WriteTimeout and BodyTimeout still complete under Serve.
func TestTimeoutsSpareLongWork(t *testing.T) {
	f, _ := slowFake(10 * time.Millisecond)
	_, addr := serveLoopback(t, f, Options{BodyTimeout: 150 * time.Millisecond, WriteTimeout: 150 * time.Millisecond,
		HeaderTimeout: 150 * time.Millisecond})
	base := "http://" + addr
	start := time.Now()
	resp, err := http.Post(base+"/v1/images/generations", "application/json", strings.NewReader(`{"steps":60}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("long generation: %d %s", resp.StatusCode, body)
	}
	decodeImages(t, body)
	t.Logf("generation of %v answered", time.Since(start).Round(time.Millisecond))

	resp, err = http.Post(base+"/v1/jobs", "application/json", strings.NewReader(`{"steps":60}`))
	if err != nil {
		t.Fatal(err)
	}
	var st JobStatus
	decodeJSON(t, resp, &st)
	resp, err = http.Get(base + "/v1/jobs/" + st.ID + "/events")
	if err != nil {
		t.Fatal(err)
	}
	events, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(events), "event: done") || !strings.Contains(string(events), `"state":"succeeded"`) {
		t.Errorf("event stream ended without success: %.300s", events)
	}
}

func decodeJSON(t *testing.T, resp *http.Response, v any) {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%d %q: %v", resp.StatusCode, b, err)
	}
}

// TestConnCountUnderLoad: many short requests from a few goroutines leave
// the open-connection count at zero afterwards (every slot is released).
func TestConnCountUnderLoad(t *testing.T) {
	_, addr := serveLoopback(t, nil, Options{MaxConns: 16, MaxConnsPerClient: 16})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				code, _ := getFrom(t, "", addr, "/healthz")
				if code != 200 {
					t.Errorf("healthz %d", code)
					return
				}
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for metricValue(t, addr, "ddpm_http_connections_open") > 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := metricValue(t, addr, "ddpm_http_connections_open"); n > 1 { // 1: the scrape itself
		t.Errorf("%.0f connections counted open after the load", n)
	}
}

func TestClientKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1": "192.0.2.1", "2001:db8:1:2:3:4:5:6": "2001:db8:1:2::", "2001:db8:1:2::ff": "2001:db8:1:2::", "::1": "::",
	} {
		if got := clientKey(netip.MustParseAddr(in)); got.String() != want {
			t.Errorf("clientKey(%s) = %s, want %s", in, got, want)
		}
	}
}
