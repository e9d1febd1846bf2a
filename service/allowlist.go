package service

import (
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
)

// AllowList restricts which action types may be dispatched on which channels. Rules are
// checked in order and the first whose channel pattern matches decides; a channel that
// matches no rule accepts every type. End with a rule for "*" to refuse everything else.
type AllowList struct {
	rules []AllowRule
}

// AllowRule allows Types on the channels matching Channel.
type AllowRule struct {
	// Channel is a pattern in path.Match syntax: "*" matches any run of characters,
	// "?" one character, "[...]" a class. Example: "board:*".
	Channel string `json:"channel"`
	// Types lists the allowed action types; "*" allows all, an empty list none.
	Types []string `json:"types"`
}

// NewAllowList returns an allow-list of rules, checking each pattern.
func NewAllowList(rules ...AllowRule) (*AllowList, error) {
	for i, r := range rules {
		if r.Channel == "" {
			return nil, fmt.Errorf("allow rule %d: empty channel pattern", i)
		}
		if _, err := path.Match(r.Channel, ""); err != nil {
			return nil, fmt.Errorf("allow rule %d: channel pattern %q: %w", i, r.Channel, err)
		}
	}
	return &AllowList{rules: slices.Clone(rules)}, nil
}

// ParseAllowList reads an allow-list file: a JSON array of {"channel": pattern,
// "types": [type, ...]} objects. Unknown fields are errors.
func ParseAllowList(r io.Reader) (*AllowList, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var rules []AllowRule
	if err := dec.Decode(&rules); err != nil {
		return nil, fmt.Errorf("parse allow-list: %w", err)
	}
	return NewAllowList(rules...)
}

// ParseAllowRule parses the flag form of a rule, "PATTERN=TYPE,TYPE,...", e.g.
// "board:*=UPDATE_STAGE_TITLE,ADD_TASK". "PATTERN=" allows no type.
func ParseAllowRule(s string) (AllowRule, error) {
	pattern, types, ok := strings.Cut(s, "=")
	if !ok || pattern == "" {
		return AllowRule{}, fmt.Errorf("allow rule %q: want PATTERN=TYPE,TYPE,...", s)
	}
	r := AllowRule{Channel: pattern, Types: []string{}}
	for t := range strings.SplitSeq(types, ",") {
		if t = strings.TrimSpace(t); t != "" {
			r.Types = append(r.Types, t)
		}
	}
	if _, err := path.Match(r.Channel, ""); err != nil {
		return AllowRule{}, fmt.Errorf("allow rule %q: %w", s, err)
	}
	return r, nil
}

// Allowed reports whether actionType may be dispatched on channel. A nil AllowList
// allows everything.
func (l *AllowList) Allowed(channel, actionType string) bool {
	if l == nil {
		return true
	}
	for _, r := range l.rules {
		if ok, _ := path.Match(r.Channel, channel); ok {
			return slices.Contains(r.Types, actionType) || slices.Contains(r.Types, "*")
		}
	}
	return true
}

// Rules returns a copy of the rules, in order.
func (l *AllowList) Rules() []AllowRule {
	if l == nil {
		return nil
	}
	return slices.Clone(l.rules)
}
