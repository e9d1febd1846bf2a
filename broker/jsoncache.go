package broker

import (
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
)

// DefaultJSONCacheBytes is the default bound of a JSONCache: 64 MiB.
const DefaultJSONCacheBytes = 64 << 20

// JSONCache produces the protobuf JSON encoding of entries for JSON subscribers and keeps
// the most recent ones, up to a byte bound: while an action is being fanned out, every
// JSON subscriber shares one encoding, and old entries (a replayed history) do not keep
// theirs. It is safe for concurrent use.
type JSONCache struct {
	max int

	mu    sync.Mutex
	held  []*Entry // entries whose JSON is cached, oldest first
	start int      // index of the oldest in held
	bytes int
}

// NewJSONCache returns a cache that holds at most maxBytes of JSON (0: the default).
func NewJSONCache(maxBytes int) *JSONCache {
	if maxBytes <= 0 {
		maxBytes = DefaultJSONCacheBytes
	}
	return &JSONCache{max: maxBytes}
}

// JSON returns e's action in protobuf JSON encoding. The result must not be modified.
func (c *JSONCache) JSON(e *Entry) ([]byte, error) {
	if js := e.json.Load(); js != nil {
		return *js, nil
	}
	a, err := e.Decode()
	if err != nil {
		return nil, err
	}
	js, err := protojson.Marshal(a)
	if err != nil {
		return nil, err
	}
	if len(js) > c.max {
		return js, nil // too large to keep
	}
	if !e.json.CompareAndSwap(nil, &js) {
		return *e.json.Load(), nil // another subscriber was first
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = append(c.held, e)
	c.bytes += len(js)
	for c.bytes > c.max && c.start < len(c.held) {
		old := c.held[c.start]
		c.held[c.start] = nil
		c.start++
		if p := old.json.Swap(nil); p != nil {
			c.bytes -= len(*p)
		}
	}
	// Compact when the dropped prefix is half the slice.
	if c.start > len(c.held)/2 {
		n := copy(c.held, c.held[c.start:])
		clear(c.held[n:])
		c.held, c.start = c.held[:n], 0
	}
	return js, nil
}

// Bytes returns how many bytes of JSON the cache holds.
func (c *JSONCache) Bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
