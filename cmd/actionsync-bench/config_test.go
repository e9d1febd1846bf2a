package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestParsePIDs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    []int
		wantErr string
	}{
		{"", nil, ""},
		{"0", nil, ""},
		{" 0 ", nil, ""},
		{"4242", []int{4242}, ""},
		{"30,10,20", []int{30, 10, 20}, ""},
		{" 1 , 2 ", []int{1, 2}, ""},
		{"1,1", nil, "twice"},
		{"1,0", nil, `"0"`},
		{"-3", nil, `"-3"`},
		{"1,,2", nil, `""`},
		{"abc", nil, `"abc"`},
	}
	for _, tt := range tests {
		got, err := parsePIDs(tt.in)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("parsePIDs(%q): got %v, %v; want an error naming %s", tt.in, got, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || !slices.Equal(got, tt.want)):
			t.Errorf("parsePIDs(%q): got %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseURLs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"", nil, false},
		{"http://a:1", []string{"http://a:1"}, false},
		{"http://a:1, http://b:2,,http://c:3/", []string{"http://a:1", "http://b:2", "http://c:3/"}, false},
		{"http://a:1,https://b:2", nil, true},
		{"a:1", nil, true},
		{"http://", nil, true},
	}
	for _, tt := range tests {
		got, err := parseURLs(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("parseURLs(%q): got %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestConfig_subURL(t *testing.T) {
	t.Parallel()
	t.Run("default_is_url", func(t *testing.T) {
		t.Parallel()
		cfg, err := parseConfig([]string{"--url", "http://pub:1"}, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if got := cfg.subURL(i); got != "http://pub:1" {
				t.Errorf("subURL(%d): got %q, want --url", i, got)
			}
		}
	})
	t.Run("round_robin", func(t *testing.T) {
		t.Parallel()
		cfg, err := parseConfig([]string{"--url", "http://pub:1", "--sub-urls", "http://a:1,http://b:2,http://c:3"}, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for i := range 7 {
			got = append(got, cfg.subURL(i))
		}
		want := []string{"http://a:1", "http://b:2", "http://c:3", "http://a:1", "http://b:2", "http://c:3", "http://a:1"}
		if !slices.Equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
		if cfg.url != "http://pub:1" {
			t.Errorf("url: got %q, want the publisher's --url unchanged", cfg.url)
		}
	})
	t.Run("pids_and_label", func(t *testing.T) {
		t.Parallel()
		cfg, err := parseConfig([]string{"--server-pid", "5,6,7,8", "--label", "nats-3nodes"}, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cfg.serverPIDs, []int{5, 6, 7, 8}) || cfg.label != "nats-3nodes" {
			t.Errorf("got pids %v label %q, want [5 6 7 8] nats-3nodes", cfg.serverPIDs, cfg.label)
		}
	})
}

func TestConfig_boards(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--mode", "lat", "--n", "4000", "--boards", "1000"}, true},
		{[]string{"--mode", "lat", "--n", "10"}, true},
		{[]string{"--mode", "lat", "--n", "10", "--boards", "3"}, false},
		{[]string{"--mode", "tput", "--n", "10", "--boards", "2"}, false},
		{[]string{"--mode", "lat", "--n", "10", "--boards", "-1"}, false},
	} {
		_, err := parseConfig(tc.args, &bytes.Buffer{})
		if (err == nil) != tc.ok {
			t.Errorf("%q: got %v, want ok %v", tc.args, err, tc.ok)
		}
	}
}
