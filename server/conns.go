package server

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// connLimiter is a net.Listener that caps open connections, in all
// (Options.MaxConns) and per client address (Options.MaxConnsPerClient;
// an IPv6 client is its /64; trusted proxies are exempt). A connection over a cap is answered with a
// short 503 and closed at once, so that a flood of idle or slow clients
// costs no more than the caps in file descriptors, and the accept loop
// never blocks on them.
type connLimiter struct {
	net.Listener
	s            *Server
	max, perPeer int // < 0: no cap

	mu    sync.Mutex
	open  int
	peers map[netip.Addr]int

	lastWarn atomic.Int64 // unix nanoseconds of the last "rejected" log line
}

// limitListener wraps ln with the connection caps of s's Options.
func (s *Server) limitListener(ln net.Listener) net.Listener {
	return &connLimiter{Listener: ln, s: s, max: s.opts.MaxConns, perPeer: s.opts.MaxConnsPerClient,
		peers: map[netip.Addr]int{}}
}

// busyResponse is what a connection over a cap gets before it is closed.
var busyResponse = func() []byte {
	body := `{"error":{"message":"too many open connections; retry later","type":"rate_limit_error","param":null,"code":"too_many_connections"}}`
	return fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"+
		"Connection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}()

// Accept implements net.Listener.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer := peerAddr(c.RemoteAddr())
		reason := l.admit(peer)
		if reason == "" {
			l.s.m.connsOpen.Inc()
			return &limitedConn{Conn: c, l: l, peer: peer}, nil
		}
		l.s.m.connsRejected.WithLabelValues(reason).Inc()
		if now := time.Now().UnixNano(); now-l.lastWarn.Load() > int64(10*time.Second) {
			l.lastWarn.Store(now)
			l.s.log.Warn("connection refused", "reason", reason, "remote", peer.String(),
				"max_conns", l.max, "max_conns_per_client", l.perPeer)
		}
		// A fresh socket's send buffer takes the short answer at once; the
		// deadline only guards against the impossible.
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Write(busyResponse)
		_ = c.Close()
	}
}

// admit counts a new connection from peer, or says which cap it exceeds.
func (l *connLimiter) admit(peer netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max >= 0 && l.open >= l.max {
		return "max_conns"
	}
	perPeer := l.perPeer >= 0 && peer.IsValid() && !l.s.trusted(peer)
	if perPeer && l.peers[clientKey(peer)] >= l.perPeer {
		return "max_conns_per_client"
	}
	l.open++
	if peer.IsValid() {
		l.peers[clientKey(peer)]++
	}
	return ""
}

// clientKey is what the per-client cap counts: the address, or for IPv6
// its /64, which one host usually holds whole.
func clientKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// release uncounts a closed connection from peer.
func (l *connLimiter) release(peer netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if peer.IsValid() {
		k := clientKey(peer)
		if l.peers[k]--; l.peers[k] <= 0 {
			delete(l.peers, k)
		}
	}
	l.s.m.connsOpen.Dec()
}

// limitedConn releases its slot once, on the first Close.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	peer netip.Addr
	once sync.Once
}

// Close implements net.Conn.
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.peer) })
	return err
}

// peerAddr is the IP address of a connection's remote end (invalid when
// it has none, e.g. a Unix socket).
func peerAddr(a net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	return ip.Unmap().WithZone("")
}
