package stress

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// hostileItem is one kind of hostile input: run sends one instance (its details drawn
// from rng) to the server at addr and returns what came back, or an error if that was
// not the precise answer wanted.
type hostileItem struct {
	name string
	run  func(rng *rand.Rand, addr string) (string, error)
}

// TestStress_HostileBytes (scenario 3, guarantee 8 and the resource bounds): a corpus of
// malformed HTTP/1.1 and HTTP/2 input, sent by 4 workers for the whole duration with
// details drawn from the seed: wrong content types, invalid UTF-8, deeply nested JSON,
// huge and truncated varints, truncated Connect envelopes, gRPC-Web length prefixes
// larger than the body, a 1 GiB gzip bomb (unary and in a stream envelope), bodies that
// stall, oversized headers, random byte flips, and malformed HTTP/2 frames (DATA on
// stream 0, oversized frames, garbage HPACK, bad SETTINGS and WINDOW_UPDATE, random
// bytes). Each gets its precise error or a closed connection, within 10 s. Meanwhile a
// publisher dispatches and a canary subscriber receives everything in order, and the
// server's memory stays within baseline + 256 MiB.
func TestStress_HostileBytes(t *testing.T) {
	s := begin(t)
	const (
		workers     = 4
		memoryBound = 256 << 20
	)
	srv := startProc(t, "hostile", "--read-timeout", "2s")
	ctx, cancel := context.WithTimeout(t.Context(), s.duration+2*time.Minute)
	defer cancel()
	addr := srv.addr
	cn := startCanary(t, srv.url, "hostile:canary")
	pub := startPacer(t, s, newConns(t, 0, 0).sync(srv.url), "canary", "hostile:canary", 100, 3, 100, nil)
	base, err := srv.stats(ctx)
	if err != nil {
		t.Fatal(err)
	}

	items := hostileCorpus()
	if only := os.Getenv("STRESS_HOSTILE_ONLY"); only != "" {
		items = slices.DeleteFunc(items, func(it hostileItem) bool { return !strings.Contains(it.name, only) })
	}
	type tally struct {
		runs    int
		answers map[string]int
		fails   []string
	}
	var (
		mu      sync.Mutex
		tallies = map[string]*tally{}
		wg      sync.WaitGroup
	)
	start := time.Now()
	for range workers {
		rng := s.rng()
		wg.Go(func() {
			for time.Since(start) < s.duration && ctx.Err() == nil {
				it := items[rng.IntN(len(items))]
				answer, err := it.run(rng, addr)
				mu.Lock()
				tl := tallies[it.name]
				if tl == nil {
					tl = &tally{answers: map[string]int{}}
					tallies[it.name] = tl
				}
				tl.runs++
				tl.answers[answer]++
				if err != nil && len(tl.fails) < 3 {
					tl.fails = append(tl.fails, err.Error())
				}
				mu.Unlock()
			}
		})
	}
	var peakMem, peakRSS uint64
	for time.Since(start) < s.duration {
		time.Sleep(100 * time.Millisecond)
		if st, err := srv.stats(ctx); err == nil {
			peakMem = max(peakMem, st.GetMemoryBytes())
		} else {
			t.Errorf("the server stopped answering GetStats: %v", err)
			break
		}
		peakRSS = max(peakRSS, srv.rss())
	}
	wg.Wait()

	pub.stop(t)
	var head uint64
	for _, a := range pub.l.acks["hostile:canary"] {
		head = max(head, a.seq)
	}
	cn.f.waitAt(t, "hostile:canary", head, 10*time.Second)
	cn.stop(t)
	checkFollower(t, cn.f, historyOf(t, pub.l, "hostile:canary"), true)
	if srv.exited() {
		t.Fatalf("the server exited: %v\n%s", srv.err, srv.logs())
	}
	if peakMem > base.GetMemoryBytes()+memoryBound {
		t.Errorf("server memory peaked at %s, baseline %s: more than the %s allowed", mib(peakMem), mib(base.GetMemoryBytes()), mib(memoryBound))
	}

	total := 0
	for _, it := range items {
		tl := tallies[it.name]
		if tl == nil {
			s.figure("%-34s not drawn", it.name)
			continue
		}
		total += tl.runs
		s.figure("%-34s %5d sent, answers %v", it.name, tl.runs, tl.answers)
		for _, f := range tl.fails {
			t.Errorf("%s: %s", it.name, f)
		}
	}
	s.figure("%d hostile requests in %v by %d workers; canary: %d actions in order meanwhile, the publisher never failed", total, s.duration, workers, head)
	s.figure("server memory (Go runtime) baseline %s, peak %s (bound: baseline + %s); peak RSS %s", mib(base.GetMemoryBytes()), mib(peakMem), mib(memoryBound), mib(peakRSS))
}

// hostileCorpus returns the kinds of hostile input.
func hostileCorpus() []hostileItem {
	bomb := gzipBomb(1 << 30)
	valid, _ := proto.Marshal(&actionsyncv1.DispatchRequest{Channel: "hostile:fuzz", Actions: []*actionsyncv1.Action{action("", 50)}})
	dispatch := "/actionsync.v1.SyncService/Dispatch"
	subscribe := "/actionsync.v1.SyncService/Subscribe"
	want := func(codes ...string) func(string) bool {
		return func(got string) bool {
			for _, c := range codes {
				if got == c {
					return true
				}
			}
			return false
		}
	}
	h1 := func(name, path, ctype string, extra map[string]string, body func(*rand.Rand) []byte, ok func(string) bool) hostileItem {
		return hostileItem{name, func(rng *rand.Rand, addr string) (string, error) {
			ans, err := http1Exchange(addr, path, ctype, extra, body(rng))
			if err == nil && !ok(ans) {
				err = fmt.Errorf("got %s", ans)
			}
			return ans, err
		}}
	}
	fixed := func(b []byte) func(*rand.Rand) []byte { return func(*rand.Rand) []byte { return b } }
	connectJSON := map[string]string{"Connect-Protocol-Version": "1"}
	return []hostileItem{
		h1("wrong content type", dispatch, "text/plain", nil, fixed([]byte(`{"channel":"x"}`)), want("415")),
		h1("invalid UTF-8 in JSON", dispatch, "application/json", connectJSON, func(rng *rand.Rand) []byte {
			return []byte("{\"channel\":\"hostile:\xff\xfe" + strings.Repeat("\xc3", rng.IntN(8)) + "\",\"actions\":[{\"type\":\"T\"}]}")
		}, want("400 invalid_argument")),
		h1("invalid UTF-8 in proto string", dispatch, "application/proto", connectJSON, func(rng *rand.Rand) []byte {
			b := []byte{0x0a, 4, 'h', 0xff, 0xfe, 'x', 0x12, 5, 0x0a, 3, 'T', 0xc3, 0x28}
			return b
		}, want("400 invalid_argument")),
		h1("deeply nested JSON payload", dispatch, "application/json", connectJSON, func(rng *rand.Rand) []byte {
			d := 101 + rng.IntN(100_000)
			return []byte(`{"channel":"hostile:fuzz","actions":[{"type":"T","payload":` + strings.Repeat("[", d) + strings.Repeat("]", d) + `}]}`)
		}, want("400 invalid_argument")),
		h1("deeply nested proto payload", dispatch, "application/proto", connectJSON, func(rng *rand.Rand) []byte {
			return nestedValue(101 + rng.IntN(2000))
		}, want("400 invalid_argument")),
		h1("huge varint", dispatch, "application/proto", connectJSON, func(rng *rand.Rand) []byte {
			return append([]byte{0x0a}, bytes.Repeat([]byte{0xff}, 10+rng.IntN(20))...)
		}, want("400 invalid_argument")),
		h1("length-delimited past the end", dispatch, "application/proto", connectJSON, func(rng *rand.Rand) []byte {
			return append([]byte{0x12, 0xe8, 0x07}, bytes.Repeat([]byte{0x0a}, rng.IntN(100))...) // 1,000 bytes promised
		}, want("400 invalid_argument")),
		h1("random byte flips (proto)", dispatch, "application/proto", connectJSON, func(rng *rand.Rand) []byte {
			b := bytes.Clone(valid)
			for range 1 + rng.IntN(4) {
				b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
			}
			return b
		}, func(got string) bool { return got == "200" || strings.HasPrefix(got, "400 ") }),
		h1("gzip bomb, 1 GiB (unary)", dispatch, "application/proto", map[string]string{"Connect-Protocol-Version": "1", "Content-Encoding": "gzip"},
			fixed(bomb), want("429 resource_exhausted")),
		h1("gzip bomb, 1 GiB (stream envelope)", subscribe, "application/connect+proto", map[string]string{"Connect-Content-Encoding": "gzip"},
			fixed(envelope(1, bomb)), want("200 resource_exhausted")),
		h1("truncated Connect envelope", subscribe, "application/connect+proto", nil, func(rng *rand.Rand) []byte {
			e := envelope(0, valid)
			return e[:1+rng.IntN(len(e)-1)] // at least a byte: an empty body is no envelope at all
		}, want("200 internal: protocol error")),
		h1("gRPC-Web length prefix past the body", dispatch, "application/grpc-web+proto", nil, func(rng *rand.Rand) []byte {
			e := envelope(0, valid)
			binary.BigEndian.PutUint32(e[1:], uint32(len(valid)+1+rng.IntN(1<<20)))
			return e
		}, want("200 grpc-status 13: protocol error")),
		h1("unknown procedure", "/actionsync.v1.SyncService/Nope", "application/json", connectJSON, fixed([]byte(`{}`)), want("404")),
		hostileItem{"body that stalls", func(rng *rand.Rand, addr string) (string, error) {
			ans, err := http1Stall(addr, dispatch, 20+rng.IntN(1000))
			if err == nil && ans != "closed" && !strings.HasPrefix(ans, "4") && !strings.HasPrefix(ans, "5") {
				err = fmt.Errorf("got %s", ans)
			}
			return ans, err
		}},
		hostileItem{"oversized header (70 KiB)", func(rng *rand.Rand, addr string) (string, error) {
			ans, err := http1Exchange(addr, dispatch, "application/json", map[string]string{"X-Junk": strings.Repeat("a", 70<<10)}, []byte(`{}`))
			if err == nil && ans != "431" {
				err = fmt.Errorf("got %s", ans)
			}
			return ans, err
		}},
		hostileItem{"garbage request line", func(rng *rand.Rand, addr string) (string, error) {
			junk := make([]byte, 10+rng.IntN(500))
			for i := range junk {
				junk[i] = byte(rng.IntN(256))
			}
			return rawExchange(addr, append(junk, "\r\n\r\n"...), func(got string) bool { return got == "400" || got == "closed" })
		}},
		h2Item("HTTP/2 DATA on stream 0", func(*rand.Rand) []byte { return h2frame(0, 0, 0, []byte("x")) }, "goaway PROTOCOL_ERROR"),
		h2Item("HTTP/2 frame past max size", func(rng *rand.Rand) []byte {
			f := h2frame(0, 0, 1, nil)
			n := 1<<20 + 1 + rng.IntN(1<<23) // past the 1 MiB net/http's server reads

			f[0], f[1], f[2] = byte(n>>16), byte(n>>8), byte(n)
			return append(f, make([]byte, 16385)...)
		}, "goaway FRAME_SIZE_ERROR"),
		h2Item("HTTP/2 garbage HPACK", func(rng *rand.Rand) []byte {
			b := make([]byte, 1+rng.IntN(200))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			b[0] |= 0x80 // an indexed field
			b[0] = 0xff  // index far past the tables
			return h2frame(1, 0x5, 1, b)
		}, "goaway COMPRESSION_ERROR"),
		h2Item("HTTP/2 SETTINGS of bad length", func(rng *rand.Rand) []byte {
			return h2frame(4, 0, 0, make([]byte, 1+rng.IntN(5)))
		}, "goaway FRAME_SIZE_ERROR"),
		h2Item("HTTP/2 WINDOW_UPDATE of 0", func(*rand.Rand) []byte { return h2frame(8, 0, 0, []byte{0, 0, 0, 0}) }, "goaway PROTOCOL_ERROR"),
		h2Item("HTTP/2 random bytes", func(rng *rand.Rand) []byte {
			b := make([]byte, 9+rng.IntN(4000))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			return b
		}, ""),
	}
}

// http1Exchange sends one HTTP/1.1 POST with body and returns its answer: the status,
// and the Connect or gRPC error code the body names ("400 invalid_argument",
// "200 grpc-status 3"), or "closed".
func http1Exchange(addr, path, ctype string, headers map[string]string, body []byte) (string, error) {
	var req bytes.Buffer
	fmt.Fprintf(&req, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n", path, addr, ctype, len(body))
	for k, v := range headers {
		fmt.Fprintf(&req, "%s: %s\r\n", k, v)
	}
	req.WriteString("\r\n")
	req.Write(body)
	return rawExchange(addr, req.Bytes(), nil)
}

// rawExchange writes b on a new connection and reads one HTTP/1.1 response; ok, if
// set, decides whether the answer is right.
func rawExchange(addr string, b []byte, ok func(string) bool) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("dial: %w (the server stopped accepting?)", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = conn.Write(b) }() // the server may answer before reading it all
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	var ans string
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err):
		ans = "closed"
	case err != nil:
		return "", fmt.Errorf("no answer: %w", err)
	default:
		data, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if rerr != nil && !isReset(rerr) {
			return "", fmt.Errorf("reading the answer: %w", rerr)
		}
		ans = fmt.Sprint(resp.StatusCode)
		if code := errorCode(resp, data); code != "" {
			ans += " " + code
		}
	}
	if ok != nil && !ok(ans) {
		return ans, fmt.Errorf("got %s", ans)
	}
	return ans, nil
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// errorCode finds the error code in a response: a Connect error body or end-stream
// message, or a gRPC-Web grpc-status (header or trailer frame).
func errorCode(resp *http.Response, body []byte) string {
	body = append(slices.Clip(body), resp.Header.Get("Grpc-Message")...) // trailers-only gRPC-Web
	// A framing error (an envelope cut short) is INTERNAL "protocol error: ..." in
	// connect-go, as in gRPC: the answer names it, to tell it from an internal failure.
	protocolError := func(code string) string {
		if (code == "internal" || code == "grpc-status 13") && (bytes.Contains(body, []byte("protocol error")) || bytes.Contains(body, []byte("protocol%20error"))) {
			return code + ": protocol error"
		}
		if code == "unknown" && bytes.Contains(body, []byte(`"message":"EOF"`)) {
			return code + ": EOF" // an envelope cut before its first byte: no message at all
		}
		return code
	}
	if s := resp.Header.Get("Grpc-Status"); s != "" {
		return protocolError("grpc-status " + s)
	}
	if i := bytes.Index(body, []byte("grpc-status:")); i >= 0 {
		rest := body[i+len("grpc-status:"):]
		if j := bytes.IndexAny(rest, "\r\n"); j >= 0 {
			rest = rest[:j]
		}
		return protocolError("grpc-status " + strings.TrimSpace(string(rest)))
	}
	if i := bytes.Index(body, []byte(`"code":"`)); i >= 0 {
		rest := body[i+len(`"code":"`):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			return protocolError(string(rest[:j]))
		}
	}
	return ""
}

// http1Stall promises a body of n bytes, sends a few and stops; the server's read
// timeout must answer or close.
func http1Stall(addr, path string, n int) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"channel\":", path, addr, n)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
			return "closed", nil
		}
		return "", fmt.Errorf("no answer within 10s: %w", err)
	}
	resp.Body.Close()
	return fmt.Sprint(resp.StatusCode), nil
}

// envelope frames msg as a Connect or gRPC-Web message: flags, big-endian length, msg.
func envelope(flags byte, msg []byte) []byte {
	e := make([]byte, 5, 5+len(msg))
	e[0] = flags
	binary.BigEndian.PutUint32(e[1:], uint32(len(msg)))
	return append(e, msg...)
}

// nestedValue returns a DispatchRequest whose one action's payload is lists nested
// depth deep, in protobuf.
func nestedValue(depth int) []byte {
	// google.protobuf.Value{list_value(6): ListValue{values(1): Value{...}}}, built from
	// the inside out.
	v := []byte{0x08, 0x00} // null_value
	for range depth {
		list := protoField(1, v)
		v = protoField(6, list)
	}
	act := append(protoField(1, []byte("T")), protoField(3, v)...) // type, payload
	return append(protoField(1, []byte("hostile:fuzz")), protoField(2, act)...)
}

// protoField encodes a length-delimited field.
func protoField(num int, b []byte) []byte {
	out := binary.AppendUvarint(nil, uint64(num<<3|2))
	out = binary.AppendUvarint(out, uint64(len(b)))
	return append(out, b...)
}

// gzipBomb returns a gzip stream of size zero bytes (a multiple of 1 MiB), about a
// thousand times smaller: one deflated MiB of zeros, flushed so that it ends on a byte
// boundary, repeated (its back-references only ever reach zeros).
func gzipBomb(size int64) []byte {
	zeros := make([]byte, 1<<20)
	var chunk bytes.Buffer
	fw, _ := flate.NewWriter(&chunk, flate.BestCompression)
	_, _ = fw.Write(zeros)
	_ = fw.Flush()
	var tail bytes.Buffer
	fw2, _ := flate.NewWriter(&tail, flate.BestCompression)
	_ = fw2.Close() // a final empty block
	out := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}
	crc := uint32(0)
	for range size >> 20 {
		out = append(out, chunk.Bytes()...)
		crc = crc32.Update(crc, crc32.IEEETable, zeros)
	}
	out = append(out, tail.Bytes()...)
	out = binary.LittleEndian.AppendUint32(out, crc)
	return binary.LittleEndian.AppendUint32(out, uint32(size))
}

// h2frame encodes an HTTP/2 frame.
func h2frame(typ, flags byte, stream uint32, payload []byte) []byte {
	f := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(f[5:], stream&0x7fffffff)
	return append(f, payload...)
}

var h2ErrCodes = map[uint32]string{0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR", 6: "FRAME_SIZE_ERROR", 9: "COMPRESSION_ERROR", 11: "ENHANCE_YOUR_CALM"}

// h2Item sends the h2c preface and SETTINGS, then what frames returns, and wants a
// GOAWAY with the given answer ("goaway PROTOCOL_ERROR"; "" accepts any GOAWAY) or
// the connection closed, within 10 s.
func h2Item(name string, frames func(*rand.Rand) []byte, want string) hostileItem {
	return hostileItem{name, func(rng *rand.Rand, addr string) (string, error) {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return "", fmt.Errorf("dial: %w (the server stopped accepting?)", err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		msg := append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), h2frame(4, 0, 0, nil)...)
		go func() {
			_, _ = conn.Write(append(msg, frames(rng)...))
			// Then end the input: a frame cut short is not left to the keepalive (30 s).
			_ = conn.(*net.TCPConn).CloseWrite()
		}()
		r := bufio.NewReader(conn)
		for {
			var hdr [9]byte
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
					if want == "" {
						return "closed", nil
					}
					return "closed", nil // closed without GOAWAY: still a closed connection
				}
				return "", fmt.Errorf("no GOAWAY and no close within 10s: %w", err)
			}
			n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
			payload := make([]byte, n)
			if _, err := io.ReadFull(r, payload); err != nil {
				return "closed", nil
			}
			if hdr[3] == 7 && n >= 8 { // GOAWAY
				code := binary.BigEndian.Uint32(payload[4:8])
				ans := "goaway " + h2ErrCodes[code]
				if h2ErrCodes[code] == "" {
					ans = fmt.Sprintf("goaway %d", code)
				}
				if want != "" && ans != want {
					return ans, fmt.Errorf("got %s, want %s", ans, want)
				}
				return ans, nil
			}
		}
	}}
}
