package service

import (
	"fmt"
	"math"
	"regexp"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// idPattern is the format of action ids and client ids.
var idPattern = regexp.MustCompile(idPatternText)

// validator checks requests against the service's limits. Every failure is a
// *connect.Error whose message names the field and the limit.
type validator struct {
	limits    Limits
	channelRe *regexp.Regexp
	allow     *AllowList
}

func invalid(format string, args ...any) *connect.Error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

func (v *validator) channel(field, name string) *connect.Error {
	if !v.channelRe.MatchString(name) {
		return invalid("%s: %q must match %s", field, name, v.channelRe)
	}
	return nil
}

func clientID(field, id string) *connect.Error {
	if id != "" && !idPattern.MatchString(id) {
		return invalid("%s: %q must match %s", field, id, idPatternText)
	}
	return nil
}

// dispatch checks a whole dispatch request; nothing is applied unless it passes.
func (v *validator) dispatch(req *actionsyncv1.DispatchRequest) *connect.Error {
	if err := v.channel("channel", req.GetChannel()); err != nil {
		return err
	}
	if err := clientID("client_id", req.GetClientId()); err != nil {
		return err
	}
	if n := len(req.GetSentEpoch()); n > maxEpochBytes {
		return invalid("sent_epoch: %d bytes, limit %d", n, maxEpochBytes)
	}
	if req.GetSentAfterSeq() != 0 && req.GetSentEpoch() == "" {
		return invalid("sent_after_seq: requires sent_epoch")
	}
	switch n := len(req.GetActions()); {
	case n == 0:
		return invalid("actions: at least 1 action required")
	case n > v.limits.MaxDispatchActions:
		return invalid("actions: %d actions, limit %d", n, v.limits.MaxDispatchActions)
	}
	for i, a := range req.GetActions() {
		if err := v.action(i, req.GetChannel(), a); err != nil {
			return err
		}
	}
	return nil
}

func (v *validator) action(i int, channel string, a *actionsyncv1.Action) *connect.Error {
	switch t := a.GetType(); {
	case t == "":
		return invalid("actions[%d].type: required", i)
	case len(t) > v.limits.MaxTypeBytes:
		return invalid("actions[%d].type: %d bytes, limit %d", i, len(t), v.limits.MaxTypeBytes)
	case !utf8.ValidString(t):
		return invalid("actions[%d].type: not valid UTF-8", i)
	}
	if id := a.GetId(); id != "" && !idPattern.MatchString(id) {
		return invalid("actions[%d].id: %q must match %s (or be empty for a server-assigned ULID)", i, id, idPatternText)
	}
	switch {
	case a.GetChannel() != "" && a.GetChannel() != channel:
		return invalid("actions[%d].channel: %q differs from the request's channel %q; leave it empty", i, a.GetChannel(), channel)
	case a.GetSeq() != 0:
		return invalid("actions[%d].seq: set by the server; leave it unset", i)
	case a.GetClientId() != "":
		return invalid("actions[%d].client_id: set by the server from the request's client_id; leave it unset", i)
	case a.GetTime() != nil:
		return invalid("actions[%d].time: set by the server; leave it unset", i)
	}
	// The binary codec keeps payload and meta encoded (rawbody.go); JSON decodes them.
	rawSize, rawField, why := checkRawBody(a.ProtoReflect().GetUnknown())
	if size := proto.Size(a.GetPayload()) + proto.Size(a.GetMeta()) + rawSize; size > v.limits.MaxPayloadBytes {
		return invalid("actions[%d].payload: %d bytes with meta, limit %d", i, size, v.limits.MaxPayloadBytes)
	}
	if why != "" {
		return invalid("actions[%d].%s: %s", i, rawField, why)
	}
	if a.GetPayload() != nil {
		if err := jsonValue(a.GetPayload(), 0); err != "" {
			return invalid("actions[%d].payload: %s", i, err)
		}
	}
	if a.GetMeta() != nil {
		if err := jsonValue(structpb.NewStructValue(a.GetMeta()), 0); err != "" {
			return invalid("actions[%d].meta: %s", i, err)
		}
	}
	if !v.allow.Allowed(channel, a.GetType()) {
		return connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("actions[%d].type: %q is not allowed on channel %q", i, a.GetType(), channel))
	}
	return nil
}

// maxJSONDepth bounds payload nesting (protojson refuses deeper values).
const maxJSONDepth = 100

// jsonValue reports why v cannot be relayed as JSON ("" if it can): a value with no
// kind set, a number that is NaN or infinite, or nesting deeper than maxJSONDepth.
// Such a payload would fail later, when a subscriber's stream encodes it.
func jsonValue(v *structpb.Value, depth int) string {
	if depth > maxJSONDepth {
		return fmt.Sprintf("nested deeper than %d levels", maxJSONDepth)
	}
	switch k := v.GetKind().(type) {
	case nil:
		return "a value has no kind set (null must be null_value)"
	case *structpb.Value_NumberValue:
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			return fmt.Sprintf("number %v is not valid JSON", k.NumberValue)
		}
	case *structpb.Value_StringValue:
		if !utf8.ValidString(k.StringValue) {
			return "a string is not valid UTF-8"
		}
	case *structpb.Value_StructValue:
		for key, f := range k.StructValue.GetFields() {
			if !utf8.ValidString(key) {
				return "a key is not valid UTF-8"
			}
			if err := jsonValue(f, depth+1); err != "" {
				return err
			}
		}
	case *structpb.Value_ListValue:
		for _, e := range k.ListValue.GetValues() {
			if err := jsonValue(e, depth+1); err != "" {
				return err
			}
		}
	}
	return ""
}

// positions checks the positions of a subscribe request; already is how many channels
// the stream follows (Sync may subscribe several times).
func (v *validator) subscribe(req *actionsyncv1.SubscribeRequest, already int) *connect.Error {
	if err := clientID("client_id", req.GetClientId()); err != nil {
		return err
	}
	if req.GetExcludeOwn() && req.GetClientId() == "" {
		return invalid("exclude_own: requires client_id")
	}
	switch n := len(req.GetPositions()); {
	case n == 0:
		return invalid("positions: at least 1 position required")
	case already+n > v.limits.MaxPositions:
		if already > 0 {
			return invalid("positions: %d more on a stream following %d channels, limit %d", n, already, v.limits.MaxPositions)
		}
		return invalid("positions: %d positions, limit %d", n, v.limits.MaxPositions)
	}
	seen := make(map[string]int, len(req.GetPositions()))
	for i, p := range req.GetPositions() {
		field := fmt.Sprintf("positions[%d].channel", i)
		if err := v.channel(field, p.GetChannel()); err != nil {
			return err
		}
		if j, dup := seen[p.GetChannel()]; dup {
			return invalid("%s: %q repeats positions[%d]", field, p.GetChannel(), j)
		}
		seen[p.GetChannel()] = i
		if p.GetLive() && p.GetAfterSeq() != 0 {
			return invalid("positions[%d]: live and after_seq %d exclude each other", i, p.GetAfterSeq())
		}
		if n := len(p.GetEpoch()); n > maxEpochBytes {
			return invalid("positions[%d].epoch: %d bytes, limit %d", i, n, maxEpochBytes)
		}
	}
	return nil
}

// history checks a history request and returns the limit to use.
func (v *validator) history(req *actionsyncv1.HistoryRequest) (int, *connect.Error) {
	if err := v.channel("channel", req.GetChannel()); err != nil {
		return 0, err
	}
	switch l := int(req.GetLimit()); {
	case l == 0:
		return min(DefaultHistoryLimit, v.limits.MaxHistoryLimit), nil
	case l > v.limits.MaxHistoryLimit:
		return 0, invalid("limit: %d, maximum %d", l, v.limits.MaxHistoryLimit)
	default:
		return l, nil
	}
}

// maxVersionBytes is the limit on a snapshot's version tag.
const maxVersionBytes = 64

// putSnapshot checks a PutSnapshot request but its state's size, which the broker
// checks against its limit (--max-snapshot-bytes).
func (v *validator) putSnapshot(req *actionsyncv1.PutSnapshotRequest) *connect.Error {
	if err := v.channel("channel", req.GetChannel()); err != nil {
		return err
	}
	if err := clientID("client_id", req.GetClientId()); err != nil {
		return err
	}
	switch n := len(req.GetEpoch()); {
	case n == 0:
		return invalid("epoch: required (the epoch seq belongs to, from ready, reset or snapshot)")
	case n > maxEpochBytes:
		return invalid("epoch: %d bytes, limit %d", n, maxEpochBytes)
	}
	if req.GetSeq() == 0 {
		return invalid("seq: must be at least 1")
	}
	switch n := len(req.GetVersion()); {
	case n > maxVersionBytes:
		return invalid("version: %d bytes, limit %d", n, maxVersionBytes)
	case !utf8.ValidString(req.GetVersion()):
		return invalid("version: not valid UTF-8")
	}
	return nil
}
