package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// A design is how a published message reaches a subscriber's response.
type design string

const (
	// designQueue gives every subscriber's handler a bounded queue: the publish handler
	// puts the frame in each subscriber's queue, and each subscriber's handler (one
	// goroutine per stream) writes and flushes the frames it takes from its queue. A full
	// queue cuts the subscriber off rather than block the publisher.
	designQueue design = "queue"
	// designDirect has the publish handler write and flush the frame into each
	// subscriber's response itself, under the subscriber's mutex, while the subscriber's
	// handler only waits for its stream to end. net/http allows it: a ResponseWriter
	// may be used from another goroutine as long as the uses do not overlap (the
	// mutex) and ServeHTTP has not returned (the handler leaves its board, under
	// the board's lock, before it returns). A subscriber that stops reading blocks the
	// publisher, and so every board behind it: a floor, not a design to ship.
	designDirect design = "direct"
)

// queueLen is how many frames a subscriber's queue holds in designQueue.
const queueLen = 64

// server is the floor's HTTP server. POST /publish takes one message (the request body,
// see wire.go) for the board the message names and answers with the seq it gave it (8
// bytes, little-endian); GET /subscribe?board=N streams the board's messages published
// after the response's headers went out, each framed as an envelope.
// Its zero value is not usable; call newServer.
type server struct {
	design design

	mu     sync.Mutex
	boards map[uint32]*board
}

func newServer(d design) (*server, error) {
	if d != designQueue && d != designDirect {
		return nil, fmt.Errorf("new server: got design %q, want %q or %q", d, designQueue, designDirect)
	}
	return &server{design: d, boards: map[uint32]*board{}}, nil
}

// Handler returns the handler of /publish and /subscribe.
func (s *server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /publish", s.publish)
	mux.HandleFunc("GET /subscribe", s.subscribe)
	return mux
}

// newHTTPServer returns an HTTP server for handler that speaks HTTP/1.1 and h2c (prior
// knowledge), as actionsync serves without TLS.
func newHTTPServer(handler http.Handler) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{Handler: handler, Protocols: &p, ReadHeaderTimeout: 10 * time.Second}
}

func (s *server) board(id uint32) *board {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.boards[id]
	if b == nil {
		b = &board{}
		s.boards[id] = b
	}
	return b
}

// publish reads one message, gives it its board's next seq and hands it to the board's
// subscribers. The frame is built once, around the body as it was read, and shared.
func (s *server) publish(w http.ResponseWriter, r *http.Request) {
	n := r.ContentLength
	if n < headerLen || n > maxMessageLen {
		http.Error(w, fmt.Sprintf("publish: got a %d-byte body, want %d to %d", n, headerLen, maxMessageLen), http.StatusBadRequest)
		return
	}
	frame := make([]byte, envelopeLen+n)
	putEnvelope(frame, int(n))
	msg := frame[envelopeLen:]
	if _, err := io.ReadFull(r.Body, msg); err != nil {
		http.Error(w, fmt.Sprintf("publish: read body: %v", err), http.StatusBadRequest)
		return
	}
	seq := s.board(messageBoard(msg)).publish(frame, s.design)
	var out [8]byte
	binary.LittleEndian.PutUint64(out[:], seq)
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(out[:]) // a failed write is the client's to see
}

// subscribe adds a subscriber to a board for as long as the request lasts.
func (s *server) subscribe(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.URL.Query().Get("board"), 10, 32)
	if err != nil {
		http.Error(w, fmt.Sprintf("subscribe: board: %v", err), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/connect+proto")
	sub := &subscriber{w: w, rc: http.NewResponseController(w), gone: make(chan struct{})}
	if s.design == designQueue {
		sub.queue = make(chan []byte, queueLen)
	}
	b := s.board(uint32(id))
	// Join the board and send the headers under sub.mu, so that a client holding its
	// response headers is subscribed, and a direct publish cannot write before them.
	sub.mu.Lock()
	b.add(sub)
	w.WriteHeader(http.StatusOK)
	err = sub.rc.Flush()
	sub.mu.Unlock()
	// Leaving takes the board's lock, which every delivery holds: once out, no
	// publisher touches w, and ServeHTTP may return.
	defer b.remove(sub)
	if err != nil {
		return
	}
	switch s.design {
	case designQueue:
		for {
			select {
			case frame := <-sub.queue:
				if sub.write(frame) != nil {
					return
				}
			case <-sub.gone:
				return
			case <-r.Context().Done():
				return
			}
		}
	case designDirect:
		select {
		case <-sub.gone:
		case <-r.Context().Done():
		}
	}
}

// board holds a board's seq and subscribers. Deliveries happen under mu, so that each
// subscriber gets the board's messages in seq order.
type board struct {
	mu   sync.Mutex
	seq  uint64
	subs []*subscriber
}

func (b *board) add(sub *subscriber) {
	b.mu.Lock()
	b.subs = append(b.subs, sub)
	b.mu.Unlock()
}

func (b *board) remove(sub *subscriber) {
	b.mu.Lock()
	if i := slices.Index(b.subs, sub); i >= 0 {
		b.subs = slices.Delete(b.subs, i, i+1)
	}
	b.mu.Unlock()
}

// publish stamps frame's message with the board's next seq and delivers it to every
// subscriber as d says; it returns the seq.
func (b *board) publish(frame []byte, d design) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	setMessageSeq(frame[envelopeLen:], b.seq)
	for _, sub := range b.subs {
		if d == designDirect {
			sub.mu.Lock()
			err := sub.write(frame)
			sub.mu.Unlock()
			if err != nil {
				sub.cutOff()
			}
			continue
		}
		select {
		case sub.queue <- frame:
		default:
			sub.cutOff()
		}
	}
	return b.seq
}

// subscriber is one subscribe stream.
type subscriber struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// mu serializes the uses of w while the headers go out, and in designDirect the
	// publishers' writes.
	mu    sync.Mutex
	queue chan []byte // designQueue only
	gone  chan struct{}
	once  sync.Once
}

// write writes one frame and flushes it: one write(2) or one DATA frame per delivery.
func (sub *subscriber) write(frame []byte) error {
	if _, err := sub.w.Write(frame); err != nil {
		return err
	}
	return sub.rc.Flush()
}

// cutOff ends the subscriber's stream: its handler returns.
func (sub *subscriber) cutOff() { sub.once.Do(func() { close(sub.gone) }) }
