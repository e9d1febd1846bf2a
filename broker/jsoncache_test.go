package broker_test

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// TestJSONCache_bound: the cache holds at most its bound of JSON, the newest entries,
// and an entry whose JSON was dropped gets it again, identical.
func TestJSONCache_bound(t *testing.T) {
	t.Parallel()
	const limit = 1000
	c := broker.NewJSONCache(limit)
	entries := make([]*broker.Entry, 100)
	first := make([][]byte, len(entries))
	for i := range entries {
		a := &actionsyncv1.Action{Type: "UPDATE_STAGE_TITLE", Id: fmt.Sprint("id-", i), Channel: "c", Seq: uint64(i + 1)}
		p, err := proto.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		entries[i] = broker.NewEntry(a, p)
		js, err := c.JSON(entries[i])
		if err != nil {
			t.Fatal(err)
		}
		first[i] = js
		if got := c.Bytes(); got > limit {
			t.Fatalf("after %d entries the cache holds %d bytes, limit %d", i+1, got, limit)
		}
	}
	if c.Bytes() < limit/2 {
		t.Errorf("the cache holds %d bytes, want it used (limit %d)", c.Bytes(), limit)
	}
	for i, e := range entries {
		js, err := c.JSON(e)
		if err != nil || string(js) != string(first[i]) {
			t.Fatalf("entry %d again: %s, %v; want %s", i, js, err, first[i])
		}
		var a actionsyncv1.Action
		if err := protojson.Unmarshal(js, &a); err != nil || a.GetSeq() != uint64(i+1) {
			t.Fatalf("entry %d: JSON %s decodes to seq %d, %v", i, js, a.GetSeq(), err)
		}
	}
}
