package main

import "time"

// connConfig bounds what one client connection can hold and how long it can stall the
// server.
type connConfig struct {
	maxStreams       int           // HTTP/2 MaxConcurrentStreams
	readTimeout      time.Duration // a unary or server-streaming request body; 0: none
	writeTimeout     time.Duration // each response write; 0: none
	keepalive        time.Duration // HTTP/2 ping after this long without a frame; 0: none
	keepaliveTimeout time.Duration // close if the ping is not answered within this
	maxResets        int           // requests a client may reset quickly per 10 s
}

// connSettings are the settings of client connections.
var connSettings = []setting{
	{flag: "max-streams-per-connection", env: "ACTIONSYNC_MAX_STREAMS_PER_CONNECTION", def: "250", arg: "N",
		help:  "requests (streams included) one HTTP/2 connection may have open at once; more wait for one to end",
		apply: intAtLeast(1, func(c *config) *int { return &c.conn.maxStreams })},
	{flag: "read-timeout", env: "ACTIONSYNC_READ_TIMEOUT", def: "30s", arg: "DURATION",
		help:  "a unary or Subscribe request must arrive within this (Sync streams excepted); a client that stalls its upload is cut off; 0: no limit",
		apply: durationAtLeast(0, func(c *config, d time.Duration) { c.conn.readTimeout = d })},
	{flag: "write-timeout", env: "ACTIONSYNC_WRITE_TIMEOUT", def: "30s", arg: "DURATION",
		help:  "each response write (a streamed batch included) must finish within this (checked every quarter of it); a client that stopped reading is cut off; 0: no limit",
		apply: durationAtLeast(0, func(c *config, d time.Duration) { c.conn.writeTimeout = d })},
	{flag: "max-resets-per-connection", env: "ACTIONSYNC_MAX_RESETS_PER_CONNECTION", def: "200", arg: "N",
		help:  "requests a client may cancel within a second of starting them, per connection and 10 s; past it the connection is closed (HTTP/2 rapid reset)",
		apply: intAtLeast(1, func(c *config) *int { return &c.conn.maxResets })},
	{flag: "keepalive", env: "ACTIONSYNC_KEEPALIVE", def: "15s", arg: "DURATION",
		help:  "ping an HTTP/2 connection after this long without a frame from the client; 0: never",
		apply: durationAtLeast(0, func(c *config, d time.Duration) { c.conn.keepalive = d })},
	{flag: "keepalive-timeout", env: "ACTIONSYNC_KEEPALIVE_TIMEOUT", def: "15s", arg: "DURATION",
		help:  "close an HTTP/2 connection whose ping is not answered within this: a stopped client's streams are freed within --keepalive plus this",
		apply: durationAtLeast(time.Nanosecond, func(c *config, d time.Duration) { c.conn.keepaliveTimeout = d })},
}
