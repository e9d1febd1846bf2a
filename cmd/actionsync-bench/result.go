package main

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
)

// result is one JSON object whose keys keep the order they were set in, like the peer's
// output. Values are numbers, strings, bools, slices of those, or nil (null); a NaN or
// infinite number is written as null.
type result struct {
	keys []string
	vals map[string]any
}

func newResult() *result { return &result{vals: map[string]any{}} }

// set adds or replaces key; a new key goes last.
func (r *result) set(key string, v any) *result {
	if _, ok := r.vals[key]; !ok {
		r.keys = append(r.keys, key)
	}
	r.vals[key] = v
	return r
}

// setFirst adds or replaces key and moves it to the front.
func (r *result) setFirst(key string, v any) *result {
	r.keys = slices.DeleteFunc(r.keys, func(k string) bool { return k == key })
	r.keys = slices.Insert(r.keys, 0, key)
	r.vals[key] = v
	return r
}

// get returns key's value, or nil.
func (r *result) get(key string) any { return r.vals[key] }

// MarshalJSON writes the keys in order. Like the peer's JSON.stringify, it leaves <, >
// and & as they are (the targets read ">= 10").
func (r *result) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	buf.WriteByte('{')
	for i, k := range r.keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := enc.Encode(k); err != nil {
			return nil, err
		}
		buf.Truncate(buf.Len() - 1) // Encode ends with a newline
		buf.WriteByte(':')
		if err := enc.Encode(jsonSafe(r.vals[k])); err != nil {
			return nil, err
		}
		buf.Truncate(buf.Len() - 1)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// jsonSafe turns non-finite floats (which encoding/json refuses) into nil.
func jsonSafe(v any) any {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
	case []float64:
		out := make([]any, len(x))
		for i, f := range x {
			out[i] = jsonSafe(f)
		}
		return out
	case *result:
		return x
	}
	return v
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
