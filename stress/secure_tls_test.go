package stress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// This file holds the TLS side of the secure scenario: a self-signed certificate, TLS
// client connections chosen by ALPN, and abuse of the TLS port.

// secureWire is how a client of the secure scenario reaches the server: HTTP/2 or
// HTTP/1.1, chosen by ALPN in the TLS handshake, and the RPC protocol over it.
type secureWire struct {
	name string
	h2   bool
	opts []connect.ClientOption
}

// secureWires are the wires clients are spread over: gRPC needs HTTP/2 (trailers), and
// HTTP/1.1 carries Connect and gRPC-Web (what browsers use).
var secureWires = []secureWire{
	{"HTTP/2 Connect", true, nil},
	{"HTTP/2 gRPC", true, []connect.ClientOption{connect.WithGRPC()}},
	{"HTTP/1.1 Connect", false, nil},
	{"HTTP/1.1 gRPC-Web", false, []connect.ClientOption{connect.WithGRPCWeb()}},
}

// Kinds of TLS-level abuse of the main port.
const (
	abuseGarbage   = iota // random bytes instead of a ClientHello, then FIN
	abusePlainHTTP        // an HTTP/1.1 request in clear on the TLS port
	abuseALPN             // a ClientHello offering only protocols the server does not speak
	abuseStall            // a completed handshake, then nothing
	abuseSilent           // a TCP connection that sends nothing at all
	abuseKinds
)

var abuseNames = [abuseKinds]string{"garbage instead of a ClientHello", "HTTP in clear on the TLS port", "unknown ALPN",
	"handshake, then nothing", "TCP connection, no ClientHello"}

// selfSigned writes a self-signed ECDSA P-256 certificate for 127.0.0.1 and its key into
// dir, and returns their files and a pool that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "actionsync stress"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

// tlsPools hands out clients over TLS, perConn to a pool of connections: HTTP/2 clients
// of a pool share one connection, HTTP/1.1 clients one connection per call under way.
// It counts the handshakes by the protocol ALPN chose, and fails a handshake that chose
// another protocol than the pool's.
type tlsPools struct {
	t          *testing.T
	roots      *x509.CertPool
	perConn    int
	handshakes [2]atomic.Int64 // [0] http/1.1, [1] h2

	mu    sync.Mutex
	all   []*conns
	cur   [2]*conns
	users [2]int
}

// newConns returns a pool of TLS connections of its own, HTTP/2 or HTTP/1.1.
func (tp *tlsPools) newConns(h2 bool) *conns {
	c := newConns(tp.t, 0, 0)
	var p http.Protocols
	want, i := "http/1.1", 0
	cfg := &tls.Config{RootCAs: tp.roots}
	if h2 {
		p.SetHTTP2(true)
		want, i = "h2", 1
	} else {
		p.SetHTTP1(true)
		cfg.NextProtos = []string{"http/1.1"}
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.NegotiatedProtocol != want {
			return fmt.Errorf("ALPN chose %q, want %q", cs.NegotiatedProtocol, want)
		}
		tp.handshakes[i].Add(1)
		return nil
	}
	c.tr.Protocols = &p
	c.tr.TLSClientConfig = cfg
	tp.mu.Lock()
	tp.all = append(tp.all, c)
	tp.mu.Unlock()
	return c
}

// client returns a client over w, on the current pool of its HTTP version.
func (tp *tlsPools) client(url string, w secureWire) actionsyncv1connect.SyncServiceClient {
	i := 0
	if w.h2 {
		i = 1
	}
	tp.mu.Lock()
	c := tp.cur[i]
	if c == nil || tp.users[i] == tp.perConn {
		tp.mu.Unlock()
		c = tp.newConns(w.h2)
		tp.mu.Lock()
		tp.cur[i], tp.users[i] = c, 0
	}
	tp.users[i]++
	tp.mu.Unlock()
	return c.sync(url, w.opts...)
}

// count returns how many pools were made.
func (tp *tlsPools) count() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return len(tp.all)
}

// closeAll closes every connection of every pool.
func (tp *tlsPools) closeAll() {
	tp.mu.Lock()
	all := tp.all
	tp.cur = [2]*conns{}
	tp.mu.Unlock()
	for _, c := range all {
		c.close()
	}
}

// tlsAbuse sends one quick kind of abuse to the TLS port at addr and returns the answer
// ("closed", "alert", "400", "no application protocol") and how long it took, or an
// error if it was not an answer wanted within bound.
func tlsAbuse(rng *rand.Rand, kind int, addr string, roots *x509.CertPool, bound time.Duration) (string, time.Duration, error) {
	start := time.Now()
	conn, err := net.DialTimeout("tcp", addr, bound)
	if err != nil {
		return "", 0, fmt.Errorf("dial: %w (the server stopped accepting?)", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(start.Add(bound))
	switch kind {
	case abuseGarbage:
		// Random bytes, then FIN: whatever record they seem to start, the server reads to
		// the end of its input and must give up.
		b := randBytes(rng, 1+rng.IntN(2000))
		if _, err := conn.Write(b); err != nil && !isReset(err) {
			return "", time.Since(start), fmt.Errorf("write: %w", err)
		}
		_ = conn.(*net.TCPConn).CloseWrite()
		answer, err := readToClose(conn)
		if err == nil && answer != "closed" && answer != "alert" {
			err = fmt.Errorf("got %s, want a TLS alert or a closed connection", answer)
		}
		return answer, time.Since(start), err
	case abusePlainHTTP:
		method := []string{"GET /", "POST /actionsync.v1.SyncService/Dispatch", "HEAD /", "PUT /", "OPTIONS /actionsync.v1.SyncService/Subscribe"}[rng.IntN(5)]
		fmt.Fprintf(conn, "%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", method, addr)
		answer, err := readToClose(conn)
		if err == nil && answer != "400 Client sent an HTTP request to an HTTPS server." {
			err = fmt.Errorf("got %q, want 400 %q", answer, "Client sent an HTTP request to an HTTPS server.")
		}
		return answer, time.Since(start), err
	default: // abuseALPN
		protos := []string{"spdy/3.1", "h2c", "h3", "grpc-exp", "http/1.0", "x-" + hex.EncodeToString(randBytes(rng, 1+rng.IntN(8)))}
		offer := []string{protos[rng.IntN(len(protos))]}
		if rng.IntN(2) == 0 {
			offer = append(offer, protos[rng.IntN(len(protos))])
		}
		host, _, _ := net.SplitHostPort(addr)
		tc := tls.Client(conn, &tls.Config{RootCAs: roots, ServerName: host, NextProtos: offer})
		err := tc.Handshake()
		switch {
		case err == nil:
			return "handshake " + tc.ConnectionState().NegotiatedProtocol, time.Since(start), fmt.Errorf("offering %q: handshake done with ALPN %q, want no application protocol", offer, tc.ConnectionState().NegotiatedProtocol)
		case !strings.Contains(err.Error(), "no application protocol"):
			return "error", time.Since(start), fmt.Errorf("offering %q: %v, want no application protocol", offer, err)
		}
		if answer, err := readToClose(conn); err != nil {
			return answer, time.Since(start), fmt.Errorf("after the refused handshake: %w", err)
		}
		return "no application protocol", time.Since(start), nil
	}
}

// tlsStall completes a handshake choosing h2 or http/1.1 and then sends nothing: the
// server must close the connection within bound. It returns "<protocol> closed" and how
// long it took.
func tlsStall(addr string, roots *x509.CertPool, h2 bool, bound time.Duration) (string, time.Duration, error) {
	start := time.Now()
	proto := "http/1.1"
	if h2 {
		proto = "h2"
	}
	d := &net.Dialer{Timeout: bound}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{proto}})
	if err != nil {
		return "", time.Since(start), fmt.Errorf("handshake: %w", err)
	}
	defer conn.Close()
	if got := conn.ConnectionState().NegotiatedProtocol; got != proto {
		return "", time.Since(start), fmt.Errorf("ALPN chose %q, want %q", got, proto)
	}
	_ = conn.SetDeadline(start.Add(bound))
	// An HTTP/2 server sends its SETTINGS first: read and drop until the close.
	_, err = io.Copy(io.Discard, conn)
	took := time.Since(start)
	if err != nil && !isReset(err) {
		return "open", took, fmt.Errorf("%s: not closed within %v: %w", proto, bound, err)
	}
	return proto + " closed", took, nil
}

// tcpSilent opens a TCP connection and sends nothing, not even a ClientHello: the
// server must close it within bound.
func tcpSilent(addr string, bound time.Duration) (string, time.Duration, error) {
	start := time.Now()
	conn, err := net.DialTimeout("tcp", addr, bound)
	if err != nil {
		return "", 0, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(start.Add(bound))
	answer, err := readToClose(conn)
	if err == nil && answer != "closed" && answer != "alert" {
		err = fmt.Errorf("got %s, want a closed connection (or a TLS alert)", answer)
	}
	return answer, time.Since(start), err
}

// readToClose reads what the server sends until it closes the connection, and names
// it: "closed" (nothing), "alert" (a TLS alert record), "<status> <body>" (an HTTP
// answer), or "bytes"; an error if the connection is still open at its deadline.
func readToClose(conn net.Conn) (string, error) {
	b, err := io.ReadAll(io.LimitReader(conn, 64<<10))
	if err != nil && !isReset(err) {
		return "open", fmt.Errorf("not closed: %w (after %d bytes)", err, len(b))
	}
	switch {
	case len(b) == 0:
		return "closed", nil
	case b[0] == 0x15: // an alert record
		return "alert", nil
	case strings.HasPrefix(string(b), "HTTP/1."):
		head, body, _ := strings.Cut(string(b), "\r\n\r\n")
		line, _, _ := strings.Cut(head, "\r\n")
		status := ""
		if f := strings.Fields(line); len(f) > 1 {
			status = f[1]
		}
		return status + " " + strings.TrimSpace(body), nil
	default:
		return "bytes", nil
	}
}
